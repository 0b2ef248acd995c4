//! The host's side of the lattice's compile cache (docs/design/compile-cache.md): before
//! compiling an artifact, look for code another host compiled for an engine like ours, check
//! its seal and load it; after compiling, store ours, sealed, for the others. Any miss or
//! refusal compiles, as without a cache; storing runs after the start, never in its way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream;
use trellis_lattice::compiled::{CompiledStore, Entry};
use trellis_lattice::signing::verify_code;

use crate::config::HostConfig;
use crate::router::Router;
use crate::runtime::{Component, Generation, LoadError, Runtime};

/// Where a component's code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Loaded from the cache: compiled and sealed by this host.
    Cache { signer: String },
    /// Compiled here: the cache had none, or `refused` says why its entry was not used.
    Compiled { refused: Option<String> },
}

/// A lattice's compile cache, as one host uses it.
#[derive(Debug)]
pub(crate) struct CompileCache {
    store: CompiledStore,
    /// Cluster keys whose hosts' code this host loads (empty: any host's, development only).
    trusted_clusters: Vec<String>,
    counts: Counts,
}

/// What the cache did since the host started.
#[derive(Debug, Default)]
struct Counts {
    loaded: AtomicU64,
    compiled: AtomicU64,
    refused: AtomicU64,
    stored: AtomicU64,
    store_failed: AtomicU64,
}

impl CompileCache {
    /// The cache over `store`, loading code sealed by hosts of `trusted_clusters`.
    pub fn new(store: CompiledStore, trusted_clusters: Vec<String>) -> Self {
        Self { store, trusted_clusters, counts: Counts::default() }
    }

    /// The cache of the lattice `config` joins, unless it is off: by `--no-compile-cache`, or
    /// because nothing could vouch for the hosts that wrote it (no `--trusted-cluster` outside
    /// development), or when its bucket cannot be opened.
    pub async fn open(config: &HostConfig, js: &jetstream::Context) -> Option<Arc<Self>> {
        if !config.compile_cache {
            tracing::info!("compile cache off (--no-compile-cache): every start compiles");
            return None;
        }
        if config.trusted_clusters.is_empty() && !config.allow_unsigned {
            tracing::info!(
                "compile cache off: without --trusted-cluster nothing vouches for the hosts that \
                 would write it, and compiled code runs as this host"
            );
            return None;
        }
        match CompiledStore::open(js, &config.lattice, config.js_replicas).await {
            Ok(store) => Some(Arc::new(Self::new(store, config.trusted_clusters.clone()))),
            Err(e) => {
                tracing::warn!(error = %e, "compile cache off: cannot open its bucket");
                None
            }
        }
    }

    /// The entry under `key`, unverified, if the cache has one (a failed read is a miss).
    pub async fn fetch(&self, key: &str) -> Option<Entry> {
        match self.store.get(key).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot read the compile cache; compiling");
                None
            }
        }
    }

    /// Whether the cache holds code under `key` whose seal this host accepts (compile ahead
    /// skips such an artifact). Reads and hashes the entry: call off the hot path.
    pub async fn holds(&self, key: &str, now_s: u64) -> bool {
        let Some(Entry { code, seal }) = self.fetch(key).await else { return false };
        let (trusted, key) = (self.trusted_clusters.clone(), key.to_owned());
        crate::runtime::compile::low_priority(move || {
            verify_code(&seal, &key, code, &trusted, now_s).is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Loads `digest` from `entry` when its seal verifies and wasmtime takes it; compiles
    /// `bytes` otherwise. CPU-heavy: call from a compile thread.
    pub fn load_or_compile(
        &self,
        runtime: &Runtime,
        (digest, generation, key): (&str, Generation, &str),
        bytes: &[u8],
        entry: Option<Entry>,
        now_s: u64,
    ) -> Result<(Component, Source), LoadError> {
        let refused = match entry {
            None => None,
            Some(Entry { code, seal }) => {
                match verify_code(&seal, key, code, &self.trusted_clusters, now_s) {
                    Ok(code) => match runtime.load_cached(digest, generation, &code) {
                        Ok(component) => {
                            let signer = code.signer().to_owned();
                            return Ok((component, Source::Cache { signer }));
                        }
                        Err(e) => Some(e.to_string()),
                    },
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        Ok((runtime.load(digest, bytes)?, Source::Compiled { refused }))
    }

    /// Logs and counts where `digest`'s code came from.
    pub fn note(&self, digest: &str, source: &Source) {
        match source {
            Source::Cache { signer } => {
                self.counts.loaded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(digest, compiled_by = %signer, "loaded from the compile cache");
            }
            Source::Compiled { refused: None } => {
                self.counts.compiled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(digest, "not in the compile cache; compiled");
            }
            Source::Compiled { refused: Some(reason) } => {
                self.counts.compiled.fetch_add(1, Ordering::Relaxed);
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(digest, %reason, "compile cache entry refused; compiled instead");
            }
        }
    }

    /// Stores the code of `digest` compiled by `runtime` under `key`, sealed by this host
    /// (`router`'s signer), in the background: the start that compiled it does not wait.
    /// Compile ahead waits on the task: `true` once stored.
    pub fn store_later(
        self: &Arc<Self>,
        (digest, key): (&str, &str),
        runtime: Runtime,
        router: Arc<Router>,
    ) -> tokio::task::JoinHandle<bool> {
        let (cache, digest, key) = (self.clone(), digest.to_owned(), key.to_owned());
        tokio::spawn(async move {
            let sealed = crate::runtime::compile::low_priority({
                let (digest, key) = (digest.clone(), key.clone());
                move || {
                    let code = runtime.serialized(&digest)?.map_err(|e| e.to_string());
                    Some(code.map(|code| (router.signer().seal_code(&key, &code), code)))
                }
            })
            .await;
            let result = match sealed {
                // Stopped (and evicted) before it could be stored: nothing to share.
                Ok(None) => return false,
                Ok(Some(Ok((seal, code)))) => {
                    cache.store.put(&key, &code, &seal).await.map_err(|e| e.to_string())
                }
                Ok(Some(Err(e))) | Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    cache.counts.stored.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(digest, key, "stored in the compile cache");
                    true
                }
                Err(e) => {
                    cache.counts.store_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(digest, error = %e, "cannot store in the compile cache");
                    false
                }
            }
        })
    }

    /// Counts by result, for metrics: loaded, compiled, refused, stored, store_failed.
    pub fn counts(&self) -> [(&'static str, u64); 5] {
        let c = &self.counts;
        [
            ("loaded", &c.loaded),
            ("compiled", &c.compiled),
            ("refused", &c.refused),
            ("stored", &c.stored),
            ("store_failed", &c.store_failed),
        ]
        .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
    }
}
