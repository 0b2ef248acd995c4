//! Lattices, applications and faults for the simulator, drawn from a seed.

use std::collections::HashMap;
use std::time::Duration;

use crate::manifest::{Manifest, Version};

use super::{Config, Net, Rng, Sim, Violation};
use crate::apps::AppRecord;
use crate::desired;

/// An application of one component `<name>-web`: `replicas` replicas, spread over the zones
/// with `weights` (none: anywhere), version `version` built from `build`.
pub fn app(name: &str, version: u32, build: u64, replicas: u32, weights: &[u32]) -> Manifest {
    let digest = format!("sha256:{build:064x}");
    let mut yaml = format!(
        "name: {name}\nversion: 'v{version}'\ncomponents:\n  - name: {name}-web\n    source: {digest}\n    replicas: {replicas}\n"
    );
    if !weights.is_empty() {
        yaml.push_str("    spread:\n");
        for (zone, weight) in weights.iter().enumerate() {
            yaml.push_str(&format!(
                "      - name: z{zone}\n        requirements: {{zone: z{zone}}}\n        weight: {weight}\n"
            ));
        }
    }
    Manifest::from_yaml(&yaml).expect("the simulator's manifests are valid")
}

/// The record of a first deploy of `manifest`.
pub fn record(manifest: Manifest) -> AppRecord {
    AppRecord {
        name: manifest.name.to_string(),
        current: Some(manifest.version.clone()),
        stable: None,
        versions: vec![manifest],
        history: Vec::new(),
    }
}

/// `record` with `manifest` deployed on top (a rollout).
pub fn deploy_over(record: &AppRecord, manifest: Manifest) -> AppRecord {
    let mut record = record.clone();
    record.current = Some(manifest.version.clone());
    record.versions.push(manifest);
    record
}

/// The fingerprint the scheduler gives `record`'s current component.
pub fn fingerprint(record: &AppRecord) -> String {
    desired::workloads(std::slice::from_ref(record))
        .into_values()
        .next()
        .map(|w| w.wanted.fingerprint)
        .unwrap_or_default()
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Broken promises.
    pub violations: Vec<Violation>,
    /// When the last fault ended (simulated).
    pub last_fault: Duration,
    /// How long after it what runs first matched what is wanted; `None`: not by the end, or
    /// not again within [`SETTLED_WITHIN`] of the end.
    pub converged_after: Option<Duration>,
    /// Why not, when it did not converge.
    pub why_not: Option<String>,
    /// What happened, for replaying a failure by eye.
    pub script: Vec<String>,
}

/// How long after the last fault the lattice must have converged, with [`Config::quick`]'s
/// timings: a lease lapse and takeover (2 leases), a host's silence noticed (3 heartbeats), a
/// start retried after a timeout, with room for the network's losses.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// At the end of a run, what runs must have matched what is wanted this recently: a blip (a
/// host taken for unknown after three lost heartbeats) heals within it.
pub const SETTLED_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Action {
    Crash(usize),
    Cut(usize),
    Heal(usize),
    /// Cut whichever scheduler leads then; the number pairs it with its heal.
    CutLeader(u64),
    HealLeader(u64),
    Slow(usize, Duration, Duration),
    Storm,
    Calm(Net),
    Rollout {
        app: usize,
        broken: bool,
    },
    Scale {
        app: usize,
        replicas: u32,
    },
    Join(String),
    Undeploy(usize),
    Drain(usize),
}

