//! Listeners per link and the request path: HTTP in, lattice invocation, HTTP out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind, header};
use trellis_lattice::http::{self as wire, HANDLE, HttpRequest, HttpResponse, INCOMING_HANDLER};
use trellis_lattice::link::Link;
use trellis_lattice::telemetry::{Kind, Span};
use trellis_lattice::trace::{HeaderExtractor, TraceContext};
use trellis_provider::{Context, Provider};

use crate::routes::{self, Route};

const DEFAULT_MAX_BODY: usize = 1 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The routes of one listener, shared with its accept loop.
type Routes = Arc<RwLock<Vec<Route>>>;

/// A listener on one address, serving every link that names it.
#[derive(Debug)]
struct Listener {
    routes: Routes,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// How long closing a listener waits for requests in flight.
const GRACE: Duration = Duration::from_secs(10);

impl Listener {
    /// Stops accepting, lets requests in flight finish (up to [`GRACE`]), frees the port.
    async fn close(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Listeners by address, and the address of each link.
#[derive(Debug, Default)]
struct State {
    listeners: HashMap<SocketAddr, Listener>,
    addresses: HashMap<String, SocketAddr>,
}

/// The provider: one listener per address; links on the same address are routed by `host`
/// and `path_prefix`.
#[derive(Debug)]
pub struct HttpServer {
    ctx: Context,
    state: tokio::sync::Mutex<State>,
}

impl HttpServer {
    pub fn new(ctx: Context) -> Self {
        Self { ctx, state: tokio::sync::Mutex::new(State::default()) }
    }
}

impl State {
    /// Removes the route of `key`; returns the listener to close when it was the last one.
    fn remove(&mut self, key: &str) -> Option<Listener> {
        let address = self.addresses.remove(key)?;
        self.remove_route(key, address)
    }

    /// Removes the route of `key` from the listener on `address`; returns that listener when it
    /// has no route left.
    fn remove_route(&mut self, key: &str, address: SocketAddr) -> Option<Listener> {
        let listener = self.listeners.get(&address)?;
        let now_empty = {
            let mut routes = listener.routes.write().unwrap_or_else(|p| p.into_inner());
            routes.retain(|r| r.link_key != key);
            routes.is_empty()
        };
        if now_empty { self.listeners.remove(&address) } else { None }
    }
}

impl Provider for HttpServer {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        if link.source != ctx.provider_id() {
            return Err(format!(
                "http-server takes no calls; link it as the source (`trellis link put --source {} \
                 --interface {INCOMING_HANDLER} --target <component>`)",
                ctx.provider_id()
            ));
        }
        if link.interface.to_string() != INCOMING_HANDLER {
            return Err(format!(
                "http-server serves only {INCOMING_HANDLER}, not {}; link another provider",
                link.interface
            ));
        }
        let (address, route) = parse_config(&link)?;
        let key = link.key();
        let mut state = self.state.lock().await;
        let moved_from = state.addresses.get(&key).copied().filter(|a| *a != address);
        // The new route first: a refused update leaves the link's current route serving.
        if let Some(listener) = state.listeners.get(&address) {
            let mut routes = listener.routes.write().unwrap_or_else(|p| p.into_inner());
            if let Some(clash) = routes.iter().find(|r| r.link_key != key && r.same_match(&route)) {
                return Err(format!(
                    "{address} already serves the same host and path prefix for link {}; set \
                     `host` or `path_prefix` to tell them apart",
                    clash.link_key
                ));
            }
            routes.retain(|r| r.link_key != key);
            routes.push(route);
        } else {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address} for link {key}: {e}"))?;
            tracing::info!(%address, target = %route.target, "serving HTTP");
            let routes: Routes = Arc::new(RwLock::new(vec![route]));
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(accept_loop(listener, ctx.clone(), routes.clone(), stopped));
            state.listeners.insert(address, Listener { routes, stop, task });
        }
        // A link that moved leaves its old address.
        if let Some(old) = moved_from
            && let Some(empty) = state.remove_route(&key, old)
        {
            empty.close().await;
        }
        state.addresses.insert(key, address);
        Ok(())
    }

    async fn link_deleted(&self, _ctx: &Context, link: Link) {
        let empty = self.state.lock().await.remove(&link.key());
        if let Some(listener) = empty {
            tracing::info!(link = %link.key(), "last link of its address deleted; closing the listener");
            listener.close().await;
        }
    }

