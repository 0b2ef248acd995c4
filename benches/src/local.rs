//! The per-call cost of an in-process call through the Trellis runtime (what a co-located call
//! costs: fresh store, instantiate, run; or a warm instance), against plain wasmtime doing the
//! fresh-instance recipe. All three interleaved, call by call.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use trellis_host::runtime::{CallSettings, Component, Reuse, Runtime, RuntimeConfig};
use trellis_lattice::http::HttpRequest;

use crate::http_baseline::Baseline;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

const PARTS: &str = "parts: plain wasmtime, pooling allocator, fresh store + instantiate + call";

/// Latencies of one side and their sum.
#[derive(Default)]
struct Samples(Vec<Duration>, Duration);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
        self.1 += d;
    }

    fn figures(mut self) -> Figures {
        Figures::from_samples(&mut self.0, self.1)
    }
}

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let wasm = std::fs::read(&options.component).map_err(setup)?;
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(setup)?;
    let digest = trellis_lattice::state::digest_of(&wasm);
    let fresh = runtime.load(&digest, &wasm).map_err(setup)?;
    let warm = fresh.clone().with_reuse(Reuse::DEFAULT);
    let baseline = Baseline::new(&wasm)?;
    let ops = options.count(5000, 50);
    let fail = |reason: String| BenchError::Run { scenario: "local", reason };

    let (mut trellis, mut reused, mut plain) =
        (Samples::default(), Samples::default(), Samples::default());
    // Interleave, so every side sees the same machine noise.
    for i in 0..ops + ops / 10 {
        let dt = timed_call(&fresh).await.map_err(fail)?;
        let dw = timed_call(&warm).await.map_err(fail)?;
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
            reused.push(dw);
            plain.push(db);
        }
    }
    let plain = plain.figures();
    Ok(vec![
        Row::compared("in-process call, fresh instance/parts", trellis.figures(), plain, PARTS),
        Row::compared("in-process call, warm instance/parts", reused.figures(), plain, PARTS),
    ])
}

/// One `GET /` through the runtime, timed.
async fn timed_call(component: &Component) -> Result<Duration, String> {
    timed_get(component, "local", "/", Duration::from_secs(5)).await.map(|(took, _)| took)
}

/// One `GET path` through the runtime as component `id`, timed: how long, and the status.
pub(crate) async fn timed_get(
    component: &Component,
    id: &str,
    path: &str,
    timeout: Duration,
) -> Result<(Duration, u16), String> {
    let request = HttpRequest {
        method: "GET".into(),
        path_and_query: path.into(),
        authority: Some("localhost".into()),
        headers: vec![],
        body: Vec::new().into(),
        scheme: None,
    };
    let settings = CallSettings {
        component_id: id,
        timeout,
        max_memory_bytes: usize::MAX,
        outbound: None,
        slots: [None, None],
        trace: trellis_lattice::trace::TraceContext::root(),
        depth: 0,
    };
    let t = Instant::now();
    let response = component.handle_http(request, settings).await.map_err(|e| e.to_string())?;
    Ok((t.elapsed(), response.status))
}
