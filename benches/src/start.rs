//! Starting many components (100, then 1,000; 10 in quick mode) on one host: time from the
//! first start request until every one has started, and until every one has answered a call.
//! Each count gets a lattice and host of its own, so the larger run does not start on a host
//! already holding the smaller one's components.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let counts: &[usize] = if options.quick { &[10] } else { &[100, 1000] };
    let mut rows = Vec::new();
    for &count in counts {
        let (started, answered) = start_many(options, count).await?;
        rows.push(Row::alone(
            format!("start {count} components: all started"),
            Figures::value(ms(started), "ms"),
        ));
        rows.push(Row::alone(
            format!("start {count} components: all answered"),
            Figures::value(ms(answered), "ms"),
        ));
    }
    Ok(rows)
}

fn fail(reason: String) -> BenchError {
    BenchError::Run { scenario: "start", reason }
}

/// Starts `count` components at once on a fresh host, then calls each once, all at once;
/// returns the time until all had started and until all had answered.
async fn start_many(options: &Options, count: usize) -> Result<(Duration, Duration), BenchError> {
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "many").await?;
    let bytes = std::fs::read(&options.component).map_err(setup)?;
    let digest =
        lattice.client.state().await.map_err(setup)?.put_artifact(&bytes).await.map_err(setup)?;
    let host = lattice.hosts[0].id.clone();
    let payload = Bytes::from(encode(&HttpRequest::get("/")).map_err(setup)?);

    let started = Instant::now();
    let client = &lattice.client;
    try_join_all((0..count).map(|i| {
        let (host, digest) = (host.clone(), digest.clone());
        async move {
            client
                .start_component(&host, &format!("c{i}"), &digest)
                .await
                .map_err(|e| fail(format!("start of component {i} of {count} failed: {e}")))
        }
    }))
    .await?;
    let all_started = started.elapsed();
    // More calls than the host's --max-instances (128 here) wait for admission: the figure
    // includes that queue, as it would for any burst of first calls.
    try_join_all((0..count).map(|i| {
        let payload = payload.clone();
        async move {
            client
                .invoke(
                    &format!("c{i}"),
                    INCOMING_HANDLER,
                    HANDLE,
                    payload,
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| fail(format!("call of component {i} of {count} failed: {e}")))
        }
    }))
    .await?;
    Ok((all_started, started.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
