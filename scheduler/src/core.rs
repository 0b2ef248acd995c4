//! The scheduler itself, with no I/O: it is told what happened ([`Input`]) and when, and says
//! what to do ([`Effect`]). It owns no clock, task or socket, so the NATS adapter
//! ([`crate::nats`]) and the simulator ([`crate::sim`]) drive the same code.
//!
//! Time is a [`Duration`] since a start the driver picks; only differences matter.
//!
//! A driver calls [`Scheduler::handle`] for each input, then [`Scheduler::poll`] and carries
//! out the effects it returns, each of which answers with the input its variant names (an
//! effect whose answer never comes leaves that part of the scheduler waiting: drivers time
//! out every request and answer with its failure). [`Scheduler::next_wake`] says when to poll
//! at the latest if nothing happens.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use trellis_proto as pb;

use crate::apps::{AppRecord, AppStatus, State};
use crate::autoscale::{Autoscaler, Scaled};
use crate::desired::{self, Start, Workload};
use crate::hosts::{Expired, Hosts};
use crate::idle::Idle;
use crate::plan::{self, Command, Observed, Placement, Requirements};
use crate::status::{Draft, WorkloadDraft};

/// How the scheduler decides.
#[derive(Debug, Clone)]
pub struct Config {
    /// The id of the host the scheduler runs beside: when even it falls silent, the
    /// scheduler is the one cut off, and nobody is taken for gone.
    pub me: String,
    /// How long a lease lasts without renewal; it is renewed every quarter of it (a renewal
    /// waits a quarter for its answer) and counted held for two thirds of it from when the
    /// renewal was asked for, so one lost renewal does not end a term.
    pub lease_ttl: Duration,
    /// Every this long, every host is read and links and config applied again, whatever the
    /// events said (repairs drift after lost messages).
    pub resync: Duration,
    /// A workload that failed to start is retried after this long.
    pub retry_failed: Duration,
    /// An unknown host is forgotten after this long without a heartbeat.
    pub lost_after: Duration,
    /// Only records that passed the gate count, and a vanished one keeps its last sealed
    /// version (hosts not in development mode).
    pub strict: bool,
}

impl Config {
    /// The production defaults for a scheduler beside host `me`.
    pub fn new(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            lease_ttl: Duration::from_secs(6),
            resync: Duration::from_secs(30),
            retry_failed: Duration::from_secs(30),
            lost_after: Duration::from_secs(60),
            strict: false,
        }
    }
}

/// Why a command failed, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// Retrying will not help: the artifact or spec is wrong. A permanent failure of a new
    /// version rolls its application back.
    pub permanent: bool,
    /// Nobody listens for the host (no responders): it left NATS, and counts as unknown
    /// until it heartbeats again. The command was not carried out.
    pub gone: bool,
    /// No answer in time: the host may be slow, and the command may still be carried out.
    /// Until the host's inventory is read again, the scheduler plans as if it were.
    pub timed_out: bool,
    /// What went wrong, for status and logs.
    pub message: String,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Input {
    /// A host started or heartbeated, or answered a ping.
    Host(pb::HostInfo),
    /// A host said goodbye.
    HostStopped(String),
    /// A component or provider changed on a host: read it again.
    Touched(String),
    /// The answer to [`Effect::ReadInventory`].
    Inventory {
        /// The host.
        host: String,
        /// The read's number.
        read: u64,
        /// What it runs, or why it could not be read.
        inventory: Result<pb::Inventory, CommandError>,
    },
    /// The answer to [`Effect::ReadApps`]: the records that passed the gate, and the names of
    /// those refused; `None` when they could not be read.
    Apps(Option<(Vec<AppRecord>, Vec<String>)>),
    /// Application records changed: read them again.
    AppsChanged,
    /// The answers to [`Effect::PingHosts`] are all in (each was an [`Input::Host`]).
    Pinged,
    /// The answer to [`Effect::RenewLease`].
    Lease {
        /// When the renewal was asked for.
        asked: Duration,
        /// Whether the lease is held now: the lease entry's revision, or `None`.
        held: Option<u64>,
    },
    /// The answer to [`Effect::Send`].
    Done {
        /// The command.
        command: Command,
        /// `None` when it was carried out.
        error: Option<CommandError>,
    },
    /// The answer to [`Effect::ApplyLinks`]: whether everything was written.
    Applied {
        /// The application.
        app: String,
        /// What was applied.
        mark: Mark,
        /// Whether everything was written.
        ok: bool,
    },
    /// The answer to [`Effect::WriteStatus`].
    StatusWritten {
        /// The application.
        app: String,
        /// Whether it was written.
        ok: bool,
    },
    /// The answer to [`Effect::MarkStable`] and [`Effect::RollBack`].
    RecordUpdated {
        /// The application.
        app: String,
    },
}

/// Which version of an application's links and config were applied: (current version,
/// history length).
pub type Mark = (Option<String>, usize);

