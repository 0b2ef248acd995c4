//! Serving `wasi:http/handler.handle` (WASI 0.3): the guest's `handle` is an async call run in
//! the store's event loop (`run_concurrent`), and the response body is read from the guest's
//! stream inside that loop too.
//!
//! Without reuse, each request gets a fresh store and instance, as on the WASI 0.2 path. With
//! reuse, requests go to shared instances (`shared`), each serving several at once.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::http::{HttpRequest, HttpResponse};
use trellis_lattice::trace::TraceContext;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::p3::bindings::Service;
use wasmtime_wasi_http::{FieldMap, WasiHttpView};

use super::component::Component;
use super::http::{MAX_RESPONSE_BODY, timed_out, trap};
use super::outbound::CallSettings;
use super::state::CallState;

/// A request as the guest's `wasi:http/types.request` is made from.
pub(super) type P3Request = http::Request<Full<Bytes>>;

impl Component {
    /// Runs the component's WASI 0.3 HTTP handler on `req`; abandoned after the timeout.
    pub(super) async fn handle_http_p3(
        &self,
        req: HttpRequest,
        mut settings: CallSettings<'_>,
    ) -> Result<HttpResponse, InvokeError> {
        let (id, timeout) = (settings.component_id, settings.timeout);
        let request = to_http(req)?;
        if let Some(shared) = self.shared_pool() {
            return shared.handle(self, request, settings).await;
        }
        let who = (id, settings.trace);
        // Held until the call is done: the guest may still be writing its body.
        let _slots = std::mem::take(&mut settings.slots);
        let call = async {
            let mut store = self.new_store(&settings);
            let service = self
                .instantiate_service(&mut store)
                .await
                .map_err(|e| trap(who, "instantiating", &e))?;
            let answered = store
                .run_concurrent(async |accessor| serve(accessor, &service, request, who).await)
                .await;
            answered.map_err(|e| trap(who, "handling the request", &e))?
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(id, timeout)),
        }
    }

    /// A new instance of this component in `store`, and its `wasi:http/handler`.
    pub(super) async fn instantiate_service(
        &self,
        store: &mut wasmtime::Store<CallState>,
    ) -> wasmtime::Result<Service> {
        let Some(indices) = &self.service else {
            return Err(wasmtime::format_err!("the component has no wasi:http/handler@0.3"));
        };
        let instance = self.pre.instantiate_async(&mut *store).await?;
        indices.load(&mut *store, &instance)
    }
}

/// One request through `service`, inside its store's event loop: the guest's response, its
/// body read to the end (the guest may write it from a task of its own after returning).
pub(super) async fn serve(
    accessor: &Accessor<CallState>,
    service: &Service,
    request: P3Request,
    who: (&str, TraceContext),
) -> Result<HttpResponse, InvokeError> {
    let id = who.0;
    let (parts, body) = request.into_parts();
    let uri = parts.uri.into_parts();
    // Forbidden headers are dropped as the host's hooks say.
    let headers = accessor
        .with(|mut store| FieldMap::new_immutable(store.data_mut().http().hooks, parts.headers));
    let (request, request_io) = wasmtime_wasi_http::p3::Request::new(
        parts.method,
        uri.scheme,
        uri.authority,
        uri.path_and_query,
        headers,
        None,
        body,
    );
    let response = match service.handle(accessor, request).await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            return Err(InvokeError::new(
                InvokeErrorKind::Trap,
                format!("component `{id}` answered with an HTTP error: {code:?}"),
            ));
        }
        Err(e) => return Err(trap(who, "handling the request", &e)),
    };
    let response = accessor
        .with(|mut store| response.into_http(&mut store, request_io))
        .map_err(|e| trap(who, "reading the response", &e))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BODY).collect().await.map_err(|e| {
        InvokeError::new(
            InvokeErrorKind::Trap,
            format!("component `{id}` failed while writing its response body: {e}"),
        )
    })?;
    Ok(HttpResponse::from_parts(&parts, body.to_bytes()))
}

/// The request with an absolute URI: a 0.3 guest reads scheme and authority from it.
pub(super) fn to_http(req: HttpRequest) -> Result<P3Request, InvokeError> {
    let authority = req
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .and_then(|(_, value)| std::str::from_utf8(value.as_slice()).ok())
        .or(req.authority.as_deref())
        .unwrap_or("localhost")
        .to_owned();
    let uri = format!("http://{authority}{}", req.path_and_query);
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(uri);
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder.body(Full::new(Bytes::from(req.body.into_vec()))).map_err(|e| {
        InvokeError::new(InvokeErrorKind::BadRequest, format!("invalid HTTP request: {e}"))
    })
}
