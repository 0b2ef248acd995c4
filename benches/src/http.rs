//! HTTP hello through the http-server provider and a component on the same host, against its
//! parts (the same component in a plain wasmtime `wasi:http` server behind hyper, in this
//! process, a fresh instance per request), with 1 and 32 connections: the provider as a
//! process, as a builtin inside the host, and as a builtin serving a component with warm
//! instances (`--reuse`).

use std::net::SocketAddr;

use crate::env::{BenchLattice, free_addr};
use crate::http_baseline::Baseline;
use crate::parts::PartsRuntime;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, load, setup};

const PARTS: &str = "parts: plain wasmtime wasi:http server (hyper + wasmtime-wasi-http, pooling, fresh instance per request)";

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "web").await?;
    lattice.start_component(options, 0, "hello").await?;
    lattice.start_warm_component(options, 0, "hello-warm").await?;
    let process_addr = free_addr()?;
    lattice.serve_http(0, "web", "hello", process_addr, false).await?;
    let builtin_addr = free_addr()?;
    lattice.serve_http(0, "web-builtin", "hello", builtin_addr, true).await?;
    let warm_addr = free_addr()?;
    lattice.serve_http(0, "web-warm", "hello-warm", warm_addr, true).await?;

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
        let servers = [process_addr, builtin_addr, warm_addr, baseline_addr];
        // Warm every server up, then measure each in turn.
        for addr in servers {
            load::run(addr, connections, total / 10 + 1).await?;
        }
        let [process, builtin, warm, parts] = measure(servers, connections, total).await?;
        let case = |what: &str| format!("{connections} connection(s){what}");
        rows.push(Row::compared(case(", provider process/parts"), process, parts, PARTS));
        rows.push(Row::compared(case(", builtin http-server/parts"), builtin, parts, PARTS));
        rows.push(Row::compared(case(", builtin, warm/parts"), warm, parts, PARTS));
        rows.push(Row::compared(
            case(", warm/fresh"),
            warm,
            builtin,
            "the same builtin path, a fresh instance per request",
        ));
    }
    drop(server);
    Ok(rows)
}

/// Runs `total` requests over `connections` against each server in turn.
async fn measure(
    servers: [SocketAddr; 4],
    connections: usize,
    total: usize,
) -> Result<[Figures; 4], BenchError> {
    let mut out = [Figures::default(); 4];
    for (addr, figures) in servers.into_iter().zip(&mut out) {
        *figures = load::run(addr, connections, total).await?;
    }
    Ok(out)
}
