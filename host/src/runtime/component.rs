//! Loading a component: check that the bytes are a component, compile, link its imports, and
//! find the exports Trellis can call.

use std::collections::HashMap;
use std::sync::Arc;

use trellis_lattice::artifact::{WasmKind, sniff};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentExportIndex, InstancePre, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;
use wasmtime_wasi_http::p3::bindings::ServiceIndices;

use super::engine::Runtime;
use super::generation::Generation;
use super::outbound::CallSettings;
use super::shared::SharedPool;
use super::state::CallState;
use super::warm::{Reuse, Warm, WarmPool};

/// Why a component cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error(
        "not a WebAssembly file (no `\\0asm` header); pass a .wasm component built for wasm32-wasip2"
    )]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; build for `wasm32-wasip2` or wrap it \
         with `wasm-tools component new`"
    )]
    CoreModule,
    /// Compilation failed.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// An import the host does not provide.
    #[error("cannot link the component's imports: {0}")]
    Link(String),
    /// The component exports nothing Trellis can call.
    #[error(
        "the component exports no `wasi:http/incoming-handler@0.2.x`, no \
         `wasi:http/handler@0.3.x` and no function of its own, so nothing can call it"
    )]
    NoUsableExport,
    /// The component imports a WASI interface at a version this host does not serve.
    #[error(
        "the component imports `{import}`, a WASI version this host does not serve; it serves \
         WASI {offered}: rebuild the component against one of those"
    )]
    UnsupportedWasi {
        /// The import, `ns:pkg/iface@version`.
        import: String,
        /// The versions this host serves.
        offered: &'static str,
    },
    /// The engine could not be built.
    #[error("wasmtime engine: {0}")]
    Engine(String),
}

/// Compiles `bytes` after checking that they are a component.
pub(crate) fn compile(
    engine: &wasmtime::Engine,
    bytes: &[u8],
) -> Result<wasmtime::component::Component, LoadError> {
    match sniff(bytes) {
        WasmKind::NotWasm => return Err(LoadError::NotWasm),
        WasmKind::CoreModule => return Err(LoadError::CoreModule),
        WasmKind::Component => {}
    }
    wasmtime::component::Component::new(engine, bytes)
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))
}

/// The interfaces a component imports (`ns:pkg/iface@version`), from its compiled type.
pub(crate) fn imports_of(
    engine: &wasmtime::Engine,
    compiled: &wasmtime::component::Component,
) -> Vec<String> {
    compiled.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect()
}

/// Compiles `bytes` with a throwaway engine to list what the component imports (for
/// `trellis claims inspect`; slow for big components: it compiles them).
pub fn list_imports(bytes: &[u8]) -> Result<Vec<String>, LoadError> {
    let engine = wasmtime::Engine::default();
    let compiled = compile(&engine, bytes)?;
    Ok(imports_of(&engine, &compiled))
}

/// Exported functions of custom interfaces: interface (unversioned) → function → index.
pub(super) type Functions = HashMap<String, HashMap<String, ComponentExportIndex>>;

/// A compiled, linked component, ready to instantiate once per call (or to keep warm
/// instances, see [`Component::with_reuse`]).
#[derive(Clone)]
pub struct Component {
    pub(super) runtime: Runtime,
    /// The WASI generation it targets (so the engine it runs on).
    pub(super) generation: Generation,
    /// Where its `wasi:http/incoming-handler@0.2` is, when it exports one.
    pub(super) http: Option<Arc<ProxyIndices>>,
    /// Where its `wasi:http/handler@0.3` is, when it exports one.
    pub(super) service: Option<Arc<ServiceIndices>>,
    pub(super) pre: InstancePre<CallState>,
    pub(super) functions: Arc<Functions>,
    imports: Arc<[String]>,
    /// Idle warm instances, when it reuses them.
    warm: Option<Arc<WarmPool>>,
    /// Instances serving several HTTP requests at once, when it reuses them and has a WASI 0.3
    /// handler.
    shared: Option<Arc<SharedPool>>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("generation", &self.generation)
            .field("http", &self.serves_http())
            .finish_non_exhaustive()
    }
}