/// One chaotic run: 8 to 27 hosts in 3 zones, 2 or 3 schedulers, 2 to 6 applications, then
/// 2 to 8 faults between 8 s and 60 s (host crashes and drains, partitions of hosts and of the leader,
/// slow heartbeats, a lossy network, rollouts (some of a version that cannot start), scaling,
/// new hosts, undeploys), then [`CONVERGE_WITHIN`] and some to settle.
pub fn chaos(seed: u64) -> Outcome {
    let mut rng = Rng::new(seed ^ 0x5ced_u64.rotate_left(17));
    let hosts = 8 + rng.below(20) as usize;
    let schedulers = 2 + rng.below(2) as usize;
    let mut sim = Sim::new(Config::quick(seed), hosts, 3, schedulers);
    let mut script = Vec::new();
    let records: Vec<AppRecord> = (0..2 + rng.below(5))
        .map(|i| {
            let replicas = 1 + rng.below(5) as u32;
            let weights: Vec<u32> = if rng.chance(0.4) {
                (0..3).map(|_| 1 + rng.below(3) as u32).collect()
            } else {
                Vec::new()
            };
            record(app(&format!("app{i}"), 1, rng.next_u64(), replicas, &weights))
        })
        .collect();
    sim.run_until(Duration::from_secs(1));
    let names: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    for r in records {
        script.push(format!("1s deploy {} ({} replicas)", r.name, replicas(&r)));
        sim.deploy(r);
    }
    // Faults, with their ends, in time order.
    let mut actions: Vec<(Duration, Action)> = Vec::new();
    let faults = 2 + rng.below(7);
    let mut crashed = 0;
    for _ in 0..faults {
        let at = rng.between(Duration::from_secs(8), Duration::from_secs(60));
        let h = rng.below(hosts as u64) as usize;
        let lasting = rng.between(Duration::from_secs(1), Duration::from_secs(20));
        let spare = crashed < hosts / 3 && !(h < schedulers && h == schedulers - 1);
        match rng.below(10) {
            0 if spare => {
                crashed += 1;
                actions.push((at, Action::Crash(h)));
            }
            9 if spare => {
                crashed += 1;
                actions.push((at, Action::Drain(h)));
            }
            0 | 1 => {
                actions.push((at, Action::Cut(h)));
                actions.push((at + lasting, Action::Heal(h)));
            }
            2 => {
                // The leading scheduler's host (whichever leads then).
                let n = actions.len() as u64;
                actions.push((at, Action::CutLeader(n)));
                actions.push((at + lasting, Action::HealLeader(n)));
            }
            3 => {
                let late = rng.between(Duration::from_millis(200), Duration::from_secs(5));
                actions.push((at, Action::Slow(h, late, at + lasting)));
            }
            4 => {
                actions.push((at, Action::Storm));
                actions.push((at + lasting.min(Duration::from_secs(5)), Action::Calm(sim.net())));
            }
            5 => {
                let app = rng.below(names.len() as u64) as usize;
                actions.push((at, Action::Rollout { app, broken: rng.chance(0.3) }));
            }
            6 => {
                let app = rng.below(names.len() as u64) as usize;
                actions.push((at, Action::Scale { app, replicas: rng.below(6) as u32 }));
            }
            7 => actions.push((at, Action::Join(format!("z{}", rng.below(3))))),
            _ => {
                let app = rng.below(names.len() as u64) as usize;
                actions.push((at, Action::Undeploy(app)));
            }
        }
    }
    actions.sort_by_key(|(at, _)| *at);
    let last_fault = actions.last().map_or(Duration::from_secs(1), |(at, _)| *at);
    // Each leader cut heals the host it cut, however cuts overlap.
    let mut cut_leaders: HashMap<u64, usize> = HashMap::new();
    let mut version = 1;
    for (at, action) in actions {
        sim.run_until(at);
        let secs = at.as_secs_f64();
        match action {
            Action::Crash(h) => {
                script.push(format!("{secs:.1}s crash h{h:05}"));
                sim.crash(h);
            }
            Action::Drain(h) => {
                script.push(format!("{secs:.1}s drain h{h:05}"));
                sim.drain(h);
            }
            Action::CutLeader(n) => {
                if let Some(leader) = sim.leader() {
                    let h = sim.scheduler_host(leader);
                    script.push(format!("{secs:.1}s cut the leader (scheduler {leader}, h{h:05})"));
                    sim.partition(h, true);
                    cut_leaders.insert(n, h);
                }
            }
            Action::HealLeader(n) => {
                if let Some(h) = cut_leaders.remove(&n) {
                    script.push(format!("{secs:.1}s heal h{h:05}"));
                    sim.partition(h, false);
                }
            }
            Action::Cut(h) => {
                script.push(format!("{secs:.1}s cut h{h:05}"));
                sim.partition(h, true);
            }
            Action::Heal(h) => {
                script.push(format!("{secs:.1}s heal h{h:05}"));
                sim.partition(h, false);
            }
            Action::Slow(h, late, until) => {
                script.push(format!("{secs:.1}s h{h:05} heartbeats {late:?} late until {until:?}"));
                sim.slow(h, late, until);
            }
            Action::Storm => {
                script.push(format!("{secs:.1}s the network loses 30%"));
                let net = Net { drop: 0.3, ..sim.net() };
                sim.set_net(net);
            }
            Action::Calm(net) => {
                script.push(format!("{secs:.1}s the network recovers"));
                sim.set_net(net);
            }
            Action::Rollout { app: i, broken } => {
                version += 1;
                // The operator deploys over what is stored (it may have been marked stable).
                let Some(stored) = sim.record(&names[i]).cloned() else { continue };
                let Some(c) = stored.current_manifest().map(|m| m.components[0].clone()) else {
                    continue;
                };
                let weights: Vec<u32> = c.spread.iter().map(|s| s.weight.get()).collect();
                let manifest = app(&names[i], version, rng.next_u64(), c.replicas.min, &weights);
                let next = deploy_over(&stored, manifest);
                if broken {
                    sim.break_fingerprint(&fingerprint(&next));
                }
                script.push(format!(
                    "{secs:.1}s roll {} out to v{version} (broken: {broken})",
                    names[i]
                ));
                sim.deploy(next);
            }
            Action::Scale { app: i, replicas: n } => {
                version += 1;
                let Some(stored) = sim.record(&names[i]).cloned() else { continue };
                let Some(mut m) = stored.current_manifest().cloned() else { continue };
                m.components[0].replicas = n.into();
                m.version = Version::try_from(format!("v{version}")).expect("a version");
                script.push(format!("{secs:.1}s scale {} to {n}", names[i]));
                sim.deploy(deploy_over(&stored, m));
            }
            Action::Join(zone) => {
                let h = sim.join(&zone);
                script.push(format!("{secs:.1}s h{h:05} joins in {zone}"));
            }
            Action::Undeploy(i) => {
                let Some(mut stored) = sim.record(&names[i]).cloned() else { continue };
                script.push(format!("{secs:.1}s undeploy {}", names[i]));
                stored.current = None;
                sim.deploy(stored);
            }
        }
    }
    // Settle: when does it first converge, and is it still converged at the end (a lost
    // heartbeat may make a host unknown for a moment at any time: such a blip must heal)?
    let mut first = None;
    let mut last = None;
    let mut why_not = None;
    let end = last_fault + CONVERGE_WITHIN + Duration::from_secs(10);
    let mut t = last_fault;
    while t < end {
        t += Duration::from_millis(250);
        sim.run_until(t);
        match sim.converged() {
            None => {
                first.get_or_insert(t);
                last = Some(t);
            }
            Some(why) => {
                if sim.trace {
                    eprintln!("{:>9.3} not converged: {why}", t.as_secs_f64());
                }
                why_not = Some(why);
            }
        }
    }
    let settled = last.is_some_and(|at| end.saturating_sub(at) <= SETTLED_WITHIN);
    if settled {
        why_not = None;
    }
    Outcome {
        seed,
        violations: sim.violations().to_vec(),
        last_fault,
        converged_after: first.filter(|_| settled).map(|at| at.saturating_sub(last_fault)),
        why_not,
        script,
    }
}

