//! The "parts" baseline: what Trellis is built from, put together by hand with nothing else. A
//! raw async-nats responder, queue-subscribed on a subject of its own on the scenario's
//! nats-server, runs the same component in plain wasmtime (a fresh store and instance per
//! request) and replies with its result. A Trellis row divided by this one reads "Trellis / its
//! parts": what routing, admission, envelopes, authentication and limits add on top.
//!
//! # Where it runs
//!
//! On a tokio runtime of its own, inside the bench process, with as many worker threads as the
//! Trellis host's runtime (one per core, tokio's default, which `trellis host` uses). Not on the
//! bench's runtime: there its tasks would share two worker threads with the load generator,
//! so the baseline would pay for the client's work and the client for the baseline's, while
//! the host has threads of its own. Not a child process either: that would need a hidden
//! `trellis` subcommand only for the harness, and buys nothing the separate runtime does not
//! give (the kernel schedules its threads like the host's, and every request crosses the same
//! nats-server over TCP either way). Measurements interleave Trellis and parts rounds, so while
//! one side is measured the other is idle: its parked threads take no CPU from it. The `http`
//! scenario's parts server (hyper in front of plain wasmtime) runs on a [`PartsRuntime`] too.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::measure::{Call, CallFuture};
use crate::{BenchError, setup};

/// What the responder does with one request's payload: the reply's payload, or why not.
pub(crate) type Handler =
    Arc<dyn Fn(Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// Header on a reply whose handler failed, carrying the reason (a caller must not count it).
const ERROR_HEADER: &str = "Bench-Error";

/// A tokio runtime of the baseline's own (see the module doc); stops its tasks when dropped.
pub(crate) struct PartsRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PartsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartsRuntime")
    }
}

impl PartsRuntime {
    /// As many worker threads as the host's runtime has.
    pub fn new() -> Result<Self, BenchError> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("bench-parts")
            .enable_all()
            .build()
            .map_err(setup)?;
        Ok(Self { runtime: Some(runtime) })
    }

    /// Runs `task` on this runtime.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(task);
        }
    }
}

impl Drop for PartsRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside the bench's own runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A running parts responder; stops when dropped.
pub(crate) struct PartsResponder {
    _runtime: PartsRuntime,
    subject: Arc<str>,
}

impl std::fmt::Debug for PartsResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartsResponder").field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl PartsResponder {
    /// Starts its runtime, connects to `url` and answers on `subject` with `handler`; returns
    /// once the server knows the subscription.
    pub async fn start(url: &str, subject: &str, handler: Handler) -> Result<Self, BenchError> {
        let runtime = PartsRuntime::new()?;
        let subject: Arc<str> = Arc::from(subject);
        let (ready, ready_rx) = oneshot::channel();
        runtime.spawn(serve(url.to_owned(), subject.clone(), handler, ready));
        ready_rx.await.map_err(|_| setup("the parts responder stopped while starting"))??;
        Ok(Self { _runtime: runtime, subject })
    }

    /// One request to the responder per call, on `nats` (the caller's connection, as the
    /// Trellis side uses its own); a reply carrying an error fails the call.
    pub fn caller(&self, nats: &async_nats::Client, payload: &Bytes) -> Call {
        let (nats, subject, payload) = (nats.clone(), self.subject.clone(), payload.clone());
        Arc::new(move || -> CallFuture {
            let (nats, subject, payload) = (nats.clone(), subject.clone(), payload.clone());
            Box::pin(async move {
                let reply =
                    nats.request(subject.to_string(), payload).await.map_err(|e| e.to_string())?;
                match reply.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
                    Some(reason) => Err(format!("parts responder: {}", reason.as_str())),
                    None => Ok(()),
                }
            })
        })
    }
}

/// Connects, subscribes, reports readiness, then answers every request on a task of its own
/// (as a host does), so that requests in flight run concurrently.
async fn serve(
    url: String,
    subject: Arc<str>,
    handler: Handler,
    ready: oneshot::Sender<Result<(), BenchError>>,
) {
    let subscribed = async {
        let nats = trellis_lattice::connect::connect_once(&url, "bench-parts", &Default::default())
            .await
            .map_err(setup)?;
        let sub = nats.queue_subscribe(subject.to_string(), "parts".into()).await.map_err(setup)?;
        trellis_lattice::connect::sync_with_server(&nats).await.map_err(setup)?;
        Ok::<_, BenchError>((nats, sub))
    };
    let (nats, mut sub) = match subscribed.await {
        Ok(subscribed) => {
            let _ = ready.send(Ok(()));
            subscribed
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply else { continue };
        let (nats, handler) = (nats.clone(), handler.clone());
        tokio::spawn(async move {
            let _ = match handler(msg.payload).await {
                Ok(payload) => nats.publish(reply, payload).await,
                Err(reason) => {
                    let mut headers = async_nats::HeaderMap::new();
                    // A header value is one line.
                    headers.insert(ERROR_HEADER, reason.replace(['\r', '\n'], " ").as_str());
                    nats.publish_with_headers(reply, headers, Bytes::new()).await
                }
            };
        });
    }
}
