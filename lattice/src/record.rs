//! Signed state: a record in a JetStream KV bucket (a link, a named config) carries the
//! signature of the operator who wrote it, so a NATS user of the account who writes straight
//! into the bucket changes nothing a strict host or provider applies.
//!
//! A sealed record is JSON: `{"record": <the record's JSON, or null for a deletion>, "seal":
//! {"by": "O...", "at": <unix ms>, "sig": "<base64url>"}}`. The signature is Ed25519 over
//! SHA-256 of a tag, the bucket (which names the lattice), the key, `at`, whether it is a
//! deletion and the SHA-256 of the record's JSON text. A deletion is itself a sealed record
//! (a tombstone): a bare KV delete cannot carry a signature. A record without a seal is what
//! development lattices and older versions write: only readers that accept unsigned state apply
//! it. Readers remember the newest `at` they applied per key and refuse older ones, so an old
//! signed record written again does not roll a key back while they run (see `docs/security.md`
//! for what a reader that starts afterwards sees).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::signing::operator::Operators;
use crate::signing::{OperatorKey, Role, TrustedOperator};

/// Domain separation: a record signature is never mistaken for any other.
const TAG: &[u8] = b"trellis-record/1";

/// Who sealed a record, when, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// The operator's public key.
    pub by: String,
    /// When it was written, unix ms.
    pub at: u64,
    /// base64url Ed25519 signature.
    pub sig: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed<'a> {
    #[serde(borrow)]
    record: Option<&'a RawValue>,
    seal: Seal,
}

/// A stored value, as read from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored<'a> {
    /// No seal: the record's JSON as written.
    Plain(&'a [u8]),
    /// Sealed: the record's JSON (`None`: a deletion) and its seal.
    Sealed {
        /// The record's JSON text; `None` for a tombstone.
        record: Option<&'a str>,
        /// Who wrote it.
        seal: Seal,
    },
}

impl<'a> Stored<'a> {
    /// Reads a stored value: sealed when it has the sealed shape, plain otherwise.
    pub fn parse(bytes: &'a [u8]) -> Self {
        match serde_json::from_slice::<Sealed<'a>>(bytes) {
            Ok(Sealed { record, seal }) => {
                Stored::Sealed { record: record.map(RawValue::get), seal }
            }
            Err(_) => Stored::Plain(bytes),
        }
    }

    /// The record's JSON, unverified (`None`: a tombstone): for listings, not for applying.
    pub fn contents(&self) -> Option<&'a [u8]> {
        match self {
            Stored::Plain(bytes) => Some(bytes),
            Stored::Sealed { record, .. } => record.map(str::as_bytes),
        }
    }
}

fn digest(bucket: &str, key: &str, at: u64, record: Option<&str>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TAG);
    // Length-prefixed, so no two records hash alike by moving bytes between fields.
    for part in [bucket, key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(at.to_be_bytes());
    h.update([u8::from(record.is_none())]);
    h.update(Sha256::digest(record.unwrap_or("").as_bytes()));
    h.finalize().into()
}

/// Seals `record` (JSON; `None` for a deletion) for `key` in `bucket`, written at `at_ms`.
pub fn seal(
    operator: &OperatorKey,
    bucket: &str,
    key: &str,
    record: Option<&[u8]>,
    at_ms: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let record: Option<&RawValue> = record.map(serde_json::from_slice).transpose()?;
    let sig = operator.sign_bytes(&digest(bucket, key, at_ms, record.map(RawValue::get)));
    let seal = Seal { by: operator.public_key().to_owned(), at: at_ms, sig };
    serde_json::to_vec(&Sealed { record, seal })
}

/// Why a record was not applied. Each message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDenied {
    /// No seal, and the reader takes only sealed state.
    #[error(
        "unsigned: written without an operator key (write it with `trellis --operator-key ...`); \
         ignored"
    )]
    Unsigned,
    /// A bare KV delete, and the reader takes only sealed state.
    #[error(
        "deleted without a signature (delete it with `trellis --operator-key ...`, which writes \
         a signed tombstone); ignored"
    )]
    UnsignedDelete,
    /// Sealed by a key the reader does not trust.
    #[error("sealed by operator {key}, which is not trusted here; ignored")]
    Untrusted {
        /// The sealer.
        key: String,
    },
    /// The signature does not verify.
    #[error("bad seal: the record was altered, moved to another key, or not sealed by {key}")]
    BadSignature {
        /// The claimed sealer.
        key: String,
    },
    /// The sealer may only read.
    #[error("sealed by operator {key}, whose role is {role}; changing state needs deployer")]
    OutOfRole {
        /// The sealer.
        key: String,
        /// Its role.
        role: Role,
    },
    /// Older than what the reader applied for this key: an old record written again.
    #[error("sealed at {at}, before the version applied here (sealed at {newest}); ignored")]
    Stale {
        /// The record's time.
        at: u64,
        /// The newest applied.
        newest: u64,
    },
}

/// What a reader applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened<'a> {
    /// Put: the record's JSON.
    Put(&'a [u8]),
    /// The key was deleted.
    Deleted,
}

/// How a reader (host, provider) checks records before applying them.
#[derive(Debug)]
pub struct RecordGate {
    operators: Operators,
    allow_unsigned: bool,
    /// The newest seal applied per `<bucket>/<key>`.
    newest: Mutex<HashMap<String, u64>>,
}

