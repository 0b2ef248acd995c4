//! The per-call cost of an in-process call through the Trellis runtime (what a co-located call
//! costs: fresh store, instantiate, run), against plain wasmtime doing the same.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use trellis_host::runtime::{CallSettings, Runtime, RuntimeConfig};
use trellis_lattice::http::HttpRequest;

use crate::http_baseline::Baseline;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let wasm = std::fs::read(&options.component).map_err(setup)?;
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(setup)?;
    let digest = trellis_lattice::state::digest_of(&wasm);
    let component = runtime.load(&digest, &wasm).map_err(setup)?;
    let baseline = Baseline::new(&wasm)?;
    let ops = options.count(5000, 50);
    let fail = |reason: String| BenchError::Run { scenario: "local", reason };

    let request = HttpRequest {
        method: "GET".into(),
        path_and_query: "/".into(),
        authority: Some("localhost".into()),
        headers: vec![],
        body: Vec::new().into(),
        scheme: None,
    };
    let mut trellis = Vec::with_capacity(ops);
    let mut plain = Vec::with_capacity(ops);
    let (mut trellis_total, mut plain_total) = (Duration::ZERO, Duration::ZERO);
    // Interleave, so both sides see the same machine noise.
    for i in 0..ops + ops / 10 {
        let t = Instant::now();
        component
            .handle_http(
                request.clone(),
                CallSettings {
                    component_id: "local",
                    timeout: Duration::from_secs(5),
                    max_memory_bytes: usize::MAX,
                    outbound: None,
                    slots: [None, None],
                    trace: trellis_lattice::trace::TraceContext::root(),
                },
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let dt = t.elapsed();
        let req = hyper::Request::builder()
            .uri("/")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| fail(e.to_string()))?;
        let t = Instant::now();
        baseline.call(req).await.map_err(fail)?;
        let db = t.elapsed();
        if i >= ops / 10 {
            trellis.push(dt);
            plain.push(db);
            trellis_total += dt;
            plain_total += db;
        }
    }
    Ok(vec![Row::compared(
        "in-process call, fresh instance/parts",
        Figures::from_samples(&mut trellis, trellis_total),
        Figures::from_samples(&mut plain, plain_total),
        "parts: plain wasmtime, pooling allocator, fresh store + instantiate + call",
    )])
}
