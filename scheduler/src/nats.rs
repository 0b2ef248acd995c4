//! The scheduler on NATS: the thin adapter around [`crate::core`]. It turns lattice events,
//! application changes and the answers of its own requests into inputs, and carries every
//! effect out on a task of its own, so a slow host (one compiling a large component, say)
//! delays only its own command while heartbeats keep being heard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use backon::{ExponentialBuilder, Retryable};
use futures::{FutureExt as _, StreamExt};
use prost::Message as _;
use tokio::sync::{Mutex, Semaphore, mpsc};
use trellis_lattice::client::{ControlError, LatticeClient};
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::events::Events;
use trellis_lattice::record::RecordGate;
use trellis_lattice::signing::OperatorKey;
use trellis_lattice::state::LatticeState;
use trellis_lattice::subject::EventKind;
use trellis_proto::{self as pb, ErrorCode};

use crate::apps::{AppError, AppRecord, AppStore, Lease};
use crate::core::{self, CommandError, Effect, Input, Notice, Order, Scheduler};
use crate::desired::Start;
use crate::plan::Command;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long a leader's lease lasts without renewal: another scheduler takes over this long
    /// after the leader dies. Renewed every third of it.
    pub lease_ttl: Duration,
    /// Every this long, re-read every host and re-apply links and config, whatever the events
    /// said (repairs drift after lost messages).
    pub resync: Duration,
    /// A workload that failed to start is retried after this long.
    pub retry_failed: Duration,
    /// An unknown host is forgotten after this long without a heartbeat.
    pub lost_after: Duration,
    /// Signs the scheduler's requests to hosts (hosts that are not in development mode take
    /// changes only from operators they trust).
    pub operator: Option<Arc<OperatorKey>>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let core = core::Config::new("");
        Self {
            lease_ttl: core.lease_ttl,
            resync: core.resync,
            retry_failed: core.retry_failed,
            lost_after: core.lost_after,
            operator: None,
        }
    }
}

/// What a scheduler shows on its host's `/metrics`: whether it leads, in which term, and how
/// many commands it sent. A term is the revision of the lease entry with which it took the
/// lease, so two schedulers never share one; a leader cut off stops sending commands before
/// another can take the lease.
#[derive(Debug, Default)]
pub struct Stats {
    /// Whether it leads.
    pub leading: AtomicBool,
    /// The term it leads in; 0 when it does not lead.
    pub term: AtomicU64,
    /// Start, stop and replace commands sent to hosts since start.
    pub commands: AtomicU64,
    /// When (unix ms, the host's clock) its current or last term began: when it asked for the
    /// lease it then got.
    pub term_start_ms: AtomicU64,
    /// Until when (unix ms) the last lease it was granted lets it act; it acts no later.
    pub lease_until_ms: AtomicU64,
}

/// What the scheduler needs of the host it runs beside.
#[derive(Debug, Clone)]
pub struct Context {
    /// The host's NATS connection.
    pub nats: async_nats::Client,
    /// JetStream on it.
    pub jetstream: jetstream::Context,
    /// The lattice.
    pub lattice: String,
    /// The host's id: the scheduler's events carry it, and its heartbeats tell the scheduler
    /// it is still on the bus.
    pub host_id: String,
    /// A development host: records need no seal.
    pub development: bool,
    /// Replicas of the JetStream buckets it creates.
    pub js_replicas: usize,
    /// What checks application records before they are applied.
    pub records: Arc<RecordGate>,
    /// Where it reports what it does.
    pub stats: Arc<Stats>,
    /// Checks wake requests (`ctl.sched.wake`) as the host checks calls: signed by a host of
    /// the lattice, within their deadline, not replayed.
    pub wakes: Arc<trellis_lattice::signing::Verifier>,
}

/// Requests to hosts in flight at once (inventory reads and commands).
const IN_FLIGHT: usize = 256;