/// What to do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Take or renew the lease; answer [`Input::Lease`], with `held: None` when no answer
    /// came within a quarter of the lease.
    RenewLease {
        /// Now: the lease counts from here.
        asked: Duration,
    },
    /// Ask every host to announce itself; each answer is an [`Input::Host`], and
    /// [`Input::Pinged`] follows the last.
    PingHosts,
    /// Read a host's inventory; answer [`Input::Inventory`].
    ReadInventory {
        /// The host.
        host: String,
        /// The read's number, to give back.
        read: u64,
    },
    /// Read every application record through the gate; answer [`Input::Apps`].
    ReadApps,
    /// Carry out a command on a host; answer [`Input::Done`].
    Send(Order),
    /// Make the lattice's links and config match `record`'s current version and remove what
    /// its other versions put there; answer [`Input::Applied`].
    ApplyLinks {
        /// The record.
        record: Box<AppRecord>,
        /// To give back.
        mark: Mark,
    },
    /// Write an application's status (the driver stamps its time); answer
    /// [`Input::StatusWritten`].
    WriteStatus(Box<AppStatus>),
    /// Record that `version` of `app` is completely placed (compare-and-set: only while it is
    /// still current); answer [`Input::RecordUpdated`].
    MarkStable {
        /// The application.
        app: String,
        /// Its current version.
        version: String,
    },
    /// Go back from `from` to the last stable version `to` (compare-and-set: only while
    /// `from` is current); answer [`Input::RecordUpdated`].
    RollBack {
        /// The application.
        app: String,
        /// The version that failed.
        from: String,
        /// The stable version.
        to: String,
        /// Why.
        reason: String,
    },
    /// Tell people (logs, events); nothing answers.
    Announce(Notice),
}

/// A command with what the driver needs to carry it out.
#[derive(Debug, Clone)]
pub struct Order {
    /// What to do where.
    pub command: Command,
    /// For starts and replaces: the request.
    pub start: Option<Start>,
    /// For stops: whether the workload is a provider.
    pub provider: bool,
}

/// Something worth telling people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// This scheduler took the lead in `term`.
    Leading {
        /// Its term.
        term: u64,
    },
    /// This scheduler no longer leads.
    NotLeading,
    /// A host missed its heartbeats; its replicas are placed elsewhere.
    HostUnknown(String),
    /// A host was silent too long, or said goodbye; it is forgotten.
    HostLost(String),
    /// An application record was not sealed by a trusted operator; the last sealed version
    /// stays.
    RecordDenied(String),
    /// Autoscaling changed a workload's replicas.
    Scaled(Scaled),
    /// A command failed.
    CommandFailed {
        /// The command.
        command: Command,
        /// The host's name.
        host: String,
        /// Why.
        error: String,
    },
}

/// By workload id, the hosts of the view that run it, with what they run.
type Running<'a> = HashMap<&'a str, Vec<(&'a Observed, &'a plan::Workload)>>;

/// By workload id, how the pass's plan places it.
type Placements<'a> = HashMap<&'a str, &'a Placement>;

/// The replicas a workload wants this pass: its count, or, at scale `up-to` or `every-host`,
/// what the plan found hosts for.
fn wanted_count(placements: &Placements, id: &str, w: &Workload) -> u32 {
    placements.get(id).map_or(w.wanted.replicas, |p| p.wanted)
}

/// A command sent and not yet seen in its host's inventory.
#[derive(Debug, Clone)]
struct Pending {
    command: Command,
    /// What the command leaves running (for starts and replaces).
    becomes: Option<plan::Workload>,
    /// Once answered: the host's read number then; a read after it shows the result.
    answered_at_read: Option<u64>,
}

/// What the leader lease says.
#[derive(Debug, Default)]
struct LeaseView {
    /// Held until then.
    until: Option<Duration>,
    /// The term it is held in (0: not held).
    term: u64,
    /// A renewal asked for at that time and not yet answered.
    asking: Option<Duration>,
    next_renewal: Duration,
    was_leading: bool,
    /// When it last stopped leading (or started, if it never led).
    stopped_leading: Duration,
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Commands sent.
    pub commands: u64,
    /// Planning passes run.
    pub passes: u64,
}

/// The scheduler's state. See the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    hosts: Hosts,
    lease: LeaseView,
    /// The records being placed, by name (the last ones that passed the gate).
    records: BTreeMap<String, AppRecord>,
    /// What they want, by workload id.
    workloads: BTreeMap<String, Workload>,
    /// Which of them that scale to zero are awake.
    idle: Idle,
    /// Replicas of autoscaled workloads from their load.
    autoscale: Autoscaler,
    /// When autoscaling decides next.
    next_decision: Duration,
    /// Applications whose record was refused the last time, announced once.
    refused: BTreeSet<String>,
    /// Records were read at least once.
    apps_loaded: bool,
    apps_reading: bool,
    apps_stale: bool,
    /// A ping round is out: a new leader plans once every host had its chance to answer.
    pinging: bool,
    /// Workloads that failed to start, by (id, fingerprint): why and when.
    failures: HashMap<(String, String), (String, Duration)>,
    /// Per application, what of its links and config was applied, and what is being applied.
    applied: HashMap<String, Mark>,
    applying: HashSet<String>,
    /// The last status written per application (without its time).
    written: HashMap<String, AppStatus>,
    /// Applications whose status is being written, and the status to write after it: two
    /// writes of one key in flight at once may land in either order.
    status_writing: HashMap<String, Option<AppStatus>>,
    /// Record updates in flight, by application.
    updating: HashSet<String>,
    /// Commands in flight or not yet seen, by host.
    pending: BTreeMap<String, Vec<Pending>>,
    dirty: bool,
    last_resync: Duration,
    /// When hosts' silence is next looked at.
    next_expiry: Duration,
    /// When the last pass ran.
    last_pass: Option<Duration>,
    counters: Counters,
    effects: Vec<Effect>,
}

