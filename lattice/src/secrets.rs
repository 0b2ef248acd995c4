//! Secrets: values sealed to the lattice's secrets key, in their own JetStream KV bucket
//! (`TRELLIS_<lattice>_SECRETS`).
//!
//! The lattice has one curve25519 key pair (an nkeys `XKey`, `trellis keys gen secrets`). Hosts
//! hold its seed (`trellis host --secrets-seed`); the CLI needs only its public half (`X...`) to
//! seal, so an operator who may write secrets cannot read them back. A stored secret is JSON,
//! `{"v": 1, "sender": "X...", "box": "<base64url>"}`: `box` is an nkeys xkey seal (NaCl box,
//! XSalsa20-Poly1305) from a one-time `sender` key to the lattice key. What is sealed binds the
//! value to its place, `trellis-secret/1`, the lattice and the name, each on its own line, then
//! the value, so a secret copied under another name or into another lattice does not open
//! there. Written through [`SecretStore`], the JSON is itself an operator-sealed record (see
//! [`crate::record`]), so a NATS user who knows the public key still cannot plant one that a
//! strict host takes.
//!
//! The same form carries a secret from a host to an admin operator (`trellis secret get`): the
//! host seals it to a one-time key the operator sent with the request.
//!
//! ```
//! use nkeys::XKey;
//! use trellis_lattice::secrets::{SecretValue, SealedSecret};
//!
//! let lattice_key = XKey::new();
//! let public = XKey::from_public_key(&lattice_key.public_key()).unwrap();
//! let sealed = SealedSecret::seal(&public, "prod", "db", &SecretValue::new("hunter2")).unwrap();
//! let opened = sealed.open(&lattice_key, "prod", "db").unwrap();
//! assert_eq!(opened.expose(), "hunter2");
//! assert!(sealed.open(&XKey::new(), "prod", "db").is_err(), "another lattice's key");
//! assert!(sealed.open(&lattice_key, "prod", "api").is_err(), "moved to another name");
//! ```

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use nkeys::XKey;
use serde::{Deserialize, Serialize};

use crate::signing::OperatorKey;
use crate::state::{StateError, live_keys, open_kv_with, read_record, write_record};

/// Domain separation: what a secret's box holds starts with this line.
const TAG: &str = "trellis-secret/1";
/// The stored form's version.
const VERSION: u32 = 1;
/// The largest value a secret may hold (a config value, a key, a certificate).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret could not be sealed or opened. No variant carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A key is not an xkey of the expected kind.
    #[error(
        "`{key}` is not a curve key {expected}: make one with `trellis keys gen secrets` ({reason})"
    )]
    BadKey {
        /// The key as given, public keys only (seeds are never echoed).
        key: String,
        /// What was expected (`public key (X...)` or `seed (SX...)`).
        expected: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The stored bytes are not a sealed secret.
    #[error(
        "secret `{name}` is not a sealed secret ({reason}); write it again with `trellis secret put`"
    )]
    Malformed {
        /// The secret's name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The box does not open with this key, or opens for another place.
    #[error(
        "secret `{name}` cannot be opened with the secrets key {key}: it was sealed to another \
         lattice's key, altered, or copied from another name or lattice; put it again with \
         `trellis secret put --xkey <this lattice's X... key>`"
    )]
    CannotOpen {
        /// The secret's name.
        name: String,
        /// The public half of the key tried.
        key: String,
    },
    /// The value is not UTF-8 (wasi:config values are strings).
    #[error("the value of secret `{name}` is not UTF-8 text; components read secrets as strings")]
    NotText {
        /// The secret's name.
        name: String,
    },
    /// The value is larger than [`MAX_SECRET_BYTES`].
    #[error("the value of secret `{name}` has {len} bytes; at most {MAX_SECRET_BYTES} are kept")]
    TooLarge {
        /// The secret's name.
        name: String,
        /// Its length.
        len: usize,
    },
}

/// A secret's value in the clear. It never prints: `Debug` shows its length only, and there is
/// no `Display`; read it with [`SecretValue::expose`] where it must be used.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that hands it on (a component's wasi:config, the admin's
    /// terminal).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(<{} bytes, redacted>)", self.0.len())
    }
}

/// A secret as stored: sealed to one key, bound to a lattice and a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// The stored form's version ([`VERSION`]).
    pub v: u32,
    /// The public key (`X...`) that sealed it: one-time for a put.
    pub sender: String,
    /// base64url of the xkey seal.
    #[serde(rename = "box")]
    pub sealed: String,
}

