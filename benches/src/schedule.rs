//! The scheduler at scale: how long one scheduler takes to place 500 component replicas over 20
//! hosts (against the same starts sent straight to the hosts), and what heartbeats of 100 hosts
//! cost on NATS.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::try_join_all;
use trellis_lattice::subject::EventKind;
use trellis_scheduler::apps::{AppStore, State};
use trellis_scheduler::manifest::{ComponentSpec, Id, Manifest, Rollout, Source, Version};

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let mut rows = place(options).await?;
    rows.extend(heartbeats(options).await?);
    Ok(rows)
}

fn fail(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Run { scenario: "schedule", reason: reason.to_string() }
}

async fn place(options: &Options) -> Result<Vec<Row>, BenchError> {
    let hosts = options.count(20, 3);
    let components = options.count(25, 2);
    let replicas = hosts; // every component on every host
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host_with(options, "h0", &["--scheduler"]).await?;
    for i in 1..hosts {
        lattice.add_host_with(options, &format!("h{i}"), &[]).await?;
    }
    let bytes = std::fs::read(&options.component).map_err(setup)?;
    let state = lattice.client.state().await.map_err(setup)?;
    let digest = state.put_artifact(&bytes).await.map_err(setup)?;
    let client = &lattice.client;
    let ids: Vec<String> = lattice.hosts.iter().map(|h| h.id.clone()).collect();
    // Every host compiles the artifact once, outside the measurements.
    try_join_all(ids.iter().map(|h| client.start_component(h, "warm", &digest)))
        .await
        .map_err(fail)?;

    // Baseline: the same number of starts, sent straight to the hosts at once.
    let started = Instant::now();
    let starts: Vec<(String, String)> = ids
        .iter()
        .flat_map(|h| (0..components).map(move |c| (h.clone(), format!("direct{c}"))))
        .collect();
    try_join_all(starts.iter().map(|(h, c)| client.start_component(h, c, &digest)))
        .await
        .map_err(fail)?;
    let direct = started.elapsed();

    let apps = AppStore::open(&async_nats::jetstream::new(client.nats().clone()), "bench", 1)
        .await
        .map_err(setup)?;
    let manifest = Manifest {
        name: id("scale")?,
        version: Version::try_from("1".to_owned()).map_err(setup)?,
        description: String::new(),
        components: (0..components)
            .map(|c| {
                Ok(ComponentSpec {
                    name: id(&format!("placed{c}"))?,
                    source: Source::Digest(digest.clone()),
                    replicas: (replicas as u32).into(),
                    scale: Default::default(),
                    requirements: Default::default(),
                    spread: vec![],
                    config: vec![],
                    secrets: vec![],
                    limits: Default::default(),
                    reuse: None,
                })
            })
            .collect::<Result<_, BenchError>>()?,
        providers: vec![],
        links: vec![],
        config: Default::default(),
        rollout: Rollout { batch: NonZeroU32::MIN },
    };
    let started = Instant::now();
    apps.deploy(&manifest).await.map_err(setup)?;
    loop {
        let status = apps.status("scale").await.map_err(fail)?;
        if status.is_some_and(|s| s.state == State::Deployed) {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(fail("not placed within 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scheduled = started.elapsed();
    let total = components * replicas;
    Ok(vec![
        Row::alone(
            format!("place {total} replicas over {hosts} hosts: scheduler"),
            Figures::value(scheduled.as_secs_f64() * 1e3, "ms"),
        ),
        Row::alone(
            format!("place {total} replicas over {hosts} hosts: direct starts (baseline)"),
            Figures::value(direct.as_secs_f64() * 1e3, "ms"),
        ),
        Row::alone(
            "scheduler / direct starts",
            Figures::value(scheduled.as_secs_f64() / direct.as_secs_f64(), "x"),
        ),
    ])
}

fn id(text: &str) -> Result<Id, BenchError> {
    Id::try_from(text.to_owned()).map_err(setup)
}

async fn heartbeats(options: &Options) -> Result<Vec<Row>, BenchError> {
    let hosts = options.count(100, 5);
    let listen = Duration::from_secs(if options.quick { 3 } else { 15 });
    let mut lattice = BenchLattice::start().await?;
    for i in 0..hosts {
        lattice
            .add_host_with(
                options,
                &format!("hb{i}"),
                &["--max-instances", "2", "--label", "zone=a"],
            )
            .await?;
    }
    let subject = lattice.client.subjects().event(EventKind::HostHeartbeat);
    let mut sub = lattice.client.nats().subscribe(subject).await.map_err(setup)?;
    let (mut bytes, mut messages) = (0usize, 0usize);
    let started = Instant::now();
    while let Ok(Some(msg)) =
        tokio::time::timeout_at(tokio::time::Instant::from_std(started + listen), sub.next()).await
    {
        // What the server forwards: subject, payload and headers (none on heartbeats).
        bytes += msg.subject.len()
            + msg.payload.len()
            + msg.headers.map_or(0, |h| format!("{h:?}").len());
        messages += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(vec![
        Row::alone(
            format!("heartbeats of {hosts} hosts (3 s interval): bytes/s"),
            Figures::value(bytes as f64 / seconds, "B/s"),
        ),
        Row::alone(
            format!("heartbeats of {hosts} hosts: messages/s"),
            Figures::value(messages as f64 / seconds, "msg/s"),
        ),
    ])
}
