//! Serving invocations from the lattice: one queue subscription per component or provider of
//! this host. Each message passes the [`Gate`] (plain checks, no I/O but the policy service's
//! word) before the router runs it on its target.

mod gate;

pub(crate) use gate::Gate;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;
use trellis_lattice::answers::NOTICE_EVERY;
use trellis_lattice::chunks::{self, Announced};
use trellis_lattice::envelope::trace_parent;
use trellis_lattice::envelope::{
    InvokeError, InvokeErrorKind, call_depth, field, header, link_name, unix_ms,
};
use trellis_lattice::signing::{self, Body, BodyDigest};
use trellis_lattice::subject::Subjects;
use trellis_lattice::telemetry::{Kind, Span};
use trellis_lattice::trace::TraceContext;

use crate::components::Running;
use crate::providers::ProviderCall;
use crate::router::{LocalCall, Router};
use crate::slots::{Intake, Nesting, unavailable};
use gate::{Admitted, Arrival};

/// Subscribes to the component's invocations, spread over its replicas by queue group.
pub(crate) async fn subscribe(
    nats: &Client,
    subjects: &Subjects,
    id: &str,
) -> Result<Subscriber, async_nats::SubscribeError> {
    nats.queue_subscribe(subjects.rpc_all(id), Subjects::rpc_queue_group(id)).await
}

/// What a subscription serves.
#[derive(Debug)]
pub(crate) enum Target {
    /// A component of this host.
    Component(Arc<Running>),
    /// A provider process of this host, by id.
    Provider(String),
}

impl Target {
    fn id(&self) -> &str {
        match self {
            Target::Component(running) => &running.id,
            Target::Provider(id) => id,
        }
    }
}

/// Calls beyond those received that the queue group may still hand a replica while it leaves.
const FENCE: u64 = 64;
/// How long a leaving replica waits for its fence to close before it unsubscribes plainly.
const FENCE_WAIT: Duration = Duration::from_secs(1);

/// Serves each message on its own task until `stop` fires; then leaves the queue group without
/// dropping a call NATS already sent it.
///
/// async-nats' `drain` sends UNSUB and forgets the subscription without waiting for the
/// server's answer to the PING after it, so a call the server sent in that round trip arrives
/// for an unknown subscription and is dropped (its caller waits out its deadline). Instead the
/// replica asks the server to end the subscription after `received + FENCE` messages: the
/// server stops at that count, and the client ends the subscription at the same count, after
/// every message the server sent has arrived. Meanwhile the replica serves what still comes.
/// When fewer come within [`FENCE_WAIT`] (little traffic), or the connection was re-made since
/// subscribing (the server's count restarted, the client's did not), it drains as before.
pub(crate) async fn serve(
    mut sub: Subscriber,
    stop: oneshot::Receiver<()>,
    target: Target,
    router: Arc<Router>,
) {
    let mut target = Arc::new(target);
    let connects = || router.nats().statistics().connects.load(Ordering::Relaxed);
    let connected_at_start = connects();
    tokio::pin!(stop);
    let (mut received, mut leaving, mut fence_wait) = (0u64, false, None);
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = &mut stop, if !leaving => {
                leaving = true;
                let left = if connects() == connected_at_start {
                    fence_wait = Some(tokio::time::Instant::now() + FENCE_WAIT);
                    tracing::debug!(target = %target.id(), received, "leaving the queue group");
                    sub.unsubscribe_after(received + FENCE).await
                } else {
                    tracing::debug!(target = %target.id(), "leaving the queue group (reconnected)");
                    sub.drain().await
                };
                if let Err(e) = left {
                    tracing::debug!(target = %target.id(), error = %e, "unsubscribe failed");
                    return;
                }
                continue;
            }
            () = sleep_until(fence_wait), if fence_wait.is_some() => {
                fence_wait = None;
                tracing::debug!(target = %target.id(), received, "fence still open; draining");
                if let Err(e) = sub.drain().await {
                    tracing::debug!(target = %target.id(), error = %e, "drain failed");
                    return;
                }
                continue;
            }
        };
        received += 1;
        if leaving {
            // Stopped: it runs nothing new; the caller sends the call again, for another
            // replica. Refusing (rather than serving until it has left) keeps "stopped" meaning
            // stopped, for a replica replaced by another version too.
            let e = unavailable(&format!(
                "the replica of `{}` that got the call is stopping and did not run it",
                target.id()
            ));
            refuse_at_once(&router, &msg, &e, Some(header::LEAVING)).await;
            continue;
        }
        // Bounded intake: a flood beyond it is refused at once, before any check, rather than
        // left unread in NATS (a slow consumer loses calls, and their callers time out).
        let slot = match router.intake() {
            Intake::Room(slot) => slot,
            Intake::Full => {
                let e = unavailable(&format!(
                    "the host serving `{}` is overloaded (its intake of calls is full); try \
                     again shortly",
                    target.id()
                ));
                refuse_at_once(&router, &msg, &e, Some(header::SHED)).await;
                continue;
            }
            Intake::Closed => return,
        };
        // A component replaced in place keeps its subscription: a call goes to the version
        // running now; once stopped, calls still being drained go to the last one that ran.
        if let Target::Component(running) = &*target
            && let Some(now) = router.component(&running.id)
            && !Arc::ptr_eq(&now, running)
        {
            target = Arc::new(Target::Component(now));
        }
        let (target, router) = (target.clone(), router.clone());
        // The task is kept small (2 KiB: rare paths below are boxed), since spawning moves it.
        tokio::spawn(async move {
            // A caller that authenticated its call hears that it still runs (see
            // `trellis_lattice::answers`), so it can tell a slow call from a dead replica.
            let notices = authenticated(msg.headers.as_ref()).then(|| msg.reply.clone()).flatten();
            let work = std::pin::pin!(handle(msg, &target, &router));
            keep_caller_informed(work, router.nats(), notices).await;
            drop(slot);
        });
    }
}

