//! A deterministic simulator of a lattice's control plane: hosts that heartbeat and run what
//! they are told, schedulers running the real [`Scheduler`] core, a JetStream model (the
//! application records, statuses and the leader lease, with compare-and-set and TTL), and a
//! network that delays, drops, duplicates and partitions messages. Time is simulated and
//! every random choice comes from one seed, so a failing seed replays exactly.
//!
//! The simulator checks, as it goes, the properties the scheduler promises (see [`Violation`])
//! and [`Sim::converged`] says whether what runs is what the applications want.
//!
//! What it leaves out: links and config (written as they are asked, never failing), provider
//! health, and the NATS server's own view of connections (a partitioned host looks connected,
//! so requests to it time out; a crashed one has no responders).

pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

use trellis_proto as pb;

use crate::apps::{AppRecord, AppStatus};
use crate::core::{self, CommandError, Effect, Input, Notice, Order, Scheduler};
use crate::desired;
use crate::hosts::{Liveness, UNKNOWN_AFTER_BEATS};
use crate::plan::Command;

/// A small, fast, seedable generator (SplitMix64): the simulator's only source of chance.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    /// A duration in `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.below(span + 1))
    }
}

/// How messages travel.
#[derive(Debug, Clone)]
pub struct Net {
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay.
    pub max_delay: Duration,
    /// Share of messages lost.
    pub drop: f64,
    /// Share of messages delivered twice.
    pub duplicate: f64,
}

/// How the simulated lattice behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every random choice follows from it.
    pub seed: u64,
    /// Hosts' heartbeat interval.
    pub heartbeat: Duration,
    /// The schedulers' settings (their `me` is filled in per scheduler).
    pub scheduler: core::Config,
    /// How long a request waits for its answer (the adapter's timeouts).
    pub request_timeout: Duration,
    /// How long a start takes on a host (fetch, compile, instantiate).
    pub start_time: (Duration, Duration),
    /// The network.
    pub net: Net,
    /// The largest relative error of a scheduler's clock rate (each gets its own).
    pub clock_drift: f64,
}

impl Config {
    /// Production timings: 3 s heartbeats and the scheduler's defaults (6 s leases), requests
    /// that wait 5 s, a network of 1 to 20 ms that loses and duplicates one message in a
    /// thousand, clocks off by up to 0.1%.
    pub fn production(seed: u64) -> Self {
        Self {
            seed,
            heartbeat: Duration::from_secs(3),
            scheduler: core::Config::new(""),
            request_timeout: Duration::from_secs(5),
            start_time: (Duration::from_millis(5), Duration::from_millis(300)),
            net: Net {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(20),
                drop: 0.001,
                duplicate: 0.001,
            },
            clock_drift: 0.001,
        }
    }

    /// Compressed timings like the integration tests' (1 s heartbeats, 3 s leases), a network
    /// of 1 to 20 ms that loses 1% and duplicates 1% of messages, clocks off by up to 0.1%.
    pub fn quick(seed: u64) -> Self {
        let mut scheduler = core::Config::new("");
        scheduler.lease_ttl = Duration::from_secs(3);
        scheduler.resync = Duration::from_secs(30);
        scheduler.retry_failed = Duration::from_secs(5);
        scheduler.lost_after = Duration::from_secs(20);
        Self {
            seed,
            heartbeat: Duration::from_secs(1),
            scheduler,
            request_timeout: Duration::from_secs(2),
            start_time: (Duration::from_millis(5), Duration::from_millis(300)),
            net: Net {
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(20),
                drop: 0.01,
                duplicate: 0.01,
            },
            clock_drift: 0.001,
        }
    }
}

/// A broken promise, with when and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time.
    pub at: Duration,
    /// What went wrong.
    pub what: String,
}

/// A host of the simulated lattice.
#[derive(Debug, Clone)]
struct Host {
    id: String,
    labels: BTreeMap<String, String>,
    alive: bool,
    /// Crashed at (for the properties: a crash is invisible for a few heartbeats).
    crashed_at: Option<Duration>,
    /// What it runs: workload id → (app, fingerprint).
    runs: BTreeMap<String, (String, String)>,
    /// Bumped on every change; its inventory hash.
    version: u64,
    /// Heartbeats leave this much later than due until `slow_until`.
    slow: Duration,
    slow_until: Duration,
    /// Draining since: it refuses starts, and leaves once an application placed nothing on
    /// it any more, or after [`DRAIN_WAIT`] (stopping what is left), as `trellis host drain`.
    draining_since: Option<Duration>,
    /// When a drained host left, and whether it had to stop replicas nobody had moved.
    left: Option<(Duration, bool)>,
    /// When each component it runs last served a call ([`Sim::call`]).
    called: BTreeMap<String, Duration>,
}

/// How long a draining host waits for the scheduler to move its replicas.
pub const DRAIN_WAIT: Duration = Duration::from_secs(20);

impl Host {
    /// Host number `h` (id `h00000`..) in `zone`, running nothing.
    fn new(h: usize, zone: &str) -> Self {
        Self {
            id: format!("h{h:05}"),
            labels: [("zone".to_owned(), zone.to_owned())].into(),
            alive: true,
            crashed_at: None,
            runs: BTreeMap::new(),
            version: 0,
            slow: Duration::ZERO,
            slow_until: Duration::ZERO,
            draining_since: None,
            left: None,
            called: BTreeMap::new(),
        }
    }

    fn info(&self, heartbeat: Duration, now: Duration) -> pb::HostInfo {
        // As a host lists what served a call within its last two heartbeats.
        let active = (self.called.iter())
            .filter(|(id, at)| {
                self.runs.contains_key(*id) && now.saturating_sub(**at) < 2 * heartbeat
            })
            .map(|(id, _)| id.clone())
            .collect();
        pb::HostInfo {
            active,
            id: self.id.clone(),
            name: self.id.clone(),
            labels: self.labels.clone().into_iter().collect(),
            inventory_hash: self.version.to_string(),
            heartbeat_ms: heartbeat.as_millis() as u32,
            components: self.runs.len() as u32,
            draining: self.draining_since.is_some(),
            ..Default::default()
        }
    }

