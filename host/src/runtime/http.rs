//! Serving `wasi:http/incoming-handler.handle` (WASI 0.2) with a fresh store per request (or a
//! warm instance); WASI 0.3 handlers are in `http_p3`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::http::{HttpRequest, HttpResponse};
use trellis_lattice::trace::TraceContext;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::component::Component;
use super::outbound::CallSettings;
use super::state::CallState;

/// Largest response body a component may produce for one request.
pub const MAX_RESPONSE_BODY: usize = 64 << 20;

impl Component {
    /// Runs the component's HTTP handler on `req`; the call is abandoned after `timeout`.
    pub async fn handle_http(
        &self,
        req: HttpRequest,
        mut settings: CallSettings<'_>,
    ) -> Result<HttpResponse, InvokeError> {
        if self.service.is_some() {
            return self.handle_http_p3(req, settings).await;
        }
        let (id, timeout) = (settings.component_id, settings.timeout);
        let who = (id, settings.trace);
        let slots = std::mem::take(&mut settings.slots);
        if self.http.is_none() {
            return Err(InvokeError::new(
                InvokeErrorKind::BadRequest,
                format!("component `{id}` does not export wasi:http/incoming-handler"),
            ));
        }
        let request = to_hyper(req)?;
        let pool = self.warm_pool();
        let deadline = tokio::time::Instant::now() + timeout;
        // Instantiation runs guest code too (start functions): it counts against the deadline.
        let mut warm = match tokio::time::timeout_at(deadline, self.instance(&settings)).await {
            Ok(instance) => instance.map_err(|e| trap(who, "instantiating", &e))?,
            Err(_) => return Err(timed_out(id, timeout)),
        };

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut http = warm.store.data_mut().http();
        let (request, out) = http
            .new_incoming_request(Scheme::Http, request)
            .and_then(|r| Ok((r, http.new_response_outparam(sender)?)))
            .map_err(|e| trap(who, "preparing the request", &e))?;

        // Guest and response collection run in this task, side by side: no hop to another
        // worker thread and back on every call.
        let guest = async move {
            let done = match &warm.proxy {
                Some(proxy) => {
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut warm.store, request, out)
                        .await
                }
                None => Err(wasmtime::format_err!("the instance has no wasi:http handler")),
            };
            // Only an instance whose guest returned cleanly serves another request.
            if let (Some(pool), true) = (pool, done.is_ok()) {
                pool.put(warm);
            }
            done
        };
        let response = async {
            let response = match receiver.await {
                Ok(Ok(response)) => response,
                Ok(Err(code)) => {
                    return Err(Some(InvokeError::new(
                        InvokeErrorKind::Trap,
                        format!("component `{id}` answered with an HTTP error: {code:?}"),
                    )));
                }
                // The guest returned or failed without a response; its result says why.
                Err(_) => return Err(None),
            };
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BODY).collect().await.map_err(|e| {
                Some(InvokeError::new(
                    InvokeErrorKind::Trap,
                    format!("component `{id}` failed while writing its response body: {e}"),
                ))
            })?;
            Ok(HttpResponse::from_parts(&parts, body.to_bytes()))
        };
        let call = async {
            let mut guest = Box::pin(guest);
            tokio::pin!(response);
            tokio::select! {
                biased;
                done = &mut guest => match response.await {
                    Ok(response) => Ok(response),
                    Err(Some(e)) => Err(e),
                    Err(None) => Err(guest_failure(who, done)),
                },
                answered = &mut response => match answered {
                    Ok(response) => {
                        // The response is complete but the guest still runs (work after the
                        // response is allowed): let it finish in the background, to its deadline.
                        tokio::spawn(async move {
                            let _slots = slots;
                            tokio::time::timeout_at(deadline, guest).await
                        });
                        Ok(response)
                    }
                    Err(Some(e)) => Err(e),
                    Err(None) => Err(guest_failure(who, guest.await)),
                },
            }
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(id, timeout)),
        }
    }
}

impl Component {
    /// A fresh store for one call: limits, and a yield to the executor every epoch tick so a
    /// long-running guest never holds a worker thread (the deadline is the caller's timeout).
    pub(super) fn new_store(&self, settings: &CallSettings<'_>) -> Store<CallState> {
        let max_memory = settings.max_memory_bytes.min(self.runtime.config().max_memory_bytes);
        let mut store = Store::new(self.pre.engine(), CallState::new(settings, max_memory));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }
}

fn guest_failure((id, trace): (&str, TraceContext), guest: wasmtime::Result<()>) -> InvokeError {
    match guest {
        Ok(()) => InvokeError::new(
            InvokeErrorKind::Trap,
            format!("component `{id}` returned without setting a response"),
        ),
        Err(e) => trap((id, trace), "handling the request", &e),
    }
}

pub(super) fn trap(
    (id, trace): (&str, TraceContext),
    during: &str,
    e: &wasmtime::Error,
) -> InvokeError {
    // The log gets the whole chain with the wasm backtrace (and the trace to find the request
    // by); the caller gets the cause.
    let trace_id = trace.trace_id_hex();
    tracing::warn!(component = id, trace_id, error = %format!("{e:#}"), "component failed while {during}");
    InvokeError::new(
        InvokeErrorKind::Trap,
        format!("component `{id}` trapped while {during}: {}", e.root_cause()),
    )
}

pub(super) fn timed_out(id: &str, timeout: std::time::Duration) -> InvokeError {
    InvokeError::new(
        InvokeErrorKind::Timeout,
        format!("component `{id}` did not answer within {timeout:?}"),
    )
}

fn bad(message: String) -> InvokeError {
    InvokeError::new(InvokeErrorKind::BadRequest, message)
}

pub(super) fn to_hyper(req: HttpRequest) -> Result<hyper::Request<Full<Bytes>>, InvokeError> {
    let mut builder =
        hyper::Request::builder().method(req.method.as_str()).uri(req.path_and_query.as_str());
    let mut has_host = false;
    for (name, value) in &req.headers {
        has_host |= name.eq_ignore_ascii_case("host");
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if !has_host {
        // wasi-http requires an authority; HTTP/1.0 clients may omit Host.
        builder = builder.header("host", req.authority.as_deref().unwrap_or("localhost"));
    }
    builder
        .body(Full::new(Bytes::from(req.body.into_vec())))
        .map_err(|e| bad(format!("invalid HTTP request: {e}")))
}
