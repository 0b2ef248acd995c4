//! Trace export must not slow calls down, even with the collector down: the same remote call on
//! a host that exports its spans to a collector that is not there, against a host that exports
//! nothing, in the same run.

use bytes::Bytes;
use trellis_lattice::http::{HttpRequest, encode};

use crate::env::{BenchLattice, free_addr};
use crate::invoke::invoker;
use crate::measure::measure;
use crate::report::Row;
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "plain").await?;
    // An address nothing listens on: every export fails.
    let down = format!("http://{}", free_addr()?);
    lattice.add_host_with(options, "exporting", &["--otlp-endpoint", &down]).await?;
    lattice.start_component(options, 0, "plain").await?;
    lattice.start_component(options, 1, "traced").await?;
    let request = HttpRequest::get("/echo");
    let payload = Bytes::from(encode(&request).map_err(setup)?);
    let mut rows = Vec::new();
    for in_flight in [1usize, 64] {
        let ops = options.count(if in_flight == 1 { 2000 } else { 20000 }, 64);
        let plain = measure(ops, in_flight, invoker(&lattice.client, "plain", &payload)).await?;
        let traced = measure(ops, in_flight, invoker(&lattice.client, "traced", &payload)).await?;
        rows.push(Row::compared(
            format!("{in_flight} in flight, spans exported, collector down"),
            traced,
            plain,
            "untraced: the same call on a host that exports nothing",
        ));
    }
    Ok(rows)
}
