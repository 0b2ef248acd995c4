//! Per-call store data: WASI contexts, the resource table, limits, and the HTTP hooks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;

use super::outbound::{CallSettings, Outbound};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// What one store carries while it serves one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    hooks: OutgoingHttp,
    pub(crate) limits: StoreLimits,
    /// The component's id: the source of the calls it makes.
    pub(super) component_id: Arc<str>,
    /// Where the component's linked imports lead.
    pub(super) outbound: Option<Arc<dyn Outbound>>,
    /// When the call that created this store must be done; outgoing calls get what is left.
    deadline: Instant,
}

impl CallState {
    pub(crate) fn new(settings: &CallSettings<'_>, max_memory_bytes: usize) -> Self {
        let component_id: Arc<str> = settings.component_id.into();
        Self {
            wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutgoingHttp { component_id: component_id.clone() },
            component_id,
            outbound: settings.outbound.clone(),
            deadline: Instant::now() + settings.timeout,
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                // A guest growing past its limit traps with a message that says so, instead of
                // seeing a failed grow and aborting with `unreachable`.
                .trap_on_grow_failure(true)
                .build(),
        }
    }
}

impl CallState {
    /// Time left until the deadline of the call this store serves.
    pub(super) fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
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
    component_id: Arc<str>,
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