/// Runs the scheduler until the task is dropped.
pub async fn run(ctx: Context, config: SchedulerConfig) {
    let Ok(mut client) = LatticeClient::new(ctx.nats.clone(), &ctx.lattice) else { return };
    match config.operator.clone() {
        Some(operator) => client = client.with_operator(operator),
        None if !ctx.development => tracing::warn!(
            "the scheduler has no operator key (--operator-key): hosts that are not in \
             development mode will refuse its starts and stops"
        ),
        None => {}
    }
    let open = || open_state(&ctx, config.lease_ttl, config.operator.clone());
    let (apps, lease, state, mut watch) = match open
        .retry(ExponentialBuilder::default().with_max_times(10))
        .notify(|e, _| tracing::warn!(error = %e, "scheduler state not ready; retrying"))
        .await
    {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot open its state; not scheduling");
            return;
        }
    };
    let mut events = match ctx.nats.subscribe(client.subjects().events_all()).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot follow events; not scheduling");
            return;
        }
    };
    let mut wakes = match ctx.nats.subscribe(client.subjects().scheduler_wake()).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot take wake requests; not scheduling");
            return;
        }
    };
    let start = Instant::now();
    let now = || start.elapsed();
    let mut core = Scheduler::new(
        core::Config {
            me: ctx.host_id.clone(),
            lease_ttl: config.lease_ttl,
            resync: config.resync,
            retry_failed: config.retry_failed,
            lost_after: config.lost_after,
            strict: !ctx.development,
        },
        now(),
    );
    let (answers, mut answered) = mpsc::unbounded_channel();
    let carrier = Carrier {
        announce: Events::new(ctx.nats.clone(), client.subjects().clone(), ctx.host_id.clone()),
        client,
        apps,
        state,
        lease: Arc::new(Mutex::new(lease)),
        lease_ttl: config.lease_ttl,
        answers,
        requests: Arc::new(Semaphore::new(IN_FLIGHT)),
        stats: ctx.stats.clone(),
    };
    loop {
        let wake = start + core.next_wake(now());
        tokio::select! {
            Some(msg) = events.next() => {
                if let Some(input) = event_input(carrier.client.subjects(), &msg) {
                    core.handle(now(), input);
                }
            }
            Some(_) = watch.next() => core.handle(now(), Input::AppsChanged),
            Some(input) = answered.recv() => core.handle(now(), input),
            Some(msg) = wakes.next() => answer_wake(&ctx, &mut core, now(), &msg).await,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        // Whatever else already arrived goes in before planning: a burst is one pass.
        while let Some(Some(msg)) = events.next().now_or_never() {
            if let Some(input) = event_input(carrier.client.subjects(), &msg) {
                core.handle(now(), input);
            }
        }
        while let Ok(input) = answered.try_recv() {
            core.handle(now(), input);
        }
        let at = now();
        for effect in core.poll(at) {
            carrier.carry(effect);
        }
        let (term, until) = core.term();
        let leading = core.leading(at);
        let stats = &ctx.stats;
        if leading && !stats.leading.load(Ordering::Relaxed) {
            stats.term_start_ms.store(unix_ms(), Ordering::Relaxed);
        }
        stats.leading.store(leading, Ordering::Relaxed);
        stats.term.store(if leading { term } else { 0 }, Ordering::Relaxed);
        if let Some(until) = until.filter(|_| leading) {
            let left = until.saturating_sub(at).as_millis() as u64;
            stats.lease_until_ms.store(unix_ms() + left, Ordering::Relaxed);
        }
    }
}

