//! Lattice state in JetStream: links and named config in KV, artifacts in the object store.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use bytes::Bytes;

use crate::envelope::unix_ms;
use crate::link::{InterfaceName, Link, link_key, source_filter};
use crate::objects::{Limits, Objects};
use crate::record::{self, Stored};
use crate::signing::OperatorKey;

/// A JetStream operation on lattice state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// JetStream is missing or the bucket cannot be opened or created.
    #[error(
        "cannot open JetStream bucket `{bucket}`: {reason}. Is nats-server (2.10 or newer) \
         running with JetStream enabled (`nats-server -js`)?"
    )]
    Bucket {
        /// Bucket name.
        bucket: String,
        /// Underlying error.
        reason: String,
    },
    /// The artifact is not in the store.
    #[error(
        "artifact {digest} is not in the lattice artifact store; upload it with `trellis start component <file>`"
    )]
    ArtifactMissing {
        /// The digest asked for.
        digest: String,
    },
    /// Stored bytes do not hash to the digest they are stored under.
    #[error("artifact {digest} is corrupt: its content hashes to {actual}")]
    ArtifactCorrupt {
        /// Expected digest.
        digest: String,
        /// What the content hashes to.
        actual: String,
    },
    /// A stored config could not be decoded.
    #[error("config `{name}` in the CONFIG bucket is not a JSON object of strings: {reason}")]
    BadConfig {
        /// Config name.
        name: String,
        /// Decoder error.
        reason: String,
    },
    /// A stored link could not be decoded.
    #[error("link `{key}` in the LINKS bucket is not valid JSON: {reason}")]
    BadLink {
        /// KV key.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
    /// A stored application record or status could not be decoded.
    #[error("`{key}` in the APPS bucket is not valid: {reason}")]
    BadRecord {
        /// KV key.
        key: String,
        /// Decoder error.
        reason: String,
    },
    /// A record's seal was refused (see [`crate::record`]).
    #[error("`{key}` was not applied: {reason}")]
    Refused {
        /// KV key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Any other JetStream failure.
    #[error("JetStream {op} failed: {reason}")]
    JetStream {
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        reason: String,
    },
}

pub(crate) fn js_err(op: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> StateError {
    move |e| StateError::JetStream { op, reason: e.to_string() }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Handles on one lattice's JetStream buckets.
#[derive(Clone)]
pub struct LatticeState {
    links: kv::Store,
    config: kv::Store,
    artifacts: Objects,
    /// Seals links and config written through this handle (see [`crate::record`]).
    sealer: Option<Arc<OperatorKey>>,
}

/// A named config: string keys and values.
pub type Config = BTreeMap<String, String>;

impl std::fmt::Debug for LatticeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatticeState").field("links", &self.links.name).finish_non_exhaustive()
    }
}

impl LatticeState {
    /// Opens (creating when missing, with one replica) the buckets of `lattice`.
    pub async fn open(js: &jetstream::Context, lattice: &str) -> Result<Self, StateError> {
        Self::open_replicated(js, lattice, 1).await
    }

    /// Opens the buckets of `lattice`, creating missing ones with `replicas` replicas (3 on a
    /// 3-node cluster, so they survive a server); existing buckets keep theirs.
    pub async fn open_replicated(
        js: &jetstream::Context,
        lattice: &str,
        replicas: usize,
    ) -> Result<Self, StateError> {
        let links = open_kv(js, &format!("TRELLIS_{lattice}_LINKS"), replicas).await?;
        let config = open_kv(js, &format!("TRELLIS_{lattice}_CONFIG"), replicas).await?;
        let limits = Limits { replicas, ..Default::default() };
        let artifacts = Objects::open(js, &format!("TRELLIS_{lattice}_ARTIFACTS"), limits).await?;
        Ok(Self { links, config, artifacts, sealer: None })
    }

    /// Seals the links and config it writes with `operator`'s key (strict hosts and providers
    /// apply only sealed state); `None` writes them plain (development lattices).
    pub fn with_sealer(mut self, operator: Option<Arc<OperatorKey>>) -> Self {
        self.sealer = operator;
        self
    }

    /// Writes `record` (JSON; `None`: deletes) under `key`, sealed when this handle has a key.
    async fn write(
        &self,
        store: &kv::Store,
        key: &str,
        record: Option<Vec<u8>>,
    ) -> Result<u64, StateError> {
        write_record(store, self.sealer.as_deref(), key, record).await
    }

    /// The record under `key`, unverified, if there is one (a tombstone is none).
    async fn read(&self, store: &kv::Store, key: &str) -> Result<Option<Bytes>, StateError> {
        read_record(store, key).await
    }

    /// Stores `bytes` under their digest (skipping the upload when present); returns the digest.
    pub async fn put_artifact(&self, bytes: &[u8]) -> Result<String, StateError> {
        let digest = digest_of(bytes);
        if self.artifacts.store().info(&digest).await.is_ok() {
            return Ok(digest);
        }
        let mut reader = bytes;
        self.artifacts
            .store()
            .put(digest.as_str(), &mut reader)
            .await
            .map_err(|e| js_err("artifact upload")(&e))?;
        Ok(digest)
    }

    /// Whether the store holds an artifact under `digest`.
    pub async fn has_artifact(&self, digest: &str) -> Result<bool, StateError> {
        match self.artifacts.store().info(digest).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
            Err(e) => Err(js_err("artifact lookup")(&e)),
        }
    }

    /// Fetches an artifact and checks that it hashes to `digest`.
    pub async fn get_artifact(&self, digest: &str) -> Result<Vec<u8>, StateError> {
        let Some((_, bytes)) = self.artifacts.read(digest).await? else {
            return Err(StateError::ArtifactMissing { digest: digest.to_owned() });
        };
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(StateError::ArtifactCorrupt { digest: digest.to_owned(), actual });
        }
        Ok(bytes)
    }

    /// Creates or replaces a link (idempotent); returns the KV revision written.
    pub async fn put_link(&self, link: &Link) -> Result<u64, StateError> {
        let json = serde_json::to_vec(link).map_err(|e| js_err("link encode")(&e))?;
        self.write(&self.links, &link.key(), Some(json)).await
    }

    /// Deletes a link; `Ok(false)` when there was none.
    pub async fn delete_link(
        &self,
        source: &str,
        interface: &InterfaceName,
        name: &str,
    ) -> Result<bool, StateError> {
        let key = link_key(source, interface, name);
        let existed = self.read(&self.links, &key).await?.is_some();
        if existed {
            self.write(&self.links, &key, None).await?;
        }
        Ok(existed)
    }

    /// Every link in the lattice, sorted by key.
    pub async fn links(&self) -> Result<Vec<Link>, StateError> {
        let mut keys: Vec<String> = match self.links.keys().await {
            Ok(keys) => keys.filter_map(|k| async move { k.ok() }).collect().await,
            Err(e) => return Err(js_err("link list")(&e)),
        };
        keys.sort();
        let mut links = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(bytes) = self.read(&self.links, &key).await? {
                links.push(decode_link(&key, &bytes)?);
            }
        }
        Ok(links)
    }

    /// Watches the links of `source`: first every current link, then each change, live.
    pub async fn watch_links(&self, source: &str) -> Result<kv::Watch, StateError> {
        self.links
            .watch_with_history(source_filter(source))
            .await
            .map_err(|e| js_err("link watch")(&e))
    }
}

