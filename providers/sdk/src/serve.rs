//! The provider main loop: bootstrap, links, shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::kv::{Entry, Operation};
use prost::Message as _;
use std::os::fd::AsFd;
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::proto as pb;
use trellis_lattice::subject::{EventKind, Subjects};
use trellis_lattice::telemetry::{self, Kind, Span};
use trellis_lattice::trace::TraceContext;

use futures::StreamExt;
use tokio::net::unix::pipe;
use trellis_lattice::connect::{connect_persistent, wait_connected};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::hostlink::{Bootstrap, DirectHost, read_frame};
use trellis_lattice::link::{InterfaceName, Link, link_key};
use trellis_lattice::record::{Opened, RecordGate, Stored};
use trellis_lattice::state::{LatticeState, StateError, decode_link};

use crate::context::Context;
use crate::hostlink::{HostLink, Incoming};

/// A provider could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// No bootstrap arrived on stdin; providers are started by a host.
    #[error(
        "no bootstrap on stdin: providers are started by a host (`trellis start provider <kind>`), \
         not by hand"
    )]
    NoBootstrap,
    /// The bootstrap could not be read.
    #[error("bad bootstrap: {0}")]
    BadBootstrap(String),
    /// NATS or lattice state failed.
    #[error("lattice: {0}")]
    Lattice(String),
}

/// A call to a provider from a component, over a link that targets the provider.
#[derive(Debug)]
pub struct Call {
    /// The calling component.
    pub source: String,
    /// The link the call came over (its config is this caller's settings).
    pub link: Arc<Link>,
    /// The function of the link's interface.
    pub function: String,
    /// msgpack arguments, as the contract defines them.
    pub payload: Vec<u8>,
    /// How long the caller waits.
    pub timeout: std::time::Duration,
    /// The provider's span for this call: the parent of whatever it calls on the caller's
    /// behalf (an outgoing HTTP request carries it as `traceparent`).
    pub trace: trellis_lattice::trace::TraceContext,
}

