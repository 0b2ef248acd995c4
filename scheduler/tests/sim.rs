//! The control plane under chaos, in the simulator: many seeds, each a lattice with its own
//! hosts, applications and faults, every promise checked as it runs. A failing seed replays
//! exactly: `TRELLIS_SIM_SEED=<seed> cargo test -p trellis-scheduler --test sim -- --nocapture`.

use std::time::Duration;

use trellis_scheduler::sim::scenario::{CONVERGE_WITHIN, Outcome, chaos};

/// Seeds per run: `TRELLIS_SIM_SEEDS` (CI runs the default; `trellis bench sim` runs more).
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
    let mut failed = Vec::new();
    let mut worst = Duration::ZERO;
    let runs = seeds();
    let count = runs.end - runs.start;
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
