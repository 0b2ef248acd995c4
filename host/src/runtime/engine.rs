//! The wasmtime engine: pooling allocator sized from limits, epoch interruption on its own thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, PoolingAllocationConfig};

use sha2::{Digest, Sha256};
use trellis_lattice::signing::VerifiedCode;

use super::component::{Component, LoadError};
use super::state::CallState;
use super::warm::Budget;

/// How often the epoch advances: the longest a guest runs before yielding to other tasks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Calls in flight on this host. The pool holds three times as many instances: room for
    /// one in-process call from each to another component, and as many idle warm instances
    /// (components that reuse instances).
    pub max_instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory_bytes: usize,
    /// Allocate instances on demand instead of from a pre-reserved pool. Slower; for machines
    /// where reserving the pool's address space fails.
    pub on_demand_allocator: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { max_instances: 256, max_memory_bytes: 64 << 20, on_demand_allocator: false }
    }
}

/// A wasmtime engine with the Trellis linker; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    /// Compiled components by digest: starting the same artifact twice compiles it once.
    compiled: Mutex<HashMap<String, wasmtime::component::Component>>,
    /// What code compiled by this engine is compatible with (see [`Runtime::cache_key`]).
    engine_hash: String,
    /// Idle warm instances, over all components.
    warm: Arc<Budget>,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let engine = match build_engine(&config, Reset::DirtyPages) {
            Ok(engine) => engine,
            // Without the PAGEMAP_SCAN ioctl (Linux before 6.7, other systems), slots are reset
            // with madvise, as by wasmtime's defaults.
            Err(_) if !config.on_demand_allocator => build_engine(&config, Reset::Madvise)?,
            Err(e) => return Err(e),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| super::keyvalue::add_to_linker(&mut linker))
            .and_then(|()| super::config::add_to_linker(&mut linker))
            .and_then(|()| super::blobstore::add_to_linker(&mut linker))
            .and_then(|()| super::bus::add_to_linker(&mut linker))
            .and_then(|()| super::secrets::add_to_linker(&mut linker))
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;
        let engine_hash = engine_hash(&engine);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                warm: Budget::new(config.max_instances as usize),
                config,
                compiled: Mutex::new(HashMap::new()),
                engine_hash,
                ticker_stop,
            }),
        })
    }

    /// The limits this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The host-wide budget of idle warm instances.
    pub(super) fn warm_budget(&self) -> Arc<Budget> {
        self.inner.warm.clone()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compiles (or reuses) and validates the component in `bytes`, known by `digest`.
    ///
    /// CPU-heavy: call from a blocking thread.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(compiled) = self.lock_compiled().get(digest).cloned() {
            return Component::new(self.clone(), &self.inner.linker, compiled);
        }
        let compiled = super::component::compile(&self.inner.engine, bytes)?;
        let component = Component::new(self.clone(), &self.inner.linker, compiled.clone())?;
        // Cache only what links: a rejected artifact must not stay compiled in memory.
        self.lock_compiled().insert(digest.to_owned(), compiled);
        Ok(component)
    }

    /// The component of `digest` if its code is already compiled here: starting another
    /// component from a known artifact needs no fetch and no compile.
    pub fn load_compiled(&self, digest: &str) -> Option<Result<Component, LoadError>> {
        let compiled = self.lock_compiled().get(digest).cloned()?;
        Some(Component::new(self.clone(), &self.inner.linker, compiled))
    }

    /// The key of `digest`'s compiled code in the lattice's compile cache: code compiled by
    /// any engine of the same key loads into this one.
    pub fn cache_key(&self, digest: &str) -> String {
        let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
        trellis_lattice::compiled::cache_key(digest, &self.inner.engine_hash, &target)
    }

    /// Loads the component of `digest` from code compiled by another host (see
    /// [`super::precompiled`]), instead of compiling it.
    ///
    /// CPU-heavy (it copies and links the code): call from a blocking thread.
    pub fn load_cached(&self, digest: &str, code: &VerifiedCode) -> Result<Component, LoadError> {
        let compiled = super::precompiled::deserialize(&self.inner.engine, code)?;
        let component = Component::new(self.clone(), &self.inner.linker, compiled.clone())?;
        self.lock_compiled().insert(digest.to_owned(), compiled);
        Ok(component)
    }

    /// The compiled code of `digest` as bytes for the compile cache, if it is compiled here.
    ///
    /// CPU-heavy (it copies the code): call from a blocking thread.
    pub fn serialized(&self, digest: &str) -> Option<Result<Vec<u8>, LoadError>> {
        let compiled = self.lock_compiled().get(digest).cloned()?;
        Some(compiled.serialize().map_err(|e| LoadError::Engine(format!("{e:#}"))))
    }

    /// Forgets the compiled code of `digest` (after its last component stopped).
    pub fn evict(&self, digest: &str) {
        self.lock_compiled().remove(digest);
    }

    fn lock_compiled(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, wasmtime::component::Component>> {
        // A panic while holding this lock leaves a consistent map; keep going.
        self.inner.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the pool resets a memory slot when its store is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    /// Only the pages the call dirtied (found with the `PAGEMAP_SCAN` ioctl) are reset by
    /// memset, up to [`KEEP_RESIDENT`]: no `madvise`, so no TLB shootdown on every core per
    /// call and no page faults on the next. Measured on `bench http`, 32 connections: ~4x the
    /// requests per second of the `madvise` reset.
    DirtyPages,
    /// `madvise` the slot (wasmtime's default): a TLB shootdown across cores per call.
    Madvise,
}

/// Bytes of each pooled memory kept resident between calls when only dirty pages are reset.
const KEEP_RESIDENT: usize = 2 << 20;

fn build_engine(config: &RuntimeConfig, reset: Reset) -> Result<Engine, LoadError> {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    // Concurrency support (component-model async) costs ~3x per call and we do not use it.
    wasm.concurrency_support(false);
    if !config.on_demand_allocator {
        // Every admitted call may make one in-process call to another component (which rides
        // on its caller's admission slot), and warm instances wait between calls: the pool
        // holds three instances per slot.
        let n = config.max_instances.saturating_mul(3);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            // A Rust component holds a handful of core instances, memories and tables (four
            // tables per slot ran out under a burst of nested in-process calls: "maximum
            // concurrent limit of 24 for tables"). A table slot reserves address space only.
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes)
            // What must still be decommitted (tables, stacks, memory past the resident part)
            // is, in batches: fewer shootdowns.
            .decommit_batch_size(32);
        if reset == Reset::DirtyPages {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT / 2);
        }
        wasm.allocation_strategy(pool);
    }
    Engine::new(&wasm).map_err(|e| {
        LoadError::Engine(format!(
            "{e:#}; if the instance pool cannot be reserved, lower --max-instances or \
             --max-memory-mb, or pass --on-demand-allocator"
        ))
    })
}

/// Hex SHA-256 of what makes code compiled by `engine` loadable by another (wasmtime's
/// compatibility hash: target, compiler flags, tunables, features, wasmtime's version).
fn engine_hash(engine: &Engine) -> String {
    use std::hash::Hash;
    /// A `Hasher` feeding SHA-256: the same on every host, unlike std's.
    struct Sha(Sha256);
    impl std::hash::Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), LoadError> {
    std::thread::Builder::new()
        .name("trellis-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))
}
