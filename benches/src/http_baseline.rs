//! The baseline users would otherwise pick, and the part of Trellis that runs a component: plain
//! wasmtime with wasmtime-wasi-http, one fresh store and instance per request, pooling allocator
//! (wasmtime defaults otherwise). Served behind hyper (the `http` scenario), or behind a raw NATS
//! responder (`invoke`, through [`Baseline::call_encoded`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use trellis_lattice::http::{HttpRequest, HttpResponse, decode, encode};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::{BenchError, setup};

/// A lattice request as the hyper request a wasi:http server would see: the host header falls
/// back to the authority, then to `localhost`, as the Trellis host does (wasi-http needs one).
fn to_hyper(req: HttpRequest) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut builder =
        hyper::Request::builder().method(req.method.as_str()).uri(req.path_and_query.as_str());
    let has_host = req.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host"));
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    if !has_host {
        builder = builder.header("host", req.authority.as_deref().unwrap_or("localhost"));
    }
    builder.body(Full::new(Bytes::from(req.body.into_vec()))).map_err(|e| e.to_string())
}

struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoing,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

struct NoOutgoing;

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for NoOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A component ready to serve, the way the wasmtime docs do it.
#[derive(Clone)]
pub struct Baseline {
    pre: ProxyPre<State>,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Baseline")
    }
}

impl Baseline {
    pub fn new(wasm: &[u8]) -> Result<Self, BenchError> {
        let mut config = Config::new();
        // Off, as before the workspace built wasmtime with component-model async (issue 22):
        // the baseline stays what WASI 0.2 components run on, and comparable with older runs.
        config.concurrency_support(false);
        config.allocation_strategy(PoolingAllocationConfig::new());
        let engine = Engine::new(&config).map_err(setup)?;
        let component = Component::new(&engine, wasm).map_err(setup)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(setup)?;
        let pre =
            ProxyPre::new(linker.instantiate_pre(&component).map_err(setup)?).map_err(setup)?;
        Ok(Self { pre })
    }

    /// Serves one request in a fresh instance and collects the response body.
    pub async fn call<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<Full<Bytes>>, String>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (parts, body) = self.call_collected(req).await?;
        Ok(hyper::Response::from_parts(parts, Full::new(body)))
    }

    /// Serves one request as it crosses the lattice (msgpack [`HttpRequest`] in, msgpack
    /// [`HttpResponse`] out), the way a host's call path does, in a fresh instance.
    pub async fn call_encoded(&self, payload: &[u8]) -> Result<Bytes, String> {
        let request: HttpRequest = decode(payload).map_err(|e| e.to_string())?;
        let (parts, body) = self.call_collected(to_hyper(request)?).await?;
        let response = HttpResponse::from_parts(&parts, body);
        encode(&response).map(Bytes::from).map_err(|e| e.to_string())
    }

    /// [`Self::call`], answering with the response's head and whole body.
    async fn call_collected<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<(http::response::Parts, Bytes), String>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let state = State {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutgoing,
        };
        let mut store = Store::new(self.pre.engine(), state);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| e.to_string())?;
        let out =
            store.data_mut().http().new_response_outparam(sender).map_err(|e| e.to_string())?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        });
        let resp = match receiver.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => return Err(format!("{code:?}")),
            Err(_) => return Err(format!("no response: {:?}", task.await)),
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts, body))
    }

    /// Serves HTTP/1.1 on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        let this = Arc::new(self);
        while let Ok((stream, _)) = listener.accept().await {
            let this = this.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move {
                        let resp = match this.call(req).await {
                            Ok(resp) => resp,
                            Err(e) => {
                                let mut resp = hyper::Response::new(Full::new(Bytes::from(e)));
                                *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                resp
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}