/// How often the scheduler looks at its timers when nothing happens.
const TICK: Duration = Duration::from_millis(500);

/// How often it looks at hosts' silence, resync and retries.
const EXPIRY_EVERY: Duration = Duration::from_millis(200);

/// Passes are at least this far apart: what happens meanwhile (a burst of answers and
/// events while thousands of replicas start) is planned on together.
const PASS_EVERY: Duration = Duration::from_millis(50);

impl Scheduler {
    /// A scheduler that has heard nothing yet, at `now`.
    pub fn new(config: Config, now: Duration) -> Self {
        Self {
            config,
            hosts: Hosts::default(),
            lease: LeaseView { next_renewal: now, ..LeaseView::default() },
            records: BTreeMap::new(),
            workloads: BTreeMap::new(),
            idle: Idle::default(),
            autoscale: Autoscaler::default(),
            next_decision: Duration::ZERO,
            refused: BTreeSet::new(),
            apps_loaded: false,
            apps_reading: false,
            apps_stale: true,
            pinging: false,
            failures: HashMap::new(),
            applied: HashMap::new(),
            applying: HashSet::new(),
            written: HashMap::new(),
            status_writing: HashMap::new(),
            updating: HashSet::new(),
            pending: BTreeMap::new(),
            dirty: true,
            last_resync: now,
            next_expiry: now,
            last_pass: None,
            counters: Counters::default(),
            effects: Vec::new(),
        }
    }

    /// Whether it leads at `now`.
    pub fn leading(&self, now: Duration) -> bool {
        self.lease.until.is_some_and(|until| now < until)
    }

    /// The term it leads in (0: none), and until when it may act.
    pub fn term(&self) -> (u64, Option<Duration>) {
        (self.lease.term, self.lease.until)
    }

    /// What it has done so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What it knows workload `id` wants: replicas and rollout batch.
    pub fn wants(&self, id: &str) -> Option<(u32, u32)> {
        self.workloads.get(id).map(|w| (w.wanted.replicas, w.batch))
    }

    /// A caller found no replica of component `id` and asks for one (`trellis.<lattice>.ctl.
    /// sched.wake`): a workload that scales to zero is awake from `now` for its idle time, and
    /// asleep, it is planned again. However many ask at once, it wants the same replicas.
    /// `false`: `id` is not a workload that scales to zero (or this scheduler does not lead),
    /// and the caller should not wait for one.
    pub fn wake(&mut self, now: Duration, id: &str) -> bool {
        if !self.leading(now) {
            return false;
        }
        match self.idle.wake(id, now, &mut self.workloads) {
            Some(woke) => {
                self.autoscale.apply(&mut self.workloads);
                self.dirty |= woke;
                true
            }
            None => false,
        }
    }

    /// Whether workload `id`, which scales to zero, is awake (`None`: it does not scale).
    pub fn awake(&self, id: &str) -> Option<bool> {
        self.idle.awake(id)
    }

    /// Where it thinks `host` stands (`None`: not known, or lost).
    pub fn liveness(&self, host: &str) -> Option<crate::hosts::Liveness> {
        self.hosts.liveness(host)
    }

    /// When to poll at the latest if no input arrives.
    pub fn next_wake(&self, now: Duration) -> Duration {
        let mut wake = now + TICK;
        if self.lease.asking.is_none() {
            wake = wake.min(self.lease.next_renewal.max(now));
        }
        if let Some(until) = self.lease.until
            && until > now
        {
            wake = wake.min(until);
        }
        // Only the pass's own pacing is a timer: what else holds a pass back (not leading, a
        // ping round, unread records or hosts) ends with an input, which polls anyway. Waking
        // for those would spin: a follower that once led and heard a heartbeat polled at once,
        // again and again.
        if self.ready_to_plan()
            && let Some(at) = self.last_pass
        {
            wake = wake.min((at + PASS_EVERY).max(now));
        }
        wake
    }

