//! Starting, watching and restarting provider processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use trellis_lattice::hostlink::Bootstrap;
use trellis_lattice::subject::EventKind;
use trellis_proto as pb;

use super::builtin::{self, BuiltinRun, Builtins, InProcess};
use super::link::Health;
use super::{Pipes, find_executable, link};
use crate::inbound;
use crate::router::Router;
use trellis_lattice::events::Events;
use trellis_lattice::hostlink::DirectHost;

/// Why a provider could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// No executable for the kind.
    #[error("{0}")]
    NoExecutable(String),
    /// The process could not be spawned.
    #[error("cannot start provider `{id}` ({path}): {source}")]
    Spawn { id: String, path: String, source: std::io::Error },
    /// This host has no builtin of the kind.
    #[error(
        "this host has no builtin provider `{kind}` (builtins here: {available}); start it as a process instead"
    )]
    NoBuiltin { kind: String, available: String },
    /// Another kind already runs under this id.
    #[error("provider `{id}` already runs here as {how} `{kind}`; stop it first")]
    Conflict { id: String, kind: String, how: &'static str },
    /// No provider with this id runs here.
    #[error("no provider `{0}` runs on this host")]
    NotFound(String),
}

/// A supervised provider.
#[derive(Debug)]
pub(crate) struct ProviderHandle {
    pub id: String,
    pub kind: String,
    /// Runs inside the host process.
    builtin: bool,
    /// The application that placed it (the scheduler), if any.
    owner: Mutex<Option<pb::Owner>>,
    pid: AtomicU32,
    restarts: AtomicU32,
    running: AtomicBool,
    /// What the provider last reported wrong; `None` when healthy.
    problem: Health,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops serving the provider's invocations from the lattice.
    stop_rpc: Mutex<Option<oneshot::Sender<()>>>,
}

