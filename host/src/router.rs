//! Where a call goes: a replica on this host is called in process; otherwise NATS spreads the
//! call over the target's replicas on other hosts (queue group).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use tokio::time::Instant;
use trellis_lattice::answers::Answers;
use trellis_lattice::client::{Call, send_invocation};
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind, MAX_CALL_DEPTH};
use trellis_lattice::http::{self, HttpRequest, INCOMING_HANDLER};
use trellis_lattice::link::Link;
use trellis_lattice::outbox::{Outbox, Outgoing};
use trellis_lattice::policy::Policy;
use trellis_lattice::signing::{Signer, Verifier};
use trellis_lattice::subject::{EventKind, Subjects};
use trellis_lattice::telemetry::{Kind, Span};
use trellis_lattice::trace::TraceContext;

use crate::components::{Components, Running};
use crate::inbound::Gate;
use crate::links::{Configs, Links};
use crate::providers::{Pipes, ProviderCall};
use crate::route::{self, Route};
use crate::runtime::{CallFuture, CallSettings, Outbound};
use crate::slots::{Nesting, Slots, unavailable};
use trellis_lattice::events::Events;

/// What guards calls crossing NATS: signing out, verification and policy in.
#[derive(Debug)]
pub(crate) struct Guard {
    pub signer: Signer,
    pub verifier: Verifier,
    pub policy: Option<Policy>,
}