impl SealedSecret {
    /// Seals `value` of secret `name` in `lattice` to `recipient` (a public xkey), from a fresh
    /// one-time key.
    pub fn seal(
        recipient: &XKey,
        lattice: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<Self, SecretError> {
        Self::seal_from(&XKey::new(), recipient, lattice, name, value)
    }

    /// Seals `value` of secret `name` in `lattice` from `sender` (holding its seed) to
    /// `recipient`.
    pub fn seal_from(
        sender: &XKey,
        recipient: &XKey,
        lattice: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<Self, SecretError> {
        if value.0.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge { name: name.to_owned(), len: value.0.len() });
        }
        let mut plain = bound(lattice, name).into_bytes();
        plain.extend_from_slice(value.0.as_bytes());
        let sealed = sender.seal(&plain, recipient).map_err(|e| SecretError::BadKey {
            key: recipient.public_key(),
            expected: "public key (X...)",
            reason: e.to_string(),
        })?;
        Ok(Self { v: VERSION, sender: sender.public_key(), sealed: URL_SAFE_NO_PAD.encode(sealed) })
    }

    /// Opens it with `key` (holding its seed) as secret `name` of `lattice`.
    pub fn open(&self, key: &XKey, lattice: &str, name: &str) -> Result<SecretValue, SecretError> {
        let malformed =
            |reason: &str| SecretError::Malformed { name: name.to_owned(), reason: reason.into() };
        if self.v != VERSION {
            return Err(malformed("unknown version"));
        }
        let sender = XKey::from_public_key(&self.sender)
            .map_err(|_| malformed("its sender is not a public curve key"))?;
        let sealed = URL_SAFE_NO_PAD
            .decode(&self.sealed)
            .map_err(|_| malformed("its box is not base64url"))?;
        let cannot = || SecretError::CannotOpen { name: name.to_owned(), key: key.public_key() };
        let plain = key.open(&sealed, &sender).map_err(|_| cannot())?;
        let value = plain.strip_prefix(bound(lattice, name).as_bytes()).ok_or_else(cannot)?;
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| SecretError::NotText { name: name.to_owned() })?;
        Ok(SecretValue(value))
    }

    /// Its stored form (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and a number always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form of secret `name`.
    pub fn from_json(name: &str, json: &[u8]) -> Result<Self, SecretError> {
        serde_json::from_slice(json)
            .map_err(|e| SecretError::Malformed { name: name.to_owned(), reason: e.to_string() })
    }
}

/// What precedes the value in a box: the tag, lattice and name, one per line.
fn bound(lattice: &str, name: &str) -> String {
    format!("{TAG}\n{lattice}\n{name}\n")
}

/// The public xkey `X...` in `key`.
pub fn public_xkey(key: &str) -> Result<XKey, SecretError> {
    XKey::from_public_key(key.trim()).map_err(|e| SecretError::BadKey {
        key: key.trim().to_owned(),
        expected: "public key (X...)",
        reason: e.to_string(),
    })
}

/// The xkey pair whose seed (`SX...`) is `seed`.
pub fn xkey_from_seed(seed: &str) -> Result<XKey, SecretError> {
    XKey::from_seed(seed.trim()).map_err(|e| SecretError::BadKey {
        key: "the seed given".to_owned(),
        expected: "seed (SX...)",
        reason: e.to_string(),
    })
}

/// The lattice's secrets bucket.
#[derive(Clone)]
pub struct SecretStore {
    kv: kv::Store,
    /// Seals what it writes (see [`crate::record`]); `None`: writes plain (development).
    sealer: Option<Arc<OperatorKey>>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore").field("bucket", &self.kv.name).finish_non_exhaustive()
    }
}

/// The name of `lattice`'s secrets bucket.
pub fn bucket(lattice: &str) -> String {
    format!("TRELLIS_{lattice}_SECRETS")
}

impl SecretStore {
    /// Opens (creating when missing) the secrets bucket of `lattice`: one revision per key,
    /// so an overwritten secret's old box does not linger.
    pub async fn open(
        js: &jetstream::Context,
        lattice: &str,
        replicas: usize,
    ) -> Result<Self, StateError> {
        let config = kv::Config {
            bucket: bucket(lattice),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        };
        Ok(Self { kv: open_kv_with(js, config).await?, sealer: None })
    }

