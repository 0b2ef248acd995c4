//! The scheduler loop: the thin I/O shell around [`plan`]. It keeps the lease, watches hosts and
//! applications, and on every change (and on a timer) plans, carries the plan out and writes
//! each application's status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::apps::{AppRecord, AppStatus, AppStore, Lease, State, WorkloadStatus};
use trellis_lattice::client::{ControlError, LatticeClient};
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::record::RecordGate;
use trellis_lattice::signing::OperatorKey;
use trellis_lattice::state::LatticeState;
use trellis_lattice::subject::EventKind;
use trellis_proto::{self as pb, ErrorCode};

use super::desired::{self, Start, Workload};
use super::observe::Hosts;
use super::plan::{Command, Observed, Placement, plan};
use crate::events::Events;
use crate::host::{AbortOnDrop, Host};

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
    /// Signs the scheduler's requests to hosts (hosts that are not in development mode take
    /// changes only from operators they trust).
    pub operator: Option<Arc<OperatorKey>>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(6),
            resync: Duration::from_secs(30),
            retry_failed: Duration::from_secs(30),
            operator: None,
        }
    }
}

/// Runs the scheduler beside `host` until the task is dropped.
pub(crate) async fn run(host: Arc<Host>, config: SchedulerConfig) {
    let nats = host.nats().clone();
    let lattice = host.lattice().to_owned();
    let Ok(mut client) = LatticeClient::new(nats.clone(), &lattice) else { return };
    match config.operator.clone() {
        Some(operator) => client = client.with_operator(operator),
        None if !host.development() => tracing::warn!(
            "the scheduler has no operator key (--operator-key): hosts that are not in \
             development mode will refuse its starts and stops"
        ),
        None => {}
    }
    let js = host.jetstream();
    let me = host.id().to_owned();
    let settings = (config.lease_ttl, host.js_replicas(), config.operator.clone(), host.records());
    let open = || open_state(js.clone(), lattice.clone(), me.clone(), settings.clone());
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
    let mut events = match nats.subscribe(host.subjects().events_all()).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "scheduler cannot follow events; not scheduling");
            return;
        }
    };
    let leading = Arc::new(LeaseClock::new());
    let stats = host.scheduler.clone();
    let lease_task = tokio::spawn(keep_lease(lease, config.lease_ttl, (leading.clone(), stats)));
    let _abort_lease = AbortOnDrop(lease_task);

    let mut s = Scheduler {
        me: host.id().to_owned(),
        leading: leading.clone(),
        client,
        apps,
        state,
        hosts: Hosts::default(),
        failures: HashMap::new(),
        applied: HashMap::new(),
        written: HashMap::new(),
        verified: BTreeMap::new(),
        refused: BTreeSet::new(),
        strict: !host.development(),
        events: host.events().clone(),
        stats: host.scheduler.clone(),
        config,
        dirty: true,
        last_resync: Instant::now(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leading = false;
    loop {
        tokio::select! {
            Some(msg) = events.next() => s.event(&msg.subject, &msg.payload),
            Some(_) = watch.next() => s.dirty = true,
            _ = tick.tick() => s.tick(),
        }
        let lead = leading.held();
        host.scheduler.leading.store(lead, Ordering::Relaxed);
        if lead && !was_leading {
            tracing::info!(host = %s.me, "this host now leads the scheduler");
            s.resync().await;
        } else if !lead && was_leading {
            tracing::warn!(host = %s.me, "this host no longer leads the scheduler");
        }
        was_leading = lead;
        if lead && s.dirty {
            s.reconcile().await;
        }
    }
}

type Opened = (AppStore, Lease, LatticeState, async_nats::jetstream::kv::Watch);

async fn open_state(
    js: jetstream::Context,
    lattice: String,
    me: String,
    (ttl, replicas, operator, records): (
        Duration,
        usize,
        Option<Arc<OperatorKey>>,
        Arc<RecordGate>,
    ),
) -> Result<Opened, trellis_lattice::state::StateError> {
    // Applications are applied only when a trusted operator sealed them; what the scheduler
    // writes back it seals with its own key.
    let apps = AppStore::open(&js, &lattice, replicas)
        .await?
        .with_sealer(operator.clone())
        .with_gate(records);
    let lease = Lease::open(&js, &lattice, &me, (ttl, replicas)).await?;
    // Links and config the scheduler writes are sealed with its key, as strict readers want.
    let state = LatticeState::open_replicated(&js, &lattice, replicas).await?.with_sealer(operator);
    let watch = apps.watch().await?;
    Ok((apps, lease, state, watch))
}

/// Until when this scheduler surely holds the lease: a leader checks it before every step of a
/// pass that changes the lattice, so one that lost the lease mid-pass stops there.
#[derive(Debug)]
struct LeaseClock {
    base: Instant,
    /// Milliseconds after `base`; 0: not held.
    until_ms: AtomicU64,
}

impl LeaseClock {
    fn new() -> Self {
        Self { base: Instant::now(), until_ms: AtomicU64::new(0) }
    }

    /// Held until `until`, or not at all.
    fn set(&self, until: Option<Instant>) {
        let ms = until.map_or(0, |u| u.saturating_duration_since(self.base).as_millis() as u64);
        self.until_ms.store(ms, Ordering::Relaxed);
    }

    fn held(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until > 0 && (self.base.elapsed().as_millis() as u64) < until
    }
}

/// Takes and renews the lease, and keeps `leading` told until when it holds it: the TTL from
/// before the renewal was sent (the server counts from when it stored it, later), less a third
/// for commands in flight. A stopped or dead leader's lease lapses on the server after its TTL.
///
/// The term (for `/metrics`) is the lease entry's revision when it was taken: a renewal keeps
/// it, a lapse ends it.
async fn keep_lease(
    mut lease: Lease,
    ttl: Duration,
    (leading, stats): (Arc<LeaseClock>, Arc<super::Stats>),
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = 0;
    loop {
        tick.tick().await;
        let (asked, asked_ms) = (Instant::now(), unix_ms());
        let held = tokio::time::timeout(ttl / 3, lease.hold()).await.unwrap_or(false);
        let lasts = ttl - ttl / 3;
        leading.set(held.then(|| asked + lasts));
        if held {
            stats.lease_until_ms.store(asked_ms + lasts.as_millis() as u64, Ordering::Relaxed);
        }
        term = match (held, term) {
            (false, _) => 0,
            (true, 0) => {
                stats.term_start_ms.store(asked_ms, Ordering::Relaxed);
                lease.revision().unwrap_or_default()
            }
            (true, term) => term,
        };
        stats.term.store(term, Ordering::Relaxed);
    }
}

struct Scheduler {
    me: String,
    /// Until when this scheduler leads.
    leading: Arc<LeaseClock>,
    client: LatticeClient,
    apps: AppStore,
    state: LatticeState,
    hosts: Hosts,
    /// Workloads that failed to start, by (id, fingerprint): why and when.
    failures: HashMap<(String, String), (String, Instant)>,
    /// Per application, the (version, history length) whose links and config were applied.
    applied: HashMap<String, (Option<String>, usize)>,
    /// The last status written per application.
    written: HashMap<String, AppStatus>,
    /// The last application records that passed the gate, by name.
    verified: BTreeMap<String, AppRecord>,
    /// Applications whose record was refused the last time, announced once.
    refused: BTreeSet<String>,
    /// Whether only sealed records count (not a development host).
    strict: bool,
    events: Events,
    stats: Arc<super::Stats>,
    config: SchedulerConfig,
    dirty: bool,
    last_resync: Instant,
}

/// Failures that retrying will not fix: the artifact or spec is wrong.
fn permanent(e: &ControlError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::InvalidComponent
                | ErrorCode::ArtifactUnavailable
                | ErrorCode::Denied
                | ErrorCode::BadRequest
                | ErrorCode::ProviderFailed
                | ErrorCode::AlreadyExists
        )
    )
}