    async fn shutdown(&self) {
        let all: Vec<Listener> =
            self.state.lock().await.listeners.drain().map(|(_, l)| l).collect();
        futures::future::join_all(all.into_iter().map(Listener::close)).await;
        tracing::debug!(provider = self.ctx.provider_id(), "listeners closed");
    }
}

fn parse_config(link: &Link) -> Result<(SocketAddr, Route), String> {
    let address = link.config.get("address").ok_or_else(|| {
        format!("link {} lacks config `address` (for example address=127.0.0.1:8080)", link.key())
    })?;
    let address: SocketAddr = address
        .parse()
        .map_err(|e| format!("link config address `{address}` is not host:port: {e}"))?;
    let number = |key: &str, default: u64| -> Result<u64, String> {
        link.config.get(key).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("link config `{key}` must be a number, got `{v}`"))
        })
    };
    let prefix = link.config.get("path_prefix").cloned();
    if prefix.as_ref().is_some_and(|p| !p.starts_with('/')) {
        return Err("link config `path_prefix` must start with `/`".into());
    }
    let route = Route {
        link_key: link.key(),
        host: link.config.get("host").cloned(),
        prefix,
        target: link.target.clone(),
        max_body: number("max_body_bytes", DEFAULT_MAX_BODY as u64)? as usize,
        timeout: Duration::from_millis(number("timeout_ms", DEFAULT_TIMEOUT.as_millis() as u64)?),
    };
    Ok((address, route))
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Context,
    routes: Routes,
    stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Answers are written whole: waiting to coalesce them only adds latency.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    stream
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let (ctx, routes) = (ctx.clone(), routes.clone());
        let service = service_fn(move |req| {
            let (ctx, routes) = (ctx.clone(), routes.clone());
            async move { Ok::<_, std::convert::Infallible>(handle(&ctx, &routes, req).await) }
        });
        // The timer enables hyper's header read timeout: idle or slow clients are cut off.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after {GRACE:?}; closing anyway");
    }
}

async fn handle(ctx: &Context, routes: &Routes, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let route = {
        let routes = routes.read().unwrap_or_else(|p| p.into_inner());
        routes::select(&routes, host, path).cloned()
    };
    let Some(route) = route else {
        let why = format!("no link of this address serves host {host:?} and path {path}");
        let mut resp = Response::new(Full::new(Bytes::from(format!("trellis: {why}\n"))));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    // This request's span continues the client's trace (or starts one).
    let parent = TraceContext::extract(&HeaderExtractor(req.headers()));
    let mut span = Span::start(TraceContext::next(parent), parent, Kind::Server, || {
        format!("{} {}", req.method(), route.prefix.as_deref().unwrap_or("/"))
    });
    let trace = span.context();
    span.attr("http.request.method", || req.method().to_string());
    span.attr("url.path", || req.uri().path().to_owned());
    span.attr("trellis.component", || route.target.clone());
    match forward(ctx, &route, req, trace).await {
        Ok(resp) => {
            span.attr("http.response.status_code", || resp.status().as_u16().to_string());
            resp
        }
        Err(e) => {
            span.fail(|| e.to_string());
            error_response(&e)
        }
    }
}

async fn forward(
    ctx: &Context,
    route: &Route,
    req: Request<Incoming>,
    trace: TraceContext,
) -> Result<Response<Full<Bytes>>, InvokeError> {
    let too_large = || {
        InvokeError::new(
            InvokeErrorKind::TooLarge,
            format!("request body exceeds {} bytes (link config max_body_bytes)", route.max_body),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > route.max_body) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let body =
        Limited::new(body, route.max_body).collect().await.map_err(|_| too_large())?.to_bytes();
    let payload = wire::encode(&HttpRequest::from_parts(&parts, body))
        .map_err(|e| InvokeError::new(InvokeErrorKind::BadRequest, e.to_string()))?;
    let reply =
        ctx.invoke(&route.target, INCOMING_HANDLER, HANDLE, payload, route.timeout, trace).await?;
    let response: HttpResponse = wire::decode(&reply).map_err(|e| {
        InvokeError::new(
            InvokeErrorKind::Trap,
            format!("undecodable response from `{}`: {e}", route.target),
        )
    })?;
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder.body(Full::new(Bytes::from(response.body.into_vec()))).map_err(|e| {
        InvokeError::new(
            InvokeErrorKind::Trap,
            format!("invalid response from `{}`: {e}", route.target),
        )
    })
}

fn error_response(e: &InvokeError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::new(Full::new(Bytes::from(format!("trellis: {e}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::ERROR, hyper::header::HeaderValue::from_static(e.kind().as_str()));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Overloaded, restarting or not running yet: worth another try in a moment.
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    }
    resp
}