impl LatticeState {
    /// Whether the LINKS bucket holds nothing at all (a watch of it then starts silent).
    pub async fn links_empty(&self) -> Result<bool, StateError> {
        let status = self.links.status().await.map_err(|e| js_err("link status")(&e))?;
        Ok(status.info.state.messages == 0)
    }

    /// Watches every link of the lattice: first the current ones, then each change, live.
    pub async fn watch_all_links(&self) -> Result<kv::Watch, StateError> {
        self.links.watch_with_history(">").await.map_err(|e| js_err("link watch")(&e))
    }
}

impl LatticeState {
    /// Creates or replaces named config `name` (idempotent).
    pub async fn put_config(&self, name: &str, config: &Config) -> Result<u64, StateError> {
        let json = serde_json::to_vec(config).map_err(|e| js_err("config encode")(&e))?;
        self.write(&self.config, name, Some(json)).await
    }

    /// Named config `name`, if it exists.
    pub async fn get_config(&self, name: &str) -> Result<Option<Config>, StateError> {
        match self.read(&self.config, name).await? {
            Some(bytes) => decode_config(name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes named config `name`; `Ok(false)` when there was none.
    pub async fn delete_config(&self, name: &str) -> Result<bool, StateError> {
        let existed = self.read(&self.config, name).await?.is_some();
        if existed {
            self.write(&self.config, name, None).await?;
        }
        Ok(existed)
    }

    /// The names of every named config, sorted.
    pub async fn config_names(&self) -> Result<Vec<String>, StateError> {
        live_keys(&self.config, "config list").await
    }

    /// Watches every named config: first the current ones, then each change, live.
    pub async fn watch_config(&self) -> Result<kv::Watch, StateError> {
        self.config.watch_with_history(">").await.map_err(|e| js_err("config watch")(&e))
    }
}

/// Writes `record` (JSON; `None`: deletes) under `key` of `store`, sealed by `sealer` when
/// there is one (see [`crate::record`]); returns the KV revision written.
pub(crate) async fn write_record(
    store: &kv::Store,
    sealer: Option<&OperatorKey>,
    key: &str,
    record: Option<Vec<u8>>,
) -> Result<u64, StateError> {
    let Some(operator) = sealer else {
        return match record {
            Some(json) => store.put(key, json.into()).await.map_err(|e| js_err("put")(&e)),
            None => store.delete(key).await.map(|()| 0).map_err(|e| js_err("delete")(&e)),
        };
    };
    let sealed = record::seal(operator, &store.name, key, record.as_deref(), unix_ms())
        .map_err(|e| js_err("seal")(&e))?;
    store.put(key, sealed.into()).await.map_err(|e| js_err("put")(&e))
}

/// The record under `key` of `store`, unverified, if there is one (a tombstone is none).
pub(crate) async fn read_record(store: &kv::Store, key: &str) -> Result<Option<Bytes>, StateError> {
    let Some(bytes) = store.get(key).await.map_err(|e| js_err("get")(&e))? else {
        return Ok(None);
    };
    Ok(Stored::parse(&bytes).contents().map(Bytes::copy_from_slice))
}

/// The keys of `store` that hold a record (not a tombstone), sorted.
pub(crate) async fn live_keys(
    store: &kv::Store,
    what: &'static str,
) -> Result<Vec<String>, StateError> {
    let mut keys: Vec<String> = match store.keys().await {
        Ok(keys) => keys.filter_map(|k| async move { k.ok() }).collect().await,
        Err(e) => return Err(js_err(what)(&e)),
    };
    keys.sort();
    // A deletion sealed by an operator stays as a tombstone.
    let mut live = Vec::with_capacity(keys.len());
    for key in keys {
        if read_record(store, &key).await?.is_some() {
            live.push(key);
        }
    }
    Ok(live)
}

/// Decodes named config `name`.
pub fn decode_config(name: &str, bytes: &[u8]) -> Result<Config, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::BadConfig { name: name.to_owned(), reason: e.to_string() })
}

/// Decodes a link stored under `key`.
pub fn decode_link(key: &str, bytes: &[u8]) -> Result<Link, StateError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StateError::BadLink { key: key.to_owned(), reason: e.to_string() })
}

/// Opens a KV bucket keeping 5 revisions per key with `replicas` replicas, creating it when
/// missing.
pub async fn open_kv(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, StateError> {
    let config = kv::Config {
        bucket: bucket.to_owned(),
        history: 5,
        num_replicas: replicas,
        ..Default::default()
    };
    open_kv_with(js, config).await
}

/// Opens a KV bucket, creating it as `config` says when missing.
pub async fn open_kv_with(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, StateError> {
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another process may have created it between our two calls.
        Err(create) => js
            .get_key_value(&bucket)
            .await
            .map_err(|_| StateError::Bucket { bucket, reason: create.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_prefixed_hex_sha256() {
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