/// Answers a wake request: only the leader does (the others stay silent and the caller asks
/// again), and only a verified one.
async fn answer_wake(
    ctx: &Context,
    core: &mut Scheduler,
    now: Duration,
    msg: &async_nats::Message,
) {
    let Some(reply) = msg.reply.as_ref() else { return };
    if !core.leading(now) {
        return;
    }
    let checked = trellis_lattice::wake::verify_wake(
        &ctx.wakes,
        (msg.subject.as_str(), reply.as_str()),
        msg.headers.as_ref(),
        &msg.payload,
        unix_ms(),
    );
    let component = match checked {
        Ok(component) => component,
        Err(e) => {
            tracing::warn!(error = %e, "wake request refused");
            return;
        }
    };
    let waking = core.wake(now, &component);
    tracing::debug!(component, waking, "wake request");
    let answer = trellis_lattice::wake::wake_reply(waking);
    if let Err(e) = ctx.nats.publish(reply.clone(), answer).await {
        tracing::warn!(error = %e, component, "cannot answer a wake request");
    }
}

type Opened = (AppStore, Lease, LatticeState, jetstream::kv::Watch);

async fn open_state(
    ctx: &Context,
    ttl: Duration,
    operator: Option<Arc<OperatorKey>>,
) -> Result<Opened, trellis_lattice::state::StateError> {
    let (js, lattice, replicas) = (&ctx.jetstream, &ctx.lattice, ctx.js_replicas);
    // Applications are applied only when a trusted operator sealed them; what the scheduler
    // writes back it seals with its own key.
    let apps = AppStore::open(js, lattice, replicas)
        .await?
        .with_sealer(operator.clone())
        .with_gate(ctx.records.clone());
    let lease = Lease::open(js, lattice, &ctx.host_id, (ttl, replicas)).await?;
    // Links and config the scheduler writes are sealed with its key, as strict readers want.
    let state = LatticeState::open_replicated(js, lattice, replicas).await?.with_sealer(operator);
    let watch = apps.watch().await?;
    Ok((apps, lease, state, watch))
}

/// The input a lattice event makes, if any.
fn event_input(
    subjects: &trellis_lattice::subject::Subjects,
    msg: &async_nats::Message,
) -> Option<Input> {
    let kind = subjects.event_kind(&msg.subject)?;
    let event = pb::Event::decode(msg.payload.as_ref()).ok()?;
    match (kind, event.body) {
        ("host_started" | "host_heartbeat", Some(pb::event::Body::Host(info))) => {
            Some(Input::Host(info))
        }
        ("host_stopped", _) => Some(Input::HostStopped(event.host_id)),
        (
            "component_started" | "component_stopped" | "component_failed" | "provider_started"
            | "provider_stopped" | "provider_failed",
            _,
        ) => Some(Input::Touched(event.host_id)),
        _ => None,
    }
}

/// How a control request failed, as the core sees it.
fn command_error(e: &ControlError) -> CommandError {
    let permanent = matches!(
        e.code(),
        Some(
            ErrorCode::InvalidComponent
                | ErrorCode::ArtifactUnavailable
                | ErrorCode::Denied
                | ErrorCode::BadRequest
                | ErrorCode::ProviderFailed
                | ErrorCode::AlreadyExists
        )
    );
    let gone = matches!(e, ControlError::NoSuchHost { .. });
    let timed_out = matches!(e, ControlError::Timeout { .. });
    CommandError { permanent, gone, timed_out, message: e.to_string() }
}

/// Carries effects out, each on a task of its own, and sends their answers back.
struct Carrier {
    client: LatticeClient,
    apps: AppStore,
    state: LatticeState,
    lease: Arc<Mutex<Lease>>,
    lease_ttl: Duration,
    announce: Events,
    answers: mpsc::UnboundedSender<Input>,
    requests: Arc<Semaphore>,
    stats: Arc<Stats>,
}