    fn inventory(&self, heartbeat: Duration, now: Duration) -> pb::Inventory {
        let components = self
            .runs
            .iter()
            .map(|(id, (app, fingerprint))| pb::ComponentDescription {
                id: id.clone(),
                owner: Some(pb::Owner { app: app.clone(), fingerprint: fingerprint.clone() }),
                ..Default::default()
            })
            .collect();
        pb::Inventory { host: Some(self.info(heartbeat, now)), components, ..Default::default() }
    }
}

/// A scheduler of the simulated lattice, beside host `host`.
#[derive(Debug)]
struct Node {
    core: Scheduler,
    host: usize,
    /// Its clock runs this much fast (or slow).
    rate: f64,
    /// Requests it waits on, by token.
    open: HashMap<u64, ()>,
    /// The lease revision its lease handle holds (as `apps::Lease` keeps one).
    lease_revision: Option<u64>,
    /// The next wake-up already queued.
    wake_at: Option<Duration>,
    /// Timer wake-ups in the simulated second that began at `.0`: a spin check.
    wakes: (Duration, u32),
}

/// Timer wake-ups a scheduler may take in one simulated second. Its timers (lease renewal,
/// the tick, passes at least 50 ms apart) need a few dozen; more is a scheduler that asks to
/// be woken at once over and over, burning a core while it waits for an input.
const MOST_WAKES_PER_SECOND: u32 = 100;

/// Who is at either end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Host(usize),
    Scheduler(usize),
    Server,
}

/// A request to a host.
#[derive(Debug, Clone)]
enum HostRequest {
    Ping,
    Inventory { read: u64 },
    Command(Box<Order>),
}

/// A request to the JetStream model.
#[derive(Debug, Clone)]
enum ServerRequest {
    Lease { asked: Duration },
    ReadApps,
    WriteStatus(Box<AppStatus>),
    MarkStable { app: String, version: String },
    RollBack { app: String, from: String, to: String },
    ApplyLinks { app: String, mark: core::Mark },
}

#[derive(Debug, Clone)]
enum Event {
    Beat(usize),
    /// Scheduler `.0`'s timer, set for `.1`; a wake-up moved earlier leaves a stale one.
    Wake(usize, Duration),
    /// An input reaches a scheduler; `token`: the answer to that request.
    Input {
        s: usize,
        input: Input,
        token: Option<u64>,
    },
    /// A request reaches a host.
    AtHost {
        h: usize,
        s: usize,
        request: HostRequest,
        token: u64,
    },
    /// A command's work on a host is done.
    Finished {
        h: usize,
        s: usize,
        order: Order,
        token: u64,
    },
    /// A request reaches the server.
    AtServer {
        s: usize,
        request: ServerRequest,
        token: u64,
    },
    /// A request's deadline passed.
    Timeout {
        s: usize,
        token: u64,
        input: Input,
    },
}

/// The lease entry in the JetStream model.
#[derive(Debug, Clone)]
struct LeaseEntry {
    holder: usize,
    revision: u64,
    written: Duration,
}

/// The JetStream model: application records and statuses, the lease.
#[derive(Debug, Default)]
struct Server {
    records: BTreeMap<String, AppRecord>,
    statuses: BTreeMap<String, AppStatus>,
    lease: Option<LeaseEntry>,
    revision: u64,
}

/// The simulated lattice. See the module documentation.
#[derive(Debug)]
pub struct Sim {
    config: Config,
    now: Duration,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    hosts: Vec<Host>,
    nodes: Vec<Node>,
    server: Server,
    /// Cut off from the NATS server: messages to and from it are lost.
    partitioned: BTreeSet<usize>,
    /// When each host was last cut off.
    cut_at: HashMap<usize, Duration>,
    /// Fingerprints whose starts fail permanently (a broken version).
    broken: BTreeSet<String>,
    /// Starts sent and not yet carried out or failed, for the properties: token → workload.
    in_flight: HashMap<u64, String>,
    /// The same, by workload: token → host.
    starting: HashMap<String, HashMap<u64, usize>>,
    /// Hosts that run each workload (crashed ones too: see [`Sim::crash`]).
    running_on: HashMap<String, BTreeSet<usize>>,
    /// What the stored records want (kept as they change).
    wanted: BTreeMap<String, (String, String, u32, u32)>,
    /// Calls in flight on each workload, shared evenly by the hosts running it and reported
    /// in their heartbeats ([`Sim::set_load`]).
    load: BTreeMap<String, f64>,
    /// Autoscaling decisions the schedulers announced, with when.
    pub scaled: Vec<(Duration, crate::autoscale::Scaled)>,
    violations: Vec<Violation>,
    /// Which scheduler acted in each term.
    terms: HashMap<u64, usize>,
    /// Commands sent by all schedulers.
    pub commands_sent: u64,
    /// Passes counted by the last [`Sim::take_costs`].
    passes_taken: u64,
    /// Prints what the schedulers do and hear (`TRELLIS_SIM_TRACE=1`).
    pub trace: bool,
    /// CPU time spent in the schedulers' `poll` (planning passes), for reports.
    pub poll_time: Duration,
    /// The most CPU time a single `poll` took.
    pub longest_poll: Duration,
}

impl Sim {
    /// A lattice of `hosts` hosts (id `h00000`.. with a `zone` label out of `zones`) and
    /// `schedulers` schedulers, beside the first hosts.
    pub fn new(config: Config, hosts: usize, zones: usize, schedulers: usize) -> Self {
        let mut rng = Rng::new(config.seed);
        let hosts: Vec<Host> =
            (0..hosts).map(|i| Host::new(i, &format!("z{}", i % zones.max(1)))).collect();
        let nodes = (0..schedulers.min(hosts.len()))
            .map(|s| {
                let mut core_config = config.scheduler.clone();
                core_config.me = hosts[s].id.clone();
                let skew = (rng.below(2001) as f64 / 1000.0 - 1.0) * config.clock_drift;
                Node {
                    core: Scheduler::new(core_config, Duration::ZERO),
                    host: s,
                    rate: 1.0 + skew,
                    open: HashMap::new(),
                    lease_revision: None,
                    wake_at: None,
                    wakes: (Duration::ZERO, 0),
                }
            })
            .collect();
        let mut sim = Self {
            config,
            now: Duration::ZERO,
            rng,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            hosts,
            nodes,
            server: Server::default(),
            partitioned: BTreeSet::new(),
            cut_at: HashMap::new(),
            broken: BTreeSet::new(),
            in_flight: HashMap::new(),
            starting: HashMap::new(),
            running_on: HashMap::new(),
            wanted: BTreeMap::new(),
            load: BTreeMap::new(),
            scaled: Vec::new(),
            violations: Vec::new(),
            terms: HashMap::new(),
            trace: std::env::var_os("TRELLIS_SIM_TRACE").is_some(),
            commands_sent: 0,
            passes_taken: 0,
            poll_time: Duration::ZERO,
            longest_poll: Duration::ZERO,
        };
        for h in 0..sim.hosts.len() {
            let first = sim.rng.between(Duration::ZERO, sim.config.heartbeat);
            sim.at(first, Event::Beat(h));
        }
        for s in 0..sim.nodes.len() {
            sim.nodes[s].wake_at = Some(Duration::ZERO);
            sim.at(Duration::ZERO, Event::Wake(s, Duration::ZERO));
        }
        sim
    }

