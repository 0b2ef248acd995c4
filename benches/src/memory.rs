//! Resident memory of a host process: idle, with 1 component, with 100 components.

use std::time::Duration;

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let many = options.count(100, 10);
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "mem").await?;
    let pid = lattice.hosts[0].child.id().ok_or_else(|| setup("host exited"))?;
    let settle =
        || tokio::time::sleep(Duration::from_millis(if options.quick { 100 } else { 1000 }));

    settle().await;
    let idle = rss_mib(pid)?;
    lattice.start_component(options, 0, "c0").await?;
    settle().await;
    let one = rss_mib(pid)?;
    for i in 1..many {
        lattice.start_component(options, 0, &format!("c{i}")).await?;
    }
    settle().await;
    let hundred = rss_mib(pid)?;
    Ok(vec![
        Row::alone("host RSS idle", Figures::value(idle, "MiB")),
        Row::alone("host RSS, 1 component", Figures::value(one, "MiB")),
        Row::alone(format!("host RSS, {many} components"), Figures::value(hundred, "MiB")),
    ])
}

/// Resident set size of `pid` in MiB, from /proc.
fn rss_mib(pid: u32) -> Result<f64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(setup)?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| setup("no VmRSS in /proc status"))?;
    Ok(kib / 1024.0)
}