    /// Whether a pass would run now if one is due.
    fn ready_to_plan(&self) -> bool {
        self.dirty
            && self.lease.was_leading
            && !self.pinging
            && self.apps_loaded
            && self.hosts.all_read()
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Duration, input: Input) {
        match input {
            Input::Host(info) => {
                for id in &info.active {
                    self.idle.active(id, now);
                }
                self.autoscale.report(&info, now, &self.workloads);
                if self.hosts.seen(info, now) {
                    self.dirty = true;
                }
            }
            Input::HostStopped(host) => {
                let name = self.hosts.name(&host).to_owned();
                self.autoscale.gone(&host);
                if self.hosts.gone(&host) {
                    self.pending.remove(&host);
                    self.effects.push(Effect::Announce(Notice::HostLost(name)));
                    self.dirty = true;
                }
            }
            Input::Touched(host) => {
                self.hosts.touched(&host);
                self.dirty = true;
            }
            Input::Inventory { host, read, inventory } => match inventory {
                Ok(inventory) => {
                    if self.hosts.inventory(&host, read, &inventory, now) {
                        self.seen_through(&host, read);
                        self.dirty = true;
                    }
                }
                Err(e) => {
                    self.hosts.unread(&host, read, now);
                    if e.gone && self.hosts.unanswered(&host) {
                        let name = self.hosts.name(&host).to_owned();
                        self.effects.push(Effect::Announce(Notice::HostUnknown(name)));
                        self.dirty = true;
                    }
                }
            },
            Input::Apps(read) => {
                self.apps_reading = false;
                match read {
                    Some((records, refused)) => self.take_records(now, records, refused),
                    None => self.apps_stale = true,
                }
            }
            Input::AppsChanged => self.apps_stale = true,
            Input::Pinged => {
                self.pinging = false;
                self.dirty = true;
            }
            Input::Lease { asked, held } => self.lease_answered(now, asked, held),
            Input::Done { command, error } => self.done(now, command, error),
            Input::Applied { app, mark, ok } => {
                self.applying.remove(&app);
                if ok {
                    self.applied.insert(app, mark);
                } else {
                    self.dirty = true;
                }
            }
            Input::StatusWritten { app, ok } => {
                if !ok {
                    self.written.remove(&app);
                    self.dirty = true;
                }
                if let Some(Some(next)) = self.status_writing.remove(&app) {
                    self.send_status(next);
                }
            }
            Input::RecordUpdated { app } => {
                self.updating.remove(&app);
                self.apps_stale = true;
            }
        }
    }

    /// Looks at the clock, plans if anything changed, and returns what to do.
    pub fn poll(&mut self, now: Duration) -> Vec<Effect> {
        self.timers(now);
        let leading = self.leading(now);
        if leading != self.lease.was_leading {
            self.lease.was_leading = leading;
            if leading {
                let term = self.lease.term;
                self.effects.push(Effect::Announce(Notice::Leading { term }));
                self.effects.push(Effect::PingHosts);
                self.pinging = true;
                // A view kept while another led may be long out of date: read every host
                // again before planning. After a short lapse of its own lease (one lost
                // renewal) it is current, and read again only where stale.
                if now.saturating_sub(self.lease.stopped_leading) > self.config.lease_ttl
                    || self.counters.passes == 0
                {
                    self.hosts.forget_inventories();
                }
                self.applied.clear();
                self.written.clear();
                // Records are read afresh before anything is planned.
                self.apps_stale = true;
                self.apps_loaded = false;
                self.dirty = true;
            } else {
                self.lease.stopped_leading = now;
                self.autoscale.stop_deciding();
                self.idle.stop_deciding();
                self.effects.push(Effect::Announce(Notice::NotLeading));
            }
        }
        if leading && now >= self.next_decision {
            self.next_decision = now + EXPIRY_EVERY;
            for scaled in self.autoscale.decide(now, &mut self.workloads) {
                self.dirty = true;
                self.effects.push(Effect::Announce(Notice::Scaled(scaled)));
            }
        }
        if leading {
            self.reads();
            let due = self.last_pass.is_none_or(|at| now >= at + PASS_EVERY);
            if due && self.ready_to_plan() {
                self.dirty = false;
                self.last_pass = Some(now);
                self.pass(now);
            }
        }
        std::mem::take(&mut self.effects)
    }

    fn timers(&mut self, now: Duration) {
        if self.lease.asking.is_none() && now >= self.lease.next_renewal {
            self.lease.asking = Some(now);
            self.lease.next_renewal = now + self.config.lease_ttl / 4;
            self.effects.push(Effect::RenewLease { asked: now });
        }
        if now < self.next_expiry {
            return;
        }
        // Looking at every host's silence costs a pass over them all: a few times a second.
        self.next_expiry = now + EXPIRY_EVERY;
        let Expired { unknown, lost } =
            self.hosts.expire(now, &self.config.me, self.config.lost_after);
        if !unknown.is_empty() || !lost.is_empty() {
            self.dirty = true;
        }
        self.effects.extend(unknown.into_iter().map(|h| Effect::Announce(Notice::HostUnknown(h))));
        self.effects.extend(lost.into_iter().map(|h| Effect::Announce(Notice::HostLost(h))));
        if now.saturating_sub(self.last_resync) >= self.config.resync {
            self.last_resync = now;
            self.hosts.touch_all();
            self.applied.clear();
            self.apps_stale = true;
            self.dirty = true;
        }
        if self.idle.expire(now, &mut self.workloads) {
            self.autoscale.apply(&mut self.workloads);
            self.dirty = true;
        }
        // A failed start comes due for its retry.
        let retry = self.config.retry_failed;
        if self.failures.values().any(|(_, at)| now.saturating_sub(*at) >= retry) {
            self.failures.retain(|_, (_, at)| now.saturating_sub(*at) < retry);
            self.dirty = true;
        }
    }

