//! Component-to-component calls over a custom WIT interface (`caller` → `greeter.greet`), timed
//! from inside the calling component: co-located (in process) against plain wasmtime
//! instantiating and calling the same export, and across hosts against raw NATS request/reply
//! of a payload of the same size through the same server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use trellis_lattice::link::{InterfaceName, Link};
use wasmtime::component::{Component, Linker, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::env::BenchLattice;
use crate::invoke::{measure, raw_request, raw_responder};
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
    let mut rows = Vec::new();

    let mut near = timed_in_guest(&lattice, "caller", ops).await?;
    let mut plain = plain_wasmtime(&greeter, ops as usize).await?;
    let (near_total, plain_total) = (near.iter().sum(), plain.iter().sum());
    rows.push(Row::compared(
        "co-located call, in process",
        Figures::from_samples(&mut near, near_total),
        Figures::from_samples(&mut plain, plain_total),
        "plain wasmtime: fresh store + instantiate greeter + call greet",
    ));

    let mut far = timed_in_guest(&lattice, "caller-far", ops).await?;
    let far_total = far.iter().sum();
    let subject = raw_responder(&lattice).await?;
    // The same bytes as the call's arguments (`["x"]`).
    let payload = Bytes::from_static(&[0x91, 0xa1, b'x']);
    let baseline = measure(ops as usize, 1, raw_request(&lattice, &subject, &payload)).await?;
    rows.push(Row::compared(
        "cross-host call, signed",
        Figures::from_samples(&mut far, far_total),
        baseline,
        "raw NATS request/reply, same payload and server",
    ));
    Ok(rows)
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

struct Plain {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// Plain wasmtime: fresh store, instantiate, call `greet("x")`, `ops` times.
async fn plain_wasmtime(wasm: &[u8], ops: usize) -> Result<Vec<Duration>, BenchError> {
    let mut config = Config::new();
    config.concurrency_support(false);
    config.allocation_strategy(wasmtime::PoolingAllocationConfig::new());
    let engine = Engine::new(&config).map_err(setup)?;
    let component = Component::new(&engine, wasm).map_err(setup)?;
    let mut linker: Linker<Plain> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
    let pre = Arc::new(linker.instantiate_pre(&component).map_err(setup)?);
    let instance_index = component
        .get_export_index(None, "trellis:test/types@0.1.0")
        .ok_or_else(|| setup("no types export"))?;
    let greet = component
        .get_export_index(Some(&instance_index), "greet")
        .ok_or_else(|| setup("no greet export"))?;
    let mut samples = Vec::with_capacity(ops);
    for i in 0..ops + ops / 10 {
        let t = Instant::now();
        let mut store = Store::new(
            &engine,
            Plain { ctx: WasiCtx::builder().build(), table: ResourceTable::new() },
        );
        let instance = pre.instantiate_async(&mut store).await.map_err(fail)?;
        let func = instance.get_func(&mut store, greet).ok_or_else(|| fail("no greet"))?;
        let mut results = [Val::Bool(false)];
        func.call_async(&mut store, &[Val::String("x".into())], &mut results)
            .await
            .map_err(fail)?;
        let dt = t.elapsed();
        if i >= ops / 10 {
            samples.push(dt);
        }
    }
    Ok(samples)
}
