#![no_main]
//! Frames on the host–provider pipe.

use libfuzzer_sys::fuzz_target;
use trellis_lattice::hostlink::{Bootstrap, ToHost, ToProvider, decode_frame};

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame::<ToHost>(data);
    let _ = decode_frame::<ToProvider>(data);
    let _ = decode_frame::<Bootstrap>(data);
});
