//! The Trellis benchmark harness.
//!
//! Every scenario starts what it needs (its own `nats-server`, `trellis host` processes), warms
//! up, runs a fixed number of operations, and reports p50, p99 and throughput next to a baseline
//! measured in the same run, because the machines we run on are shared and noisy: the ratio is
//! the figure to read. The baselines are raw NATS request/reply (what a call costs at all) and
//! "parts": the same component run by plain wasmtime behind raw async-nats or hyper, so that a
//! row reads "Trellis / its parts" (`src/parts.rs` says how that responder runs). `trellis bench` is
//! the front end.

mod call;
mod call_baseline;
mod compile;
mod env;
mod fleet;
mod http;
mod http_baseline;
mod invoke;
mod load;
mod local;
mod measure;
mod memory;
mod parts;
mod report;
mod scale;
mod schedule;
mod server;
mod start;
mod state;
mod telemetry;
mod wake;
mod wasi03;

use std::path::PathBuf;

pub use report::{Report, Row};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Remote invocation vs its parts (plain wasmtime behind raw NATS) and raw NATS.
    Invoke,
    /// In-process call through the Trellis runtime vs plain wasmtime.
    Local,
    /// HTTP through the http-server provider vs a plain wasmtime wasi:http server.
    Http,
    /// Starting 100 and 1,000 components on one host.
    Start,
    /// Host resident memory idle, with 1, 100 and 1,000 components; its open files.
    Memory,
    /// Remote calls on a host exporting spans to a collector that is down, against one that
    /// exports nothing.
    Telemetry,
    /// The scheduler placing 500 replicas over 20 hosts; heartbeat traffic of 100 hosts.
    Schedule,
    /// Component-to-component calls, co-located and across hosts.
    Call,
    /// Starting components on a host that did not compile them: loaded from the lattice's
    /// compile cache vs compiled.
    Compile,
    /// The first request to a component scaled to zero (woken, loaded from the compile
    /// cache) vs a warm request.
    Wake,
    /// A host reading 10,000 links at start: sealed and verified against plain.
    State,
    /// The control plane at scale: 1,000 hosts (played by one process) against a real
    /// nats-server and scheduler: heartbeat traffic, `get hosts`, deploying 10,000 replicas,
    /// healing after 100 hosts vanish.
    Scale,
    /// WASI 0.2 calls on an engine with concurrency support against one without; an I/O-bound
    /// handler as WASI 0.3 (one shared instance) against WASI 0.2 (an instance per call).
    Wasi03,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 13] = [
        Scenario::Invoke,
        Scenario::Local,
        Scenario::Http,
        Scenario::Start,
        Scenario::Memory,
        Scenario::Call,
        Scenario::Compile,
        Scenario::Wake,
        Scenario::Schedule,
        Scenario::Telemetry,
        Scenario::State,
        Scenario::Scale,
        Scenario::Wasi03,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Invoke => "invoke",
            Scenario::Local => "local",
            Scenario::Http => "http",
            Scenario::Start => "start",
            Scenario::Memory => "memory",
            Scenario::Call => "call",
            Scenario::Compile => "compile",
            Scenario::Wake => "wake",
            Scenario::Schedule => "schedule",
            Scenario::Telemetry => "telemetry",
            Scenario::State => "state",
            Scenario::Scale => "scale",
            Scenario::Wasi03 => "wasi03",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Small counts: proves the scenario runs, measures little.
    pub quick: bool,
    /// The http-hello test component (built from `tests/components`).
    pub component: PathBuf,
    /// The componentize-py py-hello component (`compile`, `wake`; without it, or with `quick`, that
    /// scenario starts http-hello only).
    pub python: Option<PathBuf>,
    /// The `trellis` executable used to start hosts (normally the running one).
    pub trellis: PathBuf,
    /// Hosts the `scale` scenario plays; `None`: 1,000 (100 in quick mode).
    pub hosts: Option<usize>,
}

impl Options {
    /// `full` operations normally, `quick` in quick mode.
    pub(crate) fn count(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// A benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Something the scenario needs could not be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// An operation failed while measuring.
    #[error("{scenario}: {reason}")]
    Run {
        /// Which scenario.
        scenario: &'static str,
        /// What failed.
        reason: String,
    },
}

pub(crate) fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Runs one scenario.
pub async fn run(scenario: Scenario, options: &Options) -> Result<Report, BenchError> {
    if !options.component.is_file() {
        return Err(BenchError::Setup(format!(
            "component {} not found; build it with `cargo build --release --target wasm32-wasip2 \
             --manifest-path tests/components/Cargo.toml` or pass --component",
            options.component.display()
        )));
    }
    let rows = match scenario {
        Scenario::Invoke => invoke::run(options).await?,
        Scenario::Local => local::run(options).await?,
        Scenario::Http => http::run(options).await?,
        Scenario::Start => start::run(options).await?,
        Scenario::Memory => memory::run(options).await?,
        Scenario::Call => call::run(options).await?,
        Scenario::Compile => compile::run(options).await?,
        Scenario::Wake => wake::run(options).await?,
        Scenario::Schedule => schedule::run(options).await?,
        Scenario::Telemetry => telemetry::run(options).await?,
        Scenario::State => state::run(options).await?,
        Scenario::Scale => scale::run(options).await?,
        Scenario::Wasi03 => wasi03::run(options).await?,
    };
    Ok(Report { scenario: scenario.name(), quick: options.quick, rows })
}
