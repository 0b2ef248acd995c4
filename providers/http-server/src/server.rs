//! Listeners per link and the request path: HTTP in, lattice invocation, HTTP out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
use trellis_provider::{Context, Provider};

const DEFAULT_MAX_BODY: usize = 1 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one listener sends its requests.
#[derive(Debug, Clone)]
struct Route {
    target: String,
    max_body: usize,
    timeout: Duration,
}

/// A listener serving one link.
#[derive(Debug)]
struct Listener {
    address: SocketAddr,
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

/// The provider: one listener per link.
#[derive(Debug)]
pub struct HttpServer {
    ctx: Context,
    listeners: Mutex<HashMap<String, Listener>>,
}

impl HttpServer {
    pub fn new(ctx: Context) -> Self {
        Self { ctx, listeners: Mutex::new(HashMap::new()) }
    }

    fn take(&self, key: &str) -> Option<Listener> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).remove(key)
    }
}

impl Provider for HttpServer {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        if link.source != ctx.provider_id() {
            return Err(format!(
                "http-server takes no calls; link it as the source (`trellis link put {} \
                 {INCOMING_HANDLER} <component>`)",
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
        if let Some(old) = self.take(&link.key()) {
            old.close().await;
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address} for link {}: {e}", link.key()))?;
        let address = listener.local_addr().unwrap_or(address);
        tracing::info!(%address, target = %route.target, "serving HTTP");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, ctx.clone(), Arc::new(route), stopped));
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(link.key(), Listener { address, stop, task });
        Ok(())
    }

    async fn link_deleted(&self, _ctx: &Context, link: Link) {
        if let Some(old) = self.take(&link.key()) {
            tracing::info!(address = %old.address, "link deleted; closing its listener");
            old.close().await;
        }
    }

    async fn shutdown(&self) {
        let all: Vec<Listener> = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, l)| l)
            .collect();
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
    let route = Route {
        target: link.target.clone(),
        max_body: number("max_body_bytes", DEFAULT_MAX_BODY as u64)? as usize,
        timeout: Duration::from_millis(number("timeout_ms", DEFAULT_TIMEOUT.as_millis() as u64)?),
    };
    Ok((address, route))
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Context,
    route: Arc<Route>,
    stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let (ctx, route) = (ctx.clone(), route.clone());
        let service = service_fn(move |req| {
            let (ctx, route) = (ctx.clone(), route.clone());
            async move { Ok::<_, std::convert::Infallible>(handle(&ctx, &route, req).await) }
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

async fn handle(ctx: &Context, route: &Route, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match forward(ctx, route, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

async fn forward(
    ctx: &Context,
    route: &Route,
    req: Request<Incoming>,
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
    let request = HttpRequest {
        method: parts.method.to_string(),
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec().into()))
            .collect(),
        body: Vec::from(body).into(),
        scheme: None,
    };
    let payload = wire::encode(&request)
        .map_err(|e| InvokeError::new(InvokeErrorKind::BadRequest, e.to_string()))?;
    let reply = ctx.invoke(&route.target, INCOMING_HANDLER, HANDLE, payload, route.timeout).await?;
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
    resp
}
