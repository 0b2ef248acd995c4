#![no_main]
//! Signed control requests and chunk announcements from NATS headers: what a strict host
//! checks before it acts or pulls a body.

use libfuzzer_sys::fuzz_target;
use trellis_lattice::chunks::{self, BODY, BODY_LEN, BODY_SHA256};
use trellis_lattice::envelope::header::{DEADLINE, JTI};
use trellis_lattice::signing::{ControlVerifier, OPERATOR, OperatorKey, Role, SIG};

fuzz_target!(|data: &[u8]| {
    // Header values on the wire carry no line breaks (HeaderMap refuses them).
    let text = String::from_utf8_lossy(data).replace(['\r', '\n'], " ");
    let mut parts = text.splitn(7, ' ');
    let mut headers = async_nats::HeaderMap::new();
    for name in [OPERATOR, SIG, DEADLINE, JTI, BODY, BODY_LEN, BODY_SHA256] {
        if let Some(value) = parts.next() {
            headers.insert(name, value);
        }
    }
    let trusted = OperatorKey::generate().public_key().parse().expect("an operator key");
    let verifier = ControlVerifier::new(vec![trusted], false);
    let _ = verifier.check("s", Some(&headers), data, Role::Viewer, 1_800_000_000_000);
    let _ = chunks::announced(Some(&headers));
});
