//! The wasmtime engines (one per WASI generation): pooling allocator sized from limits, epoch
//! interruption on a thread of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, PoolingAllocationConfig};

use sha2::{Digest, Sha256};
use trellis_lattice::signing::VerifiedCode;

use super::component::{Component, LoadError};
use super::generation::Generation;
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

/// Wasmtime engines with the Trellis linker; cheap to clone.
///
/// Two engines: WASI 0.2 components run on one with concurrency support off (it costs every
/// call), WASI 0.3 ones on one with it, built when the first of them loads (see
/// [`super::generation`] and `docs/design/wasi-0.3.md`).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    /// The engine of WASI 0.2 components.
    plain: Flavor,
    /// The engine of WASI 0.3 components, once one has loaded (or why it cannot be built).
    concurrent: OnceLock<Result<Flavor, LoadError>>,
    config: RuntimeConfig,
    /// Compiled components by digest: starting the same artifact twice compiles it once.
    compiled: Mutex<HashMap<String, Compiled>>,
    /// Idle warm instances, over all components.
    warm: Arc<Budget>,
    ticker_stop: Arc<AtomicBool>,
}

/// Compiled code and the generation (so the engine) it was compiled for.
#[derive(Clone)]
struct Compiled {
    generation: Generation,
    code: wasmtime::component::Component,
}