impl Component {
    pub(super) fn new(
        runtime: Runtime,
        base: &Linker<CallState>,
        generation: Generation,
        compiled: wasmtime::component::Component,
    ) -> Result<Self, LoadError> {
        let engine = base.engine();
        let imports = imports_of(engine, &compiled).into();
        let linker = super::forward::linker_for(engine, base, &compiled)?;
        let pre =
            linker.instantiate_pre(&compiled).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        // Semver-compatible: finds `wasi:http/incoming-handler@0.2.N` for any N.
        let http = ProxyIndices::new(&pre).ok().map(Arc::new);
        // The same for `wasi:http/handler@0.3.N`.
        let service = match generation {
            Generation::P3 => ServiceIndices::new(&pre).ok().map(Arc::new),
            Generation::P2 => None,
        };
        let functions = functions_of(engine, &compiled);
        if http.is_none() && service.is_none() && functions.is_empty() {
            return Err(LoadError::NoUsableExport);
        }
        let functions = Arc::new(functions);
        Ok(Self {
            runtime,
            generation,
            http,
            service,
            pre,
            functions,
            imports,
            warm: None,
            shared: None,
        })
    }

    /// The same component, keeping instances warm between calls as `reuse` says (its WASI 0.3
    /// HTTP handler: shared instances, each serving up to `reuse.at_once` requests at once).
    pub fn with_reuse(mut self, reuse: Reuse) -> Self {
        self.warm = Some(WarmPool::start(reuse, self.runtime.warm_budget()));
        if self.service.is_some() {
            self.shared = Some(SharedPool::new(reuse));
        }
        self
    }

    /// Forgets the reuse settings (for the copy a shared instance's worker holds).
    pub(super) fn detach_reuse(&mut self) {
        (self.warm, self.shared) = (None, None);
    }

    /// Its shared instances, when it has them.
    pub(super) fn shared_pool(&self) -> Option<Arc<SharedPool>> {
        self.shared.clone()
    }

    /// Idle warm instances it holds now.
    pub fn warm_instances(&self) -> usize {
        self.warm.as_ref().map_or(0, |w| w.idle())
    }

    /// An instance for one call: an idle warm one when there is one, else a new one (in a
    /// fresh store).
    pub(super) async fn instance(&self, settings: &CallSettings<'_>) -> wasmtime::Result<Warm> {
        if let Some(mut warm) = self.warm.as_ref().and_then(|w| w.take()) {
            warm.store.data_mut().rearm(settings);
            warm.store.set_epoch_deadline(1);
            return Ok(warm);
        }
        let mut store = self.new_store(settings);
        let instance = self.pre.instantiate_async(&mut store).await?;
        let proxy = match &self.http {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        Ok(Warm::new(store, instance, proxy))
    }

    /// Where an instance goes after a call that succeeded: back to the warm pool, if any.
    pub(super) fn warm_pool(&self) -> Option<Arc<WarmPool>> {
        self.warm.clone()
    }

    /// The interfaces it imports, `ns:pkg/iface@version`.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Whether it exports an HTTP handler (of either generation).
    pub fn serves_http(&self) -> bool {
        self.http.is_some() || self.service.is_some()
    }

    /// The WASI generation it targets.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The interfaces (without version) this component exports that Trellis can call. Both
    /// generations' HTTP handlers are called as `wasi:http/incoming-handler`: links and the
    /// http-server provider need not know which one a component has.
    pub fn exports(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.serves_http() {
            out.push(trellis_lattice::http::INCOMING_HANDLER.to_owned());
        }
        let mut custom: Vec<String> = self.functions.keys().cloned().collect();
        custom.sort();
        out.extend(custom);
        out
    }
}

/// The functions of every exported interface outside `wasi:` (those are served by the host's
/// own bindings, like `wasi:http/incoming-handler`).
fn functions_of(engine: &wasmtime::Engine, compiled: &wasmtime::component::Component) -> Functions {
    let mut functions = Functions::new();
    for (name, item) in compiled.component_type().exports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        if super::forward::served_by_host(name) {
            continue;
        }
        let Some(instance_index) = compiled.get_export_index(None, name) else { continue };
        let interface = name.split_once('@').map_or(name, |(n, _)| n).to_owned();
        for (function, item) in instance.exports(engine) {
            if !matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                continue;
            }
            if let Some(index) = compiled.get_export_index(Some(&instance_index), function) {
                functions.entry(interface.clone()).or_default().insert(function.to_owned(), index);
            }
        }
    }
    functions
}
