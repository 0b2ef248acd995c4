//! Component-to-component calls over a custom WIT interface (`caller` → `greeter.greet`), timed
//! from inside the calling component: co-located (in process) against plain wasmtime
//! instantiating and calling the same export, and across hosts (signed) against two baselines
//! through the same server: the parts baseline (a raw async-nats responder calling `greet` in
//! plain wasmtime, see [`crate::parts`]) and raw NATS request/reply of the same 3-byte payload.
//! The cross-host call and its parts baseline run in interleaved rounds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use trellis_lattice::link::{InterfaceName, Link};

use crate::call_baseline::PlainGreeter;
use crate::env::BenchLattice;
use crate::invoke::{RAW_NATS, raw_request, raw_responder};
use crate::measure::{measure, run_calls};
use crate::parts::PartsResponder;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

const TYPES: &str = "trellis:test/types";
const TIMEOUT: Duration = Duration::from_secs(60);

fn fail(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Run { scenario: "call", reason: reason.to_string() }
}

/// A test component next to http-hello (they are built together).
fn sibling(options: &Options, name: &str) -> Result<Vec<u8>, BenchError> {
    let path = options.component.with_file_name(name);
    std::fs::read(&path).map_err(|e| setup(format!("{}: {e}", path.display())))
}

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let greeter = sibling(options, "greeter.wasm")?;
    let caller = sibling(options, "caller.wasm")?;
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "near").await?;
    lattice.add_host(options, "far").await?;
    lattice.start_bytes(&greeter, 0, "greeter").await?;
    lattice.start_bytes(&greeter, 1, "greeter-far").await?;
    lattice.start_bytes(&caller, 0, "caller").await?;
    lattice.start_bytes(&caller, 0, "caller-far").await?;
    link(&lattice, "caller", "greeter").await?;
    link(&lattice, "caller-far", "greeter-far").await?;

    let ops = options.count(5000, 50) as u32;
    let plain = PlainGreeter::new(&greeter)?;
    let mut rows = Vec::new();

    let mut near = timed_in_guest(&lattice, "caller", ops).await?;
    let mut alone = plain_wasmtime(&plain, ops as usize).await?;
    let (near_total, alone_total) = (near.iter().sum(), alone.iter().sum());
    rows.push(Row::compared(
        "co-located call/parts",
        Figures::from_samples(&mut near, near_total),
        Figures::from_samples(&mut alone, alone_total),
        "parts (co-located): plain wasmtime, fresh store + instantiate greeter + call greet",
    ));

    // The same bytes as the call's arguments (`["x"]`).
    let payload = Bytes::from_static(&[0x91, 0xa1, b'x']);
    let responder =
        PartsResponder::start(&lattice.nats.url(), "bench.parts", plain.handler()).await?;
    let (far, parts) = cross_host(&lattice, &responder, &payload, ops).await?;
    let subject = raw_responder(&lattice).await?;
    let raw = measure(ops as usize, 1, raw_request(&lattice, &subject, &payload)).await?;
    rows.push(Row::compared("cross-host call, signed/parts", far, parts, PARTS));
    rows.push(Row::compared("cross-host call, signed/NATS", far, raw, RAW_NATS));
    Ok(rows)
}

const PARTS: &str = "parts (cross-host): raw async-nats responder calling greet in plain \
    wasmtime (fresh store + instance per request), msgpack arguments and results, same server";

/// The cross-host call (timed in the guest) and its parts baseline (timed here), one at a time,
/// in alternating rounds so that drift weighs on both alike.
async fn cross_host(
    lattice: &BenchLattice,
    parts: &PartsResponder,
    payload: &Bytes,
    ops: u32,
) -> Result<(Figures, Figures), BenchError> {
    const ROUNDS: u32 = 4;
    let call = parts.caller(lattice.client.nats(), payload);
    let parts_call = move || call();
    run_calls(ops as usize / 10 + 1, 1, parts_call.clone()).await?;
    let per_round = ops.div_ceil(ROUNDS);
    let (mut far, mut base) = (Vec::new(), Vec::new());
    let mut base_elapsed = Duration::ZERO;
    for round in 0..ROUNDS {
        for trellis_turn in [round % 2 == 0, round % 2 == 1] {
            if trellis_turn {
                far.extend(timed_in_guest(lattice, "caller-far", per_round).await?);
            } else {
                let (samples, elapsed) =
                    run_calls(per_round as usize, 1, parts_call.clone()).await?;
                base.extend(samples);
                base_elapsed += elapsed;
            }
        }
    }
    // The guest reports only each call's time; back to back, their sum is the time they took.
    let far_total = far.iter().sum();
    Ok((Figures::from_samples(&mut far, far_total), Figures::from_samples(&mut base, base_elapsed)))
}

async fn link(lattice: &BenchLattice, source: &str, target: &str) -> Result<(), BenchError> {
    let link = Link {
        source: source.into(),
        target: target.into(),
        interface: InterfaceName::parse(TYPES).map_err(setup)?,
        name: "default".into(),
        config: Default::default(),
    };
    lattice.client.state().await.map_err(setup)?.put_link(&link).await.map_err(setup)?;
    // Hosts apply links from their watch; give it a moment, then check it works.
    for _ in 0..100 {
        if timed_in_guest(lattice, source, 1).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(setup(format!("link {source} -> {target} did not start working")))
}

/// Runs `caller.bench.run(n)` and returns the per-call times it measured (after a warm-up of
/// a tenth).
async fn timed_in_guest(
    lattice: &BenchLattice,
    caller: &str,
    n: u32,
) -> Result<Vec<Duration>, BenchError> {
    let warm = (n / 10).max(1);
    let mut args = Vec::new();
    rmpv::encode::write_value(&mut args, &rmpv::Value::Array(vec![(n + warm).into()]))
        .map_err(fail)?;
    let reply = lattice
        .client
        .invoke(caller, "trellis:test/bench", "run", args.into(), TIMEOUT)
        .await
        .map_err(fail)?;
    let mut reader = reply.as_ref();
    let value = rmpv::decode::read_value(&mut reader).map_err(fail)?;
    let samples = value
        .as_array()
        .and_then(|r| r.first())
        .and_then(|list| list.as_array())
        .ok_or_else(|| fail("bench.run answered with something else than a list"))?;
    Ok(samples
        .iter()
        .skip(warm as usize)
        .filter_map(|v| v.as_u64())
        .map(Duration::from_nanos)
        .collect())
}

/// Plain wasmtime: fresh store, instantiate, call `greet("x")`, `ops` times after a warm-up of
/// a tenth.
async fn plain_wasmtime(greeter: &PlainGreeter, ops: usize) -> Result<Vec<Duration>, BenchError> {
    let mut samples = Vec::with_capacity(ops);
    for i in 0..ops + ops / 10 {
        let t = Instant::now();
        greeter.greet("x").await.map_err(fail)?;
        let dt = t.elapsed();
        if i >= ops / 10 {
            samples.push(dt);
        }
    }
    Ok(samples)
}
