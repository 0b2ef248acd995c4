#![no_main]
//! HTTP requests and responses arrive as msgpack from the lattice.

use libfuzzer_sys::fuzz_target;
use trellis_lattice::http::{HttpRequest, HttpResponse, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<HttpRequest>(data);
    let _ = decode::<HttpResponse>(data);
});
