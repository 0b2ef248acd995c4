//! Resident memory of a host process: idle, with 1 component, with 100 and with 1,000 (10 in
//! quick mode), all from the same artifact under distinct ids, on the same host; and the file
//! descriptors it holds at the end.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

/// Start requests in flight while filling the host: enough to keep it busy, few enough that
/// none waits long for its reply.
const STARTS_IN_FLIGHT: usize = 32;

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let counts: &[usize] = if options.quick { &[10] } else { &[100, 1000] };
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "mem").await?;
    let pid = lattice.hosts[0].child.id().ok_or_else(|| setup("host exited"))?;
    let bytes = std::fs::read(&options.component).map_err(setup)?;
    let digest =
        lattice.client.state().await.map_err(setup)?.put_artifact(&bytes).await.map_err(setup)?;
    let settle =
        || tokio::time::sleep(Duration::from_millis(if options.quick { 100 } else { 1000 }));

    settle().await;
    let mut rows = vec![Row::alone("host RSS idle", Figures::value(rss_mib(pid)?, "MiB"))];
    let mut running = 0;
    for &target in [1].iter().chain(counts) {
        start_range(&lattice, &digest, running..target).await?;
        running = target;
        settle().await;
        let case = if target == 1 {
            "host RSS, 1 component".to_owned()
        } else {
            format!("host RSS, {target} components")
        };
        rows.push(Row::alone(case, Figures::value(rss_mib(pid)?, "MiB")));
    }
    // Shown because a host holding many components could run out of them (`ulimit -n`).
    rows.push(Row::alone(
        format!("host open files, {running} components"),
        Figures::value(open_files(pid)?, "fds"),
    ));
    Ok(rows)
}

/// Starts components `c<i>` for every `i` in `range` on host 0.
async fn start_range(
    lattice: &BenchLattice,
    digest: &str,
    range: std::ops::Range<usize>,
) -> Result<(), BenchError> {
    let host = &lattice.hosts[0].id;
    futures::stream::iter(range)
        .map(|i| async move {
            lattice.client.start_component(host, &format!("c{i}"), digest).await.map_err(|e| {
                BenchError::Run { scenario: "memory", reason: format!("start of c{i}: {e}") }
            })
        })
        .buffer_unordered(STARTS_IN_FLIGHT)
        .try_collect::<()>()
        .await
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

/// File descriptors `pid` holds, from /proc.
fn open_files(pid: u32) -> Result<f64, BenchError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(setup)?;
    Ok(dir.count() as f64)
}
