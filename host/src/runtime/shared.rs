//! Shared instances of WASI 0.3 components (started with reuse): one instance serves several
//! HTTP requests at once, up to [`Reuse::at_once`], while its guest awaits I/O.
//!
//! Each instance is a worker task that owns its store and runs the store's event loop
//! (`run_concurrent`), taking requests from a channel while it has room. A request goes to the
//! first worker with room, else to a new one. A worker stops taking requests once it has served
//! `max_calls`, after a request of it trapped, or after `idle` without any; it ends once its
//! requests in flight are done. Requests still queued for a worker that stopped are sent
//! elsewhere.
//!
//! The store's per-call state (deadline, span, link names) is the latest request's: outgoing
//! calls of requests running side by side share it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::http::HttpResponse;
use trellis_lattice::trace::TraceContext;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::p3::bindings::Service;

use super::component::Component;
use super::http::{timed_out, trap};
use super::http_p3::{P3Request, serve};
use super::outbound::{CallSettings, Outbound};
use super::state::CallState;
use super::warm::Reuse;

/// A component's shared instances.
pub(super) struct SharedPool {
    reuse: Reuse,
    workers: Mutex<Vec<Worker>>,
}

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPool").field("reuse", &self.reuse).finish_non_exhaustive()
    }
}

/// The way to one worker.
struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Requests given to it and not answered yet.
    load: Arc<AtomicUsize>,
}

/// One request for a worker.
struct Job {
    request: P3Request,
    call: Call,
    /// `Err` gives the request back: the worker stopped before taking it.
    reply: oneshot::Sender<Result<Result<HttpResponse, InvokeError>, Returned>>,
    /// Counts the request in its worker's load until the job is dropped.
    _load: Load,
    /// The admission slots of the request, held until it is done.
    slots: [Option<OwnedSemaphorePermit>; 2],
}

/// What a request runs with, owned (see [`CallSettings`]).
#[derive(Clone)]
struct Call {
    timeout: Duration,
    max_memory_bytes: usize,
    outbound: Option<Arc<dyn Outbound>>,
    trace: TraceContext,
    depth: u32,
}

impl Call {
    fn settings<'a>(&self, component_id: &'a str) -> CallSettings<'a> {
        CallSettings {
            component_id,
            timeout: self.timeout,
            max_memory_bytes: self.max_memory_bytes,
            outbound: self.outbound.clone(),
            slots: [None, None],
            trace: self.trace,
            depth: self.depth,
        }
    }
}

/// A request a worker gave back untouched, with its admission slots.
struct Returned {
    request: P3Request,
    slots: [Option<OwnedSemaphorePermit>; 2],
}

struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SharedPool {
    pub fn new(reuse: Reuse) -> Arc<Self> {
        let reuse =
            Reuse { max_calls: reuse.max_calls.max(1), at_once: reuse.at_once.max(1), ..reuse };
        Arc::new(Self { reuse, workers: Mutex::new(Vec::new()) })
    }

    /// Runs `request` on a shared instance of `component`; abandoned after the timeout.
    pub async fn handle(
        &self,
        component: &Component,
        mut request: P3Request,
        mut settings: CallSettings<'_>,
    ) -> Result<HttpResponse, InvokeError> {
        let (id, timeout) = (settings.component_id, settings.timeout);
        let call = Call {
            timeout,
            max_memory_bytes: settings.max_memory_bytes,
            outbound: settings.outbound.clone(),
            trace: settings.trace,
            depth: settings.depth,
        };
        let mut slots = std::mem::take(&mut settings.slots);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (reply, answer) = oneshot::channel();
            let (jobs, load) = self.pick(component, id, &call);
            let job = Job { request, call: call.clone(), reply, _load: load, slots };
            if let Err(mpsc::error::SendError(job)) = jobs.send(job) {
                // The worker ended between the pick and the send.
                (request, slots) = (job.request, job.slots);
                continue;
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Ok(answered))) => return answered,
                // Queued for a worker that stopped: to another one.
                Ok(Ok(Err(back))) => (request, slots) = (back.request, back.slots),
                Ok(Err(_)) => {
                    return Err(InvokeError::new(
                        InvokeErrorKind::Trap,
                        format!("the instance of component `{id}` serving the request failed"),
                    ));
                }
                Err(_) => return Err(timed_out(id, timeout)),
            }
        }
    }

    /// A worker with room (a new one when none has), its load counting the request.
    fn pick(
        &self,
        component: &Component,
        id: &str,
        call: &Call,
    ) -> (mpsc::UnboundedSender<Job>, Load) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.retain(|w| !w.jobs.is_closed());
        let at_once = self.reuse.at_once as usize;
        for worker in workers.iter() {
            let taken = worker.load.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < at_once).then_some(n + 1)
            });
            if taken.is_ok() {
                return (worker.jobs.clone(), Load(worker.load.clone()));
            }
        }
        let (jobs, receiver) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(1));
        let mut own = component.clone();
        // The worker's copy must not keep the pool (and so itself) alive.
        own.detach_reuse();
        tokio::spawn(run(own, Arc::from(id), receiver, self.reuse, call.clone()));
        workers.push(Worker { jobs: jobs.clone(), load: load.clone() });
        (jobs, Load(load))
    }
}

