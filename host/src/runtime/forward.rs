//! Imports of custom WIT interfaces (anything outside `wasi:`): each function is defined on a
//! per-component linker as a host function that encodes its arguments (see `values`), resolves
//! the component's link for the interface, sends the call to the link's target, and decodes
//! the results against the caller's own types. A failure traps the caller with the typed error
//! (custom interfaces have no error channel of their own).

use std::sync::Arc;

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Linker, Val};
use wasmtime::{Engine, StoreContextMut};

use super::component::LoadError;
use super::outbound::no_outbound;
use super::state::CallState;
use super::values;

/// Whether the host itself serves imports of this interface (WASI, the contracts it binds,
/// `wasmcloud:bus` and `wasmcloud:secrets`).
pub(crate) fn served_by_host(interface: &str) -> bool {
    ["wasi:", "wasmcloud:bus/", "wasmcloud:secrets/"].iter().any(|p| interface.starts_with(p))
}

/// A linker for `compiled`: `base` plus forwarding functions for its custom imports.
pub(crate) fn linker_for(
    engine: &Engine,
    base: &Linker<CallState>,
    compiled: &wasmtime::component::Component,
) -> Result<Linker<CallState>, LoadError> {
    let ty = compiled.component_type();
    let custom: Vec<_> = ty.imports(engine).filter(|(name, _)| !served_by_host(name)).collect();
    if custom.is_empty() {
        return Ok(base.clone());
    }
    let mut linker = base.clone();
    for (name, item) in custom {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(LoadError::Link(format!(
                "the component imports `{name}` directly; Trellis links whole interfaces"
            )));
        };
        let interface: Arc<str> = unversioned(name).into();
        let mut defs = linker.instance(name).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        for (function, item) in instance.exports(engine) {
            // Resources cannot cross the lattice; instantiation then names what is missing.
            if !matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                continue;
            }
            let (interface, function): (Arc<str>, Arc<str>) = (interface.clone(), function.into());
            defs.func_new_async(&function.clone(), move |store, ty, params, results| {
                let (interface, function) = (interface.clone(), function.clone());
                Box::new(forward(store, ty, params, results, interface, function))
            })
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        }
    }
    Ok(linker)
}

fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// One forwarded call.
async fn forward(
    mut store: StoreContextMut<'_, CallState>,
    ty: ComponentFunc,
    params: &[Val],
    results: &mut [Val],
    interface: Arc<str>,
    function: Arc<str>,
) -> wasmtime::Result<()> {
    let state = store.data_mut();
    let source = state.component_id.clone();
    let (timeout, trace, depth) = (state.time_left(), state.trace, state.depth);
    let Some(outbound) = state.outbound.clone() else {
        return Err(wasmtime::Error::msg(no_outbound(&source, &interface).to_string()));
    };
    let link = outbound
        .resolve(&source, &interface, state.link_name(&interface))
        .map_err(|e| wasmtime::Error::msg(e.to_string()))?;
    let payload = values::encode_all(params)
        .map_err(|e| wasmtime::Error::msg(format!("{interface}.{function}: {e}")))?;
    let reply = outbound
        .call(&source, &link, &function, (payload.into(), timeout, trace, depth))
        .await
        .map_err(|e| wasmtime::Error::msg(format!("{interface}.{function}: {e}")))?;
    let decoded = values::decode_all(&reply, ty.results().map(|t| ("result", t))).map_err(|e| {
        wasmtime::Error::msg(format!(
            "{interface}.{function}: `{}` answered with values that do not fit the caller's \
                 types: {e}",
            link.target
        ))
    })?;
    for (slot, value) in results.iter_mut().zip(decoded) {
        *slot = value;
    }
    Ok(())
}
