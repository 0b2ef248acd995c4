//! WASI 0.3 (issue 22), in process through the Trellis runtime:
//!
//! - what concurrency support would cost WASI 0.2 calls: http-hello `GET /` with a fresh
//!   instance, compiled for the engine with concurrency support (what 0.3 components run on)
//!   against the engine without it (what 0.2 components run on); calls interleaved;
//! - an I/O-bound handler (`/sleep/20`: waits 20 ms on the host's clock) under 64 requests in
//!   flight: http-hello-p3 with one shared instance taking 16 at once (more instances only when
//!   those are busy) against http-hello (WASI 0.2) with an instance per request. Rounds
//!   alternate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use trellis_host::runtime::{Component, Generation, Reuse, Runtime, RuntimeConfig};

use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

fn fail(reason: String) -> BenchError {
    BenchError::Run { scenario: "wasi03", reason }
}

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let wasm = std::fs::read(&options.component).map_err(setup)?;
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(setup)?;
    let digest = trellis_lattice::state::digest_of(&wasm);
    let plain = runtime.load(&digest, &wasm).map_err(setup)?;
    let concurrent = runtime.load_for(Generation::P3, &wasm).map_err(setup)?;

    let ops = options.count(5000, 50);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut on_total, mut off_total) = (Duration::ZERO, Duration::ZERO);
    for i in 0..ops + ops / 10 {
        let d_on = timed(&concurrent, "/").await?;
        let d_off = timed(&plain, "/").await?;
        if i >= ops / 10 {
            (on_total, off_total) = (on_total + d_on, off_total + d_off);
            on.push(d_on);
            off.push(d_off);
        }
    }
    let mut rows = vec![Row::compared(
        "0.2 call, fresh instance: concurrency support on/off",
        Figures::from_samples(&mut on, on_total),
        Figures::from_samples(&mut off, off_total),
        "off: the engine WASI 0.2 components run on",
    )];

    let p3_path = options.component.with_file_name("http_hello_p3.wasm");
    let Ok(p3_wasm) = std::fs::read(&p3_path) else {
        eprintln!("{} missing: the I/O-bound rows are skipped", p3_path.display());
        return Ok(rows);
    };
    let p3 = runtime
        .load(&trellis_lattice::state::digest_of(&p3_wasm), &p3_wasm)
        .map_err(setup)?
        .with_reuse(Reuse { at_once: 16, ..Reuse::DEFAULT });
    let (in_flight, total) = (64, options.count(2000, 128));
    let (mut p3_samples, mut p2_samples) = (Vec::new(), Vec::new());
    let (mut p3_time, mut p2_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..4 {
        let order: [(&Component, bool); 2] = if round % 2 == 0 {
            [(&p3, true), (&plain, false)]
        } else {
            [(&plain, false), (&p3, true)]
        };
        for (component, is_p3) in order {
            let (samples, took) = closed_loop(component, in_flight, total / 4).await?;
            let (into, time) = if is_p3 {
                (&mut p3_samples, &mut p3_time)
            } else {
                (&mut p2_samples, &mut p2_time)
            };
            into.extend(samples);
            *time += took;
        }
    }
    rows.push(Row::compared(
        format!("I/O-bound /sleep/20, {in_flight} in flight: 0.3 shared (16 at once)/0.2 fresh"),
        Figures::from_samples(&mut p3_samples, p3_time),
        Figures::from_samples(&mut p2_samples, p2_time),
        "0.2: http-hello, an instance per request",
    ));
    Ok(rows)
}

/// `total` requests of `/sleep/20`, `in_flight` at a time: each latency, and the time taken.
async fn closed_loop(
    component: &Component,
    in_flight: usize,
    total: usize,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    let component = Arc::new(component.clone());
    let started = Instant::now();
    let mut running = FuturesUnordered::new();
    let mut samples = Vec::with_capacity(total);
    let mut sent = 0;
    while samples.len() < total {
        while sent < total && running.len() < in_flight {
            let component = component.clone();
            running.push(tokio::spawn(async move { timed(&component, "/sleep/20").await }));
            sent += 1;
        }
        match running.next().await {
            Some(Ok(result)) => samples.push(result?),
            Some(Err(e)) => return Err(fail(e.to_string())),
            None => break,
        }
    }
    Ok((samples, started.elapsed()))
}

/// One `GET path` through the runtime, timed; a status other than 200 is a failure.
async fn timed(component: &Component, path: &str) -> Result<Duration, BenchError> {
    let timeout = Duration::from_secs(10);
    let (took, status) =
        crate::local::timed_get(component, "wasi03", path, timeout).await.map_err(fail)?;
    if status != 200 {
        return Err(fail(format!("{path}: status {status}")));
    }
    Ok(took)
}
