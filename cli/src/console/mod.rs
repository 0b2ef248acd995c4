//! `trellis console`: a web page that shows the lattice live and, with an operator key, acts on
//! its applications. Hand-written HTML, JavaScript and CSS built into the binary (see
//! `docs/design/console.md`); the page follows one server-sent-events stream of snapshots.

mod live;
mod session;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use trellis_lattice::client::LatticeClient;
use trellis_scheduler::apps::AppStore;

use crate::args::{ConsoleArgs, Global};
use crate::cmd::app::Sources;
use live::Live;
use session::{COOKIE, Refused, Sessions};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");
const ICON: &str = include_str!("assets/favicon.svg");

/// The page may load only its own script and style, and talk only to its own server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The snapshots the page receives at most this often.
const STREAM_EVERY: Duration = Duration::from_millis(250);

struct Console {
    live: Arc<Live>,
    sessions: Sessions,
    client: LatticeClient,
    apps: AppStore,
    global: Global,
    /// Where a component's traces are: `{component}` is replaced by its id.
    trace_url: Option<String>,
}

pub async fn run(g: &Global, args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let client = crate::cmd::connect(g).await?;
    serve(g, client, args, crate::cmd::host::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the console of `client`'s lattice until `stop` resolves (`trellis console`, or a host
/// started with `--console-listen`).
pub async fn serve(
    g: &Global,
    client: LatticeClient,
    args: ConsoleArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let apps = AppStore::open(&client.jetstream(), &g.lattice, client.js_replicas())
        .await?
        .with_sealer(client.operator());
    let live = Live::follow(client.clone(), apps.clone()).await?;
    let sign_in = client.operator().map(|_| session::token());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: the console listens on {addr}, beyond this machine: anyone who reaches it \
             sees the lattice (actions still need the sign-in token)"
        );
    }
    println!("console of lattice `{}` at http://{addr}/", live.lattice());
    match &sign_in {
        Some(token) => println!("sign in to act with the token {token}"),
        None => println!(
            "read-only: no operator key (give --operator-key, or use a context that names one, \
             to deploy, roll back and undeploy from the page)"
        ),
    }
    let console = Arc::new(Console {
        live,
        sessions: Sessions::new(sign_in),
        client,
        apps,
        global: g.clone(),
        trace_url: args.trace_url,
    });
    let app = Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/console.js", get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console.css", get(|| async { page("text/css; charset=utf-8", STYLE) }))
        .route("/favicon.svg", get(|| async { page("image/svg+xml", ICON) }))
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream))
        .route("/api/session", get(session_state).post(sign_in_with))
        .route("/api/apps", post(deploy))
        .route("/api/apps/{name}/rollback", post(rollback))
        .route("/api/apps/{name}/undeploy", post(undeploy))
        .with_state(console);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .context("the console's server failed")
}

/// A static asset, with the headers every answer of the console carries.
fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(response)
}

fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON answer.
fn answer(status: StatusCode, body: Value) -> Response {
    secure((status, Json(body)).into_response())
}

fn refused(e: &Refused) -> Response {
    answer(e.status(), json!({ "error": e.to_string() }))
}

/// An action's outcome: accepted with `body`, or why the lattice would not take it.
fn accepted(outcome: anyhow::Result<()>, body: Value) -> Response {
    match outcome {
        Ok(()) => answer(StatusCode::ACCEPTED, body),
        Err(e) => answer(StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": format!("{e:#}") })),
    }
}

impl Console {
    fn snapshot(&self) -> Value {
        let mut snapshot = self.live.snapshot(self.sessions.actions());
        snapshot["trace_url"] = json!(self.trace_url);
        snapshot
    }
}

async fn snapshot(State(console): State<Arc<Console>>) -> Response {
    answer(StatusCode::OK, console.snapshot())
}

/// Server-sent events: a snapshot at once, then one whenever something changed (at most every
/// [`STREAM_EVERY`]).
async fn stream(State(console): State<Arc<Console>>) -> Response {
    let changes = console.live.changes();
    let events = futures::stream::unfold(
        (console, changes, true),
        |(console, mut changes, first)| async move {
            if !first {
                tokio::time::sleep(STREAM_EVERY).await;
                changes.changed().await.ok()?;
            }
            changes.borrow_and_update();
            let event = Event::default().event("snapshot").data(console.snapshot().to_string());
            Some((Ok::<_, std::convert::Infallible>(event), (console, changes, false)))
        },
    );
    secure(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

async fn session_state(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let csrf = console.sessions.csrf_of(&headers);
    answer(
        StatusCode::OK,
        json!({
            "actions": console.sessions.actions(),
            "signed_in": csrf.is_some(),
            "csrf": csrf,
        }),
    )
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in_with(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Response {
    match console.sessions.sign_in(&headers, &body.token) {
        Ok((id, csrf)) => {
            let mut response = answer(StatusCode::OK, json!({ "csrf": csrf }));
            let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
struct Deploy {
    manifest: String,
}

/// Deploys a pasted manifest: its sources are digests in the lattice, OCI references, or files
/// on the console's machine (relative to where it was started).
async fn deploy(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Json(body): Json<Deploy>,
) -> Response {
    if let Err(e) = console.sessions.check(&headers) {
        return refused(&e);
    }
    // A wadm manifest is translated as `trellis app deploy` does.
    let mut manifest = match trellis_scheduler::manifest::wadm::read(&body.manifest) {
        Ok(read) => read.manifest,
        Err(e) => return answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
    };
    let (name, version) = (manifest.name.to_string(), manifest.version.to_string());
    let sources = Sources { lattice: &console.client, oci: None, g: &console.global };
    let written = async {
        sources.resolve(&mut manifest, Path::new(".")).await?;
        console.apps.deploy(&manifest).await?;
        anyhow::Ok(())
    };
    accepted(written.await, json!({ "name": name, "version": version }))
}

#[derive(Deserialize)]
struct Rollback {
    version: String,
}

async fn rollback(
    State(console): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Rollback>,
) -> Response {
    if let Err(e) = console.sessions.check(&headers) {
        return refused(&e);
    }
    let outcome = console.apps.rollback(&name, Some(&body.version)).await.map(drop);
    accepted(outcome.map_err(Into::into), json!({ "name": name, "version": body.version }))
}

async fn undeploy(
    State(console): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = console.sessions.check(&headers) {
        return refused(&e);
    }
    accepted(console.apps.undeploy(&name).await.map_err(Into::into), json!({ "name": name }))
}
