//! The control plane at scale (issue 20): 1,000 hosts (`--hosts`) played by one process
//! (`fleet.rs`: real NATS connections speaking the host protocol, no wasmtime) against a real
//! nats-server and a real scheduler (`trellis host --scheduler`, a process of its own).
//!
//! 1. heartbeat traffic of the fleet, and its share of what the same server carries (a raw
//!    publish/subscribe baseline, and the server's own counters from `/varz`);
//! 2. `trellis get hosts`: how long it takes, and that it lists every host;
//! 3. deploying 100 applications of 100 replicas each until every status says `deployed`;
//! 4. healing after a tenth of the hosts vanish at once (no more heartbeats, no answers):
//!    until every application is `deployed` again on the hosts left.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{join_all, try_join_all};
use tokio::process::Command;
use trellis_lattice::subject::EventKind;
use trellis_scheduler::apps::{AppStatus, AppStore, State};
use trellis_scheduler::manifest::{ComponentSpec, Id, Manifest, Rollout, Source, Version};

use crate::env::{BenchLattice, HostProcess, free_addr};
use crate::fleet::{Fleet, FleetSpec};
use crate::report::{Figures, Row};
use crate::server::{Varz, capacity};
use crate::{BenchError, Options, setup};

/// What one run does.
struct Plan {
    hosts: usize,
    interval: Duration,
    listen: Duration,
    apps: usize,
    replicas: usize,
    vanish: usize,
    capacity_messages: usize,
    get_hosts_runs: usize,
}

impl Plan {
    fn of(options: &Options) -> Self {
        let hosts = options.hosts.unwrap_or(options.count(1000, 100)).max(2);
        Self {
            hosts,
            // Production's interval; quick runs beat faster so healing is quick too.
            interval: Duration::from_secs(options.count(3, 1) as u64),
            listen: Duration::from_secs(options.count(15, 3) as u64),
            apps: options.count(100, 10),
            replicas: options.count(100, 20).min(hosts - hosts / 10),
            vanish: hosts / 10,
            capacity_messages: options.count(200_000, 20_000),
            get_hosts_runs: options.count(5, 2),
        }
    }
}

fn fail(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Run { scenario: "scale", reason: reason.to_string() }
}

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let plan = Plan::of(options);
    let monitor = free_addr()?;
    let mut lattice = BenchLattice::start_with(Some(&format!("http: \"{monitor}\"\n"))).await?;
    let log = lattice.nats.dir().join("scheduler.log");
    start_scheduler(&mut lattice, options, &plan, &log).await?;
    let labels = [("fleet".to_owned(), "scale".to_owned())].into();
    let spec = FleetSpec {
        url: lattice.nats.url(),
        lattice: "bench".into(),
        hosts: plan.hosts,
        interval: plan.interval,
        labels,
    };
    let fleet = Fleet::start(&spec).await?;
    // Every host has heartbeated at least once.
    tokio::time::sleep(plan.interval).await;
    let mut rows = heartbeats(&lattice, monitor, &plan).await?;
    rows.extend(get_hosts(&lattice, options, &plan).await?);
    let with_log = |e: BenchError| fail(format!("{e} (scheduler log: {})", log.display()));
    rows.extend(deploy_and_heal(&lattice, &fleet, options, &plan).await.map_err(with_log)?);
    Ok(rows)
}