    fn lease_answered(&mut self, now: Duration, asked: Duration, held: Option<u64>) {
        if self.lease.asking != Some(asked) {
            return;
        }
        self.lease.asking = None;
        match held {
            Some(revision) => {
                let lasts = self.config.lease_ttl - self.config.lease_ttl / 3;
                // A renewal (compare-and-set on our revision) keeps the term; a lease taken
                // afresh starts one, named by the entry's revision then.
                if self.lease.term == 0 {
                    self.lease.term = revision;
                }
                self.lease.until = Some(asked + lasts).filter(|until| *until > now);
            }
            None => {
                self.lease.term = 0;
                self.lease.until = None;
            }
        }
    }

    /// Asks for the reads that are due: application records, stale hosts.
    fn reads(&mut self) {
        if self.apps_stale && !self.apps_reading {
            self.apps_stale = false;
            self.apps_reading = true;
            self.effects.push(Effect::ReadApps);
        }
        for (host, read) in self.hosts.reads_due() {
            self.effects.push(Effect::ReadInventory { host, read });
        }
    }

    /// Records as read: those that passed the gate now and, for an application whose record
    /// was refused (or, strict, vanished: only a forgery deletes one), the last one that passed.
    fn take_records(&mut self, now: Duration, records: Vec<AppRecord>, refused: Vec<String>) {
        let mut by_name: BTreeMap<String, AppRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        for (name, known) in &self.records {
            if refused.contains(name) || (self.config.strict && !by_name.contains_key(name)) {
                by_name.entry(name.clone()).or_insert_with(|| known.clone());
            }
        }
        for name in refused.iter().filter(|n| !self.refused.contains(*n)) {
            self.effects.push(Effect::Announce(Notice::RecordDenied(name.clone())));
        }
        self.refused = refused.into_iter().collect();
        if by_name != self.records || !self.apps_loaded {
            let records: Vec<AppRecord> = by_name.values().cloned().collect();
            self.workloads = desired::workloads(&records);
            self.idle.sync(&mut self.workloads, now);
            self.autoscale.apply(&mut self.workloads);
            self.records = by_name;
            // Failures of specs nobody wants any more are forgotten.
            let workloads = &self.workloads;
            self.failures.retain(|(id, fingerprint), _| {
                workloads.get(id).is_some_and(|w| w.wanted.fingerprint == *fingerprint)
            });
            self.dirty = true;
        }
        self.apps_loaded = true;
    }

    fn done(&mut self, now: Duration, command: Command, error: Option<CommandError>) {
        let host = command.host().to_owned();
        let read = self.hosts.reads(&host);
        if let Some(list) = self.pending.get_mut(&host) {
            if let Some(i) = list.iter().position(|p| p.command == command) {
                // Done: as planned until a read shows what is there. Refused or perhaps
                // done (timed out): as read (below).
                if error.is_none() {
                    list[i].answered_at_read = Some(read);
                } else {
                    list.remove(i);
                }
            }
            if list.is_empty() {
                self.pending.remove(&host);
            }
        }
        self.hosts.touched(&host);
        // A command that timed out may or may not have been carried out: the host is not
        // planned on again before it has been read (counting it as done put a replica that
        // never started against one that runs, and the one that runs was stopped).
        if error.as_ref().is_some_and(|e| e.timed_out) {
            self.hosts.forget_inventory(&host);
        }
        self.dirty = true;
        let Some(e) = error else {
            if let Some(w) = self.workloads.get(command.id()) {
                self.failures.remove(&(command.id().to_owned(), w.wanted.fingerprint.clone()));
            }
            return;
        };
        let name = self.hosts.name(&host).to_owned();
        if e.gone && self.hosts.unanswered(&host) {
            self.effects.push(Effect::Announce(Notice::HostUnknown(name.clone())));
        }
        let failed = Notice::CommandFailed {
            command: command.clone(),
            host: name.clone(),
            error: e.message.clone(),
        };
        self.effects.push(Effect::Announce(failed));
        if matches!(command, Command::Stop { .. }) || !e.permanent || e.timed_out {
            return;
        }
        let Some(w) = self.workloads.get(command.id()) else { return };
        let reason = format!("{} on {name}: {}", command.id(), e.message);
        let key = (command.id().to_owned(), w.wanted.fingerprint.clone());
        self.failures.insert(key, (reason.clone(), now));
        let app = w.wanted.app.clone();
        if let Some(record) = self.records.get(&app)
            && let (Some(current), Some(stable)) = (&record.current, &record.stable)
            && current != stable
            && self.updating.insert(app.clone())
        {
            self.effects.push(Effect::RollBack {
                app,
                from: current.to_string(),
                to: stable.to_string(),
                reason,
            });
        }
    }