async fn handle(msg: Message, target: &Target, router: &Router) {
    let Some(reply) = msg.reply.clone() else {
        tracing::debug!(subject = %msg.subject, "invocation without reply subject dropped");
        return;
    };
    let id = target.id();
    // A body too large for one message is only announced: the call is authenticated by its
    // announced length and digest, and the body pulled only after that.
    // Refusals of calls that claim a host's authentication are authenticated for that host, so
    // its caller can tell them from forgeries.
    let claimed = || claimed_caller(msg.headers.as_ref(), msg.reply.as_deref().unwrap_or_default());
    let announced = match chunks::announced(msg.headers.as_ref()).transpose() {
        Ok(announced) => announced,
        Err(e) => return Box::pin(reply_error(router, reply, id, &e, claimed())).await,
    };
    let body = match &announced {
        Some(announced) => Body::Announced(announced.body),
        None => Body::Bytes(&msg.payload),
    };
    let arrival = Arrival {
        subject: msg.subject.as_str(),
        reply: reply.as_str(),
        headers: msg.headers.as_ref(),
        body,
    };
    let (result, answered) = match router.gate().check(&arrival, unix_ms()) {
        Ok(admitted) => {
            let payload = match &announced {
                Some(announced) => Payload::Announced(announced),
                None => Payload::Inline(&msg.payload),
            };
            let answered = Answered {
                introduce: admitted.introduce,
                caller: admitted.caller_host.map(|host| (host, arrival.field(header::JTI))),
            };
            (run(router, target, &arrival, admitted, payload).await, answered)
        }
        Err(e) => (Err(e), Answered { introduce: false, caller: claimed() }),
    };
    match result {
        // A subject clone shares its bytes.
        Ok(body) => answer(router, reply.clone(), id, body, answered).await,
        Err(e) => Box::pin(reply_error(router, reply.clone(), id, &e, answered.caller)).await,
    }
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs `work`, telling the caller at `reply` (if any) every [`NOTICE_EVERY`] that it still
/// runs.
async fn keep_caller_informed(
    // By reference: a future taken by value is held twice in this one's state.
    mut work: std::pin::Pin<&mut impl Future<Output = ()>>,
    nats: &Client,
    reply: Option<async_nats::Subject>,
) {
    let Some(reply) = reply else { return work.await };
    let tick = tokio::time::sleep(NOTICE_EVERY);
    tokio::pin!(tick);
    loop {
        tokio::select! {
            () = work.as_mut() => return,
            () = &mut tick => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(header::RUNNING, "1");
                // Boxed: rare, and it would enlarge every call's task.
                let sent =
                    Box::pin(nats.publish_with_headers(reply.clone(), headers, Bytes::new())).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "running notice not sent");
                }
                tick.as_mut().reset(tokio::time::Instant::now() + NOTICE_EVERY);
            }
        }
    }
}