impl Carrier {
    fn carry(&self, effect: Effect) {
        let answers = self.answers.clone();
        let answer = move |input| {
            let _ = answers.send(input);
        };
        match effect {
            Effect::RenewLease { asked } => {
                let (lease, wait) = (self.lease.clone(), self.lease_ttl / 4);
                tokio::spawn(async move {
                    let hold = async {
                        let mut lease = lease.lock().await;
                        if lease.hold().await { lease.revision() } else { None }
                    };
                    let held = tokio::time::timeout(wait, hold).await.unwrap_or(None);
                    tracing::debug!(?held, "scheduler lease renewal");
                    answer(Input::Lease { asked, held });
                });
            }
            Effect::PingHosts => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    match client.hosts(Duration::from_millis(500)).await {
                        Ok(hosts) => hosts.into_iter().for_each(|info| answer(Input::Host(info))),
                        Err(e) => tracing::warn!(error = %e, "scheduler cannot ping hosts"),
                    }
                    answer(Input::Pinged);
                });
            }
            Effect::ReadInventory { host, read } => {
                let (client, permits) = (self.client.clone(), self.requests.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let inventory = client.inventory(&host).await.map_err(|e| command_error(&e));
                    answer(Input::Inventory { host, read, inventory });
                });
            }
            Effect::ReadApps => {
                let apps = self.apps.clone();
                tokio::spawn(async move {
                    let read = apps.all_checked().await;
                    if let Err(e) = &read {
                        tracing::warn!(error = %e, "scheduler cannot read applications");
                    }
                    answer(Input::Apps(read.ok()));
                });
            }
            Effect::Send(order) => {
                self.stats.commands.fetch_add(1, Ordering::Relaxed);
                let (client, permits) = (self.client.clone(), self.requests.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let error = send(&client, &order).await.err().map(|e| command_error(&e));
                    if error.is_none() {
                        tracing::info!(command = ?order.command, "scheduler command done");
                    }
                    answer(Input::Done { command: order.command, error });
                });
            }
            Effect::ApplyLinks { record, mark } => {
                let state = self.state.clone();
                tokio::spawn(async move {
                    let ok = apply_links_and_config(&state, &record).await;
                    answer(Input::Applied { app: record.name, mark, ok });
                });
            }
            Effect::WriteStatus(status) => {
                let apps = self.apps.clone();
                tokio::spawn(async move {
                    let status = crate::apps::AppStatus { updated_ms: unix_ms(), ..*status };
                    let written = apps.put_status(&status).await;
                    if let Err(e) = &written {
                        tracing::warn!(app = %status.name, error = %e, "cannot write status");
                    }
                    answer(Input::StatusWritten { app: status.name, ok: written.is_ok() });
                });
            }
            Effect::MarkStable { app, version } => {
                let apps = self.apps.clone();
                tokio::spawn(async move {
                    match apps.mark_stable(&app, &version).await {
                        Ok(true) => tracing::info!(%app, %version, "application deployed"),
                        Ok(false) | Err(AppError::NoSuchApp { .. }) => {}
                        Err(e) => tracing::warn!(%app, error = %e, "cannot mark it deployed"),
                    }
                    answer(Input::RecordUpdated { app });
                });
            }
            Effect::RollBack { app, from, to, reason } => {
                let apps = self.apps.clone();
                tokio::spawn(async move {
                    match apps.roll_back_automatically(&app, (&from, &to), &reason).await {
                        Ok(true) => tracing::warn!(%app, %from, %to, %reason, "rolled back"),
                        Ok(false) | Err(AppError::NoSuchApp { .. }) => {}
                        Err(e) => tracing::warn!(%app, error = %e, "cannot roll back"),
                    }
                    answer(Input::RecordUpdated { app });
                });
            }
            Effect::Announce(notice) => self.announce(notice),
        }
    }

    fn announce(&self, notice: Notice) {
        match notice {
            Notice::Leading { term } => tracing::info!(term, "this host now leads the scheduler"),
            Notice::NotLeading => tracing::warn!("this host no longer leads the scheduler"),
            Notice::HostUnknown(host) => {
                tracing::warn!(%host, "host missed its heartbeats; placing its work elsewhere")
            }
            Notice::HostLost(host) => tracing::info!(%host, "host gone; forgotten"),
            Notice::CommandFailed { command, host, error } => {
                tracing::warn!(?command, %host, %error, "scheduler command failed")
            }
            Notice::Scaled(s) => {
                tracing::info!(component = %s.id, app = %s.app, from = s.from, to = s.to,
                    reason = %s.reason, "autoscaled");
                let events = self.announce.clone();
                tokio::spawn(async move {
                    let body = pb::ScaleEvent {
                        component_id: s.id,
                        app: s.app,
                        from: s.from,
                        to: s.to,
                        reason: s.reason,
                    };
                    events.scaled(body).await;
                });
            }
            Notice::RecordDenied(name) => {
                let (events, record) =
                    (self.announce.clone(), format!("{}/spec.{name}", self.apps.bucket()));
                tokio::spawn(async move {
                    let reason = "not sealed by an operator this lattice trusts; the last sealed version stays";
                    events.denied(EventKind::RecordDenied, &record, "", reason).await;
                });
            }
        }
    }
}

