//! What the applications bucket holds, key by key (the values inside their seals, if any):
//!
//! - `spec.<app>`: an [`Index`] (JSON), or a whole [`AppRecord`] as versions before the index
//!   wrote it (read as [`Spec::Whole`]);
//! - `version.<app>.<sha256>`: one version's [`Manifest`] (JSON) whose text hashes to
//!   `<sha256>` (lowercase hex);
//! - `status.<app>`: an [`AppStatus`](super::AppStatus) (JSON).
//!
//! Decoding is pure: these functions take bytes from the network and never panic.

use crate::manifest::{Manifest, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AppRecord, Change};

/// The key of an application's index.
pub fn spec_key(app: &str) -> String {
    format!("spec.{app}")
}

/// The key of an application's status.
pub fn status_key(app: &str) -> String {
    format!("status.{app}")
}

/// The key of the version of `app` whose manifest's JSON hashes to `sha256`.
pub fn version_key(app: &str, sha256: &str) -> String {
    format!("version.{app}.{sha256}")
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One kept version, as the index names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The version's name.
    pub version: Version,
    /// The hex SHA-256 of its manifest's JSON: the last part of its key.
    pub sha256: String,
}

/// What `spec.<app>` holds: everything about an application but its manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// The application's name.
    pub name: String,
    /// The kept versions, oldest first.
    pub kept: Vec<Kept>,
    /// The version that should run; `None` once undeployed.
    pub current: Option<Version>,
    /// The last version that was completely placed.
    #[serde(default)]
    pub stable: Option<Version>,
    /// What happened, oldest first.
    pub history: Vec<Change>,
}

impl Index {
    /// The index of `record`, whose versions' manifests hash to `sha256` (in order).
    pub fn of(record: &AppRecord, sha256: Vec<String>) -> Self {
        let kept = record
            .versions
            .iter()
            .zip(sha256)
            .map(|(m, sha256)| Kept { version: m.version.clone(), sha256 })
            .collect();
        Self {
            name: record.name.clone(),
            kept,
            current: record.current.clone(),
            stable: record.stable.clone(),
            history: record.history.clone(),
        }
    }

    /// The record this index describes, given its versions' manifests (in the index's order).
    pub fn into_record(self, versions: Vec<Manifest>) -> AppRecord {
        AppRecord {
            name: self.name,
            versions,
            current: self.current,
            stable: self.stable,
            history: self.history,
        }
    }
}

/// `spec.<app>` as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// An index: the manifests are under keys of their own.
    Index(Index),
    /// A whole record, every manifest inline, as written before indexes were.
    Whole(AppRecord),
}

impl Spec {
    /// Reads the JSON of `spec.<app>`: an index has `kept`, a whole record `versions`.
    pub fn decode(json: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Probe {
            kept: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe = serde_json::from_slice(json)?;
        match probe.kept {
            Some(_) => serde_json::from_slice(json).map(Spec::Index),
            None => serde_json::from_slice(json).map(Spec::Whole),
        }
    }
}

/// Why a stored version was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadVersion {
    /// Its text does not hash to its key: altered or damaged.
    #[error("its content hashes to {actual}, not to its key; it was altered or damaged")]
    Altered {
        /// What it hashes to.
        actual: String,
    },
    /// Not a manifest.
    #[error("not a manifest: {0}")]
    NotAManifest(String),
}

/// Reads the JSON of `version.<app>.<sha256>`, checking that it hashes to `sha256`.
pub fn decode_version(sha256: &str, json: &[u8]) -> Result<Manifest, BadVersion> {
    let actual = sha256_hex(json);
    if actual != sha256 {
        return Err(BadVersion::Altered { actual });
    }
    serde_json::from_slice(json).map_err(|e| BadVersion::NotAManifest(e.to_string()))
}

/// The JSON of a version's manifest as it is stored, and its hex SHA-256.
pub fn encode_version(manifest: &Manifest) -> (Vec<u8>, String) {
    let json = serde_json::to_vec(manifest).expect("manifests serialize");
    let sha256 = sha256_hex(&json);
    (json, sha256)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn manifest(name: &str, version: &str, component: &str) -> Manifest {
        let yaml = format!(
            "name: {name}\nversion: '{version}'\ncomponents:\n  - name: {component}\n    \
             source: sha256:{}\n",
            "a".repeat(64)
        );
        Manifest::from_yaml(&yaml).expect("test manifest")
    }

    fn record() -> AppRecord {
        let mut record = AppRecord {
            name: "shop".into(),
            versions: vec![manifest("shop", "1", "cart"), manifest("shop", "2", "cart")],
            current: Some(Version::try_from("2".to_owned()).unwrap()),
            stable: Some(Version::try_from("1".to_owned()).unwrap()),
            history: vec![],
        };
        record.record("deploy", "2", "");
        record
    }

    #[test]
    fn an_index_and_its_versions_make_the_record_again() {
        let record = record();
        let (encoded, sha256): (Vec<_>, Vec<_>) =
            record.versions.iter().map(encode_version).unzip();
        let index = Index::of(&record, sha256.clone());
        let json = serde_json::to_vec(&index).unwrap();
        let Spec::Index(read) = Spec::decode(&json).unwrap() else { panic!("not an index") };
        let versions = encoded
            .iter()
            .zip(&sha256)
            .map(|(json, sha)| decode_version(sha, json).unwrap())
            .collect();
        assert_eq!(read.into_record(versions), record);
        assert!(!String::from_utf8(json).unwrap().contains("components"), "no manifest inline");
    }

    #[test]
    fn a_whole_record_is_still_read() {
        let record = record();
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(Spec::decode(&json).unwrap(), Spec::Whole(record));
    }

    #[test]
    fn a_version_that_does_not_hash_to_its_key_is_refused() {
        let (json, sha256) = encode_version(&manifest("shop", "1", "cart"));
        let forged = String::from_utf8(json).unwrap().replace("cart", "cash");
        let err = decode_version(&sha256, forged.as_bytes()).unwrap_err();
        assert!(matches!(err, BadVersion::Altered { .. }), "{err}");
        assert!(decode_version(&sha256_hex(b"[]"), b"[]").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [&b""[..], b"{", b"[]", b"{\"kept\": 3}", b"{\"name\": 1}", b"null"] {
            assert!(Spec::decode(bytes).is_err(), "{bytes:?}");
        }
    }
}