impl ProviderHandle {
    pub fn describe(&self) -> pb::ProviderDescription {
        let problem = self.problem.lock().unwrap_or_else(|p| p.into_inner()).clone();
        pb::ProviderDescription {
            id: self.id.clone(),
            kind: self.kind.clone(),
            pid: self.pid.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            builtin: self.builtin,
            healthy: self.running.load(Ordering::Relaxed) && problem.is_none(),
            problem: problem.unwrap_or_default(),
            owner: self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// The providers of this host.
#[derive(Debug)]
pub(crate) struct Providers {
    map: Mutex<HashMap<String, Arc<ProviderHandle>>>,
    router: Arc<Router>,
    pipes: Arc<Pipes>,
    events: Events,
    bootstrap: Bootstrap,
    dir: Option<PathBuf>,
    builtins: Builtins,
}

impl Providers {
    pub fn new(
        router: Arc<Router>,
        pipes: Arc<Pipes>,
        events: Events,
        bootstrap: Bootstrap,
        (dir, builtins): (Option<PathBuf>, Builtins),
    ) -> Self {
        Self { map: Mutex::new(HashMap::new()), router, pipes, events, bootstrap, dir, builtins }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProviderHandle>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn describe(&self) -> Vec<pb::ProviderDescription> {
        let mut all: Vec<_> = self.lock().values().map(|h| h.describe()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Starts provider `id` of `kind`, as a process or a builtin; idempotent for the same kind
    /// and way of running (a start with an owner adopts the running one).
    pub async fn start(
        &self,
        id: &str,
        kind: &str,
        builtin: bool,
        owner: Option<pb::Owner>,
    ) -> Result<(), StartError> {
        let handle = {
            // Check, spawn and insert under one lock: two concurrent starts make one process.
            let mut map = self.lock();
            if let Some(existing) = map.get(id) {
                return if existing.kind == kind && existing.builtin == builtin {
                    if owner.is_some() {
                        *existing.owner.lock().unwrap_or_else(|p| p.into_inner()) = owner;
                    }
                    Ok(())
                } else {
                    Err(StartError::Conflict {
                        id: id.to_owned(),
                        kind: existing.kind.clone(),
                        how: if existing.builtin { "builtin" } else { "process" },
                    })
                };
            }
            let launch = if builtin {
                let run = self.builtins.get(kind).ok_or_else(|| StartError::NoBuiltin {
                    kind: kind.to_owned(),
                    available: self.builtins.kinds().join(", "),
                })?;
                let router = self.router.clone();
                Launch::Builtin(run, Arc::new(InProcess { router, provider_id: id.to_owned() }))
            } else {
                Launch::Process(
                    find_executable(kind, self.dir.as_deref()).map_err(StartError::NoExecutable)?,
                )
            };
            let instance = launch.start(id)?;
            let (stop, stopped) = watch::channel(false);
            let handle = Arc::new(ProviderHandle {
                id: id.to_owned(),
                kind: kind.to_owned(),
                builtin,
                owner: Mutex::new(owner),
                pid: AtomicU32::new(instance.pid()),
                restarts: AtomicU32::new(0),
                running: AtomicBool::new(true),
                problem: Health::default(),
                stop,
                task: Mutex::new(None),
                stop_rpc: Mutex::new(None),
            });
            let bootstrap = Bootstrap {
                provider_id: id.to_owned(),
                kind: kind.to_owned(),
                ..self.bootstrap.clone()
            };
            let supervisor = Supervisor {
                handle: handle.clone(),
                launch,
                bootstrap,
                router: self.router.clone(),
                pipes: self.pipes.clone(),
                events: self.events.clone(),
            };
            let task = tokio::spawn(supervisor.run(instance, stopped));
            *handle.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
            map.insert(id.to_owned(), handle.clone());
            handle
        };
        // Calls from components on other hosts arrive over NATS, spread over the replicas.
        match inbound::subscribe(self.router.nats(), self.router.subjects(), id).await {
            Ok(sub) => {
                let (stop, stopped) = oneshot::channel();
                *handle.stop_rpc.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
                let target = inbound::Target::Provider(id.to_owned());
                tokio::spawn(inbound::serve(sub, stopped, target, self.router.clone()));
            }
            Err(e) => {
                tracing::warn!(provider = id, error = %e, "cannot take calls from other hosts")
            }
        }
        self.events.provider(EventKind::ProviderStarted, id, kind, "").await;
        Ok(())
    }

    /// Stops provider `id` gracefully (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(&self, id: &str) -> Result<(), StartError> {
        let handle = self.lock().remove(id).ok_or_else(|| StartError::NotFound(id.to_owned()))?;
        if let Some(stop_rpc) = handle.stop_rpc.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop_rpc.send(());
        }
        let _ = handle.stop.send(true);
        let task = handle.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.events.provider(EventKind::ProviderStopped, id, &handle.kind, "stopped").await;
        Ok(())
    }

    /// Stops every provider, all at once.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        futures::future::join_all(ids.iter().map(|id| self.stop(id))).await;
    }
}

/// How a provider is started (again, after a crash).
enum Launch {
    /// An executable, run as a child process.
    Process(PathBuf),
    /// A builtin, run as a task of this host, making its calls in process.
    Builtin(BuiltinRun, Arc<dyn DirectHost>),
}

/// A started provider: a child process or a task.
enum Instance {
    Process(Child),
    Builtin {
        task: tokio::task::JoinHandle<()>,
        host_ends: Option<(DuplexStream, DuplexStream)>,
        stop: Option<oneshot::Sender<()>>,
    },
}

type HostEnds = (Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>);

impl Launch {
    fn start(&self, id: &str) -> Result<Instance, StartError> {
        match self {
            Launch::Process(path) => spawn(id, path).map(Instance::Process),
            Launch::Builtin(run, host) => {
                let (host_ends, provider_ends, stop) = builtin::pipe(host.clone());
                let task = tokio::spawn(run(provider_ends));
                Ok(Instance::Builtin { task, host_ends: Some(host_ends), stop: Some(stop) })
            }
        }
    }
}

impl Instance {
    fn pid(&self) -> u32 {
        match self {
            Instance::Process(child) => child.id().unwrap_or(0),
            Instance::Builtin { .. } => std::process::id(),
        }
    }

    /// The host's ends of the provider's pipe (once).
    fn take_pipe(&mut self) -> Option<HostEnds> {
        match self {
            Instance::Process(child) => {
                let (stdout, stdin) = (child.stdout.take()?, child.stdin.take()?);
                Some((Box::new(stdout), Box::new(stdin)))
            }
            Instance::Builtin { host_ends, .. } => {
                let (from, to) = host_ends.take()?;
                Some((Box::new(from), Box::new(to)))
            }
        }
    }

    /// Waits until it ends; says how.
    async fn wait(&mut self) -> String {
        match self {
            Instance::Process(child) => match child.wait().await {
                Ok(s) => format!("provider process exited: {s}"),
                Err(e) => format!("wait failed: {e}"),
            },
            Instance::Builtin { task, .. } => match task.await {
                Ok(()) => "builtin provider returned".to_owned(),
                Err(e) if e.is_panic() => "builtin provider panicked".to_owned(),
                Err(e) => format!("builtin provider ended: {e}"),
            },
        }
    }

    /// Asks it to stop (SIGTERM, or the builtin's stop signal).
    fn terminate(&mut self) {
        match self {
            Instance::Process(child) => sigterm(child),
            Instance::Builtin { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }

    /// Stops it now.
    async fn kill(&mut self) {
        match self {
            Instance::Process(child) => {
                let _ = child.kill().await;
            }
            Instance::Builtin { task, .. } => task.abort(),
        }
    }
}

fn spawn(id: &str, path: &PathBuf) -> Result<Child, StartError> {
    Command::new(path)
        // Its own process group: a Ctrl-C meant for the host does not kill the provider under
        // it; the host stops it in order (and a dead host closes its stdin).
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| StartError::Spawn {
            id: id.to_owned(),
            path: path.display().to_string(),
            source,
        })
}

/// How long a provider must run before a crash no longer counts towards backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(5);
/// How long the pipe of a provider that has ended is still read.
const LINGER: Duration = Duration::from_secs(1);

struct Supervisor {
    handle: Arc<ProviderHandle>,
    launch: Launch,
    bootstrap: Bootstrap,
    router: Arc<Router>,
    pipes: Arc<Pipes>,
    events: Events,
}

impl Supervisor {
    async fn run(self, first: Instance, mut stop: watch::Receiver<bool>) {
        let mut instance = Some(first);
        let mut delays = restart_delays();
        loop {
            let Some(mut running) = instance.take() else {
                break;
            };
            let started = Instant::now();
            self.handle.pid.store(running.pid(), Ordering::Relaxed);
            self.handle.running.store(true, Ordering::Relaxed);
            *self.handle.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let Some(reason) = self.serve(&mut running, &mut stop).await else {
                break;
            };
            self.handle.running.store(false, Ordering::Relaxed);
            tracing::warn!(provider = %self.handle.id, %reason, "restarting provider");
            self.events
                .provider(EventKind::ProviderFailed, &self.handle.id, &self.handle.kind, &reason)
                .await;
            if started.elapsed() > HEALTHY_AFTER {
                delays = restart_delays();
            }
            // Start again with backoff until it works or we are told to stop.
            loop {
                let delay = delays.next().unwrap_or(MAX_RESTART_DELAY);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_requested(&mut stop) => return,
                }
                match self.launch.start(&self.handle.id) {
                    Ok(i) => {
                        self.handle.restarts.fetch_add(1, Ordering::Relaxed);
                        instance = Some(i);
                        let (id, kind) = (&self.handle.id, &self.handle.kind);
                        self.events
                            .provider(EventKind::ProviderStarted, id, kind, "restarted")
                            .await;
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "provider restart failed"),
                }
            }
        }
    }

    /// Serves the pipe until the provider ends (returns how) or a stop is requested (returns
    /// `None` once it is gone). The pipe stays served while the provider winds down.
    async fn serve(
        &self,
        instance: &mut Instance,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let Some((from_provider, to_provider)) = instance.take_pipe() else {
            return Some("its pipes were not set up".into());
        };
        let link = link::serve(
            self.bootstrap.clone(),
            (from_provider, to_provider),
            self.router.clone(),
            self.pipes.clone(),
            self.handle.problem.clone(),
        );
        tokio::pin!(link);
        let mut link_done = false;
        loop {
            tokio::select! {
                reason = instance.wait() => {
                    // Gone: serve what it wrote last, but a pipe something else keeps open (a
                    // builtin's leftover tasks) must not keep it from being restarted.
                    if !link_done {
                        let _ = tokio::time::timeout(LINGER, &mut link).await;
                    }
                    return Some(reason);
                }
                () = &mut link, if !link_done => link_done = true,
                _ = stop_requested(stop) => break,
            }
        }
        instance.terminate();
        // The pipe is served while the provider winds down (its last calls get answers); once
        // it has ended, what it wrote last gets LINGER, like a provider that exits: a builtin's
        // leftover tasks may keep its end of the pipe open, and that must not hold up the stop.
        let wound_down = tokio::time::timeout(GRACE, async {
            if link_done {
                instance.wait().await;
                return;
            }
            tokio::select! {
                _ = instance.wait() => {
                    let _ = tokio::time::timeout(LINGER, &mut link).await;
                }
                () = &mut link => {
                    instance.wait().await;
                }
            }
        })
        .await;
        if wound_down.is_err() {
            instance.kill().await;
        }
        None
    }
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // The borrow guard is not Send; drop it before returning.
    let _ = stop.wait_for(|s| *s).await.map(drop);
}

fn sigterm(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);

/// Delays between restarts of a provider that keeps failing: 200 ms doubling per consecutive
/// failure up to 10 s, each with up to as much again of jitter, so the providers of a host
/// that all lost the same backend do not restart in step.
fn restart_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(MAX_RESTART_DELAY)
        .without_max_times()
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_grow_with_jitter_and_cap() {
        let delays: Vec<Duration> = restart_delays().take(100).collect();
        assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&delays[0]));
        assert!((Duration::from_millis(400)..=Duration::from_millis(800)).contains(&delays[1]));
        assert!(delays.iter().all(|d| *d <= MAX_RESTART_DELAY * 2), "{delays:?}");
        assert!(delays[99] >= MAX_RESTART_DELAY, "it reaches the cap: {delays:?}");
    }
}
