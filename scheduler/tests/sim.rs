//! The control plane under chaos, in the simulator: many seeds, each a lattice with its own
//! hosts, applications and faults, every promise checked as it runs. A failing seed replays
//! exactly: `TRELLIS_SIM_SEED=<seed> cargo test -p trellis-scheduler --test sim -- --nocapture`.

use std::time::Duration;

use trellis_scheduler::sim::scenario::{CONVERGE_WITHIN, Outcome, chaos};

/// Seeds per run: `TRELLIS_SIM_SEEDS` (CI runs the default 300; docs/benchmarks.md has a run
/// of thousands in release).
fn seeds() -> std::ops::Range<u64> {
    if let Some(seed) = std::env::var("TRELLIS_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return seed..seed + 1;
    }
    let count = std::env::var("TRELLIS_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    0..count
}

fn report(o: &Outcome) -> String {
    format!(
        "seed {}: violations {:?}; converged {:?} after the last fault at {:?} ({:?})\n  {}",
        o.seed,
        o.violations,
        o.converged_after,
        o.last_fault,
        o.why_not,
        o.script.join("\n  ")
    )
}

#[test]
fn every_seed_converges_within_the_bound_after_its_last_fault_and_breaks_no_promise() {
    all_pass(seeds());
}

/// Seeds beyond the 300 CI runs that failed in release runs of thousands, each for a rule the
/// scheduler lacked (docs/design/scheduler.md): a spread short in one share stopped surplus
/// elsewhere; a move started before its stops landed; and checks of the simulator's own.
#[test]
fn seeds_that_once_failed_in_release_runs_pass() {
    all_pass([363, 739, 1045, 1666, 1718, 2282, 2307]);
}

fn all_pass(runs: impl IntoIterator<Item = u64>) {
    let runs: Vec<u64> = runs.into_iter().collect();
    let mut failed = Vec::new();
    let mut worst = Duration::ZERO;
    let count = runs.len();
    for seed in runs {
        let outcome = chaos(seed);
        match outcome.converged_after {
            Some(after) if outcome.violations.is_empty() && after <= CONVERGE_WITHIN => {
                worst = worst.max(after);
            }
            _ => failed.push(outcome),
        }
    }
    eprintln!("{count} seeds; slowest convergence after the last fault: {worst:?}");
    let seeds: Vec<String> = failed
        .iter()
        .map(|o| match o.violations.first() {
            Some(v) => format!("{}: {}", o.seed, v.what),
            None => format!("{}: converged {:?} after the last fault", o.seed, o.converged_after),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed:\n{}\nthe first:\n{}",
        failed.len(),
        seeds.join("\n"),
        report(&failed[0])
    );
}

#[test]
fn a_seed_replays_exactly() {
    let (a, b) = (chaos(42), chaos(42));
    assert_eq!(a.script, b.script);
    assert_eq!(a.violations, b.violations);
    assert_eq!(a.converged_after, b.converged_after);
    assert_ne!(chaos(43).script, a.script, "another seed is another run");
}

/// 1,000 hosts and 10,000 replicas with production heartbeats and leases: placed, a lost host
/// healed within three heartbeats and 5 s, 5% of hosts cut off and back, a rollout; every
/// promise kept. (The 10,000-host version below is a measurement, run on purpose.)
#[test]
fn a_thousand_hosts_with_production_timings_converge_after_every_step() {
    use trellis_scheduler::sim::scenario::{Scale, at_scale};
    let scale = Scale { hosts: 1000, zones: 4, apps: 100, replicas: 100, seed: 1 };
    let (steps, violations) = at_scale(&scale);
    for s in &steps {
        eprintln!(
            "{}: converged after {:?}, longest poll {:?}, {} passes, {} commands",
            s.name, s.converged_after, s.longest_poll, s.passes, s.commands
        );
    }
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(steps.len(), 4);
    for s in &steps {
        let after = s.converged_after.unwrap_or_else(|| panic!("{} never converged", s.name));
        if s.name == "one host lost" {
            // Three 3 s heartbeats to call it unknown, then the replacement: the bound.
            assert!(after <= Duration::from_secs(9 + 5), "{}: {after:?}", s.name);
        }
    }
}

/// The scale: 10,000 hosts, 1,000 applications of 100 replicas (100,000 replicas).
/// A measurement, not part of the suite (minutes of CPU): `cargo test --release -p
/// trellis-scheduler --test sim ten_thousand -- --ignored --nocapture`; the figures go to
/// docs/benchmarks.md.
#[test]
#[ignore = "a measurement: run it in release on purpose"]
fn ten_thousand_hosts_and_a_hundred_thousand_replicas() {
    use trellis_scheduler::sim::scenario::{Scale, at_scale};
    let scale = Scale { hosts: 10_000, zones: 10, apps: 1000, replicas: 100, seed: 1 };
    let started = std::time::Instant::now();
    let (steps, violations) = at_scale(&scale);
    println!(
        "| step | converged after (simulated) | longest poll (CPU) | all polls (CPU) | passes | commands |"
    );
    println!("|---|---|---|---|---|---|");
    for s in &steps {
        println!(
            "| {} | {:?} | {:?} | {:?} | {} | {} |",
            s.name, s.converged_after, s.longest_poll, s.poll_time, s.passes, s.commands
        );
    }
    println!("whole run: {:?} of wall time", started.elapsed());
    assert!(violations.is_empty(), "{violations:?}");
    assert!(steps.iter().all(|s| s.converged_after.is_some()), "{steps:?}");
}

mod scenarios {
    use std::time::Duration;

    use trellis_scheduler::apps::State;
    use trellis_scheduler::sim::scenario::{app, deploy_over, fingerprint, record};
    use trellis_scheduler::sim::{Config, DRAIN_WAIT, Sim};

    const S: Duration = Duration::from_secs(1);

    fn settle(sim: &mut Sim, within: Duration) -> Duration {
        let start = sim.now();
        while sim.now() < start + within {
            let t = sim.now() + Duration::from_millis(250);
            sim.run_until(t);
            if sim.converged().is_none() {
                return sim.now() - start;
            }
        }
        panic!("not converged within {within:?}: {:?}", sim.converged());
    }

    #[test]
    fn a_cut_off_leader_is_replaced_in_a_new_term_evicts_nothing_and_never_acts_again() {
        let mut sim = Sim::new(Config::quick(7), 12, 3, 2);
        sim.run_until(2 * S);
        sim.deploy(record(app("web", 1, 1, 6, &[])));
        settle(&mut sim, 30 * S);
        let leader = sim.leader().expect("a leader");
        let other = 1 - leader;
        let term = sim.term(leader);
        sim.partition(sim.scheduler_host(leader), true);
        sim.run_until(sim.now() + 20 * S);
        assert_eq!(sim.leader(), Some(other), "the other scheduler took over");
        assert!(sim.term(other) > term, "in a new term");
        let sent_by_old = sim.counters(leader).commands;
        sim.partition(sim.scheduler_host(leader), false);
        settle(&mut sim, 30 * S);
        sim.run_until(sim.now() + 20 * S);
        assert_eq!(sim.counters(leader).commands, sent_by_old, "the old leader never acted again");
        assert_eq!(sim.replicas("web-web").values().sum::<usize>(), 6);
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }

    #[test]
    fn a_drained_hosts_replicas_run_elsewhere_before_they_stop_there() {
        let mut sim = Sim::new(Config::quick(11), 9, 3, 2);
        sim.run_until(2 * S);
        sim.deploy(record(app("shop", 1, 1, 3, &[1, 1, 1])));
        sim.deploy(record(app("blog", 1, 2, 4, &[])));
        settle(&mut sim, 30 * S);
        let drained: Vec<usize> = (0..sim.host_count()).filter(|&h| sim.runs_any(h)).collect();
        // Two hosts at once, neither a scheduler's (theirs leave with them).
        let drained: Vec<usize> = drained.into_iter().filter(|&h| h >= 2).take(2).collect();
        let asked = sim.now();
        for &h in &drained {
            sim.drain(h);
        }
        while drained.iter().any(|&h| sim.left(h).is_none()) && sim.now() < asked + 2 * DRAIN_WAIT {
            sim.run_until(sim.now() + S / 4);
        }
        settle(&mut sim, 30 * S);
        for &h in &drained {
            let (at, stranded) = sim.left(h).expect("the drained host left");
            assert!(!stranded, "h{h}: everything was moved before the host stopped it");
            assert!(at - asked < DRAIN_WAIT, "h{h} left once emptied, not at the end of its wait");
        }
        assert_eq!(sim.replicas("shop-web").values().sum::<usize>(), 3);
        assert_eq!(sim.replicas("blog-web").values().sum::<usize>(), 4);
        // Every stop on a draining host left as many replicas elsewhere as wanted (the
        // simulator checks each stop as it lands).
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }

    #[test]
    fn slow_hosts_make_a_deploy_wait_not_unplaceable() {
        let mut sim = Sim::new(Config::quick(3), 10, 1, 1);
        sim.run_until(2 * S);
        // Three hosts heartbeat 4 s late (1 s beats: unknown after 3 s) for the next 20 s.
        for h in 7..10 {
            sim.slow(h, 4 * S, sim.now() + 20 * S);
        }
        sim.run_until(sim.now() + 5 * S);
        sim.deploy(record(app("all", 1, 1, 10, &[])));
        let mut states = std::collections::BTreeSet::new();
        while sim.now() < 40 * S {
            let t = sim.now() + Duration::from_millis(100);
            sim.run_until(t);
            if let Some(status) = sim.status("all") {
                states.insert(status.state);
            }
        }
        assert!(!states.contains(&State::Unplaceable), "{states:?}");
        assert!(states.contains(&State::Reconciling), "it waited: {states:?}");
        assert_eq!(sim.status("all").map(|s| s.state), Some(State::Deployed));
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }

    #[test]
    fn a_rollout_under_host_loss_ends_on_the_new_version_or_wholly_rolled_back() {
        for broken in [false, true] {
            let mut sim = Sim::new(Config::quick(11), 10, 2, 1);
            sim.run_until(2 * S);
            let v1 = record(app("shop", 1, 1, 6, &[]));
            sim.deploy(v1.clone());
            settle(&mut sim, 30 * S);
            let stored = sim.record("shop").cloned().expect("stored");
            assert!(stored.stable.is_some(), "v1 is stable");
            let v2 = deploy_over(&stored, app("shop", 2, 2, 6, &[]));
            if broken {
                sim.break_fingerprint(&fingerprint(&v2));
            }
            sim.deploy(v2.clone());
            // Mid-rollout, two hosts running the application die.
            sim.run_until(sim.now() + Duration::from_millis(400));
            let running: Vec<usize> = (2..10).filter(|&h| sim.runs_any(h)).take(2).collect();
            for h in running {
                sim.crash(h);
            }
            settle(&mut sim, 60 * S);
            let record = sim.record("shop").expect("stored");
            let want = if broken { fingerprint(&v1) } else { fingerprint(&v2) };
            assert_eq!(fingerprint(record), want, "broken: {broken}");
            assert_eq!(sim.replicas("shop-web").into_iter().collect::<Vec<_>>(), vec![(want, 6)]);
            assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        }
    }

    #[test]
    fn a_load_ramp_scales_out_a_failover_keeps_the_replicas_and_the_cooldown_scales_in() {
        use trellis_scheduler::manifest::Replicas;
        let mut sim = Sim::new(Config::quick(23), 8, 2, 2);
        sim.run_until(2 * S);
        let mut m = app("busy", 1, 1, 1, &[1, 1]);
        m.components[0].replicas =
            Replicas { target: Some(2), cooldown: Some(20 * S), ..Replicas::range(1, 4) };
        sim.deploy(record(m));
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("busy-web").values().sum::<usize>(), 1, "no load: the floor");

        // 7 calls in flight at 2 per replica: 4, two per zone.
        sim.set_load("busy-web", 7.0);
        sim.run_until(sim.now() + 5 * S);
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("busy-web").values().sum::<usize>(), 4);
        let up = &sim.scaled.last().expect("a decision").1;
        assert_eq!((up.from, up.to), (1, 4), "{up:?}");

        // The leader is cut off under load: the next starts from the four that run.
        let leader = sim.leader().expect("a leader");
        let decisions = sim.scaled.len();
        sim.partition(sim.scheduler_host(leader), true);
        sim.run_until(sim.now() + 20 * S);
        assert_eq!(sim.leader(), Some(1 - leader), "the other scheduler took over");
        sim.partition(sim.scheduler_host(leader), false);
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("busy-web").values().sum::<usize>(), 4, "kept across failover");
        // (It adopts the replicas it can read: without the cut-off host's, three, and the load
        // takes it to four again. Never fewer.)
        let after = &sim.scaled[decisions..];
        assert!(after.iter().all(|(_, d)| d.to >= d.from), "no step down: {after:?}");

        // The load stops: nothing for the cool-down, then the floor.
        sim.set_load("busy-web", 0.0);
        let stopped = sim.now();
        sim.run_until(stopped + 15 * S);
        assert_eq!(sim.replicas("busy-web").values().sum::<usize>(), 4, "cooling down");
        sim.run_until(stopped + 25 * S);
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("busy-web").values().sum::<usize>(), 1, "{:?}", sim.scaled);
        let (at, down) = sim.scaled.last().expect("a decision");
        assert_eq!((down.from, down.to), (4, 1), "{down:?}");
        assert!(*at >= stopped + 20 * S, "not before the cool-down: {at:?}");
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }

    #[test]
    fn an_idle_workload_stops_and_many_first_calls_start_one_replica() {
        use trellis_scheduler::manifest::Replicas;
        let mut sim = Sim::new(Config::quick(21), 6, 2, 2);
        sim.run_until(2 * S);
        let mut m = app("lazy", 1, 1, 1, &[]);
        m.components[0].replicas = Replicas { idle: Some(10 * S), ..Replicas::range(0, 3) };
        sim.deploy(record(m));
        // A deploy wakes it: one replica, kept while it serves calls.
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("lazy-web").values().sum::<usize>(), 1);
        for _ in 0..25 {
            assert!(sim.call("lazy-web"), "served while awake");
            sim.run_until(sim.now() + S);
        }
        assert_eq!(sim.replicas("lazy-web").values().sum::<usize>(), 1, "busy: kept");
        // No calls for its idle time: stopped.
        sim.run_until(sim.now() + 15 * S);
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("lazy-web").values().sum::<usize>(), 0, "idle: stopped");
        // A failover while it sleeps starts nothing, even to a scheduler that restarted and
        // never saw it awake: the new leader sees nothing running.
        let leader = sim.leader().expect("a leader");
        let sent = sim.commands_sent;
        sim.restart_scheduler(1 - leader);
        sim.run_until(sim.now() + 5 * S);
        sim.partition(sim.scheduler_host(leader), true);
        sim.run_until(sim.now() + 20 * S);
        assert_eq!(sim.leader(), Some(1 - leader), "the other scheduler took over");
        sim.partition(sim.scheduler_host(leader), false);
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("lazy-web").values().sum::<usize>(), 0, "still asleep");
        assert_eq!(sim.commands_sent, sent, "not started (and stopped again) by the new leader");
        // Twenty first calls at once find nothing and ask for it: one start.
        let before = sim.commands_sent;
        let served = (0..20).filter(|_| sim.call("lazy-web")).count();
        assert_eq!(served, 0);
        sim.run_until(sim.now() + S / 2);
        settle(&mut sim, 30 * S);
        assert_eq!(sim.replicas("lazy-web").values().sum::<usize>(), 1, "woken: one replica");
        assert_eq!(sim.commands_sent - before, 1, "one start for twenty wakes");
        assert!(sim.call("lazy-web"), "the retried call is served");
        // A workload without `min: 0` is not woken.
        assert!(!sim.call("nobody"));
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}