/// Routes invocations from this host's callers (providers, components) and runs the calls that
/// land on its components.
#[derive(Debug)]
pub(crate) struct Router {
    pub components: Arc<Components>,
    nats: Client,
    subjects: Subjects,
    /// How many calls run at once.
    slots: Slots,
    /// Checks the calls this host receives over NATS (and asks the policy service).
    gate: Gate,
    /// Signs the calls this host sends over NATS and takes their authentic answers.
    answers: Answers,
    /// Answers to calls, published together (see `trellis_lattice::outbox`).
    outbox: Arc<Outbox>,
    /// The task publishing them.
    sender: tokio::task::AbortHandle,
    events: Events,
    /// Where components' imports lead.
    links: Arc<Links>,
    /// Named config components read.
    configs: Arc<Configs>,
    /// This host's provider processes.
    providers: Arc<Pipes>,
    /// Itself, handed to the components it runs as their way out.
    me: Weak<Router>,
    /// Call durations for the OTLP push, once it runs.
    pub durations: std::sync::OnceLock<crate::metrics::otlp::Durations>,
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
        (nats, subjects): (Client, Subjects),
        (max_calls, max_call_time): (u32, Duration),
        Guard { signer, verifier, policy }: Guard,
        events: Events,
    ) -> Arc<Self> {
        let gate = Gate::new(subjects.clone(), verifier, policy, max_call_time);
        let answers = Answers::new(nats.clone(), Arc::new(signer));
        let outbox = Arc::new(Outbox::default());
        let sender = tokio::spawn({
            let (outbox, nats) = (outbox.clone(), nats.clone());
            async move {
                let failed = |_, e| tracing::warn!(error = %e, "answer not sent");
                outbox.send(nats, failed).await;
            }
        })
        .abort_handle();
        Arc::new_cyclic(|me| Self {
            components,
            nats,
            subjects,
            slots: Slots::new(max_calls),
            gate,
            answers,
            outbox,
            sender,
            events,
            links,
            configs,
            providers,
            me: me.clone(),
            durations: std::sync::OnceLock::new(),
        })
    }

    /// The checks calls received over NATS pass.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Signs, introduces this host on, and authenticates answers.
    pub fn signer(&self) -> &Signer {
        self.answers.signer()
    }

    /// Calls received over NATS and accepted by signature and by pair key.
    pub fn accepted_calls(&self) -> (u64, u64) {
        self.gate.accepted()
    }

    /// Replaces the identity token this host's calls carry.
    pub fn set_identity(&self, identity: String) {
        self.signer().set_identity(identity);
    }

    /// The component running under `id` on this host now.
    pub(crate) fn component(&self, id: &str) -> Option<Arc<Running>> {
        self.components.get(id)
    }

    /// Admission slots free now.
    pub fn free_slots(&self) -> usize {
        self.slots.free()
    }

    /// Room to handle one more message received from NATS, without waiting.
    pub fn intake(&self) -> crate::slots::Intake {
        self.slots.intake()
    }

    /// See [`crate::slots::Slots::may_agree`].
    pub fn may_agree(&self, now_s: u64) -> bool {
        self.slots.may_agree(now_s)
    }

    /// Calls refused at once because this host's intake was full, since start.
    pub fn shed(&self) -> u64 {
        self.slots.shed()
    }

    /// Calls refused since start.
    pub fn denied(&self) -> u64 {
        self.gate.denied()
    }

    /// A refused call: the counter, a log line and an `invocation_denied` event.
    pub async fn report_denied(&self, target: &str, e: &InvokeError) {
        self.gate.count_denied();
        tracing::warn!(target, reason = e.message(), "invocation denied");
        self.events.component(EventKind::InvocationDenied, target, "", e.message()).await;
    }

    pub fn nats(&self) -> &Client {
        &self.nats
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn max_call_time(&self) -> Duration {
        self.gate.max_call_time()
    }

    /// Invokes `interface.function` of `target` on behalf of `source` over its link `link`:
    /// a component on this host in process, then a provider of this host over its pipe, then
    /// any replica in the lattice over NATS.
    pub async fn invoke(&self, call: Call<'_>) -> Result<Bytes, InvokeError> {
        self.route(call, Nesting::Outermost).await
    }

    async fn route(&self, call: Call<'_>, nesting: Nesting) -> Result<Bytes, InvokeError> {
        let Call { source, target, interface, function, link, trace, caller, depth, .. } = call;
        if depth > MAX_CALL_DEPTH {
            return Err(too_deep(source, target));
        }
        let timeout = call.timeout.min(self.max_call_time());
        let route = route::choose(
            (target, interface, function),
            || self.components.get(target),
            || self.providers.get(target),
        )?;
        // Calls that stay on this host get the policy's word too (remote ones get it from the
        // receiving host), so placement never decides what is allowed.
        if self.gate.has_policy() && !matches!(route, Route::Remote) {
            let operation = format!("{interface}.{function}");
            if let Err(e) = self.gate.authorize(source, target, &operation).await {
                self.report_denied(target, &e).await;
                return Err(e);
            }
        }
        match route {
            Route::Local(local) => {
                if let Err(e) = local.admit_caller(caller) {
                    self.report_denied(target, &e).await;
                    return Err(e);
                }
                // In process: the callee's span continues the caller's.
                let mut span =
                    Span::start(TraceContext::next(trace), trace, Kind::Internal, || {
                        format!("{interface}/{function}")
                    });
                let callee = span.context();
                span.attr("trellis.target", || target.to_owned());
                let call = LocalCall {
                    interface,
                    function,
                    payload: &call.payload,
                    timeout,
                    nesting,
                    trace: callee,
                    depth,
                };
                let result = self.call_local(&local, call).await;
                if let Err(e) = &result {
                    span.fail(|| e.to_string());
                }
                result
            }
            Route::Provider(pipe) => {
                let call = ProviderCall {
                    source,
                    link,
                    interface,
                    function,
                    payload: &call.payload,
                    timeout,
                    trace,
                };
                pipe.call(call).await
            }
            Route::Remote => {
                // Over NATS: a client span here, the receiving host's server span its child.
                let mut span = Span::rpc(
                    (TraceContext::next(trace), trace, Kind::Client),
                    (interface, function),
                    (source, target),
                );
                let client = span.context();
                let call = Call { timeout, trace: Some(client), ..call };
                let answers = Some(&self.answers);
                let started = Instant::now();
                let result = match send_invocation(
                    &self.nats,
                    &self.subjects,
                    answers,
                    call.clone(),
                )
                .await
                {
                    // Nobody runs it: it may scale to zero; ask for a replica and wait for it.
                    Err(e) if e.kind() == InvokeErrorKind::NoResponders => {
                        let waker = crate::wake::Waker {
                            nats: &self.nats,
                            subjects: &self.subjects,
                            answers: &self.answers,
                        };
                        waker.call(call, e, started).await
                    }
                    other => other,
                };
                if let Err(e) = &result {
                    span.fail(|| e.to_string());
                }
                result
            }
        }
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
        let elapsed = started.elapsed();
        running.durations.observe(elapsed);
        if let Some(durations) = self.durations.get() {
            durations.record(elapsed, &running.component_attribute);
        }
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
        let LocalCall { interface, function, payload, timeout, nesting, trace, depth } = call;
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
        let deadline = Instant::now() + timeout.min(limits.timeout);
        let slots = self.slots.admit(&running.id, limits, nesting, deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let settings = CallSettings {
            component_id: &running.id,
            timeout: left,
            max_memory_bytes: limits.max_memory_bytes,
            outbound: self.me.upgrade().map(|r| r as Arc<dyn Outbound>),
            trace,
            depth,
            // Held until the instance is gone, even when the guest runs on after its answer.
            slots,
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
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.slots.drain(timeout).await
            && tokio::time::timeout_at(deadline, self.outbox.handed()).await.is_ok()
    }

    /// Sends an answer to `reply` with the others posted at about the same time.
    pub fn post_answer(&self, reply: Subject, headers: HeaderMap, body: Bytes) {
        self.outbox.post(Outgoing { subject: reply, reply: None, headers, body, token: 0 });
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.sender.abort();
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
            Some(running) => {
                let mut config = self.configs.merged(&running.config);
                // A granted secret appears under its name, over a config key of that name.
                for (name, value) in &running.secrets {
                    config.retain(|(key, _)| key != name);
                    config.push((name.clone(), value.expose().to_owned()));
                }
                config
            }
            None => Vec::new(),
        }
    }

    fn secret(&self, source: &str, name: &str) -> Option<String> {
        let running = self.components.get(source)?;
        let (_, value) = running.secrets.iter().find(|(granted, _)| granted == name)?;
        Some(value.expose().to_owned())
    }

    fn call<'a>(
        &'a self,
        source: &'a str,
        link: &'a Link,
        function: &'a str,
        (payload, timeout, trace, depth): (Bytes, Duration, TraceContext, u32),
    ) -> CallFuture<'a> {
        Box::pin(async move {
            // Outgoing calls are made while the caller's instance holds its admission slot.
            let interface = link.interface.to_string();
            // The callee may take calls only from some components: say which one calls.
            let me = self.components.get(source);
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
                caller: Some(me.as_deref().map_or("", Running::claims_name)),
                depth: depth + 1,
            };
            self.route(call, Nesting::Inner).await
        })
    }
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
    /// Calls before this one in its chain.
    pub depth: u32,
}

/// The refusal of a call deeper than [`MAX_CALL_DEPTH`] in its chain.
fn too_deep(source: &str, target: &str) -> InvokeError {
    InvokeError::new(
        InvokeErrorKind::BadRequest,
        format!(
            "the call from `{source}` to `{target}` is more than {MAX_CALL_DEPTH} calls deep in \
             its chain, so components probably call each other in a cycle; check their links"
        ),
    )
}
