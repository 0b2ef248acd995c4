//! Remote invocation (a component on another host), unsigned and signed, against two
//! baselines through the same nats-server: raw NATS request/reply of the same payload to an
//! echo responder (what a call costs at all), and the parts baseline (a raw async-nats
//! responder running the same component in plain wasmtime, see [`crate::parts`]); and signed
//! calls of the same component started with warm instances (`--reuse`). All five are measured
//! in interleaved rounds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use trellis_lattice::client::LatticeClient;
use trellis_lattice::http::{HANDLE, HttpRequest, INCOMING_HANDLER, encode};
use trellis_lattice::signing::Signer;

use crate::env::BenchLattice;
use crate::http_baseline::Baseline;
use crate::measure::{Call, CallFuture, measure_interleaved};
use crate::parts::{Handler, PartsResponder};
use crate::report::Row;
use crate::{BenchError, Options, setup};

const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) const RAW_NATS: &str = "NATS: raw NATS request/reply, same payload and server";
pub(crate) const PARTS: &str = "parts: raw async-nats responder running http-hello in plain \
    wasmtime (pooling allocator, fresh store + instance per request), same payload and server";

pub async fn run(options: &Options) -> Result<Vec<Row>, BenchError> {
    let mut lattice = BenchLattice::start().await?;
    lattice.add_host(options, "callee").await?;
    lattice.start_component(options, 0, "echo").await?;
    lattice.start_warm_component(options, 0, "echo-warm").await?;
    let echo = raw_responder(&lattice).await?;
    let responder = parts_responder(options, &lattice).await?;
    let signing = signing_client(&lattice).await?;
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
        let calls: [Call; 5] = [
            Arc::new(invoker(&lattice.client, "echo", &payload)),
            Arc::new(invoker(&signing, "echo", &payload)),
            responder.caller(lattice.client.nats(), &payload),
            Arc::new(raw_request(&lattice, &echo, &payload)),
            Arc::new(invoker(&signing, "echo-warm", &payload)),
        ];
        for in_flight in [1usize, 64] {
            let ops = options.count(if in_flight == 1 { 2000 } else { 20000 }, 64);
            let figures = measure_interleaved(ops, in_flight, &calls).await?;
            let [unsigned, signed, parts, raw, warm] = figures[..] else {
                return Err(setup("interleaved measurement lost a call"));
            };
            let case = |what: &str| {
                let size = if size == 100 { "100 B" } else { "10 KiB" };
                format!("{in_flight} in flight, {size}, {what}")
            };
            rows.push(Row::compared(case("unsigned/parts"), unsigned, parts, PARTS));
            rows.push(Row::compared(case("signed/parts"), signed, parts, PARTS));
            rows.push(Row::compared(case("unsigned/NATS"), unsigned, raw, RAW_NATS));
            rows.push(Row::compared(case("signed/NATS"), signed, raw, RAW_NATS));
            rows.push(Row::compared(
                case("signed/unsigned"),
                signed,
                unsigned,
                "unsigned: the same invocation unsigned",
            ));
            rows.push(Row::compared(case("signed, warm/parts"), warm, parts, PARTS));
            rows.push(Row::compared(case("signed, warm/NATS"), warm, raw, RAW_NATS));
        }
    }
    Ok(rows)
}

/// The parts baseline of an invocation of http-hello: the request decoded, served by plain
/// wasmtime, the response encoded.
async fn parts_responder(
    options: &Options,
    lattice: &BenchLattice,
) -> Result<PartsResponder, BenchError> {
    let wasm = std::fs::read(&options.component).map_err(setup)?;
    let baseline = Arc::new(Baseline::new(&wasm)?);
    let handler: Handler = Arc::new(move |payload: Bytes| -> BoxFuture<'static, _> {
        let baseline = baseline.clone();
        Box::pin(async move { baseline.call_encoded(&payload).await })
    });
    PartsResponder::start(&lattice.nats.url(), "bench.parts", handler).await
}

/// A client that signs like a host, on a connection of its own whose inbox is the signing
/// key's (as a host's is); the callee verifies signatures when they are present.
async fn signing_client(lattice: &BenchLattice) -> Result<LatticeClient, BenchError> {
    let key = nkeys::KeyPair::new_server();
    let inbox = trellis_lattice::signing::inbox_prefix(&key.public_key());
    let nats = trellis_lattice::connect::connect_once_with(
        &lattice.nats.url(),
        "bench-signer",
        &Default::default(),
        Some(&inbox),
    )
    .await
    .map_err(setup)?;
    Ok(LatticeClient::new(nats, lattice.client.lattice())
        .map_err(setup)?
        .with_signer(Signer::new(key, None)))
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
