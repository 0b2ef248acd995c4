//! Reading the lattice's links as a host does when it starts: a watch of the LINKS bucket with
//! its history, each value checked and decoded. 10,000 links (500 in quick mode) sealed by an
//! operator and checked against the host's trusted operators, against the same links written
//! plain and read by a development host, each in a bucket of its own on one nats-server.
//!
//! And what an acknowledged write to the lattice's state costs when JetStream fsyncs every write
//! (`sync_interval: always`) against its default (every 2 minutes).

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use futures::future::try_join_all;
use trellis_lattice::link::{InterfaceName, Link};
use trellis_lattice::record::{Opened, RecordGate};
use trellis_lattice::signing::{OperatorKey, Role, TrustedOperator};
use trellis_lattice::state::{LatticeState, decode_link};

use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let count = options.count(10_000, 500);
    let nats = trellis_ops::nats_server::LocalNatsServer::start(None).await.map_err(setup)?;
    let client = async_nats::connect(nats.url()).await.map_err(setup)?;
    let js = async_nats::jetstream::new(client);
    let operator = std::sync::Arc::new(OperatorKey::generate());
    let trusted = TrustedOperator { key: operator.public_key().to_owned(), role: Role::Deployer };

    let plain = LatticeState::open(&js, "plain").await.map_err(setup)?;
    let sealed =
        LatticeState::open(&js, "sealed").await.map_err(setup)?.with_sealer(Some(operator));
    write(&plain, count).await?;
    write(&sealed, count).await?;
    let (mut plain_times, mut sealed_times) = (Vec::new(), Vec::new());
    // Alternate, so both see the same machine.
    for _ in 0..3 {
        plain_times.push(read(&plain, RecordGate::new(vec![], true), count).await?);
        sealed_times
            .push(read(&sealed, RecordGate::new(vec![trusted.clone()], false), count).await?);
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    // The "p50" column is the mean time per link of the best of three reads of them all.
    let figures = |d: Duration| {
        let per_link = d.as_secs_f64() * 1e6 / count as f64;
        Figures {
            p50_us: per_link,
            p99_us: per_link,
            ops_per_s: count as f64 / d.as_secs_f64().max(1e-9),
            ..Figures::default()
        }
    };
    let writes = options.count(2_000, 100);
    // Alternate the two servers, so both see the same machine.
    let (mut always, mut default) = (Vec::new(), Vec::new());
    let always_server = "jetstream { sync_interval: always }";
    for _ in 0..2 {
        always.push(kv_writes(Some(always_server), writes).await?);
        default.push(kv_writes(None, writes).await?);
    }
    let faster = |runs: Vec<Figures>| {
        runs.into_iter().min_by(|a, b| a.p50_us.total_cmp(&b.p50_us)).unwrap_or_default()
    };
    Ok(vec![
        Row::compared(
            format!("{count} links at host start, µs/link: sealed/plain"),
            figures(best(&sealed_times)),
            figures(best(&plain_times)),
            "plain links, development host",
        ),
        Row::compared(
            format!("{writes} KV writes, 100 B, one at a time: sync always/default"),
            faster(always),
            faster(default),
            "the same writes with JetStream's default sync_interval (2 min)",
        ),
    ])
}

/// `count` acknowledged writes of 100 B to a key-value bucket on a nats-server of its own
/// (`config` added to its configuration), one at a time; each write's time.
async fn kv_writes(config: Option<&str>, count: usize) -> Result<Figures, BenchError> {
    let nats = trellis_ops::nats_server::LocalNatsServer::start_with_config(None, config)
        .await
        .map_err(setup)?;
    let client = async_nats::connect(nats.url()).await.map_err(setup)?;
    let js = async_nats::jetstream::new(client);
    let config = async_nats::jetstream::kv::Config {
        bucket: "writes".into(),
        history: 1,
        ..Default::default()
    };
    let bucket = js.create_key_value(config).await.map_err(setup)?;
    let value = bytes::Bytes::from(vec![b'x'; 100]);
    let mut samples = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        bucket
            .put(format!("k{}", i % 100), value.clone())
            .await
            .map_err(|e| fail(e.to_string()))?;
        samples.push(t.elapsed());
    }
    Ok(Figures::from_samples(&mut samples, started.elapsed()))
}

fn fail(reason: String) -> BenchError {
    BenchError::Run { scenario: "state", reason }
}

async fn write(state: &LatticeState, count: usize) -> Result<(), BenchError> {
    let interface = InterfaceName::parse("wasi:keyvalue/store").map_err(setup)?;
    for batch in (0..count).collect::<Vec<_>>().chunks(200) {
        try_join_all(batch.iter().map(|i| {
            let link = Link {
                source: format!("component-{i}"),
                target: "redis".into(),
                interface: interface.clone(),
                name: "default".into(),
                config: [("bucket".to_owned(), format!("b{i}"))].into(),
            };
            async move { state.put_link(&link).await.map_err(|e| fail(e.to_string())) }
        }))
        .await?;
    }
    Ok(())
}

/// Watches every link as a host does and checks and decodes each, until all `count` are read.
async fn read(
    state: &LatticeState,
    gate: RecordGate,
    count: usize,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mut watch = state.watch_all_links().await.map_err(|e| fail(e.to_string()))?;
    let mut applied = 0;
    while applied < count {
        let entry = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .map_err(|_| fail(format!("only {applied} of {count} links arrived")))?
            .ok_or_else(|| fail("the watch ended".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if entry.operation != Operation::Put {
            continue;
        }
        match gate.open(&entry.bucket, &entry.key, &entry.value) {
            Ok(Opened::Put(json)) => {
                decode_link(&entry.key, json).map_err(|e| fail(e.to_string()))?;
                applied += 1;
            }
            other => return Err(fail(format!("link {} not applied: {other:?}", entry.key))),
        }
    }
    Ok(started.elapsed())
}