/// Carries out one command.
async fn send(client: &LatticeClient, order: &Order) -> Result<(), ControlError> {
    match (&order.command, &order.start) {
        (Command::Stop { host, id }, _) if order.provider => client.stop_provider(host, id).await,
        (Command::Stop { host, id }, _) => client.stop_component(host, id).await,
        (_, Some(Start::Component(req))) => {
            client.start_component_with(order.command.host(), req.clone()).await
        }
        (command, Some(Start::Provider(req))) => {
            if let Command::Replace { host, id } = command {
                // Providers are not swapped in place: stop, then start.
                let _ = client.stop_provider(host, id).await;
            }
            client.start_provider_with(command.host(), req.clone()).await
        }
        (_, None) => Ok(()),
    }
}

/// Makes the lattice's links and named config match the application's current version, and
/// removes what its other versions put there (unless someone changed it since). True when
/// everything was written.
async fn apply_links_and_config(state: &LatticeState, record: &AppRecord) -> bool {
    let current = record.current_manifest();
    let existing = match state.links().await {
        Ok(links) => links.into_iter().map(|l| (l.key(), l)).collect::<BTreeMap<_, _>>(),
        Err(e) => {
            tracing::warn!(error = %e, "scheduler cannot read links");
            return false;
        }
    };
    let wanted: BTreeMap<String, _> = current
        .iter()
        .flat_map(|m| m.links.iter().map(|l| l.to_link()))
        .map(|l| (l.key(), l))
        .collect();
    let mut ok = true;
    for (key, link) in &wanted {
        if existing.get(key) != Some(link)
            && let Err(e) = state.put_link(link).await
        {
            tracing::warn!(app = %record.name, link = %key, error = %e, "cannot put link");
            ok = false;
        }
    }
    let before: Vec<_> =
        record.versions.iter().flat_map(|m| m.links.iter().map(|l| l.to_link())).collect();
    for old in before {
        let key = old.key();
        if !wanted.contains_key(&key)
            && existing.get(&key) == Some(&old)
            && let Err(e) = state.delete_link(&old.source, &old.interface, &old.name).await
        {
            tracing::warn!(app = %record.name, link = %key, error = %e, "cannot delete link");
            ok = false;
        }
    }
    let wanted_config: BTreeMap<String, _> = current
        .iter()
        .flat_map(|m| m.config.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .collect();
    for (name, values) in &wanted_config {
        let same = matches!(state.get_config(name).await, Ok(Some(ref c)) if c == values);
        if !same && let Err(e) = state.put_config(name, values).await {
            tracing::warn!(app = %record.name, config = %name, error = %e, "cannot put config");
            ok = false;
        }
    }
    for m in &record.versions {
        for (name, values) in &m.config {
            let name = name.to_string();
            if !wanted_config.contains_key(&name)
                && matches!(state.get_config(&name).await, Ok(Some(ref c)) if c == values)
            {
                let _ = state.delete_config(&name).await;
            }
        }
    }
    ok
}