    /// Seals what it writes with `operator`'s key (strict hosts take only sealed secrets).
    pub fn with_sealer(mut self, operator: Option<Arc<OperatorKey>>) -> Self {
        self.sealer = operator;
        self
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    /// Stores `secret` as `name`, replacing any; returns the KV revision written.
    pub async fn put(&self, name: &str, secret: &SealedSecret) -> Result<u64, StateError> {
        write_record(&self.kv, self.sealer.as_deref(), name, Some(secret.to_json())).await
    }

    /// The raw KV value under `name` (an operator-sealed record, for a reader's
    /// [`crate::record::RecordGate`]), if there is one.
    pub async fn entry(&self, name: &str) -> Result<Option<Bytes>, StateError> {
        self.kv
            .get(name)
            .await
            .map_err(|e| StateError::JetStream { op: "secret get", reason: e.to_string() })
    }

    /// Whether a secret `name` exists (a tombstone is none).
    pub async fn exists(&self, name: &str) -> Result<bool, StateError> {
        Ok(read_record(&self.kv, name).await?.is_some())
    }

    /// Deletes secret `name`; `Ok(false)` when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, StateError> {
        let existed = self.exists(name).await?;
        if existed {
            write_record(&self.kv, self.sealer.as_deref(), name, None).await?;
        }
        Ok(existed)
    }

    /// The names of every secret, sorted (never their values).
    pub async fn names(&self) -> Result<Vec<String>, StateError> {
        live_keys(&self.kv, "secret list").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (XKey, XKey) {
        let key = XKey::new();
        let public = XKey::from_public_key(&key.public_key()).unwrap();
        (key, public)
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_in_its_place() {
        let (key, public) = pair();
        let value = SecretValue::new("s3cr3t-value");
        let sealed = SealedSecret::seal(&public, "prod", "db", &value).unwrap();
        let json = sealed.to_json();
        assert!(!String::from_utf8_lossy(&json).contains("s3cr3t"), "no plaintext stored");
        let back = SealedSecret::from_json("db", &json).unwrap();
        assert_eq!(back.open(&key, "prod", "db").unwrap(), value);

        let (other, _) = pair();
        let other_key = other.public_key();
        assert_eq!(
            back.open(&other, "prod", "db"),
            Err(SecretError::CannotOpen { name: "db".into(), key: other_key })
        );
        assert!(matches!(back.open(&key, "dev", "db"), Err(SecretError::CannotOpen { .. })));
        assert!(matches!(back.open(&key, "prod", "db2"), Err(SecretError::CannotOpen { .. })));
        assert!(public.seed().is_err(), "a public key cannot open");
        assert!(back.open(&public, "prod", "db").is_err());
    }

    #[test]
    fn altered_or_malformed_secrets_are_refused_without_panicking() {
        let (key, public) = pair();
        let mut sealed = SealedSecret::seal(&public, "prod", "db", &SecretValue::new("v")).unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed.sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        sealed.sealed = URL_SAFE_NO_PAD.encode(raw);
        assert!(matches!(sealed.open(&key, "prod", "db"), Err(SecretError::CannotOpen { .. })));
        for json in [&b"{}"[..], b"not json", br#"{"v":1,"sender":"X","box":"!"}"#] {
            let parsed = SealedSecret::from_json("db", json);
            if let Ok(s) = parsed {
                assert!(matches!(s.open(&key, "prod", "db"), Err(SecretError::Malformed { .. })));
            }
        }
        let short = SealedSecret { v: 1, sender: public.public_key(), sealed: "AAAA".into() };
        assert!(short.open(&key, "prod", "db").is_err());
    }

    #[test]
    fn the_value_never_prints() {
        let value = SecretValue::new("hunter2");
        let shown = format!("{value:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let err = SealedSecret::seal(
            &pair().1,
            "l",
            "n",
            &SecretValue::new("x".repeat(MAX_SECRET_BYTES + 1)),
        )
        .unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }));
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused() {
        assert!(matches!(public_xkey("nope"), Err(SecretError::BadKey { .. })));
        let operator = nkeys::KeyPair::new_operator();
        assert!(public_xkey(&operator.public_key()).is_err());
        let seed_err = xkey_from_seed(&operator.seed().unwrap()).unwrap_err();
        assert!(!seed_err.to_string().contains(&operator.seed().unwrap()), "seed not echoed");
        let key = XKey::new();
        assert_eq!(xkey_from_seed(&key.seed().unwrap()).unwrap().public_key(), key.public_key());
    }
}