    /// Drops what `host`'s read number `read` shows: commands answered before it was asked.
    fn seen_through(&mut self, host: &str, read: u64) {
        if let Some(list) = self.pending.get_mut(host) {
            list.retain(|p| p.answered_at_read.is_none_or(|at| at >= read));
            if list.is_empty() {
                self.pending.remove(host);
            }
        }
    }

    /// What the hosts run, with the commands in flight taken as done (hosts without any are
    /// shared with the view, not copied).
    fn observed(&self) -> Vec<Arc<Observed>> {
        let mut observed = self.hosts.observed();
        for h in &mut observed {
            let Some(list) = self.pending.get(&h.id) else { continue };
            let h = Arc::make_mut(h);
            for p in list {
                match (&p.command, &p.becomes) {
                    (Command::Stop { id, .. }, _) => {
                        h.workloads.remove(id);
                    }
                    (_, Some(becomes)) => {
                        h.workloads.insert(p.command.id().to_owned(), becomes.clone());
                    }
                    _ => {}
                }
            }
            h.load = h.workloads.len();
        }
        observed
    }

    fn pass(&mut self, now: Duration) {
        self.counters.passes += 1;
        for (name, record) in &self.records {
            let mark = (record.current.as_ref().map(|v| v.to_string()), record.history.len());
            if self.applied.get(name) != Some(&mark) && self.applying.insert(name.clone()) {
                self.effects.push(Effect::ApplyLinks { record: Box::new(record.clone()), mark });
            }
        }
        let observed = self.observed();
        // The first pass of a term starts from what runs.
        let running = |id: &str| observed.iter().filter(|h| h.workloads.contains_key(id)).count();
        if self.idle.needs_adoption() {
            let records = &self.records;
            let placed = |app: &str| records.get(app).is_some_and(|r| r.stable.is_some());
            self.idle.adopt(&mut self.workloads, |id| running(id) > 0, placed);
            self.autoscale.apply(&mut self.workloads);
        }
        if self.autoscale.needs_adoption(&self.workloads) {
            self.autoscale.adopt(&mut self.workloads, |id| running(id) as u32);
        }
        let wanted: Vec<_> = self.workloads.values().map(|w| w.wanted.clone()).collect();
        let (commands, placements) = plan::plan(&wanted, &observed);
        let mut running: Running = HashMap::new();
        for h in observed.iter().map(Arc::as_ref) {
            for (id, r) in &h.workloads {
                running.entry(id.as_str()).or_default().push((h, r));
            }
        }

        let placements: Placements = placements.iter().map(|p| (p.id.as_str(), p)).collect();
        let commands = self.pace(now, commands, &running, &placements);
        for command in &commands {
            self.send(command.clone());
        }
        // Hosts waiting to be read or heard from, by label set: one look at every host per
        // set, not per workload (during a partition most workloads ask).
        let mut waiting = HashMap::new();
        let me = self.config.me.as_str();
        let mut deployed = Vec::new();
        let mut changed = Vec::new();
        for record in self.records.values() {
            let draft = self.status(record, &observed, &running, &placements, &mut waiting);
            if draft.state == State::Deployed {
                deployed.push(record.name.clone());
            }
            if self.written.get(&record.name).is_none_or(|w| !draft.same_as(w, me)) {
                changed.push(draft.to_status(me));
            }
        }
        for name in deployed {
            self.mark_stable(name);
        }
        for status in changed {
            self.written.insert(status.name.clone(), status.clone());
            self.send_status(status);
        }
    }