impl Scheduler {
    fn event(&mut self, subject: &str, payload: &[u8]) {
        let Some(kind) = self.client.subjects().event_kind(subject) else { return };
        let Ok(event) = pb::Event::decode(payload) else { return };
        match (kind, event.body) {
            ("host_started" | "host_heartbeat", Some(pb::event::Body::Host(info))) => {
                let known = self.hosts.stale();
                self.hosts.seen(info, Instant::now());
                if self.hosts.stale() != known {
                    self.dirty = true;
                }
            }
            ("host_stopped", _) if self.hosts.gone(&event.host_id) => {
                tracing::info!(host = %event.host_id, "host left; re-planning");
                self.dirty = true;
            }
            (
                "component_started" | "component_stopped" | "component_failed" | "provider_started"
                | "provider_stopped" | "provider_failed",
                _,
            ) => {
                self.hosts.touched(&event.host_id);
                self.dirty = true;
            }
            _ => {}
        }
    }

    fn tick(&mut self) {
        for name in self.hosts.expire(Instant::now(), &self.me) {
            tracing::warn!(host = %name, "host missed its heartbeats; re-placing its work");
            self.dirty = true;
        }
        if self.last_resync.elapsed() >= self.config.resync {
            self.last_resync = Instant::now();
            self.applied.clear();
            self.dirty = true;
        }
        // A failed start comes due for its retry (once: the retry resets or clears it).
        let due = self.config.retry_failed..self.config.retry_failed + Duration::from_secs(1);
        if self.failures.values().any(|(_, at)| due.contains(&at.elapsed())) {
            self.dirty = true;
        }
    }