/// One worker: an instance in its own store, serving the requests sent to it.
async fn run(
    component: Component,
    id: Arc<str>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    reuse: Reuse,
    first: Call,
) {
    let mut store = component.new_store(&first.settings(&id));
    let service = match component.instantiate_service(&mut store).await {
        Ok(service) => service,
        Err(e) => {
            let failed = trap((&id, first.trace), "instantiating", &e);
            jobs.close();
            while let Ok(job) = jobs.try_recv() {
                let _ = job.reply.send(Ok(Err(failed.clone())));
            }
            return;
        }
    };
    let ended = store
        .run_concurrent(async |accessor| take_jobs(accessor, &service, &id, &mut jobs, reuse).await)
        .await;
    if let Err(e) = ended {
        tracing::warn!(component = %id, error = %format!("{e:#}"), "shared instance failed");
    }
    // Queued after the worker stopped taking requests: back to their callers, for another.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let Job { request, slots, reply, .. } = job;
        let _ = reply.send(Err(Returned { request, slots }));
    }
}

/// The worker's loop inside the store's event loop.
async fn take_jobs(
    accessor: &Accessor<CallState>,
    service: &Service,
    id: &str,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    reuse: Reuse,
) {
    let mut in_flight = FuturesUnordered::new();
    let (mut served, mut failed) = (0u32, false);
    loop {
        let taking = served < reuse.max_calls && !failed;
        if !taking && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            job = jobs.recv(), if taking => match job {
                Some(job) => {
                    served += 1;
                    accessor.with(|mut store| store.data_mut().rearm(&job.call.settings(id)));
                    in_flight.push(one(accessor, service, id, job));
                }
                None => break,
            },
            Some(ok) = in_flight.next(), if !in_flight.is_empty() => failed |= !ok,
            () = tokio::time::sleep(reuse.idle), if in_flight.is_empty() => break,
        }
    }
    // Nothing more is taken; what runs finishes.
    jobs.close();
    while in_flight.next().await.is_some() {}
}

/// One request; whether the instance may serve more (not after a trap or a timeout: the
/// guest's task may still hold the instance).
async fn one(accessor: &Accessor<CallState>, service: &Service, id: &str, job: Job) -> bool {
    let Job { request, call, reply, _load, slots: _slots } = job;
    let deadline = tokio::time::Instant::now() + call.timeout;
    let answered =
        tokio::time::timeout_at(deadline, serve(accessor, service, request, (id, call.trace)))
            .await;
    let (result, healthy) = match answered {
        Ok(Err(e)) if e.kind() == InvokeErrorKind::Trap => (Err(e), false),
        Ok(result) => (result, true),
        Err(_) => (Err(timed_out(id, call.timeout)), false),
    };
    let _ = reply.send(Ok(result));
    healthy
}
