//! Remote invocation (a component on another host) against raw NATS request/reply of the same
//! payload through the same server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};
use trellis_lattice::signing::Signer;

use crate::env::BenchLattice;
use crate::report::{Figures, Row};
use crate::{BenchError, Options, setup};

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "callee").await?;
    lattice.start_component(options, 0, "echo").await?;
    let responder = raw_responder(&lattice).await?;

    // The callee verifies signatures when they are present; this client signs like a host,
    // on a connection of its own whose inbox is the signing key's (as a host's is).
    let key = nkeys::KeyPair::new_server();
    let inbox = trellis_lattice::signing::inbox_prefix(&key.public_key());
    let url = lattice.nats.url();
    let nats = trellis_lattice::connect::connect_once_with(
        &url,
        "bench-signer",
        &Default::default(),
        Some(&inbox),
    )
    .await
    .map_err(setup)?;
    let signing = trellis_lattice::client::LatticeClient::new(nats, lattice.client.lattice())
        .map_err(setup)?
        .with_signer(Signer::new(key, None));
    let mut rows = Vec::new();
    for size in [100usize, 10 * 1024] {
        let request = HttpRequest {
            method: "POST".into(),
            path_and_query: "/echo".into(),
            authority: None,
            headers: vec![],
            body: vec![b'x'; size].into(),
            scheme: None,
        };
        let payload = Bytes::from(encode(&request).map_err(setup)?);
        for in_flight in [1usize, 64] {
            let ops = options.count(if in_flight == 1 { 2000 } else { 20000 }, 64);
            // Interleaved, so drift on a shared machine falls on both alike.
            let (unsigned, signed) = measure_pair(
                ops,
                in_flight,
                invoker(&lattice.client, "echo", &payload),
                invoker(&signing, "echo", &payload),
            )
            .await?;
            let baseline =
                measure(ops, in_flight, raw_request(&lattice, &responder, &payload)).await?;
            let size = if size == 100 { "100 B" } else { "10 KiB" };
            rows.push(Row::compared(
                format!("{in_flight} in flight, {size}"),
                unsigned,
                baseline,
                "raw NATS request/reply, same payload and server",
            ));
            rows.push(Row::compared(
                format!("{in_flight} in flight, {size}, signed"),
                signed,
                baseline,
                "raw NATS request/reply, same payload and server",
            ));
            rows.push(Row::compared(
                format!("{in_flight} in flight, {size}, signed/unsigned"),
                signed,
                unsigned,
                "the same invocation unsigned",
            ));
        }
    }
    Ok(rows)
}

/// One remote invocation of the http-hello component `target` per call.
pub(crate) fn invoker(
    client: &LatticeClient,
    target: &str,
    payload: &Bytes,
) -> impl Fn() -> CallFuture + Clone + Send + 'static {
    let (client, target, payload) = (client.clone(), Arc::<str>::from(target), payload.clone());
    move || {
        let (client, target, payload) = (client.clone(), target.clone(), payload.clone());
        Box::pin(async move {
            client
                .invoke(&target, INCOMING_HANDLER, HANDLE, payload, TIMEOUT)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// One raw NATS request to the echo responder per call.
pub(crate) fn raw_request(
    lattice: &BenchLattice,
    subject: &Arc<str>,
    payload: &Bytes,
) -> impl Fn() -> CallFuture + Clone + Send + 'static {
    let (nats, subject, payload) =
        (lattice.client.nats().clone(), subject.clone(), payload.clone());
    move || {
        let (nats, subject, payload) = (nats.clone(), subject.clone(), payload.clone());
        Box::pin(async move {
            nats.request(subject.to_string(), payload).await.map(drop).map_err(|e| e.to_string())
        })
    }
}

type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A raw NATS echo responder on its own connection; returns its subject.
pub(crate) async fn raw_responder(lattice: &BenchLattice) -> Result<Arc<str>, BenchError> {
    let nats = trellis_lattice::connect::connect_once(
        &lattice.nats.url(),
        "bench-echo",
        &Default::default(),
    )
    .await
    .map_err(setup)?;
    let subject: Arc<str> = Arc::from("bench.echo");
    let mut sub = nats.subscribe(subject.to_string()).await.map_err(setup)?;
    trellis_lattice::connect::sync_with_server(&nats).await.map_err(setup)?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = nats.publish(reply, msg.payload).await;
            }
        }
    });
    Ok(subject)
}

/// Runs `ops` calls of `call`, `in_flight` at a time, after a warm-up; returns the figures.
pub async fn measure<F, Fut>(ops: usize, in_flight: usize, call: F) -> Result<Figures, BenchError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    warm_up(ops, &call).await?;
    let (mut samples, elapsed) = run_calls(ops, in_flight, call).await?;
    Ok(Figures::from_samples(&mut samples, elapsed))
}

/// [`measure`] of two calls in alternating rounds (`a b`, `b a`, `a b`, `b a`), so that a
/// machine that slows down or speeds up during the run weighs on both alike.
pub async fn measure_pair<A, FutA, B, FutB>(
    ops: usize,
    in_flight: usize,
    a: A,
    b: B,
) -> Result<(Figures, Figures), BenchError>
where
    A: Fn() -> FutA + Clone + Send + 'static,
    FutA: std::future::Future<Output = Result<(), String>> + Send,
    B: Fn() -> FutB + Clone + Send + 'static,
    FutB: std::future::Future<Output = Result<(), String>> + Send,
{
    const ROUNDS: usize = 4;
    warm_up(ops, &a).await?;
    warm_up(ops, &b).await?;
    let per_round = ops.div_ceil(ROUNDS);
    let (mut samples_a, mut samples_b) = (Vec::new(), Vec::new());
    let (mut elapsed_a, mut elapsed_b) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let (samples, elapsed) = run_calls(per_round, in_flight, a.clone()).await?;
                samples_a.extend(samples);
                elapsed_a += elapsed;
            } else {
                let (samples, elapsed) = run_calls(per_round, in_flight, b.clone()).await?;
                samples_b.extend(samples);
                elapsed_b += elapsed;
            }
        }
    }
    Ok((
        Figures::from_samples(&mut samples_a, elapsed_a),
        Figures::from_samples(&mut samples_b, elapsed_b),
    ))
}

async fn warm_up<F, Fut>(ops: usize, call: &F) -> Result<(), BenchError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for _ in 0..(ops / 10).clamp(10, 200) {
        call().await.map_err(|reason| BenchError::Run { scenario: "invoke", reason })?;
    }
    Ok(())
}

/// `ops` calls, `in_flight` at a time: each call's latency, and the time it all took.
async fn run_calls<F, Fut>(
    ops: usize,
    in_flight: usize,
    call: F,
) -> Result<(Vec<Duration>, Duration), BenchError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let per_worker = ops.div_ceil(in_flight);
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t = Instant::now();
                    call().await?;
                    samples.push(t.elapsed());
                }
                Ok::<_, String>(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(per_worker * in_flight);
    for worker in workers {
        let done = worker
            .await
            .map_err(|e| BenchError::Run { scenario: "invoke", reason: e.to_string() })?;
        samples.extend(done.map_err(|reason| BenchError::Run { scenario: "invoke", reason })?);
    }
    Ok((samples, started.elapsed()))
}
