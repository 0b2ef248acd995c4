//! Application state read from JetStream (records and statuses, JSON), manifests (YAML) and OCI
//! references: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_lattice::manifest::Manifest;
use trellis_lattice::oci::Reference;
use trellis_scheduler::apps::{AppRecord, AppStatus};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<AppRecord>(data);
    let _ = serde_json::from_slice::<AppStatus>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Manifest::from_yaml(text) {
            // What parses also survives the trip through the stored form.
            let json = serde_json::to_vec(&m).expect("manifests serialize");
            assert_eq!(serde_json::from_slice::<Manifest>(&json).expect("and read back"), m);
        }
        let _ = Reference::parse(text);
    }
});
