//! Per-call store data: WASI contexts, the resource table, limits, and the HTTP hooks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::http::{
    self as lattice_http, HANDLE, HttpRequest, HttpResponse, OUTGOING_HANDLER,
};
use trellis_lattice::link::DEFAULT_LINK_NAME;
use trellis_lattice::trace::TraceContext;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::Error as HttpError;

use super::bus::LinkNames;
use super::outbound::{CallSettings, Outbound};
use super::output::{CurrentTrace, GuestOutput};
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
    /// Blob values being written (bounded: the host buffers them).
    pub(super) open_values: usize,
    /// Link names the component chose (`wasmcloud:bus`); `default` otherwise.
    pub(super) link_names: LinkNames,
    /// The span this call runs in.
    pub(super) trace: TraceContext,
    /// Calls before this one in its chain.
    pub(super) depth: u32,
    /// The same, for the guest's stdout and stderr.
    output_trace: CurrentTrace,
}

impl CallState {
    pub(crate) fn new(settings: &CallSettings<'_>, max_memory_bytes: usize) -> Self {
        let component_id: Arc<str> = settings.component_id.into();
        let output_trace: CurrentTrace = Arc::new(settings.trace.into());
        let (stdout, stderr) = (
            GuestOutput::stdout(component_id.clone(), output_trace.clone()),
            GuestOutput::stderr(component_id.clone(), output_trace.clone()),
        );
        Self {
            wasi: WasiCtx::builder().stdout(stdout).stderr(stderr).build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutgoingHttp {
                component_id: component_id.clone(),
                outbound: settings.outbound.clone(),
                deadline: Instant::now() + settings.timeout,
                link_name: DEFAULT_LINK_NAME.to_owned(),
                trace: settings.trace,
                depth: settings.depth,
            },
            component_id,
            outbound: settings.outbound.clone(),
            deadline: Instant::now() + settings.timeout,
            open_values: 0,
            link_names: LinkNames::default(),
            trace: settings.trace,
            depth: settings.depth,
            output_trace,
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
    /// Readies the state of a warm instance for its next call: that call's deadline, span and
    /// way out; link names chosen by an earlier call are forgotten.
    pub(super) fn rearm(&mut self, settings: &CallSettings<'_>) {
        let deadline = Instant::now() + settings.timeout;
        self.hooks.outbound.clone_from(&settings.outbound);
        self.hooks.deadline = deadline;
        DEFAULT_LINK_NAME.clone_into(&mut self.hooks.link_name);
        self.hooks.trace = settings.trace;
        self.hooks.depth = settings.depth;
        self.outbound.clone_from(&settings.outbound);
        self.deadline = deadline;
        self.link_names = LinkNames::default();
        self.trace = settings.trace;
        self.depth = settings.depth;
        *self.output_trace.lock().unwrap_or_else(|p| p.into_inner()) = settings.trace;
    }

    /// The link name the component uses for `interface`.
    pub(super) fn link_name(&self, interface: &str) -> &str {
        self.link_names.get(interface)
    }

    /// Uses link `name` for `interface` from now on in this call.
    pub(super) fn set_link_name(&mut self, interface: String, name: String) {
        if interface == OUTGOING_HANDLER {
            self.hooks.link_name.clone_from(&name);
        }
        self.link_names.set(interface, name);
    }

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

/// Outgoing HTTP from a component: sent to the http-client provider its
/// `wasi:http/outgoing-handler` link names, wherever that runs. Without a link the request is
/// refused with `HTTP-request-denied`, and the host's log says why.
struct OutgoingHttp {
    component_id: Arc<str>,
    outbound: Option<Arc<dyn Outbound>>,
    deadline: Instant,
    /// The link name for outgoing HTTP.
    link_name: String,
    /// The span of the call making the requests.
    trace: TraceContext,
    /// Calls before the one making the requests in its chain.
    depth: u32,
}

/// Largest request body a component may send out.
const MAX_OUTGOING_BODY: usize = 16 << 20;

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let (id, outbound, deadline, link_name, trace, depth) = (
            self.component_id.clone(),
            self.outbound.clone(),
            self.deadline,
            self.link_name.clone(),
            self.trace,
            self.depth,
        );
        Box::new(async move {
            let Some(outbound) = outbound else {
                tracing::warn!(component = %id, "outgoing HTTP refused: no lattice here");
                return Err(HttpError::HttpRequestDenied);
            };
            let link = outbound.resolve(&id, OUTGOING_HANDLER, &link_name).map_err(|e| {
                tracing::warn!(component = %id, uri = %request.uri(), error = %e, "outgoing HTTP refused");
                HttpError::HttpRequestDenied
            })?;
            let mut timeout = deadline.saturating_duration_since(Instant::now());
            if let Some(t) = options.and_then(|o| o.first_byte_timeout) {
                timeout = timeout.min(t);
            }
            let payload = encode_request(request).await?;
            let reply = outbound
                .call(&id, &link, HANDLE, (payload.into(), timeout, trace, depth))
                .await
                .map_err(|e| http_error(&id, &e))?;
            let response: HttpResponse = lattice_http::decode(&reply).map_err(|e| {
                HttpError::InternalError(Some(format!(
                    "undecodable response from `{}`: {e}",
                    link.target
                )))
            })?;
            let mut builder = http::Response::builder().status(response.status);
            for (name, value) in &response.headers {
                builder = builder.header(name.as_str(), value.as_slice());
            }
            let body = Full::new(Bytes::from(response.body.into_vec()))
                .map_err(|never| match never {})
                .boxed_unsync();
            let response = builder
                .body(body)
                .map_err(|e| HttpError::InternalError(Some(format!("invalid response: {e}"))))?;
            let done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// The whole outgoing request as it crosses the lattice.
async fn encode_request(request: http::Request<WasiBody>) -> Result<Vec<u8>, HttpError> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_OUTGOING_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::HttpRequestBodySize(Some(MAX_OUTGOING_BODY as u64)))?
        .to_bytes();
    lattice_http::encode(&HttpRequest::from_parts(&parts, body))
        .map_err(|e| HttpError::InternalError(Some(format!("unencodable request: {e}"))))
}

/// What the guest sees when the lattice could not carry its request.
fn http_error(id: &str, e: &InvokeError) -> HttpError {
    tracing::warn!(component = id, error = %e, "outgoing HTTP failed");
    match e.kind() {
        InvokeErrorKind::Denied | InvokeErrorKind::NoLink => HttpError::HttpRequestDenied,
        InvokeErrorKind::Timeout => HttpError::HttpResponseTimeout,
        InvokeErrorKind::TooLarge => HttpError::HttpRequestBodySize(None),
        InvokeErrorKind::BadRequest => HttpError::HttpRequestUriInvalid,
        _ => HttpError::InternalError(Some(e.to_string())),
    }
}