/// One engine and its linker.
struct Flavor {
    engine: Engine,
    linker: Linker<CallState>,
    /// What code compiled by this engine is compatible with (see [`Runtime::cache_key`]).
    hash: String,
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
    /// Builds the WASI 0.2 engine and linker and starts its epoch thread.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let plain = Flavor::new(&config, Generation::P2, &ticker_stop)?;
        Ok(Self {
            inner: Arc::new(Inner {
                plain,
                concurrent: OnceLock::new(),
                warm: Budget::new(config.max_instances as usize),
                config,
                compiled: Mutex::new(HashMap::new()),
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

    /// The engine and linker of `generation`, built on first use.
    fn flavor(&self, generation: Generation) -> Result<&Flavor, LoadError> {
        match generation {
            Generation::P2 => Ok(&self.inner.plain),
            Generation::P3 => self
                .inner
                .concurrent
                .get_or_init(|| {
                    Flavor::new(&self.inner.config, generation, &self.inner.ticker_stop)
                })
                .as_ref()
                .map_err(Clone::clone),
        }
    }

    /// The WASI generation the component in `bytes` targets, or why this host cannot run it.
    /// Cheap: it reads the top level of the binary only.
    pub fn generation(bytes: &[u8]) -> Result<Generation, LoadError> {
        super::generation::inspect(bytes)
    }

    /// Compiles (or reuses) and validates the component in `bytes`, known by `digest`.
    ///
    /// CPU-heavy: call from a blocking thread.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(compiled) = self.lock_compiled().get(digest).cloned() {
            return self.link(compiled);
        }
        let generation = Self::generation(bytes)?;
        let compiled = Compiled {
            generation,
            code: super::component::compile(&self.flavor(generation)?.engine, bytes)?,
        };
        let component = self.link(compiled.clone())?;
        // Cache only what links: a rejected artifact must not stay compiled in memory.
        self.lock_compiled().insert(digest.to_owned(), compiled);
        Ok(component)
    }

    /// Compiles `bytes` for `generation`'s engine whatever the component targets (a WASI 0.2
    /// component runs on either), uncached: for comparing the engines (`trellis bench wasi03`).
    pub fn load_for(&self, generation: Generation, bytes: &[u8]) -> Result<Component, LoadError> {
        let code = super::component::compile(&self.flavor(generation)?.engine, bytes)?;
        self.link(Compiled { generation, code })
    }

    fn link(&self, compiled: Compiled) -> Result<Component, LoadError> {
        let flavor = self.flavor(compiled.generation)?;
        Component::new(self.clone(), &flavor.linker, compiled.generation, compiled.code)
    }

    /// The component of `digest` if its code is already compiled here: starting another
    /// component from a known artifact needs no fetch and no compile.
    pub fn load_compiled(&self, digest: &str) -> Option<Result<Component, LoadError>> {
        let compiled = self.lock_compiled().get(digest).cloned()?;
        Some(self.link(compiled))
    }

    /// The key of `digest`'s compiled code (for `generation`'s engine) in the lattice's
    /// compile cache: code compiled by any engine of the same key loads into this one.
    pub fn cache_key(&self, digest: &str, generation: Generation) -> Result<String, LoadError> {
        let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
        let hash = &self.flavor(generation)?.hash;
        Ok(trellis_lattice::compiled::cache_key(digest, hash, &target))
    }

    /// Loads the component of `digest` from code compiled by another host (see
    /// [`super::precompiled`]) for `generation`'s engine, instead of compiling it.
    ///
    /// CPU-heavy (it copies and links the code): call from a blocking thread.
    pub fn load_cached(
        &self,
        digest: &str,
        generation: Generation,
        code: &VerifiedCode,
    ) -> Result<Component, LoadError> {
        let code = super::precompiled::deserialize(&self.flavor(generation)?.engine, code)?;
        let compiled = Compiled { generation, code };
        let component = self.link(compiled.clone())?;
        self.lock_compiled().insert(digest.to_owned(), compiled);
        Ok(component)
    }

    /// The compiled code of `digest` as bytes for the compile cache, if it is compiled here.
    ///
    /// CPU-heavy (it copies the code): call from a blocking thread.
    pub fn serialized(&self, digest: &str) -> Option<Result<Vec<u8>, LoadError>> {
        let compiled = self.lock_compiled().get(digest).cloned()?;
        Some(compiled.code.serialize().map_err(|e| LoadError::Engine(format!("{e:#}"))))
    }

    /// Forgets the compiled code of `digest` (after its last component stopped).
    pub fn evict(&self, digest: &str) {
        self.lock_compiled().remove(digest);
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<String, Compiled>> {
        // A panic while holding this lock leaves a consistent map; keep going.
        self.inner.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Flavor {
    /// The engine for `generation` with its linker, its epoch ticking until `stop`.
    fn new(
        config: &RuntimeConfig,
        generation: Generation,
        stop: &Arc<AtomicBool>,
    ) -> Result<Self, LoadError> {
        let engine = match build_engine(config, generation, Reset::DirtyPages) {
            Ok(engine) => engine,
            // Without the PAGEMAP_SCAN ioctl (Linux before 6.7, other systems), slots are reset
            // with madvise, as by wasmtime's defaults.
            Err(_) if !config.on_demand_allocator => {
                build_engine(config, generation, Reset::Madvise)?
            }
            Err(e) => return Err(e),
        };
        let linker =
            linker(&engine, generation).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        spawn_epoch_ticker(engine.clone(), stop.clone())?;
        let hash = engine_hash(&engine);
        Ok(Self { engine, linker, hash })
    }
}

/// The host's imports: WASI 0.2 and Trellis's own interfaces for every component, WASI 0.3 too
/// on the concurrent engine (released 0.3 components import 0.2 interfaces as well).
fn linker(engine: &Engine, generation: Generation) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    if generation == Generation::P3 {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    }
    super::keyvalue::add_to_linker(&mut linker)?;
    super::config::add_to_linker(&mut linker)?;
    super::blobstore::add_to_linker(&mut linker)?;
    super::bus::add_to_linker(&mut linker)?;
    super::secrets::add_to_linker(&mut linker)?;
    Ok(linker)
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

fn build_engine(
    config: &RuntimeConfig,
    generation: Generation,
    reset: Reset,
) -> Result<Engine, LoadError> {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    // Concurrency support (the component model's async) costs ~3x per call: only WASI 0.3
    // components, which need it, get it.
    let concurrent = generation == Generation::P3;
    wasm.concurrency_support(concurrent);
    if concurrent {
        wasm.wasm_component_model_async(true);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::generation::tests::{importing, importing_now};

    fn runtime() -> Runtime {
        let config = RuntimeConfig { on_demand_allocator: true, ..RuntimeConfig::default() };
        Runtime::new(config).expect("runtime")
    }

    #[test]
    fn wasi_0_3_imports_link_on_the_concurrent_engine_semver_compatibly() {
        let runtime = runtime();
        for import in ["wasi:clocks/monotonic-clock@0.3.0", "wasi:clocks/monotonic-clock@0.3.2"] {
            let wasm = importing_now(import);
            // Linked (a 0.3 interface next to a 0.2 one); refused only for exporting nothing.
            let err = runtime.load(import, &wasm).unwrap_err();
            assert_eq!(err, LoadError::NoUsableExport, "{import}");
        }
        // The engine of 0.2 components does not serve 0.3 interfaces.
        let wasm = importing_now("wasi:clocks/monotonic-clock@0.3.0");
        let err = runtime.load_for(Generation::P2, &wasm).unwrap_err();
        assert!(matches!(err, LoadError::Link(_)), "{err}");
        // Its 0.2 twin is a 0.2 component, linked on the plain engine.
        let wasm = importing_now("wasi:clocks/monotonic-clock@0.2.0");
        assert_eq!(runtime.load("v2", &wasm).unwrap_err(), LoadError::NoUsableExport);
    }

    #[test]
    fn an_unsupported_wasi_version_is_refused_before_compiling() {
        let runtime = runtime();
        let import = "wasi:http/types@0.3.0-rc-2025-09-16";
        let err = runtime.load("rc", &importing(&[import])).unwrap_err();
        assert!(
            matches!(&err, LoadError::UnsupportedWasi { import: i, .. } if i == import),
            "{err}"
        );
        assert!(runtime.inner.concurrent.get().is_none(), "no engine was built for it");
    }

    #[test]
    fn the_concurrent_engine_is_built_on_first_use_with_a_key_of_its_own() {
        let runtime = runtime();
        assert!(runtime.inner.concurrent.get().is_none());
        let plain = runtime.cache_key("sha256:x", Generation::P2).unwrap();
        let concurrent = runtime.cache_key("sha256:x", Generation::P3).unwrap();
        assert_ne!(plain, concurrent, "code of one engine must not load into the other");
        assert!(!runtime.inner.plain.engine.get_concurrency_support());
        let concurrent = runtime.inner.concurrent.get().unwrap().as_ref().unwrap();
        assert!(concurrent.engine.get_concurrency_support());
    }
}