/// A capability provider implementation.
pub trait Provider: Send + Sync + 'static {
    /// A link from or to this provider was created or changed; apply it. An error is reported
    /// to the lattice (`link_failed`), so `trellis link put` shows it.
    fn link_put(
        &self,
        ctx: &Context,
        link: Link,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A link from or to this provider was deleted; stop serving it.
    fn link_deleted(&self, ctx: &Context, link: Link) -> impl Future<Output = ()> + Send;
    /// A component calls this provider; the reply is msgpack as the contract defines it.
    fn invoke(
        &self,
        ctx: &Context,
        call: Call,
    ) -> impl Future<Output = Result<Vec<u8>, InvokeError>> + Send {
        let _ = (ctx, call);
        async {
            Err(InvokeError::new(
                InvokeErrorKind::BadRequest,
                "this provider serves no calls from components",
            ))
        }
    }
    /// Whether the provider can do its work (its store reachable, ...): `Err` says what is
    /// wrong. Asked every few seconds; changes are reported to the host, which shows them in its
    /// inventory. Healthy unless the provider says otherwise.
    fn health(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
    /// The host asked the provider to stop; finish in-flight work.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// How often a provider's health is asked.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// The links that concern this provider, by KV key.
type LinkMap = Arc<RwLock<HashMap<String, Arc<Link>>>>;

/// How a provider process exports its spans: called once, when the bootstrap has arrived and
/// before the provider is built, with the telemetry settings its host sent (the service name and
/// resource naming the provider); not called when the host exports nothing. `trellis_otlp::init` exports over OTLP as the host does; a
/// provider that links no exporter passes `|_| {}`, and its spans cost nothing. (A builtin
/// provider shares its host's exporter and takes none.)
pub type Export = fn(&telemetry::Config);

/// [`serve`] as a process `main`: errors are printed and become exit code 1.
pub async fn run<P: Provider>(
    export: Export,
    make: impl FnOnce(Context) -> P,
) -> std::process::ExitCode {
    match serve(export, make).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a provider process built by `make` until its host stops it (closes stdin or sends
/// SIGTERM), exporting its spans with `export`.
pub async fn serve<P: Provider>(
    export: Export,
    make: impl FnOnce(Context) -> P,
) -> Result<(), SdkError> {
    init_logging();
    let (from_host, to_host) = host_pipes()?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| SdkError::Lattice(format!("cannot watch SIGTERM: {e}")))?;
    serve_on(from_host, to_host, export, make, async move {
        sigterm.recv().await;
    })
    .await
}

/// Runs a provider over the given ends of its pipe to the host until the host closes it or
/// `stop` resolves, exporting its spans with `export`. [`serve`] uses the process's stdin and
/// stdout; a host runs a builtin provider in its own process with in-memory pipes.
pub async fn serve_on<P, R, W>(
    from_host: R,
    to_host: W,
    export: Export,
    make: impl FnOnce(Context) -> P,
    stop: impl Future<Output = ()>,
) -> Result<(), SdkError>
where
    P: Provider,
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_with(from_host, to_host, (None, Some(export)), make, stop).await
}

/// Runs a builtin provider inside its host's process: as [`serve_on`], but the calls it makes
/// go to `host` in process instead of through frames on the pipe.
pub async fn serve_builtin<P, R, W>(
    (from_host, to_host): (R, W),
    host: Arc<dyn DirectHost>,
    make: impl FnOnce(Context) -> P,
    stop: impl Future<Output = ()>,
) -> Result<(), SdkError>
where
    P: Provider,
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_with(from_host, to_host, (Some(host), None), make, stop).await
}

async fn serve_with<P, R, W>(
    mut from_host: R,
    to_host: W,
    (direct, export): (Option<Arc<dyn DirectHost>>, Option<Export>),
    make: impl FnOnce(Context) -> P,
    stop: impl Future<Output = ()>,
) -> Result<(), SdkError>
where
    P: Provider,
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let bootstrap: Bootstrap = read_frame(&mut from_host)
        .await
        .map_err(|e| SdkError::BadBootstrap(e.to_string()))?
        .ok_or(SdkError::NoBootstrap)?;
    // A provider process exports its spans as the host does (a builtin shares its host's).
    if let Some(export) = export
        && !telemetry::enabled()
        && let Some(mut config) = bootstrap.telemetry.clone()
    {
        config.service_name = format!("trellis-provider-{}", bootstrap.kind);
        config.resource.push(("trellis.provider.id".into(), bootstrap.provider_id.clone()));
        config.resource.push(("trellis.host.id".into(), bootstrap.host_id.clone()));
        config.resource.push(("trellis.lattice".into(), bootstrap.lattice.clone()));
        export(&config);
    }
    let (host, mut host_closed, mut incoming) = HostLink::start(from_host, to_host);
    let host = host.with_direct(direct);
    let ctx = Context { bootstrap, host, nats: Arc::default() };
    let provider = Arc::new(make(ctx.clone()));
    tokio::pin!(stop);

    // Reaching NATS may take forever (down, or credentials refused): the host going away or a
    // stop ends the wait, so no provider outlives its host.
    let started = tokio::select! {
        started = connect_and_watch(&ctx) => started?,
        _ = &mut host_closed => {
            tracing::info!(provider = ctx.provider_id(), "host gone before NATS was reached");
            return Ok(());
        }
        _ = &mut stop => return Ok(()),
    };
    let (nats, mut watch, mut ready) = started;
    if ready {
        ctx.host.ready().await;
    }
    tracing::info!(provider = ctx.provider_id(), kind = %ctx.bootstrap.kind, "provider ready");

    let links = LinkMap::default();
    let records = record_gate(&ctx.bootstrap);
    let mut outcome = Ok(());
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    let mut last_health: Result<(), String> = Ok(());
    loop {
        tokio::select! {
            entry = watch.next() => match entry {
                Some(Ok(entry)) => {
                    let caught_up = entry.delta == 0 || entry.seen_current;
                    apply(&*provider, (&nats, &records), &ctx, &links, entry).await;
                    if caught_up && !ready {
                        ready = true;
                        ctx.host.ready().await;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "link watch error"),
                None => {
                    outcome = Err(SdkError::Lattice("link watch ended".into()));
                    break;
                }
            },
            Some(call) = incoming.recv() => {
                let (provider, ctx, links) = (provider.clone(), ctx.clone(), links.clone());
                tokio::spawn(async move {
                    let id = call.id;
                    // The provider's span for this call continues the caller's.
                    let mut span = Span::rpc(
                        (TraceContext::next(call.parent), call.parent, Kind::Server),
                        (&call.interface, &call.function),
                        (&call.source, ctx.provider_id()),
                    );
                    let trace = span.context();
                    span.attr("trellis.link", || call.link.clone());
                    let result = match resolve(&ctx, &links, call, trace) {
                        Ok(call) => provider.invoke(&ctx, call).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = &result {
                        span.fail(|| e.to_string());
                    }
                    drop(span);
                    ctx.host.reply(id, result).await;
                });
            }
            _ = &mut host_closed => break,
            _ = &mut stop => break,
            _ = health.tick() => {
                let now = provider.health().await;
                if now != last_health {
                    match &now {
                        Ok(()) => tracing::info!(provider = ctx.provider_id(), "healthy again"),
                        Err(e) => tracing::warn!(provider = ctx.provider_id(), problem = %e, "unhealthy"),
                    }
                    ctx.host.health(now.clone().err()).await;
                    last_health = now;
                }
            }
        }
    }
    // Every way out shuts down: listeners and subscriptions must not outlive the provider.
    tracing::info!(provider = ctx.provider_id(), "provider shutting down");
    provider.shutdown().await;
    outcome
}

/// The link a call came over: it must exist and lead to this provider.
fn resolve(
    ctx: &Context,
    links: &LinkMap,
    call: Incoming,
    trace: TraceContext,
) -> Result<Call, InvokeError> {
    let key = InterfaceName::parse(&call.interface)
        .map(|iface| link_key(&call.source, &iface, &call.link))
        .map_err(|e| InvokeError::new(InvokeErrorKind::BadRequest, e.to_string()))?;
    let link = links.read().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    match link {
        Some(link) if link.target == ctx.provider_id() => Ok(Call {
            source: call.source,
            link,
            function: call.function,
            payload: call.payload,
            timeout: call.timeout,
            trace,
        }),
        _ => Err(InvokeError::new(
            InvokeErrorKind::NoLink,
            format!(
                "provider `{}` has no link `{}` from `{}` over {}; create one with `trellis link \
                 put --source {} --interface {} --target {}`",
                ctx.provider_id(),
                call.link,
                call.source,
                call.interface,
                call.source,
                call.interface,
                ctx.provider_id()
            ),
        )),
    }
}

/// Connects to NATS (waiting for it), and watches the lattice's links; says whether there are
/// none yet (then the provider is ready at once).
async fn connect_and_watch(
    ctx: &Context,
) -> Result<(async_nats::Client, async_nats::jetstream::kv::Watch, bool), SdkError> {
    let name = format!("trellis-provider {}", ctx.provider_id());
    // Replies to its requests come to its own inbox, which a provider's NATS user may read
    // (`trellis nats permissions --role provider`), never a host's.
    let inbox = trellis_lattice::permissions::provider_inbox(ctx.provider_id());
    let (nats, _events) =
        connect_persistent(&ctx.bootstrap.nats_url, &name, &ctx.bootstrap.nats_auth, Some(&inbox))
            .await
            .map_err(|e| SdkError::Lattice(e.to_string()))?;
    wait_connected(&nats).await;
    let _ = ctx.nats.set(nats.clone());
    let js =
        trellis_lattice::connect::jetstream(&nats, ctx.bootstrap.nats_auth.js_domain.as_deref());
    let state = LatticeState::open(&js, &ctx.bootstrap.lattice)
        .await
        .map_err(|e| SdkError::Lattice(e.to_string()))?;
    let lattice_err = |e: StateError| SdkError::Lattice(e.to_string());
    // Calls wait until the current links are applied: a call must find its caller's link.
    let empty = state.links_empty().await.map_err(lattice_err)?;
    let watch = state.watch_all_links().await.map_err(lattice_err)?;
    Ok((nats, watch, empty))
}

/// What decides which links this provider applies: the operators its host trusts.
fn record_gate(bootstrap: &Bootstrap) -> RecordGate {
    let operators = bootstrap
        .trusted_operators
        .iter()
        .filter_map(|o| {
            o.parse()
                .inspect_err(|e| tracing::error!(operator = %o, error = %e, "ignoring operator"))
                .ok()
        })
        .collect();
    RecordGate::new(operators, bootstrap.allow_unsigned)
}

async fn apply<P: Provider>(
    provider: &P,
    (nats, records): (&async_nats::Client, &RecordGate),
    ctx: &Context,
    links: &LinkMap,
    entry: Entry,
) {
    let me = ctx.provider_id();
    let opened = match entry.operation {
        Operation::Put => records.open(&entry.bucket, &entry.key, &entry.value),
        Operation::Delete | Operation::Purge => records.bare_delete().map(|()| Opened::Deleted),
    };
    let json = match opened {
        Ok(Opened::Put(json)) => json,
        Ok(Opened::Deleted) => {
            let removed = lock(links).remove(&entry.key);
            if let Some(link) = removed {
                provider.link_deleted(ctx, Arc::unwrap_or_clone(link)).await;
            }
            return;
        }
        Err(denied) => {
            // The link in force stays; whoever wrote this one learns why it was not applied.
            tracing::warn!(link = %entry.key, reason = %denied, "link not applied");
            let ours = Stored::parse(&entry.value)
                .contents()
                .and_then(|json| decode_link(&entry.key, json).ok())
                .is_some_and(|l| l.source == me || l.target == me);
            if ours {
                report(nats, ctx, &entry, Err(denied.to_string())).await;
            }
            return;
        }
    };
    match decode_link(&entry.key, json).and_then(|l| {
        l.validate()
            .map(|()| l)
            .map_err(|e| StateError::BadLink { key: entry.key.clone(), reason: e.to_string() })
    }) {
        Ok(link) if link.source != me && link.target != me => {
            // Not ours; a link that used to be ours and now points elsewhere is gone.
            let old = lock(links).remove(&entry.key);
            if let Some(old) = old {
                provider.link_deleted(ctx, Arc::unwrap_or_clone(old)).await;
            }
        }
        Ok(link) => {
            lock(links).insert(entry.key.clone(), Arc::new(link.clone()));
            let outcome = provider.link_put(ctx, link).await;
            if let Err(e) = &outcome {
                tracing::error!(link = %entry.key, error = %e, "link not applied");
            }
            report(nats, ctx, &entry, outcome).await;
        }
        Err(e) => tracing::error!(error = %e, "ignoring bad link"),
    }
}

fn lock(links: &LinkMap) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Link>>> {
    links.write().unwrap_or_else(|p| p.into_inner())
}

/// Tells the lattice whether a link was applied, so `trellis link put` can say so.
async fn report(
    nats: &async_nats::Client,
    ctx: &Context,
    entry: &Entry,
    outcome: Result<(), String>,
) {
    let Ok(subjects) = Subjects::new(ctx.lattice()) else { return };
    let (kind, reason) = match outcome {
        Ok(()) => (EventKind::LinkApplied, String::new()),
        Err(reason) => (EventKind::LinkFailed, reason),
    };
    let body = pb::LinkEvent {
        provider_id: ctx.provider_id().to_owned(),
        link_key: entry.key.clone(),
        revision: entry.revision,
        reason,
    };
    let event = pb::Event {
        time_ms: unix_ms(),
        host_id: ctx.host_id().to_owned(),
        body: Some(pb::event::Body::Link(body)),
    };
    if let Err(e) = nats.publish(subjects.event(kind), event.encode_to_vec().into()).await {
        tracing::debug!(error = %e, "link event not published");
    }
}

/// The pipe to the host as non-blocking, cancellable halves (tokio's stdin would park a thread
/// in a read that nothing can interrupt). Afterwards fd 1 points at stderr, so a stray
/// `println!` cannot corrupt the frames.
fn host_pipes() -> Result<(pipe::Receiver, pipe::Sender), SdkError> {
    let not_a_pipe = |e: std::io::Error| {
        tracing::error!(error = %e, "stdin/stdout are not pipes");
        SdkError::NoBootstrap
    };
    let stdin = std::io::stdin().as_fd().try_clone_to_owned().map_err(not_a_pipe)?;
    let stdout = std::io::stdout().as_fd().try_clone_to_owned().map_err(not_a_pipe)?;
    let from_host = pipe::Receiver::from_owned_fd(stdin).map_err(not_a_pipe)?;
    let to_host = pipe::Sender::from_owned_fd(stdout).map_err(not_a_pipe)?;
    rustix::stdio::dup2_stdout(std::io::stderr())
        .map_err(|e| SdkError::BadBootstrap(format!("cannot redirect stdout: {e}")))?;
    Ok((from_host, to_host))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
