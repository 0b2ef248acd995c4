#![no_main]
//! Subjects of received messages.

use libfuzzer_sys::fuzz_target;
use trellis_lattice::subject::Subjects;

fuzz_target!(|data: &str| {
    let subjects = Subjects::new("fuzz").expect("valid lattice");
    let _ = subjects.parse(data);
    let _ = trellis_lattice::link::InterfaceName::parse(data);
    let _ = trellis_lattice::link::key_source(data);
});
