#![no_main]
//! Key-value and blob store requests and replies arrive as msgpack from the lattice.

use libfuzzer_sys::fuzz_target;
use trellis_lattice::{blobstore, keyvalue};

fuzz_target!(|data: &[u8]| {
    let _ = keyvalue::decode::<keyvalue::Request>(data);
    let _ = keyvalue::decode::<keyvalue::Reply>(data);
    let _ = blobstore::decode::<blobstore::Request>(data);
    let _ = blobstore::decode::<blobstore::Reply>(data);
});