fn replicas(record: &AppRecord) -> u32 {
    record.current_manifest().map_or(0, |m| m.components[0].replicas.min)
}

/// A lattice at scale: `hosts` hosts over `zones` zones, `apps` applications of `replicas`
/// replicas each (every other one spread over the zones), two schedulers, production timings.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Hosts.
    pub hosts: usize,
    /// Zones.
    pub zones: usize,
    /// Applications.
    pub apps: usize,
    /// Replicas per application.
    pub replicas: u32,
    /// The seed.
    pub seed: u64,
}

/// One step of a run at scale, and what it cost.
#[derive(Debug, Clone)]
pub struct Step {
    /// What happened.
    pub name: String,
    /// Simulated time from the step until what runs matched what is wanted; `None`: not
    /// within the step's limit.
    pub converged_after: Option<Duration>,
    /// The longest single `poll` of a scheduler (a planning pass), in CPU time of this
    /// process.
    pub longest_poll: Duration,
    /// All schedulers' `poll` time during the step.
    pub poll_time: Duration,
    /// Planning passes the schedulers ran.
    pub passes: u64,
    /// Commands they sent.
    pub commands: u64,
}

/// Runs a lattice at `scale` through a deploy of every application, the loss of one host,
/// 5% of the hosts partitioned away for 30 s and back, and a rollout of one application.
pub fn at_scale(scale: &Scale) -> (Vec<Step>, Vec<Violation>) {
    let mut sim = Sim::new(Config::production(scale.seed), scale.hosts, scale.zones, 2);
    let mut rng = Rng::new(scale.seed);
    sim.run_until(Duration::from_secs(10));
    let mut steps = Vec::new();
    let limit = Duration::from_secs(300);
    let weights: Vec<u32> = vec![1; scale.zones];
    let manifests: Vec<Manifest> = (0..scale.apps)
        .map(|i| {
            let spread = if i % 2 == 0 { &weights[..] } else { &[][..] };
            app(&format!("app{i}"), 1, rng.next_u64(), scale.replicas, spread)
        })
        .collect();
    let first = manifests.first().map(|m| m.name.to_string());
    for m in manifests {
        sim.deploy(record(m));
    }
    steps.push(step(&mut sim, "deploy every application", limit));
    // One host that runs replicas dies.
    if let Some(h) = (2..sim.host_count()).find(|&h| sim.runs_any(h)) {
        sim.crash(h);
        steps.push(step(&mut sim, "one host lost", limit));
    }
    // 5% of the hosts are cut off for 30 s, then return.
    let cut: Vec<usize> = (2..sim.host_count()).filter(|h| h % 20 == 7).collect();
    for &h in &cut {
        sim.partition(h, true);
    }
    let t = sim.now();
    sim.run_until(t + Duration::from_secs(30));
    for &h in &cut {
        sim.partition(h, false);
    }
    steps.push(step(&mut sim, "5% of hosts cut off for 30 s, then back", limit));
    if let Some(name) = first
        && let Some(stored) = sim.record(&name).cloned()
        && let Some(m) = stored.current_manifest()
    {
        let spread: Vec<u32> = m.components[0].spread.iter().map(|s| s.weight.get()).collect();
        let next = app(&name, 2, rng.next_u64(), m.components[0].replicas.min, &spread);
        sim.deploy(deploy_over(&stored, next));
        steps.push(step(&mut sim, "roll one application out", limit));
    }
    (steps, sim.violations().to_vec())
}

/// Runs `sim` until what runs matches what is wanted (looking every 500 ms) or `limit`.
fn step(sim: &mut Sim, name: &str, limit: Duration) -> Step {
    sim.take_costs();
    let start = sim.now();
    let mut converged_after = None;
    while sim.now() < start + limit {
        let t = sim.now() + Duration::from_millis(500);
        sim.run_until(t);
        if sim.converged().is_none() {
            converged_after = Some(sim.now() - start);
            break;
        }
    }
    let (longest_poll, poll_time, passes, commands) = sim.take_costs();
    Step { name: name.to_owned(), converged_after, longest_poll, poll_time, passes, commands }
}
