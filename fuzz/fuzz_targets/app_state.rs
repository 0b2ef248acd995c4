//! Application state read from JetStream (indexes, whole records of earlier versions, version
//! manifests, statuses: JSON), manifests (YAML) and OCI references: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_scheduler::manifest::Manifest;
use trellis_ops::oci::Reference;
use trellis_scheduler::apps::stored::{self, Spec};
use trellis_scheduler::apps::{AppRecord, AppStatus};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<AppRecord>(data);
    let _ = serde_json::from_slice::<AppStatus>(data);
    if let Ok(Spec::Index(index)) = Spec::decode(data) {
        // What an index names comes back from its stored form.
        let json = serde_json::to_vec(&index).expect("indexes serialize");
        assert_eq!(Spec::decode(&json).expect("and read back"), Spec::Index(index));
    }
    // A version under the key its content hashes to; under any other key, refused.
    let sha256 = stored::sha256_hex(data);
    if let Ok(m) = stored::decode_version(&sha256, data) {
        let (json, sha) = stored::encode_version(&m);
        assert_eq!(stored::decode_version(&sha, &json).expect("its own form reads back"), m);
    }
    assert!(stored::decode_version(&"0".repeat(64), data).is_err() || sha256 == "0".repeat(64));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Manifest::from_yaml(text) {
            // What parses also survives the trip through the stored form.
            let json = serde_json::to_vec(&m).expect("manifests serialize");
            assert_eq!(serde_json::from_slice::<Manifest>(&json).expect("and read back"), m);
        }
        let _ = Reference::parse(text);
    }
});
