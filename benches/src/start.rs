//! Starting 100 components on one host: time from the first start request until every one of
//! them has answered a call.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let count = options.count(100, 10);
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "many").await?;
    let bytes = std::fs::read(&options.component).map_err(setup)?;
    let digest =
        lattice.client.state().await.map_err(setup)?.put_artifact(&bytes).await.map_err(setup)?;
    let host = lattice.hosts[0].id.clone();
    let request = HttpRequest::get("/");
    let payload = Bytes::from(encode(&request).map_err(setup)?);
    let fail = |reason: String| BenchError::Run { scenario: "start", reason };

    let started = Instant::now();
    let client = &lattice.client;
    try_join_all((0..count).map(|i| {
        let (host, digest) = (host.clone(), digest.clone());
        async move {
            client
                .start_component(&host, &format!("c{i}"), &digest)
                .await
                .map_err(|e| fail(e.to_string()))
        }
    }))
    .await?;
    let all_started = started.elapsed();
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
                .map_err(|e| fail(e.to_string()))
        }
    }))
    .await?;
    let all_answered = started.elapsed();
    Ok(vec![
        Row::alone(
            format!("start {count} components: all started"),
            Figures::value(ms(all_started), "ms"),
        ),
        Row::alone(
            format!("start {count} components: all answered"),
            Figures::value(ms(all_answered), "ms"),
        ),
    ])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
