//! The part of Trellis that runs a component-to-component call's callee, in plain wasmtime:
//! a fresh store, instantiate `greeter`, call `trellis:test/types.greet`. Timed in a loop for
//! the co-located row of `call`; served behind a raw NATS responder (msgpack arguments in,
//! msgpack results out, as calls cross the lattice) for the cross-host row.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::parts::Handler;
use crate::{BenchError, setup};

struct Plain {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// `greeter`, compiled and pre-instantiated once; cheap to clone.
#[derive(Clone)]
pub(crate) struct PlainGreeter {
    engine: Engine,
    pre: Arc<InstancePre<Plain>>,
    greet: ComponentExportIndex,
}

impl std::fmt::Debug for PlainGreeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainGreeter")
    }
}

impl PlainGreeter {
    pub fn new(wasm: &[u8]) -> Result<Self, BenchError> {
        let mut config = Config::new();
        // As the Trellis runtime does: component-model async costs per call and is not used.
        config.concurrency_support(false);
        config.allocation_strategy(wasmtime::PoolingAllocationConfig::new());
        let engine = Engine::new(&config).map_err(setup)?;
        let component = Component::new(&engine, wasm).map_err(setup)?;
        let mut linker: Linker<Plain> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
        let pre = Arc::new(linker.instantiate_pre(&component).map_err(setup)?);
        let instance_index = component
            .get_export_index(None, "trellis:test/types@0.1.0")
            .ok_or_else(|| setup("greeter has no trellis:test/types export"))?;
        let greet = component
            .get_export_index(Some(&instance_index), "greet")
            .ok_or_else(|| setup("greeter has no greet export"))?;
        Ok(Self { engine, pre, greet })
    }

    /// `greet(name)` in a fresh store and instance.
    pub async fn greet(&self, name: &str) -> Result<String, String> {
        let state = Plain { ctx: WasiCtx::builder().build(), table: ResourceTable::new() };
        let mut store = Store::new(&self.engine, state);
        let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| e.to_string())?;
        let func = instance.get_func(&mut store, self.greet).ok_or("greeter has no greet")?;
        let mut results = [Val::Bool(false)];
        func.call_async(&mut store, &[Val::String(name.into())], &mut results)
            .await
            .map_err(|e| e.to_string())?;
        match results {
            [Val::String(s)] => Ok(s),
            other => Err(format!("greet answered {other:?}")),
        }
    }

    /// The parts responder's handler: arguments `[name]` as msgpack, results `[greeting]`.
    pub fn handler(self) -> Handler {
        Arc::new(move |payload: Bytes| -> BoxFuture<'static, Result<Bytes, String>> {
            let this = self.clone();
            Box::pin(async move {
                let args = rmpv::decode::read_value(&mut payload.as_ref())
                    .map_err(|e| format!("arguments: {e}"))?;
                let name = args
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|v| v.as_str())
                    .ok_or("greet takes one string")?;
                let greeting = this.greet(name).await?;
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, &rmpv::Value::Array(vec![greeting.into()]))
                    .map_err(|e| e.to_string())?;
                Ok(Bytes::from(out))
            })
        })
    }
}