/// Whether a call carries a signature or MACs (its caller takes answers through
/// `trellis_lattice::answers`).
fn authenticated(headers: Option<&async_nats::HeaderMap>) -> bool {
    field(headers, signing::SIG).is_some() || field(headers, signing::MAC).is_some()
}

/// The host a call claims to come from (the owner of the inbox it wants its answer in) and the
/// call's id, when it carries a signature or MACs; `None` for plain calls.
fn claimed_caller<'m>(
    headers: Option<&'m async_nats::HeaderMap>,
    reply: &'m str,
) -> Option<(&'m str, &'m str)> {
    if !authenticated(headers) {
        return None;
    }
    let headers = headers?;
    let jti = field(Some(headers), header::JTI)?;
    Some((signing::inbox_owner(reply)?, jti))
}

/// How an answer is sent.
#[derive(Debug, Clone, Copy)]
struct Answered<'m> {
    /// Name this host on it.
    introduce: bool,
    /// The host that authenticated the call and the call's id: the answer is authenticated
    /// for that host.
    caller: Option<(&'m str, &'m str)>,
}

/// A call's body: in the message, or announced and pulled once the call is authorized.
#[derive(Debug, Clone, Copy)]
enum Payload<'m> {
    Inline(&'m bytes::Bytes),
    Announced(&'m Announced),
}

/// Pulls an announced body, within the target's request limit.
async fn pull(
    router: &Router,
    target: &Target,
    announced: &Announced,
) -> Result<bytes::Bytes, InvokeError> {
    let limit = match target {
        Target::Component(running) => running.limits.max_request_bytes,
        Target::Provider(_) => chunks::MAX_BODY,
    };
    let len = announced.len();
    if len > limit {
        return Err(InvokeError::new(
            InvokeErrorKind::TooLarge,
            format!("the request to `{}` is {len} bytes; its limit is {limit}", target.id()),
        ));
    }
    chunks::fetch(router.nats(), announced, router.max_call_time()).await
}

/// Runs a call the gate let through on its target, after the policy service's word (and,
/// for a body in chunks, after pulling it).
async fn run(
    router: &Router,
    target: &Target,
    arrival: &Arrival<'_>,
    admitted: Admitted<'_>,
    payload: Payload<'_>,
) -> Result<bytes::Bytes, InvokeError> {
    let Admitted { interface, function, source, timeout, .. } = admitted;
    let id = target.id();
    if let Target::Component(running) = target {
        // The callee's claims may take calls only from some components (signed with the call).
        let caller = field(arrival.headers, header::CALLER);
        running.admit_caller(caller)?;
    }
    router.gate().authorize(source, id, arrival.field(header::OP)).await?;
    let payload = match payload {
        Payload::Inline(body) => body.clone(),
        // Boxed, as the rare paths below: it would enlarge every call's task.
        Payload::Announced(announced) => Box::pin(pull(router, target, announced)).await?,
    };
    // This hop's span continues the caller's trace (or starts one).
    let parent = trace_parent(arrival.headers);
    let this = TraceContext::next(parent);
    let mut span = Span::rpc((this, parent, Kind::Server), (interface, function), (source, id));
    let trace = span.context();
    span.attr("trellis.link", || link_name(arrival.headers).to_owned());
    let result = match target {
        Target::Component(running) => {
            let call = LocalCall {
                interface,
                function,
                payload: &payload,
                timeout,
                nesting: Nesting::Outermost,
                trace,
                depth: call_depth(arrival.headers),
            };
            // Boxed: the call's future is large, and the task holding it is moved on spawn.
            Box::pin(router.call_local(running, call)).await
        }
        Target::Provider(id) => {
            let call = ProviderCall {
                source,
                link: link_name(arrival.headers),
                interface,
                function,
                payload: &payload,
                timeout,
                trace: Some(trace),
            };
            Box::pin(router.call_provider(id, call)).await
        }
    };
    if let Err(e) = &result {
        span.fail(|| e.to_string());
    }
    result
}

/// Sends a successful answer, authenticated for the host that sent the call and naming this
/// host when it should.
async fn answer(
    router: &Router,
    reply: async_nats::Subject,
    id: &str,
    body: bytes::Bytes,
    answered: Answered<'_>,
) {
    let nats = router.nats();
    let mut headers = async_nats::HeaderMap::new();
    // The caller learns (or is reminded) who answered, so its next calls here carry a MAC.
    if answered.introduce {
        router.signer().introduce(&mut headers);
    }
    let chunked = chunks::needs_chunks(nats, &body);
    let digest = (chunked || answered.caller.is_some()).then(|| BodyDigest::of(&body));
    if let (Some((caller, jti)), Some(digest)) = (answered.caller, digest) {
        router.signer().authenticate_answer(&mut headers, caller, jti, digest);
    }
    let sent = match digest.filter(|_| chunked) {
        // Too large for one message: the caller pulls it.
        Some(digest) => {
            let offer = chunks::offer(nats, &mut headers, body, &digest, router.max_call_time());
            match Box::pin(offer).await {
                Ok(()) => nats.publish_with_headers(reply, headers, bytes::Bytes::new()).await,
                Err(e) => {
                    return Box::pin(reply_error(router, reply, id, &e, answered.caller)).await;
                }
            }
        }
        None => return router.post_answer(reply, headers, body),
    };
    if let Err(e) = sent {
        tracing::warn!(target = id, error = %e, "reply not sent");
    }
}

/// Refuses a call before looking at it (overloaded, or leaving): at once, MAC'd for its caller
/// (a key agreement with a caller not met yet only within [`Router::may_agree`]), with `mark`
/// set when given.
async fn refuse_at_once(router: &Router, msg: &Message, e: &InvokeError, mark: Option<&str>) {
    let Some(reply) = msg.reply.clone() else { return };
    let mut headers = e.to_headers();
    if let Some(mark) = mark {
        headers.insert(mark, "1");
    }
    if let Some((caller, jti)) = claimed_caller(msg.headers.as_ref(), &reply) {
        let body = signing::answer_body(Some(&headers), e.message().as_bytes(), None);
        let signer = router.signer();
        let may_agree = || router.may_agree(unix_ms() / 1000);
        if signer.authenticate_answer_if(&mut headers, (caller, jti), body, may_agree) {
            signer.introduce(&mut headers);
        }
    }
    let sent =
        router.nats().publish_with_headers(reply, headers, e.message().to_owned().into()).await;
    if let Err(err) = sent {
        tracing::debug!(error = %err, refusal = %e, "refusal not sent");
    }
}

/// Answers with a typed error (and reports refusals), authenticated for `caller`'s host.
async fn reply_error(
    router: &Router,
    reply: async_nats::Subject,
    id: &str,
    e: &InvokeError,
    caller: Option<(&str, &str)>,
) {
    let mut headers = e.to_headers();
    if signing::is_key_needed(e) {
        // Routine: a caller meeting this host; it sends the call again, signed.
        headers.insert(signing::KEY_NEEDED, "1");
    } else if e.kind() == InvokeErrorKind::Denied {
        Box::pin(router.report_denied(id, e)).await;
    }
    if let Some((caller, jti)) = caller {
        let body = signing::answer_body(Some(&headers), e.message().as_bytes(), None);
        router.signer().authenticate_answer(&mut headers, caller, jti, body);
        // With its identity, so a caller trusting only some clusters can take it.
        router.signer().introduce(&mut headers);
    }
    tracing::debug!(target = id, error = %e, "invocation failed");
    let sent =
        router.nats().publish_with_headers(reply, headers, e.message().to_owned().into()).await;
    if let Err(e) = sent {
        tracing::warn!(target = id, error = %e, "reply not sent");
    }
}
