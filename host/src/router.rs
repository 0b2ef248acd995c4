//! Where a call goes: a replica on this host is called in process; otherwise NATS spreads the
//! call over the target's replicas on other hosts (queue group).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use trellis_lattice::client::{Call, Replies, send_invocation};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind, unix_ms};
use trellis_lattice::http::{self, HttpRequest, INCOMING_HANDLER};
use trellis_lattice::link::Link;
use trellis_lattice::policy::Policy;
use trellis_lattice::signing::{Proof, Signer, Verified, Verifier};
use trellis_lattice::subject::{EventKind, Subjects, validate_id};
use trellis_lattice::telemetry::{Kind, Span};
use trellis_lattice::trace::TraceContext;

use crate::components::{Components, Running};
use crate::events::Events;
use crate::links::{Configs, Links};
use crate::providers::{Pipes, ProviderCall};
use crate::runtime::{CallFuture, CallSettings, Outbound};

/// One in this many answers to MAC'd calls names its host.
const REMIND_EVERY: u64 = 16;

/// What guards calls crossing NATS: signing out, verification and policy in.
#[derive(Debug)]
pub(crate) struct Guard {
    pub signer: Signer,
    pub verifier: Verifier,
    pub policy: Option<Policy>,
}

/// Routes invocations from this host's callers (providers, components).
#[derive(Debug)]
pub(crate) struct Router {
    pub components: Arc<Components>,
    nats: Client,
    subjects: Subjects,
    /// Calls running on this host; closed permits mean draining.
    admission: Arc<Semaphore>,
    /// Messages received from NATS and being handled (checks included), at most a few per
    /// admission slot.
    intake: Arc<Semaphore>,
    /// No call runs longer than this, whatever its caller asked.
    max_call_time: Duration,
    /// Signs the calls this host sends over NATS.
    signer: Signer,
    /// Checks the calls this host receives over NATS.
    verifier: Verifier,
    /// Asked before a received call runs, when the host uses a policy service.
    policy: Option<Policy>,
    /// Calls refused by the verifier.
    denied: AtomicU64,
    /// MAC'd calls answered, for [`Router::introduces`].
    reminders: AtomicU64,
    events: Events,
    /// Where components' imports lead.
    links: Arc<Links>,
    /// Named config components read.
    configs: Arc<Configs>,
    /// This host's provider processes.
    providers: Arc<Pipes>,
    /// Itself, handed to the components it runs as their way out.
    me: Weak<Router>,
}

/// Where a call goes.
#[derive(Debug)]
pub(crate) struct Routes {
    pub components: Arc<Components>,
    pub links: Arc<Links>,
    pub configs: Arc<Configs>,
    pub providers: Arc<Pipes>,
}

impl Router {
    pub fn new(
        Routes { components, links, configs, providers }: Routes,
        nats: Client,
        subjects: Subjects,
        max_calls: usize,
        max_call_time: Duration,
        Guard { signer, verifier, policy }: Guard,
        events: Events,
    ) -> Arc<Self> {
        let admission = Arc::new(Semaphore::new(max_calls));
        let intake = Arc::new(Semaphore::new(max_calls.saturating_mul(4)));
        Arc::new_cyclic(|me| Self {
            components,
            nats,
            subjects,
            admission,
            intake,
            max_call_time,
            signer,
            verifier,
            policy,
            denied: AtomicU64::new(0),
            reminders: AtomicU64::new(0),
            events,
            links,
            configs,
            providers,
            me: me.clone(),
        })
    }

    /// Checks a call received over NATS on `subject`, answered to `reply` (signature, signer,
    /// reply inbox, replay, deadline).
    pub fn verify(
        &self,
        (subject, reply): (&str, &str),
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
    ) -> Result<Verified, InvokeError> {
        self.verifier.verify((subject, reply), headers, body, unix_ms())
    }

    /// This host's public key.
    pub fn host_key(&self) -> &str {
        self.signer.public_key()
    }

    /// Whether the answer to a call authenticated by `proof` names this host (`trellis-by`):
    /// always for a signed call (the caller has not met this host, or knows many), and one in
    /// [`REMIND_EVERY`] MAC'd calls, so callers keep the replicas that still answer ahead of
    /// those that stopped. Never when this host cannot check MACs.
    pub fn introduces(&self, proof: Option<Proof>) -> bool {
        self.verifier.takes_macs()
            && match proof {
                Some(Proof::Signature) => true,
                Some(Proof::PairKey) => {
                    self.reminders.fetch_add(1, Ordering::Relaxed).is_multiple_of(REMIND_EVERY)
                }
                None => false,
            }
    }

    /// Calls received over NATS and accepted by signature and by pair key.
    pub fn accepted_calls(&self) -> (u64, u64) {
        self.verifier.accepted()
    }

