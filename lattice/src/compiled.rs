//! The lattice's compile cache: components compiled by one host, stored for the others in the
//! JetStream object store `TRELLIS_<lattice>_COMPILED` (docs/design/compile-cache.md).
//!
//! An entry is keyed by [`cache_key`] (the artifact's digest, the engine's compatibility hash
//! and the target) and holds the compiled code; its [`CodeSeal`] (the writing host's key,
//! signature and cluster identity) rides in the object's metadata. Only hosts may write the
//! bucket (`trellis nats permissions`), and a reader checks the seal with
//! [`crate::signing::verify_code`] before it loads anything.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use sha2::{Digest, Sha256};

use crate::objects::{Limits, Objects};
use crate::signing::{CodeSeal, IDENTITY_TTL_S};
use crate::state::{StateError, js_err};

/// Object metadata: the sealing host's key.
const META_HOST: &str = "trellis-host";
/// Object metadata: the seal's signature.
const META_SIG: &str = "trellis-sig";
/// Object metadata: the sealing host's identity token.
const META_IDENTITY: &str = "trellis-host-identity";
/// Chunks of compiled code: larger than the store's 128 KiB default (fewer messages for tens
/// of MiB of code), well under NATS' default 1 MiB `max_payload`.
const CHUNK: usize = 512 << 10;
/// How long the server keeps an entry: the life of the identity token that seals it. A reader
/// refuses an entry whose writer's token has expired, and a token is at most this old when the
/// entry is written, so nothing older is of use: the bucket holds at most one token lifetime of
/// what hosts compiled, and an artifact still started after that is compiled once more and
/// stored again.
pub const MAX_AGE: Duration = Duration::from_secs(IDENTITY_TTL_S);

/// The bucket of `lattice`'s compile cache.
pub fn bucket(lattice: &str) -> String {
    format!("TRELLIS_{lattice}_COMPILED")
}

/// The cache key of `artifact` (`sha256:<hex>`) compiled by an engine whose settings that
/// change code hash to `engine` for `target`: hex SHA-256 over the three, length-prefixed.
pub fn cache_key(artifact: &str, engine: &str, target: &str) -> String {
    let mut h = Sha256::new();
    for part in [artifact, engine, target] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An entry read from the cache, not yet verified.
#[derive(Debug)]
pub struct Entry {
    /// The compiled code.
    pub code: Vec<u8>,
    /// Who says they compiled it (empty fields when the entry carries no seal).
    pub seal: CodeSeal,
}

/// A handle on a lattice's compile cache.
#[derive(Clone)]
pub struct CompiledStore {
    store: Objects,
}

impl std::fmt::Debug for CompiledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledStore").finish_non_exhaustive()
    }
}

impl CompiledStore {
    /// Opens the cache of `lattice`, creating its bucket with `replicas` replicas if missing;
    /// entries expire after [`MAX_AGE`] (set on a bucket an older host created without it).
    pub async fn open(
        js: &jetstream::Context,
        lattice: &str,
        replicas: usize,
    ) -> Result<Self, StateError> {
        let limits = Limits { replicas, max_age: MAX_AGE };
        Ok(Self { store: Objects::open(js, &bucket(lattice), limits).await? })
    }

    /// The entry under `key`, if there is one.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        let Some((info, code)) = self.store.read(key).await? else {
            return Ok(None);
        };
        let field = |name: &str| info.metadata.get(name).cloned().unwrap_or_default();
        let seal = CodeSeal {
            host: field(META_HOST),
            signature: field(META_SIG),
            identity: info.metadata.get(META_IDENTITY).cloned(),
        };
        Ok(Some(Entry { code, seal }))
    }

    /// Stores `code` under `key` with its `seal`, replacing what was there.
    pub async fn put(&self, key: &str, code: &[u8], seal: &CodeSeal) -> Result<(), StateError> {
        let mut metadata = HashMap::from([
            (META_HOST.to_owned(), seal.host.clone()),
            (META_SIG.to_owned(), seal.signature.clone()),
        ]);
        if let Some(identity) = &seal.identity {
            metadata.insert(META_IDENTITY.to_owned(), identity.clone());
        }
        let meta = object_store::ObjectMetadata {
            name: key.to_owned(),
            chunk_size: Some(CHUNK),
            metadata,
            ..Default::default()
        };
        let mut reader = code;
        self.store
            .store()
            .put(meta, &mut reader)
            .await
            .map(drop)
            .map_err(|e| js_err("compiled code upload")(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_each_part_and_no_bytes_move_between_parts() {
        let key = cache_key("sha256:ab", "e1", "x86_64-linux");
        assert_eq!(key.len(), 64);
        assert_ne!(key, cache_key("sha256:ac", "e1", "x86_64-linux"));
        assert_ne!(key, cache_key("sha256:ab", "e2", "x86_64-linux"));
        assert_ne!(key, cache_key("sha256:ab", "e1", "aarch64-linux"));
        assert_ne!(cache_key("a", "bc", "t"), cache_key("ab", "c", "t"));
    }
}
