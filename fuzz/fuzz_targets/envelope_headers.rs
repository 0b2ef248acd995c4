#![no_main]
//! Invocation envelopes and error replies from NATS headers.

use libfuzzer_sys::fuzz_target;
use trellis_lattice::envelope::{InvokeError, Invocation, header};

fuzz_target!(|data: &[u8]| {
    // Header values on the wire carry no line breaks (HeaderMap refuses them).
    let text = String::from_utf8_lossy(data).replace(['\r', '\n'], " ");
    let mut parts = text.splitn(4, ' ');
    let mut headers = async_nats::HeaderMap::new();
    for name in [header::SRC, header::OP, header::DEADLINE, header::JTI] {
        if let Some(value) = parts.next() {
            headers.insert(name, value);
        }
    }
    let _ = Invocation::from_headers(Some(&headers));
    headers.insert(header::ERROR, text.as_ref());
    let _ = InvokeError::from_reply(Some(&headers), data);
});