    /// Simulated time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The promises broken so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The number of hosts ever in the lattice.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Which scheduler leads now, as the lease entry says (unexpired).
    pub fn leader(&self) -> Option<usize> {
        self.server
            .lease
            .as_ref()
            .filter(|l| self.now < l.written + self.lease_ttl())
            .map(|l| l.holder)
    }

    fn lease_ttl(&self) -> Duration {
        self.config.scheduler.lease_ttl
    }

    fn at(&mut self, delay: Duration, event: Event) {
        self.seq += 1;
        self.events.insert(self.seq, event);
        self.queue.push(Reverse((self.now + delay, self.seq)));
    }

    /// Runs until `until` (simulated).
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(event) = self.events.remove(&seq) {
                self.step(event);
            }
        }
        self.now = until;
    }

    // ---- what operators and faults do ----

    /// An operator deploys (or changes) an application: the record is written and every
    /// scheduler's watch fires.
    pub fn deploy(&mut self, record: AppRecord) {
        self.server.records.insert(record.name.clone(), record);
        self.records_changed();
        self.watch_fired();
    }

    /// The record of `app`, as stored.
    pub fn record(&self, app: &str) -> Option<&AppRecord> {
        self.server.records.get(app)
    }

    /// Starts of `fingerprint` fail from now on (a version that cannot start).
    pub fn break_fingerprint(&mut self, fingerprint: &str) {
        self.broken.insert(fingerprint.to_owned());
    }

    /// Host `h` dies: it stops heartbeating and answering, and what it ran is gone (its
    /// `runs` stay, for the properties: until the crash could be noticed, they count).
    pub fn crash(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        if host.alive {
            host.alive = false;
            host.crashed_at = Some(self.now);
        }
    }

    /// A new host joins; returns its index.
    pub fn join(&mut self, zone: &str) -> usize {
        let h = self.hosts.len();
        self.hosts.push(Host::new(h, zone));
        self.at(Duration::ZERO, Event::Beat(h));
        h
    }

    /// Cuts host `h` (and a scheduler beside it) off from the NATS server, or heals it.
    pub fn partition(&mut self, h: usize, cut: bool) {
        if cut {
            self.partitioned.insert(h);
            self.cut_at.insert(h, self.now);
        } else {
            self.partitioned.remove(&h);
        }
    }

    /// Host `h` starts draining (and says so at once).
    pub fn drain(&mut self, h: usize) {
        if !self.hosts[h].alive || self.hosts[h].draining_since.is_some() {
            return;
        }
        self.hosts[h].draining_since = Some(self.now);
        self.tell_schedulers(h);
    }

    /// When drained host `h` left, and whether it stopped replicas the scheduler had not
    /// moved (its drain wait ran out); `None` while it has not left.
    pub fn left(&self, h: usize) -> Option<(Duration, bool)> {
        self.hosts[h].left
    }

    /// Host `h` heartbeats `late` late until `until` (busy compiling, say).
    pub fn slow(&mut self, h: usize, late: Duration, until: Duration) {
        self.hosts[h].slow = late;
        self.hosts[h].slow_until = until;
    }

    /// Changes how messages travel from now on.
    pub fn set_net(&mut self, net: Net) {
        self.config.net = net;
    }

    /// The network as it is.
    pub fn net(&self) -> Net {
        self.config.net.clone()
    }

    /// The host a scheduler runs beside.
    pub fn scheduler_host(&self, s: usize) -> usize {
        self.nodes[s].host
    }

    // ---- the machinery ----

    fn reachable(&self, peer: Peer) -> bool {
        match peer {
            Peer::Host(h) => self.hosts[h].alive && !self.partitioned.contains(&h),
            Peer::Scheduler(s) => {
                let h = self.nodes[s].host;
                self.hosts[h].alive && !self.partitioned.contains(&h)
            }
            Peer::Server => true,
        }
    }

    /// Sends `event` from `from` to `to` over the network: delayed, maybe lost or doubled;
    /// lost when either end is cut off now (the receiving end is checked again on arrival).
    fn send(&mut self, from: Peer, to: Peer, event: Event) {
        if !self.reachable(from) || !self.reachable(to) {
            return;
        }
        let net = self.config.net.clone();
        if self.rng.chance(net.drop) {
            return;
        }
        if self.rng.chance(net.duplicate) {
            let delay = self.rng.between(net.min_delay, net.max_delay);
            self.at(delay, event.clone());
        }
        let delay = self.rng.between(net.min_delay, net.max_delay);
        self.at(delay, event);
    }

    fn local(&self, s: usize) -> Duration {
        Duration::from_secs_f64(self.now.as_secs_f64() * self.nodes[s].rate)
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Beat(h) => self.beat(h),
            Event::Wake(s, at) => {
                // Each input may move the wake-up earlier; the one it replaced stays queued.
                if self.nodes[s].wake_at != Some(at) {
                    return;
                }
                self.nodes[s].wake_at = None;
                self.count_wake(s);
                self.poll(s);
            }
            Event::Input { s, input, token } => {
                // `Pinged` is the scheduler's own timer, not a message.
                let local = matches!(input, Input::Pinged) && self.hosts[self.nodes[s].host].alive;
                if !self.reachable(Peer::Scheduler(s)) && !local {
                    return;
                }
                if let Some(token) = token
                    && self.nodes[s].open.remove(&token).is_none()
                {
                    return; // answered already, or timed out
                }
                self.handle(s, input);
            }
            Event::Timeout { s, token, input } => {
                if self.nodes[s].open.remove(&token).is_some() {
                    self.landed(token);
                    if self.hosts[self.nodes[s].host].alive {
                        self.handle(s, input);
                    }
                }
            }
            Event::AtHost { h, s, request, token } => self.at_host(h, s, request, token),
            Event::Finished { h, s, order, token } => self.finished(h, s, order, token),
            Event::AtServer { s, request, token } => self.at_server(s, request, token),
        }
    }

    fn handle(&mut self, s: usize, input: Input) {
        if self.trace && !matches!(input, Input::Host(_) | Input::Touched(_)) {
            let what = match &input {
                Input::Apps(Some((records, _))) => format!("apps ({})", records.len()),
                Input::Inventory { host, inventory: Ok(inv), .. } => {
                    let ids: Vec<&str> = inv.components.iter().map(|c| c.id.as_str()).collect();
                    format!("inventory {host}: {ids:?}")
                }
                other => format!("{other:?}"),
            };
            eprintln!("{:>9.3} s{s} <- {what}", self.now.as_secs_f64());
        }
        let now = self.local(s);
        self.nodes[s].core.handle(now, input);
        self.poll(s);
    }

    fn poll(&mut self, s: usize) {
        if !self.hosts[self.nodes[s].host].alive {
            return;
        }
        let now = self.local(s);
        let started = thread_cpu_time();
        let effects = self.nodes[s].core.poll(now);
        let spent = thread_cpu_time().saturating_sub(started);
        self.poll_time += spent;
        self.longest_poll = self.longest_poll.max(spent);
        for effect in effects {
            self.carry(s, effect);
        }
        let wake_local = self.nodes[s].core.next_wake(now);
        let wake = Duration::from_secs_f64(wake_local.as_secs_f64() / self.nodes[s].rate);
        let wake = wake.max(self.now + Duration::from_millis(1));
        if self.nodes[s].wake_at.is_none_or(|at| wake < at) {
            self.nodes[s].wake_at = Some(wake);
            let delay = wake - self.now;
            self.at(delay, Event::Wake(s, wake));
        }
    }

    fn beat(&mut self, h: usize) {
        if !self.hosts[h].alive {
            return;
        }
        if let Some(since) = self.hosts[h].draining_since {
            let placed = self.hosts[h].runs.values().any(|(app, _)| !app.is_empty());
            if !placed || self.now >= since + DRAIN_WAIT {
                self.leave(h);
                return;
            }
        }
        self.tell_schedulers(h);
        let host = &self.hosts[h];
        let late = if self.now < host.slow_until { host.slow } else { Duration::ZERO };
        let jitter = self.rng.between(Duration::ZERO, Duration::from_millis(10));
        self.at(self.config.heartbeat + late + jitter, Event::Beat(h));
    }

    /// Host `h`'s digest, with its share of the load of what it runs.
    fn info(&self, h: usize) -> pb::HostInfo {
        let mut info = self.hosts[h].info(self.config.heartbeat, self.now);
        for (id, calls) in &self.load {
            if !self.hosts[h].runs.contains_key(id) {
                continue;
            }
            let serving = self
                .running_on
                .get(id)
                .map_or(0, |on| on.iter().filter(|&&other| self.hosts[other].alive).count());
            let share = calls / serving.max(1) as f64;
            info.load.push(pb::ComponentLoad {
                id: id.clone(),
                in_flight_milli: (share * 1000.0) as u32,
                calls: 1,
                refused: 0,
            });
        }
        info
    }

    /// Host `h`'s heartbeat (its info) to every scheduler.
    fn tell_schedulers(&mut self, h: usize) {
        let info = self.info(h);
        for s in 0..self.nodes.len() {
            let input = Input::Host(info.clone());
            self.send(Peer::Host(h), Peer::Scheduler(s), Event::Input { s, input, token: None });
        }
    }

    /// A drained host stops what it still runs and leaves, saying goodbye.
    fn leave(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        host.alive = false;
        let stranded = host.runs.values().any(|(app, _)| !app.is_empty());
        host.left = Some((self.now, stranded));
        for id in std::mem::take(&mut host.runs).into_keys() {
            if let Some(on) = self.running_on.get_mut(&id) {
                on.remove(&h);
            }
        }
        let id = self.hosts[h].id.clone();
        for s in 0..self.nodes.len() {
            let input = Input::HostStopped(id.clone());
            self.send(Peer::Host(h), Peer::Scheduler(s), Event::Input { s, input, token: None });
        }
    }

    /// Opens a request of scheduler `s` that answers `on_timeout` unless answered first.
    fn open(&mut self, s: usize, on_timeout: Input) -> u64 {
        self.seq += 1;
        let token = self.seq;
        self.nodes[s].open.insert(token, ());
        // As the adapter: a lease renewal waits a quarter of the lease, the rest their timeout.
        let timeout = match on_timeout {
            Input::Lease { .. } => self.lease_ttl() / 4,
            _ => self.config.request_timeout,
        };
        self.at(timeout, Event::Timeout { s, token, input: on_timeout });
        token
    }

    fn ask_host(&mut self, s: usize, h: usize, request: HostRequest, on_timeout: Input) {
        let token = self.open(s, on_timeout.clone());
        if let HostRequest::Command(order) = &request
            && let Command::Start { id, .. } | Command::Replace { id, .. } = &order.command
        {
            self.in_flight.insert(token, id.clone());
            self.starting.entry(id.clone()).or_default().insert(token, h);
        }
        if !self.hosts[h].alive {
            // No responders: the server answers at once.
            let failed = no_responders(on_timeout);
            self.send(
                Peer::Server,
                Peer::Scheduler(s),
                Event::Input { s, input: failed, token: Some(token) },
            );
            self.in_flight.remove(&token);
            return;
        }
        self.send(Peer::Scheduler(s), Peer::Host(h), Event::AtHost { h, s, request, token });
    }

    fn ask_server(&mut self, s: usize, request: ServerRequest, on_timeout: Input) {
        let token = self.open(s, on_timeout);
        self.send(Peer::Scheduler(s), Peer::Server, Event::AtServer { s, request, token });
    }

    fn host_index(&self, id: &str) -> Option<usize> {
        id.strip_prefix('h').and_then(|n| n.parse().ok()).filter(|&h: &usize| h < self.hosts.len())
    }

    fn carry(&mut self, s: usize, effect: Effect) {
        if self.trace {
            let what = match &effect {
                Effect::ApplyLinks { record, .. } => format!("apply links of {}", record.name),
                Effect::WriteStatus(status) => {
                    format!("status {} {} {}", status.name, status.state, status.reason)
                }
                other => format!("{other:?}"),
            };
            eprintln!("{:>9.3} s{s} {what}", self.now.as_secs_f64());
        }
        match effect {
            Effect::RenewLease { asked } => self.ask_server(
                s,
                ServerRequest::Lease { asked },
                Input::Lease { asked, held: None },
            ),
            Effect::PingHosts => {
                // As the adapter: answers are taken for 500 ms, then the round is over.
                let pinged = Event::Input { s, input: Input::Pinged, token: None };
                self.at(Duration::from_millis(500), pinged);
                for h in 0..self.hosts.len() {
                    if self.hosts[h].alive {
                        self.send(
                            Peer::Scheduler(s),
                            Peer::Host(h),
                            Event::AtHost { h, s, request: HostRequest::Ping, token: 0 },
                        );
                    }
                }
            }
            Effect::ReadInventory { host, read } => {
                let failed = Input::Inventory {
                    host: host.clone(),
                    read,
                    inventory: Err(CommandError {
                        permanent: false,
                        gone: false,
                        timed_out: true,
                        message: "timed out".into(),
                    }),
                };
                match self.host_index(&host) {
                    Some(h) => self.ask_host(s, h, HostRequest::Inventory { read }, failed),
                    None => self.handle(s, failed),
                }
            }
            Effect::ReadApps => self.ask_server(s, ServerRequest::ReadApps, Input::Apps(None)),
            Effect::Send(order) => {
                self.commands_sent += 1;
                self.check_command(s, &order);
                let failed = Input::Done {
                    command: order.command.clone(),
                    error: Some(CommandError {
                        permanent: false,
                        gone: false,
                        timed_out: true,
                        message: "timed out".into(),
                    }),
                };
                match self.host_index(order.command.host()) {
                    Some(h) => self.ask_host(s, h, HostRequest::Command(Box::new(order)), failed),
                    None => self.handle(s, failed),
                }
            }
            Effect::ApplyLinks { record, mark } => {
                let app = record.name.clone();
                let failed = Input::Applied { app: app.clone(), mark: mark.clone(), ok: false };
                self.ask_server(s, ServerRequest::ApplyLinks { app, mark }, failed)
            }
            Effect::WriteStatus(status) => {
                let failed = Input::StatusWritten { app: status.name.clone(), ok: false };
                self.ask_server(s, ServerRequest::WriteStatus(status), failed)
            }
            Effect::MarkStable { app, version } => {
                let failed = Input::RecordUpdated { app: app.clone() };
                self.ask_server(s, ServerRequest::MarkStable { app, version }, failed)
            }
            Effect::RollBack { app, from, to, .. } => {
                let failed = Input::RecordUpdated { app: app.clone() };
                self.ask_server(s, ServerRequest::RollBack { app, from, to }, failed)
            }
            Effect::Announce(Notice::Scaled(scaled)) => self.scaled.push((self.now, scaled)),
            Effect::Announce(_) => {}
        }
    }

    fn at_host(&mut self, h: usize, s: usize, request: HostRequest, token: u64) {
        if !self.reachable(Peer::Host(h)) {
            return;
        }
        match request {
            HostRequest::Ping => {
                let input = Input::Host(self.info(h));
                self.send(
                    Peer::Host(h),
                    Peer::Scheduler(s),
                    Event::Input { s, input, token: None },
                );
            }
            HostRequest::Inventory { read } => {
                let host = self.hosts[h].id.clone();
                let inventory = Ok(self.hosts[h].inventory(self.config.heartbeat, self.now));
                let input = Input::Inventory { host, read, inventory };
                self.send(
                    Peer::Host(h),
                    Peer::Scheduler(s),
                    Event::Input { s, input, token: Some(token) },
                );
            }
            HostRequest::Command(order) => {
                let (lo, hi) = self.config.start_time;
                let took = match order.command {
                    Command::Stop { .. } => lo,
                    _ => self.rng.between(lo, hi),
                };
                self.at(took, Event::Finished { h, s, order: *order, token });
            }
        }
    }

    fn finished(&mut self, h: usize, s: usize, order: Order, token: u64) {
        if !self.hosts[h].alive {
            return;
        }
        let id = order.command.id().to_owned();
        let error = match (&order.command, &order.start) {
            (Command::Stop { .. }, _) => {
                self.check_stop(h, &id);
                if let Some(on) = self.running_on.get_mut(&id) {
                    on.remove(&h);
                }
                self.hosts[h].runs.remove(&id).is_none().then(|| "no such component".to_owned())
            }
            (_, Some(_)) if self.hosts[h].draining_since.is_some() => {
                Some("the host is draining and takes no new work".to_owned())
            }
            (_, Some(desired::Start::Component(req))) => {
                let owner = req.owner.clone().unwrap_or_default();
                if self.broken.contains(&owner.fingerprint) {
                    Some("invalid component".to_owned())
                } else {
                    self.hosts[h].runs.insert(id.clone(), (owner.app, owner.fingerprint));
                    self.running_on.entry(id.clone()).or_default().insert(h);
                    None
                }
            }
            (_, Some(desired::Start::Provider(req))) => {
                let owner = req.owner.clone().unwrap_or_default();
                self.hosts[h].runs.insert(id.clone(), (owner.app, owner.fingerprint));
                self.running_on.entry(id.clone()).or_default().insert(h);
                None
            }
            (_, None) => None,
        };
        self.landed(token);
        self.hosts[h].version += 1;
        let permanent = error.as_deref() == Some("invalid component");
        let error =
            error.map(|message| CommandError { permanent, gone: false, timed_out: false, message });
        let input = Input::Done { command: order.command, error };
        self.send(Peer::Host(h), Peer::Scheduler(s), Event::Input { s, input, token: Some(token) });
        // The host announces the change: every scheduler reads it again.
        let host = self.hosts[h].id.clone();
        for other in 0..self.nodes.len() {
            let input = Input::Touched(host.clone());
            self.send(
                Peer::Host(h),
                Peer::Scheduler(other),
                Event::Input { s: other, input, token: None },
            );
        }
    }

    fn at_server(&mut self, s: usize, request: ServerRequest, token: u64) {
        let answer = match request {
            ServerRequest::Lease { asked } => {
                let held = self.lease(s);
                Input::Lease { asked, held }
            }
            ServerRequest::ReadApps => {
                let records = self.server.records.values().cloned().collect();
                Input::Apps(Some((records, Vec::new())))
            }
            ServerRequest::WriteStatus(status) => {
                let app = status.name.clone();
                self.server.statuses.insert(app.clone(), *status);
                Input::StatusWritten { app, ok: true }
            }
            ServerRequest::MarkStable { app, version } => {
                let changed = self.server.records.get_mut(&app).is_some_and(|r| {
                    let current = r.current.as_ref().map(|v| v.to_string());
                    if current.as_deref() != Some(version.as_str()) || r.stable == r.current {
                        return false;
                    }
                    r.stable = r.current.clone();
                    true
                });
                if changed {
                    self.records_changed();
                    self.watch_fired();
                }
                Input::RecordUpdated { app }
            }
            ServerRequest::RollBack { app, from, to } => {
                let changed = self.server.records.get_mut(&app).is_some_and(|r| {
                    let current = r.current.as_ref().map(|v| v.to_string());
                    match r.stable.clone() {
                        Some(stable)
                            if current.as_deref() == Some(&from) && stable.as_str() == to =>
                        {
                            r.current = Some(stable);
                            true
                        }
                        _ => false,
                    }
                });
                if changed {
                    self.records_changed();
                    self.watch_fired();
                }
                Input::RecordUpdated { app }
            }
            ServerRequest::ApplyLinks { app, mark } => Input::Applied { app, mark, ok: true },
        };
        self.send(
            Peer::Server,
            Peer::Scheduler(s),
            Event::Input { s, input: answer, token: Some(token) },
        );
    }

    /// `apps::Lease::hold` against the model: renew our revision, or create when the entry is
    /// gone (expired); on failure, ours only if the entry still names us.
    fn lease(&mut self, s: usize) -> Option<u64> {
        let ttl = self.lease_ttl();
        if self.server.lease.as_ref().is_some_and(|l| self.now >= l.written + ttl) {
            self.server.lease = None;
        }
        let ok = match (&self.server.lease, self.nodes[s].lease_revision) {
            (None, None) => true,
            (Some(entry), Some(revision)) => entry.revision == revision,
            _ => false,
        };
        if ok {
            self.server.revision += 1;
            let revision = self.server.revision;
            self.server.lease = Some(LeaseEntry { holder: s, revision, written: self.now });
            self.nodes[s].lease_revision = Some(revision);
        } else {
            self.nodes[s].lease_revision =
                self.server.lease.as_ref().filter(|l| l.holder == s).map(|l| l.revision);
        }
        self.nodes[s].lease_revision
    }

    fn watch_fired(&mut self) {
        for s in 0..self.nodes.len() {
            self.send(
                Peer::Server,
                Peer::Scheduler(s),
                Event::Input { s, input: Input::AppsChanged, token: None },
            );
        }
    }

    // ---- the properties ----

    fn count_wake(&mut self, s: usize) {
        let (since, count) = &mut self.nodes[s].wakes;
        if self.now >= *since + Duration::from_secs(1) {
            (*since, *count) = (self.now, 0);
        }
        *count += 1;
        if *count == MOST_WAKES_PER_SECOND + 1 {
            self.violation(format!(
                "scheduler {s} woke on its timer over {MOST_WAKES_PER_SECOND} times within a \
                 second: it spins"
            ));
        }
    }

    fn violation(&mut self, what: String) {
        if self.trace {
            eprintln!("{:>9.3} VIOLATION {what}", self.now.as_secs_f64());
        }
        self.violations.push(Violation { at: self.now, what });
    }

    /// The stored records changed: what they want (workload id → (app, fingerprint,
    /// replicas, batch)) is worked out again.
    fn records_changed(&mut self) {
        let records: Vec<AppRecord> = self.server.records.values().cloned().collect();
        self.wanted = desired::workloads(&records)
            .into_iter()
            .map(|(id, w)| (id, (w.wanted.app, w.wanted.fingerprint, w.wanted.replicas, w.batch)))
            .collect();
    }

    /// A start's request was answered, failed or timed out.
    fn landed(&mut self, token: u64) {
        if let Some(id) = self.in_flight.remove(&token)
            && let Some(tokens) = self.starting.get_mut(&id)
        {
            tokens.remove(&token);
        }
    }

    /// Hosts that run `id` (on `fingerprint`, if given), and hosts starting it, among those
    /// `counted` lets through: (running, starting) as sets of hosts.
    fn replicas_where(
        &self,
        id: &str,
        fingerprint: Option<&str>,
        counted: impl Fn(usize) -> bool,
    ) -> (BTreeSet<usize>, BTreeSet<usize>) {
        let running: BTreeSet<usize> = self
            .running_on
            .get(id)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&h| counted(h))
            .filter(|&h| {
                fingerprint.is_none_or(|f| self.hosts[h].runs.get(id).is_some_and(|(_, g)| g == f))
            })
            .collect();
        let starting = self
            .starting
            .get(id)
            .into_iter()
            .flat_map(|tokens| tokens.values().copied())
            .filter(|&h| counted(h) && !running.contains(&h))
            .collect();
        (running, starting)
    }

    /// Whether host `h` is alive, or crashed too recently for anyone to know.
    fn alive_as_far_as_known(&self, h: usize) -> bool {
        let unseen = self.config.heartbeat * (UNKNOWN_AFTER_BEATS + 1);
        let host = &self.hosts[h];
        host.alive || host.crashed_at.is_some_and(|at| self.now < at + unseen)
    }

    /// Whether host `h` counts as running what it ran for the properties at scheduler `s`:
    /// alive as far as known, and live in `s`'s view.
    fn counts(&self, s: usize, h: usize) -> bool {
        self.alive_as_far_as_known(h)
            && self.nodes[s].core.liveness(&self.hosts[h].id) == Some(Liveness::Live)
    }

    /// Whether host `h` is up: connected, or crashed or cut off too recently for anyone to
    /// know.
    fn up(&self, h: usize) -> bool {
        let crashed_unnoticed = !self.hosts[h].alive && self.alive_as_far_as_known(h);
        let unseen = self.config.heartbeat * (UNKNOWN_AFTER_BEATS + 1);
        let cut_unnoticed = self.hosts[h].alive
            && self.partitioned.contains(&h)
            && self.cut_at.get(&h).is_some_and(|&at| self.now < at + unseen);
        self.reachable(Peer::Host(h)) || crashed_unnoticed || cut_unnoticed
    }

    /// Every command is sent by the scheduler the lease entry names, unexpired, now: never
    /// two leaders acting at once. Starts never take a workload past replicas + batch on the
    /// hosts the scheduler counts as live.
    fn check_command(&mut self, s: usize, order: &Order) {
        if self.leader() != Some(s) {
            let holder = self.leader();
            let term = self.nodes[s].core.term().0;
            self.violation(format!(
                "scheduler {s} (term {term}) sent {:?} while the lease is held by {holder:?}",
                order.command
            ));
        }
        let term = self.nodes[s].core.term().0;
        if let Some(&other) = self.terms.get(&term)
            && other != s
        {
            self.violation(format!("schedulers {other} and {s} both acted in term {term}"));
        }
        self.terms.insert(term, s);
        let Command::Start { id, host } = &order.command else { return };
        let Some((replicas, batch)) = self.nodes[s].core.wants(id) else { return };
        if self.host_index(host).is_some_and(|h| self.hosts[h].draining_since.is_some()) {
            return; // sent before its heartbeat said so: the host refuses it, nothing starts
        }
        // Distinct hosts that run it or are starting it, counted as the scheduler counts, but
        // not draining ones: a drain's replicas are replaced before they stop, a surge by
        // design.
        let counted = |h: usize| self.counts(s, h) && self.hosts[h].draining_since.is_none();
        let (mut on, starting) = self.replicas_where(id, None, counted);
        let running = on.len();
        let starting = starting.len();
        on.extend(self.host_index(host));
        if on.len() > (replicas + batch) as usize {
            if self.trace {
                for (o, host) in self.hosts.iter().enumerate() {
                    if host.runs.contains_key(id) || on.contains(&o) {
                        let view = self.nodes[s].core.liveness(&host.id);
                        eprintln!("  {} runs {:?}; view {view:?}", host.id, host.runs.get(id));
                    }
                }
            }
            self.violation(format!(
                "start of {id} on {host} makes {} replicas ({running} running, {starting} starting) where {replicas} + batch {batch} are allowed",
                on.len()
            ));
        }
    }

    /// A replica of a wanted workload is stopped only when enough others run or are starting
    /// on hosts that are up (alive and connected, or crashed or cut off too recently for
    /// anyone to know): nothing is evicted because somebody lost their connection. On a
    /// draining host, only when enough others run.
    fn check_stop(&mut self, h: usize, id: &str) {
        let Some((app, fingerprint, _, _)) = self.wanted.get(id).cloned() else { return };
        if self.hosts[h].runs.get(id) != Some(&(app, fingerprint.clone())) {
            return; // outdated or someone else's: replaced, not evicted
        }
        let Some(s) = self.leader() else { return };
        let Some((replicas, _)) = self.nodes[s].core.wants(id) else { return };
        // A draining host's replica stops only once its replacements run in the wanted
        // version, not merely start. Any other stop (surplus after a scale-down, a share that
        // wants fewer) may count replicas of an older version that still serve: a rollout
        // replaces those in place, so they stay up until their successors start.
        let draining = self.hosts[h].draining_since.is_some();
        let version = draining.then_some(fingerprint.as_str());
        let (running, starting) = self.replicas_where(id, version, |o| o != h && self.up(o));
        let (others, starting) = (running.len(), starting.len());
        let counted = if draining { others } else { others + starting };
        if counted < replicas as usize {
            if self.trace {
                for (o, host) in self.hosts.iter().enumerate() {
                    if host.runs.contains_key(id) {
                        let view = self.nodes[s].core.liveness(&host.id);
                        eprintln!(
                            "  {} runs {:?}; alive {} cut {} view {view:?}",
                            host.id,
                            host.runs.get(id),
                            host.alive,
                            self.partitioned.contains(&o)
                        );
                    }
                }
            }
            let host = self.hosts[h].id.clone();
            self.violation(format!(
                "{id} stopped on {host} leaving {others} running and {starting} starting of {replicas}"
            ));
        }
    }

    /// Whether what runs is what the records want, on hosts that are alive and connected:
    /// every workload at its replica count (or on every matching host, when there are fewer)
    /// on its current spec, nothing else an application placed, and the leader's status
    /// saying so. `None` when it is; else what is not.
    pub fn converged(&self) -> Option<String> {
        let wanted = &self.wanted;
        let up: Vec<usize> =
            (0..self.hosts.len()).filter(|&h| self.reachable(Peer::Host(h))).collect();
        for &h in &up {
            for (id, (app, fingerprint)) in &self.hosts[h].runs {
                match wanted.get(id) {
                    None if !app.is_empty() => {
                        return Some(format!("{id} still runs on {}", self.hosts[h].id));
                    }
                    Some((_, f, _, _)) if f != fingerprint => {
                        return Some(format!("{id} on {} runs an old version", self.hosts[h].id));
                    }
                    _ => {}
                }
            }
        }
        let records: Vec<AppRecord> = self.server.records.values().cloned().collect();
        let mut workloads = desired::workloads(&records);
        // A workload that scales to zero wants what the leader says while awake, none asleep;
        // one scaled by load, what the leader wants.
        for (id, w) in &mut workloads {
            if w.autoscale.is_some()
                && let Some((replicas, _)) =
                    self.leader().and_then(|s| self.nodes[s].core.wants(id))
            {
                w.wanted.replicas = replicas;
                continue;
            }
            if let Some((awake, _)) = w.scale_to_zero {
                let on = self.leader().and_then(|s| self.nodes[s].core.awake(id)) == Some(true);
                w.wanted.replicas = if on { awake } else { 0 };
            }
        }
        // Hosts new replicas may go to (draining ones take none), per label set: at scale
        // thousands of workloads share a few sets.
        let open: Vec<usize> =
            up.iter().copied().filter(|&h| self.hosts[h].draining_since.is_none()).collect();
        let mut eligible_by: HashMap<Vec<(String, String)>, usize> = HashMap::new();
        let mut eligible = |required: &BTreeMap<String, String>,
                            share: &BTreeMap<String, String>| {
            let key: Vec<(String, String)> =
                required.iter().chain(share).map(|(k, v)| (k.clone(), v.clone())).collect();
            *eligible_by.entry(key).or_insert_with_key(|key| {
                open.iter()
                    .filter(|&&h| key.iter().all(|(k, v)| self.hosts[h].labels.get(k) == Some(v)))
                    .count()
            })
        };
        let all = BTreeMap::new();
        for (id, w) in &workloads {
            // At least as many as wanted, or as many as each share's hosts can hold.
            let want: usize = if w.wanted.spread.is_empty() {
                (w.wanted.replicas as usize).min(eligible(&w.wanted.requirements, &all))
            } else {
                let weights: Vec<u32> = w.wanted.spread.iter().map(|s| s.weight).collect();
                let targets = crate::plan::apportion(w.wanted.replicas, &weights);
                w.wanted
                    .spread
                    .iter()
                    .zip(targets)
                    .map(|(s, t)| {
                        (t as usize).min(eligible(&w.wanted.requirements, &s.requirements))
                    })
                    .sum()
            };
            let running = self
                .running_on
                .get(id)
                .map_or(0, |on| on.iter().filter(|&&h| self.reachable(Peer::Host(h))).count());
            let draining = self.running_on.get(id).map_or(0, |on| {
                on.iter()
                    .filter(|&&h| {
                        self.reachable(Peer::Host(h)) && self.hosts[h].draining_since.is_some()
                    })
                    .count()
            });
            // A draining host keeps a replica it cannot hand over until it leaves. While a
            // share is short, the others keep what they run beyond their count, up to the
            // wanted total.
            let most = if w.wanted.spread.is_empty() { want } else { w.wanted.replicas as usize };
            let fewer = running < want;
            let more = running > most + draining;
            if (fewer || more) && !self.broken.contains(&w.wanted.fingerprint) {
                return Some(format!("{id}: {running} running, {want} wanted"));
            }
        }
        for record in self.server.records.values() {
            let Some(status) = self.server.statuses.get(&record.name) else {
                return Some(format!("{}: no status written", record.name));
            };
            let current = record.current.as_ref().map(|v| v.to_string()).unwrap_or_default();
            if status.version != current {
                return Some(format!("{}: status is of version {}", record.name, status.version));
            }
            let broken = self.broken.contains(&scenario::fingerprint(record));
            let expected = match &record.current {
                None => Some(crate::apps::State::Undeployed),
                Some(_) if broken => None,
                Some(_) => Some(crate::apps::State::Deployed),
            };
            if let Some(state) = expected
                && status.state != state
                && !(state == crate::apps::State::Deployed
                    && status.state == crate::apps::State::Unplaceable)
            {
                return Some(format!("{}: status says {}, not {state}", record.name, status.state));
            }
        }
        None
    }

    /// Whether host `h` runs anything.
    pub fn runs_any(&self, h: usize) -> bool {
        !self.hosts[h].runs.is_empty()
    }

    /// The schedulers' costs since the last call: the longest `poll`, all `poll` time,
    /// passes and commands.
    pub fn take_costs(&mut self) -> (Duration, Duration, u64, u64) {
        let passes: u64 = self.nodes.iter().map(|n| n.core.counters().passes).sum();
        (
            std::mem::take(&mut self.longest_poll),
            std::mem::take(&mut self.poll_time),
            passes - std::mem::replace(&mut self.passes_taken, passes),
            std::mem::take(&mut self.commands_sent),
        )
    }

    /// The status the leader last wrote for `app`.
    pub fn status(&self, app: &str) -> Option<&AppStatus> {
        self.server.statuses.get(app)
    }

    /// Replicas of workload `id` on hosts that are up, by fingerprint.
    pub fn replicas(&self, id: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for h in (0..self.hosts.len()).filter(|&h| self.reachable(Peer::Host(h))) {
            if let Some((_, f)) = self.hosts[h].runs.get(id) {
                *out.entry(f.clone()).or_default() += 1;
            }
        }
        out
    }

    /// A call to component `id`: served by a replica on a host that is up (which lists it as
    /// active in its next heartbeats), `true`; or none runs, and the caller asks the leader
    /// to wake it (as a host does on no responders), `false`.
    pub fn call(&mut self, id: &str) -> bool {
        let now = self.now;
        let serving = (0..self.hosts.len())
            .find(|&h| self.reachable(Peer::Host(h)) && self.hosts[h].runs.contains_key(id));
        if let Some(h) = serving {
            self.hosts[h].called.insert(id.to_owned(), now);
            return true;
        }
        if let Some(s) = self.leader() {
            let local = self.local(s);
            self.nodes[s].core.wake(local, id);
            self.poll(s);
        }
        false
    }

    /// Scheduler `s`'s process restarts: it forgets everything it knew (its lease handle
    /// too) and starts over from what it reads.
    pub fn restart_scheduler(&mut self, s: usize) {
        let mut core_config = self.config.scheduler.clone();
        core_config.me = self.hosts[self.nodes[s].host].id.clone();
        let now = self.local(s);
        let node = &mut self.nodes[s];
        node.core = Scheduler::new(core_config, now);
        node.open.clear();
        node.lease_revision = None;
        node.wake_at = Some(self.now);
        self.at(Duration::ZERO, Event::Wake(s, self.now));
    }

    /// `calls` calls in flight on workload `id` from now on, shared by the hosts running it.
    pub fn set_load(&mut self, id: &str, calls: f64) {
        self.load.insert(id.to_owned(), calls);
    }

    /// The term scheduler `s` believes it leads in (0: none).
    pub fn term(&self, s: usize) -> u64 {
        self.nodes[s].core.term().0
    }

    /// What scheduler `s` has done.
    pub fn counters(&self, s: usize) -> core::Counters {
        self.nodes[s].core.counters().clone()
    }
}

/// What a request to a host nobody listens for answers.
fn no_responders(on_timeout: Input) -> Input {
    let error = CommandError {
        permanent: false,
        gone: true,
        timed_out: false,
        message: "no responders".into(),
    };
    match on_timeout {
        Input::Inventory { host, read, .. } => {
            Input::Inventory { host, read, inventory: Err(error) }
        }
        Input::Done { command, .. } => Input::Done { command, error: Some(error) },
        other => other,
    }
}

/// CPU time this thread has used: what a poll costs, whatever else the machine runs.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
