//! The compile cache (issue 21): starting components on a host that did not compile them,
//! loading the code another host of the lattice compiled and stored, against the same starts
//! on a lattice whose hosts run `--no-compile-cache` (they compile). Two cases:
//!
//! - one large component (the componentize-py `py-hello`, ~21 MB; http-hello with `--quick`),
//!   started and stopped again on the second host, each start timed;
//! - 1,000 distinct artifacts (10 with `--quick`: http-hello with a custom section naming its
//!   number) started on the second host, 16 at a time: each start's time (they queue: a host
//!   compiles or loads one artifact at a time) and starts per second. The host reads each
//!   artifact and each entry without a JetStream consumer (`trellis_lattice::objects`), so
//!   nats-server's 1,000 consumers per stream do not bound how many it reads in 30 s.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use trellis_lattice::client::ControlError;
use trellis_lattice::proto::ErrorCode;

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

/// Starts in flight at once in the many-artifacts case.
const IN_FLIGHT: usize = 16;

const BASELINE: &str = "the same, compiling (--no-compile-cache)";

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let (big, name) = match (&options.python, options.quick) {
        (Some(python), false) => (python.clone(), "py-hello"),
        _ => (options.component.clone(), "http-hello"),
    };
    let big =
        std::fs::read(&big).map_err(|e| setup(format!("cannot read {}: {e}", big.display())))?;
    let samples = options.count(3, 1);
    let cached = restarts(options, &big, true, samples).await?;
    let compiled = restarts(options, &big, false, samples).await?;
    let mb = big.len() as f64 / 1e6;
    let mut rows = vec![Row::compared(
        format!("start {name} ({mb:.1} MB) on a 2nd host"),
        cached,
        compiled,
        BASELINE,
    )];
    let count = options.count(1000, 10);
    let small = std::fs::read(&options.component).map_err(setup)?;
    let variants: Vec<Vec<u8>> = (0..count).map(|i| variant(&small, i)).collect();
    let cached = many(options, &variants, true).await?;
    let compiled = many(options, &variants, false).await?;
    rows.push(Row::compared(
        format!("start {count} artifacts on a 2nd host"),
        cached,
        compiled,
        BASELINE,
    ));
    Ok(rows)
}

fn fail(reason: String) -> BenchError {
    BenchError::Run { scenario: "compile", reason }
}

/// A lattice of two hosts, with the compile cache or without.
async fn two_hosts(options: &Options, cache: bool) -> Result<BenchLattice, BenchError> {
    let mut lattice = BenchLattice::start().await?;
    let extra: &[&str] = if cache { &[] } else { &["--no-compile-cache"] };
    lattice.add_host_with(options, "first", extra).await?;
    lattice.add_host_with(options, "second", extra).await?;
    Ok(lattice)
}

/// With `cache`, starts `bytes` on the first host (which compiles and stores it); then
/// `samples` times on the second, stopping it between starts (so each start loads or compiles
/// anew); each start on the second host timed.
async fn restarts(
    options: &Options,
    bytes: &[u8],
    cache: bool,
    samples: usize,
) -> Result<Figures, BenchError> {
    let lattice = two_hosts(options, cache).await?;
    let digest = upload(&lattice, bytes).await?;
    let (first, second) = (&lattice.hosts[0].id, &lattice.hosts[1].id);
    let client = &lattice.client;
    if cache {
        client.start_component(first, "c0", &digest).await.map_err(|e| fail(e.to_string()))?;
        stored(&lattice, 1).await?;
    }
    let mut times = Vec::with_capacity(samples);
    let all = Instant::now();
    for i in 0..samples {
        let id = format!("c{}", i + 1);
        let started = Instant::now();
        client.start_component(second, &id, &digest).await.map_err(|e| fail(e.to_string()))?;
        times.push(started.elapsed());
        // The last component of an artifact gone, the host forgets its code.
        client.stop_component(second, &id).await.map_err(|e| fail(e.to_string()))?;
    }
    Ok(Figures::from_samples(&mut times, all.elapsed()))
}

/// Starts every artifact of `variants` on the first host (which stores them when `cache`),
/// then on the second; each start's time there, and starts per second.
async fn many(options: &Options, variants: &[Vec<u8>], cache: bool) -> Result<Figures, BenchError> {
    let lattice = two_hosts(options, cache).await?;
    let mut digests = Vec::with_capacity(variants.len());
    for bytes in variants {
        digests.push(upload(&lattice, bytes).await?);
    }
    let client = &lattice.client;
    // As a deployment tool would: a bounded number of starts in flight, each sent again after
    // a `Busy` (a host checks at most 200 control requests a second).
    let start_all = |host: String| {
        futures::stream::iter(digests.iter().enumerate().map(move |(i, digest)| {
            let host = host.clone();
            async move {
                let started = Instant::now();
                loop {
                    match client.start_component(&host, &format!("c{i}"), digest).await {
                        Ok(()) => return Ok::<_, BenchError>(started.elapsed()),
                        // More starts a second than the host checks: asked to come back.
                        Err(ControlError::Remote { code: ErrorCode::Busy, .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(fail(format!("start of artifact {i} failed: {e}"))),
                    }
                }
            }
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
    };
    if cache {
        start_all(lattice.hosts[0].id.clone()).await?;
        stored(&lattice, variants.len()).await?;
    }
    let started = Instant::now();
    let mut times = start_all(lattice.hosts[1].id.clone()).await?;
    Ok(Figures::from_samples(&mut times, started.elapsed()))
}

async fn upload(lattice: &BenchLattice, bytes: &[u8]) -> Result<String, BenchError> {
    lattice.client.state().await.map_err(setup)?.put_artifact(bytes).await.map_err(setup)
}

/// Waits until the lattice's compile cache holds `count` entries (hosts store after a start).
async fn stored(lattice: &BenchLattice, count: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if lattice.compiled_entries().await >= count {
            return Ok(());
        }
        // Each listing is an ordered consumer: not too often.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(fail(format!("the compile cache did not get {count} entries within 600 s")))
}

/// `wasm` with a custom section `trellis-bench` holding `i`: another artifact, the same code.
fn variant(wasm: &[u8], i: usize) -> Vec<u8> {
    let name = b"trellis-bench";
    let payload = (i as u64).to_le_bytes();
    let mut section = leb128(name.len());
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = wasm.to_vec();
    out.push(0);
    out.extend(leb128(section.len()));
    out.extend(section);
    out
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