    /// Asks the policy service (if any) whether `source` may call `operation` of `target`.
    pub async fn authorize(
        &self,
        source: &str,
        target: &str,
        operation: &str,
    ) -> Result<(), InvokeError> {
        let Some(policy) = &self.policy else { return Ok(()) };
        let request = trellis_proto::PolicyRequest {
            kind: "invoke".into(),
            id: target.to_owned(),
            source: source.to_owned(),
            operation: operation.to_owned(),
            ..Default::default()
        };
        policy
            .decide(request)
            .await
            .map_err(|reason| InvokeError::new(InvokeErrorKind::Denied, reason))
    }

    /// Replaces the identity token this host's calls carry.
    pub fn set_identity(&self, identity: String) {
        self.signer.set_identity(identity);
    }

    /// Admission slots free now.
    /// The component running under `id` on this host now.
    pub(crate) fn component(&self, id: &str) -> Option<Arc<Running>> {
        self.components.get(id)
    }

    pub fn free_slots(&self) -> usize {
        self.admission.available_permits()
    }

    /// Calls refused since start.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// A refused call: the counter, a log line and an `invocation_denied` event.
    pub async fn report_denied(&self, target: &str, e: &InvokeError) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target, reason = e.message(), "invocation denied");
        self.events.component(EventKind::InvocationDenied, target, "", e.message()).await;
    }

    pub fn intake(&self) -> Arc<Semaphore> {
        self.intake.clone()
    }

    pub fn nats(&self) -> &Client {
        &self.nats
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn max_call_time(&self) -> Duration {
        self.max_call_time
    }

    /// Invokes `interface.function` of `target` on behalf of `source` over its link `link`:
    /// a component on this host in process, then a provider of this host over its pipe, then
    /// any replica in the lattice over NATS.
    pub async fn invoke(&self, call: Call<'_>) -> Result<Bytes, InvokeError> {
        self.route(call, Nesting::Outermost).await
    }

    async fn route(&self, call: Call<'_>, nesting: Nesting) -> Result<Bytes, InvokeError> {
        let Call { source, target, interface, function, link, payload, timeout, trace } = call;
        let timeout = timeout.min(self.max_call_time);
        let local = self.components.get(target);
        let provider = if local.is_none() { self.providers.get(target) } else { None };
        // Calls that stay on this host get the policy's word too (remote ones get it from the
        // receiving host), so placement never decides what is allowed.
        if self.policy.is_some() && (local.is_some() || provider.is_some()) {
            let operation = format!("{interface}.{function}");
            if let Err(e) = self.authorize(source, target, &operation).await {
                self.report_denied(target, &e).await;
                return Err(e);
            }
        }
        if let Some(local) = local {
            // In process: the callee's span continues the caller's.
            let callee = TraceContext::next(trace);
            let mut span =
                Span::start(callee, trace, Kind::Internal, || format!("{interface}/{function}"));
            span.attr("trellis.target", || target.to_owned());
            let call = LocalCall {
                interface,
                function,
                payload: &payload,
                timeout,
                nesting,
                trace: callee,
            };
            let result = self.call_local(&local, call).await;
            if let Err(e) = &result {
                span.fail(|| e.to_string());
            }
            return result;
        }
        if let Some(pipe) = provider {
            let call = ProviderCall {
                source,
                link,
                interface,
                function,
                payload: &payload,
                timeout,
                trace,
            };
            return pipe.call(call).await;
        }
        if validate_id("target", target).is_err() || !is_token(interface) || !is_token(function) {
            return Err(InvokeError::new(
                InvokeErrorKind::BadRequest,
                format!("invalid call target `{target}` / `{interface}.{function}`"),
            ));
        }
        // Over NATS: a client span here, the receiving host's server span its child.
        let client = TraceContext::next(trace);
        let mut span =
            Span::rpc((client, trace, Kind::Client), (interface, function), (source, target));
        let call = Call {
            source,
            target,
            interface,
            function,
            link,
            payload,
            timeout,
            trace: Some(client),
        };
        let result = send_invocation(
            &self.nats,
            &self.subjects,
            Some((&self.signer, Replies::Connection)),
            call,
        )
        .await;
        if let Err(e) = &result {
            span.fail(|| e.to_string());
        }
        result
    }

    /// Runs a call received over NATS on provider `id` of this host.
    pub async fn call_provider(
        &self,
        id: &str,
        call: ProviderCall<'_>,
    ) -> Result<Bytes, InvokeError> {
        match self.providers.get(id) {
            Some(pipe) => pipe.call(call).await,
            None => Err(unavailable(&format!("provider `{id}` is restarting on this host"))),
        }
    }

    /// Runs a call on a component of this host.
    pub async fn call_local(
        &self,
        running: &Running,
        call: LocalCall<'_>,
    ) -> Result<Bytes, InvokeError> {
        running.invocations.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.run_local(running, call).await;
        running.durations.observe(started.elapsed());
        if let Err(e) = &result {
            running.errors.fetch_add(1, Ordering::Relaxed);
            running.errors_by_kind[e.kind() as usize].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn run_local(
        &self,
        running: &Running,
        call: LocalCall<'_>,
    ) -> Result<Bytes, InvokeError> {
        let LocalCall { interface, function, payload, timeout, nesting, trace } = call;
        let is_http = interface == INCOMING_HANDLER && function == http::HANDLE;
        if !is_http && !running.component.exports_function(interface, function) {
            return Err(InvokeError::new(
                InvokeErrorKind::BadRequest,
                format!("component `{}` does not export {interface}.{function}", running.id),
            ));
        }
        let limits = &running.limits;
        if payload.len() > limits.max_request_bytes {
            return Err(InvokeError::new(
                InvokeErrorKind::TooLarge,
                format!(
                    "the request to `{}` is {} bytes; its limit is {}",
                    running.id,
                    payload.len(),
                    limits.max_request_bytes
                ),
            ));
        }
        // The component's own concurrency limit refuses at once: callers learn fast.
        let own = match &limits.concurrency {
            Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| {
                unavailable(&format!(
                    "component `{}` is at its limit of {} concurrent calls",
                    running.id, limits.max_concurrent
                ))
            })?),
            None => None,
        };
        let deadline = Instant::now() + timeout.min(limits.timeout);
        // A call made by a component running here rides on its caller's slot: taking a second
        // one could wait forever once every slot is held by a caller waiting for its callee.
        let permit = match nesting {
            Nesting::Inner => None,
            Nesting::Outermost => {
                let admitted = self.admission.clone().acquire_owned();
                match tokio::time::timeout_at(deadline, admitted).await {
                    Ok(Ok(permit)) => Some(permit),
                    Ok(Err(_)) => return Err(unavailable("the host is shutting down")),
                    Err(_) => return Err(unavailable("the host is at its concurrent call limit")),
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let settings = CallSettings {
            component_id: &running.id,
            timeout: left,
            max_memory_bytes: limits.max_memory_bytes,
            outbound: self.me.upgrade().map(|r| r as Arc<dyn Outbound>),
            trace,
            // Held until the instance is gone, even when the guest runs on after its answer.
            slots: [permit, own],
        };
        if !is_http {
            return running.component.call_function(interface, function, payload, settings).await;
        }
        let request: HttpRequest = http::decode(payload).map_err(|e| {
            InvokeError::new(InvokeErrorKind::BadRequest, format!("undecodable HTTP request: {e}"))
        })?;
        let response = running.component.handle_http(request, settings).await?;
        http::encode(&response).map(Bytes::from).map_err(|e| {
            InvokeError::new(InvokeErrorKind::Trap, format!("unencodable HTTP response: {e}"))
        })
    }

    /// Waits until no call runs on this host (or `timeout` passes), then refuses new ones.
    pub async fn drain(&self, max_calls: u32, timeout: Duration) -> bool {
        let drained = tokio::time::timeout(timeout, self.admission.acquire_many(max_calls)).await;
        self.admission.close();
        matches!(drained, Ok(Ok(_)))
    }
}

impl Outbound for Router {
    fn resolve(&self, source: &str, interface: &str, name: &str) -> Result<Arc<Link>, InvokeError> {
        self.links.resolve(source, interface, name).inspect_err(|e| {
            tracing::warn!(component = source, interface, link = name, "call over a missing link");
            let (events, source, reason) =
                (self.events.clone(), source.to_owned(), e.message().to_owned());
            tokio::spawn(async move {
                events.component(EventKind::NoLink, &source, "", &reason).await;
            });
        })
    }

    fn config(&self, source: &str) -> Vec<(String, String)> {
        match self.components.get(source) {
            Some(running) => self.configs.merged(&running.config),
            None => Vec::new(),
        }
    }

    fn call<'a>(
        &'a self,
        source: &'a str,
        link: &'a Link,
        function: &'a str,
        (payload, timeout, trace): (Bytes, Duration, TraceContext),
    ) -> CallFuture<'a> {
        Box::pin(async move {
            // Outgoing calls are made while the caller's instance holds its admission slot.
            let interface = link.interface.to_string();
            // A link may bound its calls more tightly than the caller's own deadline.
            let timeout = match link.config.get("timeout_ms").map(|t| t.parse::<u64>()) {
                Some(Ok(ms)) => timeout.min(Duration::from_millis(ms)),
                _ => timeout,
            };
            let call = Call {
                source,
                target: &link.target,
                interface: &interface,
                function,
                link: &link.name,
                payload,
                timeout,
                trace: Some(trace),
            };
            self.route(call, Nesting::Inner).await
        })
    }
}

/// Whether a call comes from outside this host's components (it takes an admission slot) or
/// from one of them (it rides on its caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nesting {
    Outermost,
    Inner,
}

/// A call to a component of this host.
#[derive(Debug)]
pub(crate) struct LocalCall<'a> {
    pub interface: &'a str,
    pub function: &'a str,
    pub payload: &'a [u8],
    pub timeout: Duration,
    pub nesting: Nesting,
    /// The callee's span.
    pub trace: TraceContext,
}

/// One subject token: no separators, wildcards or whitespace.
fn is_token(t: &str) -> bool {
    !t.is_empty() && !t.bytes().any(|b| matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace())
}

fn unavailable(why: &str) -> InvokeError {
    InvokeError::new(InvokeErrorKind::Unavailable, why)
}
