//! HTTP hello through the http-server provider and a component on the same host, against its
//! parts (the same component in a plain wasmtime `wasi:http` server behind hyper, in this
//! process), with 1 and 32 connections; the provider as a process and as a builtin inside the
//! host.

use crate::env::{BenchLattice, free_addr};
use crate::http_baseline::Baseline;
use crate::parts::PartsRuntime;
use crate::report::Row;
use crate::{BenchError, Options, load, setup};

const PARTS: &str = "parts: plain wasmtime wasi:http server (hyper + wasmtime-wasi-http, \
    pooling allocator, fresh store + instance per request)";

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "web").await?;
    lattice.start_component(options, 0, "hello").await?;
    let trellis_addr = free_addr()?;
    lattice.serve_http(0, "web", "hello", trellis_addr, false).await?;
    let builtin_addr = free_addr()?;
    lattice.serve_http(0, "web-builtin", "hello", builtin_addr, true).await?;

    let wasm = std::fs::read(&options.component).map_err(setup)?;
    // The parts server runs on a runtime of its own, as the parts responder of `invoke` does
    // (see `parts.rs`): on the bench's runtime it would share threads with the load generator.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(setup)?;
    listener.set_nonblocking(true).map_err(setup)?;
    let baseline_addr = listener.local_addr().map_err(setup)?;
    let baseline = Baseline::new(&wasm)?;
    let server = PartsRuntime::new()?;
    server.spawn(async move {
        // A tokio listener belongs to the runtime it is made on: make it on the server's.
        if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
            baseline.serve(listener).await;
        }
    });

    let mut rows = Vec::new();
    for connections in [1usize, 32] {
        let total = options.count(if connections == 1 { 2000 } else { 10000 }, 64);
        // Warm both up, then measure each in turn.
        load::run(trellis_addr, connections, total / 10 + 1).await?;
        load::run(baseline_addr, connections, total / 10 + 1).await?;
        let trellis = load::run(trellis_addr, connections, total).await?;
        let baseline = load::run(baseline_addr, connections, total).await?;
        rows.push(Row::compared(
            format!("{connections} connection(s), provider process/parts"),
            trellis,
            baseline,
            PARTS,
        ));
    }
    // The same provider running inside the host (no process hop).
    for connections in [1usize, 32] {
        let total = options.count(if connections == 1 { 2000 } else { 10000 }, 64);
        load::run(builtin_addr, connections, total / 10 + 1).await?;
        load::run(baseline_addr, connections, total / 10 + 1).await?;
        let builtin = load::run(builtin_addr, connections, total).await?;
        let baseline = load::run(baseline_addr, connections, total).await?;
        rows.push(Row::compared(
            format!("{connections} connection(s), builtin http-server/parts"),
            builtin,
            baseline,
            PARTS,
        ));
    }
    drop(server);
    Ok(rows)
}
