#![no_main]
//! Component binaries (custom sections) and the claims JWT inside them.

use libfuzzer_sys::fuzz_target;
use trellis_claims::{self as claims, section};

fuzz_target!(|data: &[u8]| {
    let _ = section::split(data);
    let _ = claims::inspect(data);
    let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
    wasm.extend_from_slice(data);
    let _ = claims::verify(&wasm, &[], 0);
    let _ = claims::inspect(&section::append(b"\0asm\x0d\0\x01\0", data));
});
