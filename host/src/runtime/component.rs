//! Loading a component: check that the bytes are a component, compile, link its imports, and
//! find the exports Trellis can call.

use std::collections::HashMap;
use std::sync::Arc;

use trellis_lattice::artifact::{WasmKind, sniff};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentExportIndex, InstancePre, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use super::engine::Runtime;
use super::outbound::CallSettings;
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
        "the component exports no `wasi:http/incoming-handler@0.2.x` and no function of its own, \
         so nothing can call it"
    )]
    NoUsableExport,
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
    /// Where its `wasi:http` handler is, when it exports one.
    pub(super) http: Option<Arc<ProxyIndices>>,
    pub(super) pre: InstancePre<CallState>,
    pub(super) functions: Arc<Functions>,
    imports: Arc<[String]>,
    /// Idle warm instances, when it reuses them.
    warm: Option<Arc<WarmPool>>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component").field("http", &self.http.is_some()).finish_non_exhaustive()
    }
}

impl Component {
    pub(super) fn new(
        runtime: Runtime,
        base: &Linker<CallState>,
        compiled: wasmtime::component::Component,
    ) -> Result<Self, LoadError> {
        let engine = base.engine();
        let imports = imports_of(engine, &compiled).into();
        let linker = super::forward::linker_for(engine, base, &compiled)?;
        let pre =
            linker.instantiate_pre(&compiled).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        // Semver-compatible: finds `wasi:http/incoming-handler@0.2.N` for any N.
        let http = ProxyIndices::new(&pre).ok().map(Arc::new);
        let functions = functions_of(engine, &compiled);
        if http.is_none() && functions.is_empty() {
            return Err(LoadError::NoUsableExport);
        }
        Ok(Self { runtime, http, pre, functions: Arc::new(functions), imports, warm: None })
    }

    /// The same component, keeping instances warm between calls as `reuse` says.
    pub fn with_reuse(mut self, reuse: Reuse) -> Self {
        self.warm = Some(WarmPool::start(reuse, self.runtime.warm_budget()));
        self
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

    /// The interfaces (without version) this component exports that Trellis can call.
    pub fn exports(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.http.is_some() {
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
