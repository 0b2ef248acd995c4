//! Per-call store data: WASI contexts, the resource table, limits, and the HTTP hooks.

use std::future::Future;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// What one store carries while it serves one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutgoingHttp,
    pub(crate) limits: StoreLimits,
}

impl CallState {
    pub(crate) fn new(component_id: &str, max_memory_bytes: usize) -> Self {
        Self {
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutgoingHttp { component_id: component_id.into() },
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                // A guest growing past its limit traps with a message that says so, instead of
                // seeing a failed grow and aborting with `unreachable`.
                .trap_on_grow_failure(true)
                .build(),
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outgoing HTTP from a component. Until an http-client provider can be linked, the host
/// refuses it with `HTTP-request-denied` and says why in its log.
struct OutgoingHttp {
    component_id: Box<str>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        tracing::warn!(
            component = %self.component_id,
            uri = %request.uri(),
            "outgoing HTTP refused: no wasi:http/outgoing-handler link (http-client provider) is available"
        );
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
