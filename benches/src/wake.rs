//! Wake latency (issue 21): the first HTTP request to a component scaled to zero, timed until
//! its answer (the http-server provider's host asks the scheduler for a replica, the worker
//! starts it, loading the code from the compile cache, and the held call is served), against
//! a warm request to the woken replica in the same round.
//!
//! One nats-server, an edge host (scheduler, builtin http-server) and a worker, both
//! heartbeating every second; an app per component with `replicas: {min: 0, max: 1, idle: 1s}`
//! on the worker. Each round waits until the worker runs no replica, then times one request
//! (wake) and one more (warm). http-hello, then py-hello (componentize-py, when given and not
//! `--quick`). The worker compiled each at deploy and stored it; the replica's stop made it
//! forget the code, so every wake loads it from the cache.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trellis_scheduler::apps::{AppStore, State};
use trellis_scheduler::manifest::Manifest;

use crate::env::{BenchLattice, free_addr};
use crate::report::{Figures, Row};
use crate::{BenchError, Options, load, setup};

const BASELINE: &str = "a warm request to the woken replica, same round";

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let rounds = options.count(20, 2);
    let mut lattice = BenchLattice::start().await?;
    let beat = ["--heartbeat-interval", "1"];
    lattice
        .add_host_with(options, "edge", &["--scheduler", "--label", "role=edge", beat[0], beat[1]])
        .await?;
    let worker = lattice
        .add_host_with(options, "worker", &["--label", "role=worker", beat[0], beat[1]])
        .await?;
    let apps =
        AppStore::open(&async_nats::jetstream::new(lattice.client.nats().clone()), "bench", 1)
            .await
            .map_err(setup)?;
    let mut components = vec![("http-hello", options.component.clone())];
    if let (Some(python), false) = (&options.python, options.quick) {
        components.push(("py-hello", python.clone()));
    }
    let mut rows = Vec::new();
    for (i, (name, path)) in components.into_iter().enumerate() {
        let bytes = std::fs::read(&path)
            .map_err(|e| setup(format!("cannot read {}: {e}", path.display())))?;
        let state = lattice.client.state().await.map_err(setup)?;
        let digest = state.put_artifact(&bytes).await.map_err(setup)?;
        let app = format!("wake{i}");
        let addr = deploy(&apps, &app, &digest).await?;
        stored(&lattice, addr, i + 1).await?;
        let (mut wakes, mut warm) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        let all = Instant::now();
        for _ in 0..rounds {
            asleep(&lattice, worker).await?;
            wakes.push(request(addr).await?);
            warm.push(request(addr).await?);
        }
        let elapsed = all.elapsed();
        apps.undeploy(&app).await.map_err(fail)?;
        rows.push(Row::compared(
            format!("wake {name} from the compile cache"),
            Figures::from_samples(&mut wakes, elapsed),
            Figures::from_samples(&mut warm, elapsed),
            BASELINE,
        ));
    }
    Ok(rows)
}

fn fail(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Run { scenario: "wake", reason: reason.to_string() }
}

/// Deploys app `name` running `digest` on the worker, scaling to zero after 1 s, behind a
/// builtin http-server on the edge; waits until it is deployed and answers; its address.
async fn deploy(apps: &AppStore, name: &str, digest: &str) -> Result<SocketAddr, BenchError> {
    let addr = free_addr()?;
    let yaml = format!(
        "name: {name}\nversion: '1'\ncomponents:\n  - name: {name}-web\n    source: {digest}\n    \
         replicas: {{min: 0, max: 1, idle: 1s}}\n    requirements: {{role: worker}}\nproviders:\n  \
         - name: {name}-front\n    kind: http-server\n    builtin: true\n    requirements: \
         {{role: edge}}\nlinks:\n  - source: {name}-front\n    target: {name}-web\n    \
         interface: wasi:http/incoming-handler\n    config: {{address: '{addr}'}}\n"
    );
    let manifest = Manifest::from_yaml(&yaml).map_err(setup)?;
    apps.deploy(&manifest).await.map_err(setup)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status = apps.status(name).await.map_err(fail)?;
        if status.is_some_and(|s| s.state == State::Deployed) && request(addr).await.is_ok() {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(fail(format!("app {name} did not answer within 300 s")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the compile cache holds `count` entries (the worker stores its code after the
/// start that compiled it), keeping the app awake meanwhile: a replica stopped before its code
/// is stored shares nothing.
async fn stored(lattice: &BenchLattice, addr: SocketAddr, count: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if lattice.compiled_entries().await >= count {
            return Ok(());
        }
        request(addr).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(fail(format!("the compile cache did not get {count} entries within 300 s")))
}

/// Waits until host `index` runs no component (the app went idle and its replica stopped).
async fn asleep(lattice: &BenchLattice, index: usize) -> Result<(), BenchError> {
    let host = &lattice.hosts[index].id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let inventory = lattice.client.inventory(host).await.map_err(fail)?;
        if inventory.components.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(fail("the idle app kept its replica for 60 s"))
}

/// One GET on a new connection, timed until its answer (a 200).
async fn request(addr: SocketAddr) -> Result<Duration, BenchError> {
    let figures = load::run(addr, 1, 1).await?;
    Ok(Duration::from_secs_f64(figures.p50_us / 1e6))
}