    /// Holds back commands for a replica with one unanswered, starts of workloads that failed
    /// recently, starts that could take a workload past replicas + batch before its stops
    /// land, replaces beyond each application's rollout batch (counting those in flight), and
    /// stops on draining hosts until the replacements run.
    fn pace(
        &self,
        now: Duration,
        commands: Vec<Command>,
        running: &Running,
        placements: &Placements,
    ) -> Vec<Command> {
        let moved = self.moved_off_draining_hosts(&commands, placements);
        let mut replaces: HashMap<&str, u32> = HashMap::new();
        for p in self.pending.values().flatten() {
            if let Command::Replace { id, .. } = &p.command
                && p.answered_at_read.is_none()
                && let Some(w) = self.workloads.get(id)
            {
                *replaces.entry(w.wanted.app.as_str()).or_default() += 1;
            }
        }
        // One command per workload and host in flight: a stop sent while a replace of the same
        // replica was unanswered could land first, and the replace start it again.
        let unanswered = |c: &Command| {
            self.pending.get(c.host()).is_some_and(|l| {
                l.iter().any(|p| p.command.id() == c.id() && p.answered_at_read.is_none())
            })
        };
        let commands =
            commands
                .into_iter()
                .filter(|c| !unanswered(c))
                .filter(|c| match c {
                    Command::Stop { host, id } => {
                        !self.hosts.draining(host)
                            || !self.workloads.contains_key(id)
                            || moved.contains(id)
                    }
                    Command::Start { id, .. } | Command::Replace { id, .. } => {
                        let Some(w) = self.workloads.get(id) else { return false };
                        let key = (id.clone(), w.wanted.fingerprint.clone());
                        if self.failures.get(&key).is_some_and(|(_, at)| {
                            now.saturating_sub(*at) < self.config.retry_failed
                        }) {
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
                .collect();
        self.pace_moves(commands, running, placements)
    }

    /// Paces moves: where a pass both starts and stops replicas of a workload (moving them
    /// between shares, scaling down while a host is away), starts go only as far as replicas +
    /// batch and stops only as far as the wanted count, counting what may be up: the view
    /// takes commands in flight as done, but a stop not yet answered may not have landed.
    /// Replicas on draining hosts count apart (replacing them first is a surge by design).
    /// What is held goes in a later pass, once the stops sent now are answered.
    fn pace_moves(
        &self,
        commands: Vec<Command>,
        running: &Running,
        placements: &Placements,
    ) -> Vec<Command> {
        let leaving =
            |host: &str, id: &str| !self.hosts.draining(host) && self.workloads.contains_key(id);
        // By workload: starts and stops this pass.
        let mut moves: HashMap<&str, (usize, usize)> = HashMap::new();
        for c in &commands {
            match c {
                Command::Start { id, .. } => moves.entry(id.as_str()).or_default().0 += 1,
                Command::Stop { host, id } if leaving(host, id) => {
                    moves.entry(id.as_str()).or_default().1 += 1;
                }
                _ => {}
            }
        }
        moves.retain(|_, (starts, _)| *starts > 0);
        if moves.is_empty() {
            return commands;
        }
        // Stops sent earlier and not yet answered, of the workloads this pass starts.
        let mut unlanded: HashMap<&str, usize> = HashMap::new();
        for p in self.pending.values().flatten().filter(|p| p.answered_at_read.is_none()) {
            if let Command::Stop { host, id } = &p.command
                && moves.contains_key(id.as_str())
                && leaving(host, id)
            {
                *unlanded.entry(id.as_str()).or_default() += 1;
            }
        }
        let mut allowed: HashMap<String, (usize, usize)> = HashMap::new();
        for (&id, &(starts, stops)) in &moves {
            let unlanded = unlanded.get(id).copied().unwrap_or(0);
            if stops + unlanded == 0 {
                continue;
            }
            let Some(w) = self.workloads.get(id) else { continue };
            let view =
                running.get(id).map_or(0, |on| on.iter().filter(|(h, _)| !h.draining).count());
            let up = view + unlanded;
            let (replicas, batch) = (wanted_count(placements, id, w) as usize, w.batch as usize);
            let starts = starts.min((replicas + batch).saturating_sub(up));
            let stops = stops.min((up + starts).saturating_sub(replicas));
            allowed.insert(id.to_owned(), (starts, stops));
        }
        drop((moves, unlanded));
        commands
            .into_iter()
            .filter(|c| {
                let Some((starts, stops)) = allowed.get_mut(c.id()) else { return true };
                let left = match c {
                    Command::Start { .. } => starts,
                    Command::Stop { host, id } if leaving(host, id) => stops,
                    _ => return true,
                };
                let go = *left > 0;
                *left = left.saturating_sub(1);
                go
            })
            .collect()
    }

    /// The wanted workloads among `commands`' stops on draining hosts whose replacements run:
    /// as many replicas of the wanted spec as are wanted run on other hosts, as read from them
    /// (commands in flight do not count). A drain never takes capacity away first; when the
    /// others cannot hold them all, the replica stays until the host's own drain wait ends.
    fn moved_off_draining_hosts(
        &self,
        commands: &[Command],
        placements: &Placements,
    ) -> HashSet<String> {
        let leaving: HashSet<&str> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Stop { host, id } if self.hosts.draining(host) => Some(id.as_str()),
                _ => None,
            })
            .filter(|id| self.workloads.contains_key(*id))
            .collect();
        if leaving.is_empty() {
            return HashSet::new();
        }
        let mut running: HashMap<&str, u32> = HashMap::new();
        let hosts = self.hosts.observed();
        for h in hosts.iter().filter(|h| !h.draining) {
            for &id in &leaving {
                if let (Some(r), Some(w)) = (h.workloads.get(id), self.workloads.get(id))
                    && r.app == w.wanted.app
                    && r.fingerprint == w.wanted.fingerprint
                {
                    *running.entry(id).or_default() += 1;
                }
            }
        }
        leaving
            .into_iter()
            .filter(|id| {
                let wanted = self.workloads.get(*id).map_or(0, |w| wanted_count(placements, id, w));
                running.get(id).copied().unwrap_or(0) >= wanted
            })
            .map(str::to_owned)
            .collect()
    }

    fn send(&mut self, command: Command) {
        let host = command.host().to_owned();
        let workload = self.workloads.get(command.id());
        let (start, becomes) = match (&command, workload) {
            (Command::Stop { .. }, _) | (_, None) => (None, None),
            (_, Some(w)) => {
                let becomes = plan::Workload {
                    app: w.wanted.app.clone(),
                    fingerprint: w.wanted.fingerprint.clone(),
                };
                (Some(w.start.clone()), Some(becomes))
            }
        };
        let provider = match &command {
            Command::Stop { host, id } => self.hosts.runs_provider(host, id),
            _ => false,
        };
        self.counters.commands += 1;
        self.pending.entry(host).or_default().push(Pending {
            command: command.clone(),
            becomes,
            answered_at_read: None,
        });
        self.effects.push(Effect::Send(Order { command, start, provider }));
    }

    /// How `record`'s application stands after this pass, borrowed from the view.
    fn status<'a>(
        &'a self,
        record: &'a AppRecord,
        observed: &[Arc<Observed>],
        running: &Running<'a>,
        placements: &Placements,
        waiting: &mut HashMap<&'a Requirements, usize>,
    ) -> Draft<'a> {
        let version = record.current.as_ref().map_or("", |v| v.as_str());
        let mut status = Draft::new(&record.name, version, State::Deployed, String::new());
        let Some(manifest) = record.current_manifest() else {
            let left: usize = observed
                .iter()
                .map(|h| h.workloads.values().filter(|w| w.app == record.name).count())
                .sum();
            if left == 0 {
                status.state = State::Undeployed;
            } else {
                status.state = State::Reconciling;
                status.reason = format!("stopping {left} replicas");
            }
            return status;
        };
        for id in manifest.workload_names() {
            let Some((id, w)) = self.workloads.get_key_value(id) else {
                status.workloads.push(WorkloadDraft {
                    name: id,
                    kind: "component",
                    desired: 0,
                    hosts: vec![],
                    state: State::Failed,
                    reason: "its source is not in the lattice artifact store".into(),
                });
                continue;
            };
            let runs: Vec<&Observed> = running
                .get(id.as_str())
                .into_iter()
                .flatten()
                .filter(|(_, r)| r.app == record.name && r.fingerprint == w.wanted.fingerprint)
                .map(|&(h, _)| h)
                .collect();
            let in_flight = runs.iter().any(|h| {
                self.pending.get(&h.id).is_some_and(|l| {
                    l.iter().any(|p| p.command.id() == id && p.answered_at_read.is_none())
                })
            });
            let failure = self.failures.get(&(id.clone(), w.wanted.fingerprint.clone()));
            let unhealthy = runs.iter().filter(|h| !self.hosts.healthy(&h.id, id)).count();
            let shortfall = placements.get(id.as_str()).and_then(|p| p.shortfall.as_ref());
            let (state, reason) = if let Some((reason, _)) = failure {
                (State::Failed, reason.clone())
            } else if in_flight {
                (State::Reconciling, String::new())
            } else if let Some(shortfall) = shortfall {
                let requirements = &w.wanted.requirements;
                match *waiting
                    .entry(requirements)
                    .or_insert_with(|| self.hosts.waiting_for(requirements))
                {
                    0 => (State::Unplaceable, shortfall.clone()),
                    slow => (
                        State::Reconciling,
                        format!("{shortfall}; waiting for {slow} hosts that are slow to answer"),
                    ),
                }
            } else if runs.len() as u32 != wanted_count(placements, id, w) {
                (State::Reconciling, String::new())
            } else if unhealthy > 0 {
                (State::Reconciling, format!("{unhealthy} replicas report a problem"))
            } else {
                (State::Deployed, String::new())
            };
            status.workloads.push(WorkloadDraft {
                name: id,
                kind: w.kind(),
                desired: wanted_count(placements, id, w),
                hosts: runs.iter().map(|h| self.hosts.name(&h.id)).collect(),
                state,
                reason,
            });
        }
        status.settle();
        status
    }

    /// Marks the current version of `name` stable, now that it is deployed, unless it is
    /// already or a change of its record is in flight.
    fn mark_stable(&mut self, name: String) {
        if let Some(record) = self.records.get(&name)
            && record.stable != record.current
            && !self.updating.contains(&name)
            && let Some(version) = &record.current
        {
            let version = version.to_string();
            self.updating.insert(name.clone());
            self.effects.push(Effect::MarkStable { app: name, version });
        }
    }

    /// Writes `status`, or queues it behind the write of its application's status in flight.
    fn send_status(&mut self, status: AppStatus) {
        if let Some(next) = self.status_writing.get_mut(&status.name) {
            *next = Some(status);
            return;
        }
        self.status_writing.insert(status.name.clone(), None);
        self.effects.push(Effect::WriteStatus(Box::new(status)));
    }
}