impl RecordGate {
    /// A gate trusting `operators` (as deployers or admins); `allow_unsigned` (development) also
    /// applies records nobody trusted sealed, and bare deletes.
    pub fn new(operators: Vec<TrustedOperator>, allow_unsigned: bool) -> Self {
        Self {
            operators: Operators::new(operators),
            allow_unsigned,
            newest: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a value put under `key` in `bucket`.
    pub fn open<'a>(
        &self,
        bucket: &str,
        key: &str,
        bytes: &'a [u8],
    ) -> Result<Opened<'a>, RecordDenied> {
        let (record, seal) = match Stored::parse(bytes) {
            Stored::Plain(bytes) if self.allow_unsigned => return Ok(Opened::Put(bytes)),
            Stored::Plain(_) => return Err(RecordDenied::Unsigned),
            Stored::Sealed { record, seal } => (record, seal),
        };
        let opened = match record {
            Some(json) => Opened::Put(json.as_bytes()),
            None => Opened::Deleted,
        };
        let Some((trusted, verifying)) = self.operators.find(&seal.by) else {
            return if self.allow_unsigned {
                Ok(opened)
            } else {
                Err(RecordDenied::Untrusted { key: seal.by })
            };
        };
        let bad = || RecordDenied::BadSignature { key: seal.by.clone() };
        let sig = URL_SAFE_NO_PAD.decode(&seal.sig).map_err(|_| bad())?;
        verifying.verify(&digest(bucket, key, seal.at, record), &sig).map_err(|_| bad())?;
        if trusted.role < Role::Deployer {
            return Err(RecordDenied::OutOfRole { key: seal.by, role: trusted.role });
        }
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        let slot = newest.entry(format!("{bucket}/{key}")).or_insert(0);
        if seal.at < *slot {
            return Err(RecordDenied::Stale { at: seal.at, newest: *slot });
        }
        *slot = seal.at;
        Ok(opened)
    }

    /// Checks a bare KV delete (or purge) of `key`: applied only by readers of unsigned state.
    pub fn bare_delete(&self) -> Result<(), RecordDenied> {
        if self.allow_unsigned { Ok(()) } else { Err(RecordDenied::UnsignedDelete) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "TRELLIS_x_LINKS";

    fn gate(key: &OperatorKey, role: Role) -> RecordGate {
        RecordGate::new(vec![TrustedOperator { key: key.public_key().to_owned(), role }], false)
    }

    #[test]
    fn a_sealed_record_opens_and_every_tampering_is_refused() {
        let op = OperatorKey::generate();
        let g = gate(&op, Role::Deployer);
        let sealed = seal(&op, B, "web.k", Some(br#"{"target":"redis"}"#), 10).unwrap();
        assert_eq!(g.open(B, "web.k", &sealed), Ok(Opened::Put(br#"{"target":"redis"}"#)));
        // Moved to another key or bucket, or altered.
        assert!(matches!(g.open(B, "web.other", &sealed), Err(RecordDenied::BadSignature { .. })));
        assert!(matches!(
            g.open("TRELLIS_y_LINKS", "web.k", &sealed),
            Err(RecordDenied::BadSignature { .. })
        ));
        let altered = String::from_utf8(sealed.clone()).unwrap().replace("redis", "mine!");
        assert!(matches!(
            g.open(B, "web.k", altered.as_bytes()),
            Err(RecordDenied::BadSignature { .. })
        ));
        // Written plainly, by a stranger, or by a viewer.
        assert_eq!(g.open(B, "web.k", br#"{"target":"mine"}"#), Err(RecordDenied::Unsigned));
        let stranger = OperatorKey::generate();
        let theirs = seal(&stranger, B, "web.k", Some(b"{}"), 20).unwrap();
        assert!(matches!(g.open(B, "web.k", &theirs), Err(RecordDenied::Untrusted { .. })));
        let viewer = gate(&stranger, Role::Viewer);
        assert!(matches!(viewer.open(B, "web.k", &theirs), Err(RecordDenied::OutOfRole { .. })));
        assert_eq!(g.bare_delete(), Err(RecordDenied::UnsignedDelete));
    }

    #[test]
    fn tombstones_delete_and_old_records_do_not_roll_a_key_back() {
        let op = OperatorKey::generate();
        let g = gate(&op, Role::Admin);
        let v1 = seal(&op, B, "k", Some(br#"{"v":1}"#), 100).unwrap();
        let v2 = seal(&op, B, "k", Some(br#"{"v":2}"#), 200).unwrap();
        let gone = seal(&op, B, "k", None, 300).unwrap();
        assert_eq!(g.open(B, "k", &v1), Ok(Opened::Put(br#"{"v":1}"#)));
        assert_eq!(g.open(B, "k", &v2), Ok(Opened::Put(br#"{"v":2}"#)));
        assert_eq!(g.open(B, "k", &v1), Err(RecordDenied::Stale { at: 100, newest: 200 }));
        assert_eq!(g.open(B, "k", &gone), Ok(Opened::Deleted));
        assert_eq!(g.open(B, "k", &v2), Err(RecordDenied::Stale { at: 200, newest: 300 }));
        assert_eq!(Stored::parse(&gone).contents(), None);
    }

    #[test]
    fn development_readers_apply_plain_records_and_configs_never_look_sealed() {
        let dev = RecordGate::new(vec![], true);
        assert_eq!(dev.open(B, "k", b"{\"a\":\"b\"}"), Ok(Opened::Put(b"{\"a\":\"b\"}")));
        assert_eq!(dev.bare_delete(), Ok(()));
        // A config whose keys happen to be the envelope's is still plain.
        let config = br#"{"record":"x","seal":"y"}"#;
        assert_eq!(Stored::parse(config), Stored::Plain(config));
        assert_eq!(Stored::parse(b"not json").contents(), Some(&b"not json"[..]));
    }
}