    /// Reads every host afresh (on taking the lead).
    async fn resync(&mut self) {
        match self.client.hosts(Duration::from_millis(500)).await {
            Ok(hosts) => {
                let now = Instant::now();
                for info in hosts {
                    let id = info.id.clone();
                    self.hosts.seen(info, now);
                    self.hosts.touched(&id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler cannot ping hosts"),
        }
        self.applied.clear();
        self.written.clear();
        self.dirty = true;
    }

    async fn refresh_inventories(&mut self) {
        let stale = self.hosts.stale();
        let reads = futures::future::join_all(stale.iter().map(|h| self.client.inventory(h))).await;
        for (host, read) in stale.iter().zip(reads) {
            match read {
                Ok(inventory) => self.hosts.inventory(host, inventory),
                Err(ControlError::NoSuchHost { .. }) => {
                    if self.hosts.gone(host) {
                        tracing::info!(%host, "host no longer answers; re-planning without it");
                    }
                }
                Err(e) => {
                    tracing::debug!(%host, error = %e, "inventory not read; trying again");
                    self.dirty = true;
                }
            }
        }
    }

    /// The records to place: those that passed the gate now and, for an application whose
    /// record was refused (or, on a strict lattice, vanished: only a forgery deletes one), the
    /// last one that passed. Newly refused records are announced (`record_denied`).
    async fn keep_verified(
        &mut self,
        records: Vec<AppRecord>,
        refused: &[String],
    ) -> Vec<AppRecord> {
        let mut by_name: BTreeMap<String, AppRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        for (name, known) in &self.verified {
            if refused.contains(name) || (self.strict && !by_name.contains_key(name)) {
                by_name.entry(name.clone()).or_insert_with(|| known.clone());
            }
        }
        for name in refused.iter().filter(|n| !self.refused.contains(*n)) {
            let record = format!("{}/spec.{name}", self.apps.bucket());
            let reason =
                "not sealed by an operator this lattice trusts; the last sealed version stays";
            self.events.denied(EventKind::RecordDenied, &record, "", reason).await;
        }
        self.refused = refused.iter().cloned().collect();
        self.verified = by_name.clone();
        by_name.into_values().collect()
    }

    async fn reconcile(&mut self) {
        self.dirty = false;
        self.refresh_inventories().await;
        let records = match self.apps.all_checked().await {
            Ok((records, refused)) => self.keep_verified(records, &refused).await,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler cannot read applications");
                self.dirty = true;
                return;
            }
        };
        if !self.still_leading() {
            return;
        }
        for record in &records {
            self.apply_links_and_config(record).await;
        }
        let workloads = desired::workloads(&records);
        // Failures of specs nobody wants any more are forgotten.
        self.failures.retain(|(id, fingerprint), _| {
            workloads.get(id).is_some_and(|w| w.wanted.fingerprint == *fingerprint)
        });
        let wanted: Vec<_> = workloads.values().map(|w| w.wanted.clone()).collect();
        let observed = self.hosts.observed();
        let (commands, placements) = plan(&wanted, &observed);
        let commands = self.pace(commands, &workloads);
        let placements: BTreeMap<&str, &Placement> =
            placements.iter().map(|p| (p.id.as_str(), p)).collect();
        if !self.still_leading() {
            return;
        }
        for record in &records {
            let status = self.status(record, &observed, &workloads, (&placements, &commands));
            self.write_status(status, record).await;
        }
        if !commands.is_empty() && self.still_leading() {
            self.execute(commands, &workloads, &records).await;
            // Read the touched hosts again and plan once more: level-triggered.
            self.dirty = true;
        }
    }

    /// Whether the lease still holds; if not, the pass stops and the next leader (or this one,
    /// once it holds the lease again) plans afresh.
    fn still_leading(&mut self) -> bool {
        let held = self.leading.held();
        if !held {
            tracing::warn!(host = %self.me, "scheduler lease lapsed during a pass; stopping it");
            self.dirty = true;
        }
        held
    }

    /// Holds back starts of workloads that failed recently, and replaces beyond each
    /// application's rollout batch.
    fn pace(&self, commands: Vec<Command>, workloads: &BTreeMap<String, Workload>) -> Vec<Command> {
        let mut replaces: HashMap<&str, u32> = HashMap::new();
        commands
            .into_iter()
            .filter(|c| match c {
                Command::Stop { .. } => true,
                Command::Start { id, .. } | Command::Replace { id, .. } => {
                    let Some(w) = workloads.get(id) else { return false };
                    let key = (id.clone(), w.wanted.fingerprint.clone());
                    if self
                        .failures
                        .get(&key)
                        .is_some_and(|(_, at)| at.elapsed() < self.config.retry_failed)
                    {
                        return false;
                    }
                    if matches!(c, Command::Replace { .. }) {
                        let n = replaces.entry(w.wanted.app.as_str()).or_default();
                        *n += 1;
                        return *n <= w.batch;
                    }
                    true
                }
            })
            .collect()
    }

    async fn execute(
        &mut self,
        commands: Vec<Command>,
        workloads: &BTreeMap<String, Workload>,
        records: &[AppRecord],
    ) {
        let client = &self.client;
        let hosts = &self.hosts;
        self.stats.commands.fetch_add(commands.len() as u64, Ordering::Relaxed);
        let outcomes = futures::future::join_all(commands.iter().map(|c| async move {
            let result = match c {
                Command::Stop { host, id } => {
                    if hosts.runs_provider(host, id) {
                        client.stop_provider(host, id).await
                    } else {
                        client.stop_component(host, id).await
                    }
                }
                Command::Start { host, id } | Command::Replace { host, id } => {
                    let w = &workloads[id];
                    match &w.start {
                        Start::Component(req) => {
                            client.start_component_with(host, req.clone()).await
                        }
                        Start::Provider(req) => {
                            if matches!(c, Command::Replace { .. }) {
                                // Providers are not swapped in place: stop, then start.
                                let _ = client.stop_provider(host, id).await;
                            }
                            client.start_provider_with(host, req.clone()).await
                        }
                    }
                }
            };
            (c, result)
        }))
        .await;
        let mut rollbacks: BTreeMap<String, String> = BTreeMap::new();
        for (command, result) in outcomes {
            let (Command::Stop { host, id }
            | Command::Start { host, id }
            | Command::Replace { host, id }) = command;
            self.hosts.touched(host);
            let Err(e) = result else {
                tracing::info!(?command, "scheduler command done");
                if let Some(w) = workloads.get(id) {
                    self.failures.remove(&(id.clone(), w.wanted.fingerprint.clone()));
                }
                continue;
            };
            let host_name = self.hosts.name(host);
            tracing::warn!(?command, host = %host_name, error = %e, "scheduler command failed");
            let (Command::Start { .. } | Command::Replace { .. }) = command else { continue };
            if !permanent(&e) {
                continue;
            }
            let w = &workloads[id];
            let reason = format!("{id} on {host_name}: {e}");
            self.failures.insert(
                (id.clone(), w.wanted.fingerprint.clone()),
                (reason.clone(), Instant::now()),
            );
            rollbacks.entry(w.wanted.app.clone()).or_insert(reason);
        }
        for (app, reason) in rollbacks {
            if let Some(record) = records.iter().find(|r| r.name == app) {
                self.roll_back(record, &reason).await;
            }
        }
    }

    /// A version that fails while replacing a stable one goes back to the stable one.
    async fn roll_back(&mut self, record: &AppRecord, reason: &str) {
        let (Some(current), Some(stable)) = (&record.current, &record.stable) else { return };
        if current == stable {
            return;
        }
        let update = |r: &mut AppRecord| {
            if r.current.as_ref() != Some(current) {
                return false;
            }
            r.record("automatic-rollback", current.as_str(), reason);
            r.current = Some(stable.clone());
            true
        };
        if self.update_record(&record.name, update).await {
            tracing::warn!(app = %record.name, from = %current, to = %stable, reason, "rolled back");
        }
    }

    /// Reads, changes and writes a record with compare-and-set, a few times on conflicts.
    async fn update_record(&self, name: &str, change: impl Fn(&mut AppRecord) -> bool) -> bool {
        for _ in 0..5 {
            let Ok(Some((mut record, revision))) = self.apps.get(name).await else { return false };
            if !change(&mut record) {
                return false;
            }
            match self.apps.put(&record, revision).await {
                Ok(Ok(_)) => return true,
                Ok(Err(_conflict)) => continue,
                Err(e) => {
                    tracing::warn!(app = name, error = %e, "cannot update the application");
                    return false;
                }
            }
        }
        false
    }

    fn status(
        &self,
        record: &AppRecord,
        observed: &[Observed],
        workloads: &BTreeMap<String, Workload>,
        (placements, commands): (&BTreeMap<&str, &Placement>, &[Command]),
    ) -> AppStatus {
        let runs = |id: &str, fingerprint: Option<&str>| -> Vec<String> {
            observed
                .iter()
                .filter(|h| {
                    h.workloads.get(id).is_some_and(|w| {
                        w.app == record.name && fingerprint.is_none_or(|f| w.fingerprint == f)
                    })
                })
                .map(|h| self.hosts.name(&h.id))
                .collect()
        };
        let mut status = AppStatus {
            name: record.name.clone(),
            version: record.current.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            state: State::Deployed,
            reason: String::new(),
            workloads: Vec::new(),
            updated_ms: unix_ms(),
            scheduler: self.me.clone(),
        };
        let Some(manifest) = record.current_manifest() else {
            let left: usize = observed
                .iter()
                .map(|h| h.workloads.values().filter(|w| w.app == record.name).count())
                .sum();
            (status.state, status.reason) = if left == 0 {
                (State::Undeployed, String::new())
            } else {
                (State::Reconciling, format!("stopping {left} replicas"))
            };
            return status;
        };
        for id in manifest.workload_names() {
            let Some(w) = workloads.get(id) else {
                status.workloads.push(WorkloadStatus {
                    name: id.to_owned(),
                    kind: "component".into(),
                    desired: 0,
                    hosts: vec![],
                    state: State::Failed,
                    reason: "its source is not in the lattice artifact store".into(),
                });
                continue;
            };
            let hosts = runs(id, Some(&w.wanted.fingerprint));
            let pending = commands.iter().any(|c| match c {
                Command::Stop { id: i, .. }
                | Command::Start { id: i, .. }
                | Command::Replace { id: i, .. } => i == id,
            });
            let failure = self.failures.get(&(id.to_owned(), w.wanted.fingerprint.clone()));
            let unhealthy: Vec<&str> = observed
                .iter()
                .filter(|h| h.workloads.contains_key(id) && !self.hosts.healthy(&h.id, id))
                .map(|h| h.id.as_str())
                .collect();
            let shortfall = placements.get(id).and_then(|p| p.shortfall.clone());
            let (state, reason) = if let Some((reason, _)) = failure {
                (State::Failed, reason.clone())
            } else if pending {
                (State::Reconciling, String::new())
            } else if let Some(shortfall) = shortfall {
                (State::Unplaceable, shortfall)
            } else if hosts.len() as u32 != w.wanted.replicas {
                (State::Reconciling, String::new())
            } else if !unhealthy.is_empty() {
                (State::Reconciling, format!("{} replicas report a problem", unhealthy.len()))
            } else {
                (State::Deployed, String::new())
            };
            status.workloads.push(WorkloadStatus {
                name: id.to_owned(),
                kind: w.kind().to_owned(),
                desired: w.wanted.replicas,
                hosts,
                state,
                reason,
            });
        }
        if let Some(worst) = status.workloads.iter().max_by_key(|w| w.state) {
            status.state = worst.state;
            status.reason = status
                .workloads
                .iter()
                .filter(|w| w.state == worst.state && !w.reason.is_empty())
                .map(|w| format!("{}: {}", w.name, w.reason))
                .collect::<Vec<_>>()
                .join("; ");
        }
        status
    }

    async fn write_status(&mut self, status: AppStatus, record: &AppRecord) {
        let unchanged = self.written.get(&status.name).is_some_and(|old| {
            AppStatus { updated_ms: 0, ..old.clone() }
                == AppStatus { updated_ms: 0, ..status.clone() }
        });
        if status.state == State::Deployed && record.stable != record.current {
            let current = record.current.clone();
            let marked = self
                .update_record(&record.name, |r| {
                    if r.current != current || r.stable == current {
                        return false;
                    }
                    r.stable = current.clone();
                    let version = current.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    r.record("deployed", &version, "");
                    true
                })
                .await;
            if marked {
                tracing::info!(app = %record.name, version = %status.version, "application deployed");
            }
        }
        if unchanged {
            return;
        }
        match self.apps.put_status(&status).await {
            Ok(()) => {
                self.written.insert(status.name.clone(), status);
            }
            Err(e) => tracing::warn!(app = %status.name, error = %e, "cannot write status"),
        }
    }

    /// Makes the lattice's links and named config match the application's current version,
    /// and removes what its other versions put there (unless someone changed it since).
    async fn apply_links_and_config(&mut self, record: &AppRecord) {
        let mark = (record.current.as_ref().map(|v| v.to_string()), record.history.len());
        if self.applied.get(&record.name) == Some(&mark) {
            return;
        }
        let current = record.current_manifest();
        let existing = match self.state.links().await {
            Ok(links) => links.into_iter().map(|l| (l.key(), l)).collect::<BTreeMap<_, _>>(),
            Err(e) => {
                tracing::warn!(error = %e, "scheduler cannot read links");
                self.dirty = true;
                return;
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
                && let Err(e) = self.state.put_link(link).await
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
                && let Err(e) = self.state.delete_link(&old.source, &old.interface, &old.name).await
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
            let same = matches!(self.state.get_config(name).await, Ok(Some(ref c)) if c == values);
            if !same && let Err(e) = self.state.put_config(name, values).await {
                tracing::warn!(app = %record.name, config = %name, error = %e, "cannot put config");
                ok = false;
            }
        }
        for m in &record.versions {
            for (name, values) in &m.config {
                let name = name.to_string();
                if !wanted_config.contains_key(&name)
                    && matches!(self.state.get_config(&name).await, Ok(Some(ref c)) if c == values)
                {
                    let _ = self.state.delete_config(&name).await;
                }
            }
        }
        if ok {
            self.applied.insert(record.name.clone(), mark);
        } else {
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_held_only_until_its_deadline() {
        let clock = LeaseClock::new();
        assert!(!clock.held(), "not held before the first renewal");
        clock.set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(clock.held());
        clock.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!clock.held(), "a deadline that passed");
        clock.set(Some(Instant::now() + Duration::from_secs(60)));
        clock.set(None);
        assert!(!clock.held(), "a renewal that failed");
    }
}