/// A real `trellis host --scheduler`, its log (warnings and up) in `log`. Its host takes no
/// replicas: the applications want hosts labelled `fleet=scale`.
async fn start_scheduler(
    lattice: &mut BenchLattice,
    options: &Options,
    plan: &Plan,
    log: &std::path::Path,
) -> Result<(), BenchError> {
    let interval = plan.interval.as_secs().to_string();
    let child = Command::new(&options.trellis)
        .args(["host", "--name", "scheduler", "--allow-unsigned", "--scheduler"])
        .args(["--heartbeat-interval", &interval])
        .env("TRELLIS_NATS_URL", lattice.nats.url())
        .env("TRELLIS_LATTICE", "bench")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).map_err(setup)?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| setup(format!("cannot start {}: {e}", options.trellis.display())))?;
    for _ in 0..200 {
        let hosts = lattice.client.hosts(Duration::from_millis(100)).await.map_err(setup)?;
        if let Some(h) = hosts.into_iter().find(|h| h.name == "scheduler") {
            lattice.hosts.push(HostProcess { id: h.id, child });
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(setup("the scheduler's host did not join within 20 s"))
}

/// Heartbeat traffic of the idle fleet, counted on the subject, and the server's counters over
/// the same window; then what the same server carries in a raw publish/subscribe run of
/// messages of the heartbeats' size.
async fn heartbeats(
    lattice: &BenchLattice,
    monitor: std::net::SocketAddr,
    plan: &Plan,
) -> Result<Vec<Row>, BenchError> {
    let subject = lattice.client.subjects().event(EventKind::HostHeartbeat);
    let mut sub = lattice.client.nats().subscribe(subject.clone()).await.map_err(setup)?;
    lattice.client.nats().flush().await.map_err(setup)?;
    let before = Varz::read(monitor).await?;
    let (mut bytes, mut messages) = (0usize, 0usize);
    let end = tokio::time::Instant::now() + plan.listen;
    while let Ok(Some(msg)) = tokio::time::timeout_at(end, sub.next()).await {
        // What the server forwards: subject and payload (heartbeats carry no headers).
        bytes += msg.subject.len() + msg.payload.len();
        messages += 1;
    }
    let after = Varz::read(monitor).await?;
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let (msg_rate, byte_rate) = (messages as f64 / seconds, bytes as f64 / seconds);
    let server = before.rates_to(&after);
    let size = bytes / messages.max(1) - subject.len();
    let base =
        capacity(&lattice.nats.url(), monitor, ("bench.capacity", size, plan.capacity_messages))
            .await?;
    let (n, every) = (plan.hosts, plan.interval.as_secs());
    let mut rows = vec![
        Row::alone(format!("heartbeats of {n} hosts ({every} s): B/s"), value(byte_rate, "B/s")),
        Row::alone(format!("heartbeats of {n} hosts: msg/s"), value(msg_rate, "msg/s")),
        Row::alone(
            "heartbeat: bytes (subject + payload)",
            value(bytes as f64 / messages.max(1) as f64, "B"),
        ),
        Row::alone("server, idle fleet: msgs in/s (varz)", value(server.in_msgs, "msg/s")),
        Row::alone("server, idle fleet: payload B in/s (varz)", value(server.in_bytes, "B/s")),
        Row::alone("server, idle fleet: msgs out/s (varz)", value(server.out_msgs, "msg/s")),
        Row::alone(
            format!("baseline: 1 publisher -> 1 subscriber, {size} B"),
            value(base.msgs, "msg/s"),
        ),
        Row::alone("baseline: B/s (subject + payload)", value(base.bytes, "B/s")),
        Row::alone("baseline: server msgs in/s (varz)", value(base.server.in_msgs, "msg/s")),
        Row::alone("baseline: server payload B in/s (varz)", value(base.server.in_bytes, "B/s")),
        Row::alone("heartbeats / baseline, msg/s", value(1000.0 * msg_rate / base.msgs, "‰")),
        Row::alone("heartbeats / baseline, B/s", value(1000.0 * byte_rate / base.bytes, "‰")),
        Row::alone(
            "server in msg/s idle fleet / baseline (varz)",
            value(1000.0 * server.in_msgs / base.server.in_msgs.max(1e-9), "‰"),
        ),
    ];
    // The server reports its CPU in whole percent: 0 on a small idle fleet says nothing.
    if after.cpu > 0.0 {
        rows.insert(6, Row::alone("server, idle fleet: CPU (varz)", value(after.cpu, "%")));
    }
    Ok(rows)
}

/// `trellis get hosts --output json`, run as a user runs it: time to exit and hosts listed;
/// the slowest run and the fewest listed of a few.
async fn get_hosts(
    lattice: &BenchLattice,
    options: &Options,
    plan: &Plan,
) -> Result<Vec<Row>, BenchError> {
    let expected = plan.hosts + 1; // and the scheduler's host
    let (mut slowest, mut fewest) = (Duration::ZERO, usize::MAX);
    for _ in 0..plan.get_hosts_runs {
        let started = Instant::now();
        let out = Command::new(&options.trellis)
            .args(["get", "hosts", "--output", "json"])
            .env("TRELLIS_NATS_URL", lattice.nats.url())
            .env("TRELLIS_LATTICE", "bench")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(setup)?;
        slowest = slowest.max(started.elapsed());
        if !out.status.success() {
            return Err(fail(format!("get hosts: {}", String::from_utf8_lossy(&out.stderr))));
        }
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(fail)?;
        fewest = fewest.min(listed.len());
    }
    let started = Instant::now();
    let library = lattice.client.hosts(Duration::from_secs(5)).await.map_err(fail)?;
    let library_time = started.elapsed();
    Ok(vec![
        Row::alone(
            format!(
                "get hosts ({expected} hosts), CLI: slowest of {} [< 1 s]",
                plan.get_hosts_runs
            ),
            value(ms(slowest), "ms"),
        ),
        Row::alone(
            format!("get hosts, CLI: fewest listed [{expected}]"),
            value(fewest as f64, "hosts"),
        ),
        Row::alone("get hosts, LatticeClient::hosts", value(ms(library_time), "ms")),
        Row::alone(format!("  listed [{expected}]"), value(library.len() as f64, "hosts")),
    ])
}

/// Deploys the applications, waits until all are placed, makes a tenth of the hosts vanish and
/// waits until all are placed again without them.
async fn deploy_and_heal(
    lattice: &BenchLattice,
    fleet: &Fleet,
    options: &Options,
    plan: &Plan,
) -> Result<Vec<Row>, BenchError> {
    let bytes = std::fs::read(&options.component).map_err(setup)?;
    let digest =
        lattice.client.state().await.map_err(setup)?.put_artifact(&bytes).await.map_err(setup)?;
    let store = AppStore::open(&lattice.client.jetstream(), "bench", 1).await.map_err(setup)?;
    let manifests: Vec<Manifest> =
        (0..plan.apps).map(|a| manifest(a, &digest, plan.replicas)).collect::<Result<_, _>>()?;
    let names: Vec<String> = manifests.iter().map(|m| m.name.to_string()).collect();
    let scheduler_pid = lattice.hosts[0].child.id();
    let cpu_before = cpu_seconds(scheduler_pid);

    let started = Instant::now();
    try_join_all(manifests.iter().map(|m| store.deploy(m))).await.map_err(setup)?;
    let none = BTreeSet::new();
    let limit = Duration::from_secs(300);
    wait_placed(&store, &names, plan.replicas, &none, limit).await?;
    let deployed = started.elapsed();
    let cpu = cpu_seconds(scheduler_pid) - cpu_before;
    let placed: usize = fleet.replicas_by_app().values().sum();

    let gone: BTreeSet<String> =
        fleet.hosts[..plan.vanish].iter().inspect(|h| h.vanish()).map(|h| h.name.clone()).collect();
    let started = Instant::now();
    wait_placed(&store, &names, plan.replicas, &gone, Duration::from_secs(120)).await?;
    let healed = started.elapsed();
    let live: usize = fleet.replicas_by_app().values().sum();

    let total = plan.apps * plan.replicas;
    let heal_target = 3 * plan.interval.as_secs() + 5;
    let mut rows = vec![
        Row::alone(
            format!(
                "deploy {} apps x {} replicas: all deployed [< 10 s]",
                plan.apps, plan.replicas
            ),
            value(ms(deployed), "ms"),
        ),
        Row::alone(format!("  replicas on the fleet [{total}]"), value(placed as f64, "replicas")),
        Row::alone(
            format!("{} hosts vanish: all deployed again [< {heal_target} s]", plan.vanish),
            value(ms(healed), "ms"),
        ),
        Row::alone(format!("  replicas on live hosts [{total}]"), value(live as f64, "replicas")),
    ];
    // Counted in ticks of 10 ms: a small deployment may take none.
    if cpu > 0.0 {
        rows.insert(2, Row::alone("  scheduler process CPU while deploying", value(cpu, "s")));
    }
    Ok(rows)
}

/// Application `a`: one component of `replicas` replicas on hosts labelled `fleet=scale`,
/// deployed through the application store as `trellis app deploy` deploys it.
fn manifest(a: usize, digest: &str, replicas: usize) -> Result<Manifest, BenchError> {
    let name = format!("app{a:03}");
    let manifest = Manifest {
        name: id(&name)?,
        version: Version::try_from("1".to_owned()).map_err(setup)?,
        description: String::new(),
        components: vec![ComponentSpec {
            name: id(&format!("{name}-web"))?,
            source: Source::Digest(digest.to_owned()),
            replicas: (replicas as u32).into(),
            scale: Default::default(),
            requirements: [("fleet".to_owned(), "scale".to_owned())].into(),
            spread: vec![],
            config: vec![],
            secrets: vec![],
            limits: Default::default(),
            reuse: None,
        }],
        providers: vec![],
        links: vec![],
        config: Default::default(),
        rollout: Rollout { batch: NonZeroU32::MIN },
    };
    Ok(manifest)
}

/// Waits until every application's status says `deployed` with `replicas` replicas, none on a
/// host in `gone`.
async fn wait_placed(
    store: &AppStore,
    names: &[String],
    replicas: usize,
    gone: &BTreeSet<String>,
    limit: Duration,
) -> Result<(), BenchError> {
    let started = Instant::now();
    let mut pending: Vec<&String> = names.iter().collect();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    while !pending.is_empty() {
        let statuses = join_all(pending.iter().map(|n| store.status(n))).await;
        let mut still = Vec::new();
        for (name, status) in pending.into_iter().zip(statuses) {
            let status = status.map_err(fail)?;
            if !status.as_ref().is_some_and(|s| placed(s, replicas, gone)) {
                last.insert(name.clone(), describe(status.as_ref()));
                still.push(name);
            }
        }
        pending = still;
        if !pending.is_empty() && started.elapsed() > limit {
            let first = pending[0];
            return Err(fail(format!(
                "{} of {} applications not placed within {limit:?}; {first}: {}",
                pending.len(),
                names.len(),
                last.get(first).map_or("", String::as_str)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn placed(status: &AppStatus, replicas: usize, gone: &BTreeSet<String>) -> bool {
    status.state == State::Deployed
        && status
            .workloads
            .iter()
            .all(|w| w.hosts.len() >= replicas && w.hosts.iter().all(|h| !gone.contains(h)))
}

fn describe(status: Option<&AppStatus>) -> String {
    match status {
        None => "no status yet".into(),
        Some(s) => {
            let hosts: usize = s.workloads.iter().map(|w| w.hosts.len()).sum();
            format!("{} ({} hosts) {}", s.state, hosts, s.reason)
        }
    }
}

/// CPU time (user + system) of process `pid` so far, in seconds; 0 when unknown.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th, in clock ticks of 1/100 s.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn id(text: &str) -> Result<Id, BenchError> {
    Id::try_from(text.to_owned()).map_err(setup)
}

fn value(v: f64, unit: &'static str) -> Figures {
    Figures::value(v, unit)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
