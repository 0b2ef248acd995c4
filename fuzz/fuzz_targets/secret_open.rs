//! A stored secret (JSON read from the SECRETS bucket, or a host's answer to `secret get`):
//! errors, never panics, and nothing opens without the box a key sealed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_lattice::secrets::{SealedSecret, public_xkey, xkey_from_seed};

/// A fixed key (the nkeys Go-compatibility test seed): the fuzzer cannot seal to it.
const SEED: &str = "SXAKIYZX2POLIHZ5W5YZEWVTH24NLEUETBW3TKIVYRSS3GNHFXO5D4JJZM";

fuzz_target!(|data: &[u8]| {
    let key = xkey_from_seed(SEED).expect("a valid seed");
    if let Ok(sealed) = SealedSecret::from_json("name", data) {
        assert!(sealed.open(&key, "lattice", "name").is_err(), "opened a forged box");
        let _ = public_xkey(&sealed.sender);
    }
});
