//! Serving invocations from the lattice: one queue subscription per component or provider of
//! this host.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;
use tokio::sync::oneshot;
use trellis_lattice::chunks;
use trellis_lattice::envelope::trace_parent;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind, header, link_name, remaining};
use trellis_lattice::signing::{self, Proof};
use trellis_lattice::subject::{Subject, Subjects};
use trellis_lattice::telemetry::{Kind, Span};
use trellis_lattice::trace::TraceContext;

use crate::components::Running;
use crate::providers::ProviderCall;
use crate::router::{LocalCall, Nesting, Router};

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

/// Serves each message on its own task until `stop` fires; then drains the subscription, so
/// calls NATS already delivered are answered rather than dropped.
pub(crate) async fn serve(
    mut sub: Subscriber,
    stop: oneshot::Receiver<()>,
    target: Target,
    router: Arc<Router>,
) {
    let mut target = Arc::new(target);
    tokio::pin!(stop);
    let mut draining = false;
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = &mut stop, if !draining => {
                draining = true;
                if let Err(e) = sub.drain().await {
                    tracing::debug!(target = %target.id(), error = %e, "drain failed");
                    return;
                }
                continue;
            }
        };
        // Bounded intake: a flood waits here (and in NATS) instead of becoming unbounded tasks
        // that each verify signatures and ask the policy service.
        let Ok(slot) = router.intake().acquire_owned().await else { return };
        // A component replaced in place keeps its subscription: a call goes to the version
        // running now; once stopped, calls still being drained go to the last one that ran.
        if let Target::Component(running) = &*target
            && let Some(now) = router.component(&running.id)
            && !Arc::ptr_eq(&now, running)
        {
            target = Arc::new(Target::Component(now));
        }
        let (target, router) = (target.clone(), router.clone());
        tokio::spawn(async move {
            handle(msg, &target, &router).await;
            drop(slot);
        });
    }
}

async fn handle(mut msg: Message, target: &Target, router: &Router) {
    let Some(reply) = msg.reply.clone() else {
        tracing::debug!(subject = %msg.subject, "invocation without reply subject dropped");
        return;
    };
    let nats = router.nats();
    let id = target.id();
    // A body too large for one message is pulled first, within the target's request limit; the
    // signature (checked next) covers it whole.
    if let Some((inbox, len)) = chunks::announced(msg.headers.as_ref()) {
        let limit = match target {
            Target::Component(running) => running.limits.max_request_bytes,
            Target::Provider(_) => chunks::MAX_BODY,
        };
        let fetched = match len {
            Ok(len) if len > limit => Err(InvokeError::new(
                InvokeErrorKind::TooLarge,
                format!("the request to `{id}` is {len} bytes; its limit is {limit}"),
            )),
            Ok(len) => chunks::fetch(nats, &inbox, len, router.max_call_time()).await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(body) => msg.payload = body,
            Err(e) => return reply_error(router, reply, id, &e).await,
        }
    }
    let mut introduce = false;
    let result = match parse(&msg, router) {
        Ok((interface, function, remaining, proof)) => match authorize(&msg, router, id).await {
            Ok(()) => {
                introduce = router.introduces(proof);
                let timeout = remaining.min(router.max_call_time());
                // This hop's span continues the caller's trace (or starts one).
                let parent = trace_parent(msg.headers.as_ref());
                let trace = TraceContext::next(parent);
                let source = field(&msg, header::SRC);
                let mut span =
                    Span::rpc((trace, parent, Kind::Server), (interface, function), (source, id));
                span.attr("trellis.link", || link_name(msg.headers.as_ref()).to_owned());
                let result = match target {
                    Target::Component(running) => {
                        let call = LocalCall {
                            interface,
                            function,
                            payload: &msg.payload,
                            timeout,
                            nesting: Nesting::Outermost,
                            trace,
                        };
                        router.call_local(running, call).await
                    }
                    Target::Provider(id) => {
                        let call = ProviderCall {
                            source: field(&msg, header::SRC),
                            link: link_name(msg.headers.as_ref()),
                            interface,
                            function,
                            payload: &msg.payload,
                            timeout,
                            trace: Some(trace),
                        };
                        router.call_provider(id, call).await
                    }
                };
                if let Err(e) = &result {
                    span.fail(|| e.to_string());
                }
                result
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let body = match result {
        Ok(body) => body,
        Err(e) => return reply_error(router, reply, id, &e).await,
    };
    // The caller learns (or is reminded) who answered, so its next calls here carry a MAC.
    let mut headers = async_nats::HeaderMap::new();
    if introduce {
        headers.insert(signing::BY, router.host_key());
    }
    let sent = if chunks::needs_chunks(nats, &body) {
        // Too large for one message: the caller pulls it.
        match chunks::offer(nats, &mut headers, body, router.max_call_time()).await {
            Ok(()) => nats.publish_with_headers(reply, headers, bytes::Bytes::new()).await,
            Err(e) => return reply_error(router, reply, id, &e).await,
        }
    } else if introduce {
        nats.publish_with_headers(reply, headers, body).await
    } else {
        nats.publish(reply, body).await
    };
    if let Err(e) = sent {
        tracing::warn!(target = id, error = %e, "reply not sent");
    }
}

/// Answers with a typed error (and reports refusals).
async fn reply_error(router: &Router, reply: async_nats::Subject, id: &str, e: &InvokeError) {
    let mut headers = e.to_headers();
    if signing::is_key_needed(e) {
        // Routine: a caller meeting this host; it sends the call again, signed.
        headers.insert(signing::KEY_NEEDED, "1");
    } else if e.kind() == InvokeErrorKind::Denied {
        router.report_denied(id, e).await;
    }
    tracing::debug!(target = id, error = %e, "invocation failed");
    let sent =
        router.nats().publish_with_headers(reply, headers, e.message().to_owned().into()).await;
    if let Err(e) = sent {
        tracing::warn!(target = id, error = %e, "reply not sent");
    }
}

/// The policy service's word on a verified call (when the host has one).
async fn authorize(msg: &Message, router: &Router, target: &str) -> Result<(), InvokeError> {
    router.authorize(field(msg, header::SRC), target, field(msg, header::OP)).await
}

/// A header of the (verified) envelope; empty when absent.
fn field<'m>(msg: &'m Message, name: &str) -> &'m str {
    msg.headers.as_ref().and_then(|h| h.get(name)).map_or("", |v| v.as_str())
}

/// The signed operation header must name what the subject routes to, or a policy decision about
/// one function could admit a call of another.
fn check_operation(msg: &Message, interface: &str, function: &str) -> Result<(), InvokeError> {
    let op = field(msg, header::OP);
    let matches =
        op.strip_prefix(interface).and_then(|rest| rest.strip_prefix('.')) == Some(function);
    if matches {
        Ok(())
    } else {
        Err(InvokeError::new(
            InvokeErrorKind::Denied,
            "the operation header does not match the subject",
        ))
    }
}

/// The call's interface, function and time left, and how it was authenticated.
fn parse<'m>(
    msg: &'m Message,
    router: &Router,
) -> Result<(&'m str, &'m str, Duration, Option<Proof>), InvokeError> {
    let Some(Subject::Rpc { interface, function, .. }) =
        router.subjects().parse(msg.subject.as_str())
    else {
        return Err(InvokeError::new(InvokeErrorKind::BadRequest, "malformed invocation subject"));
    };
    let reply = msg.reply.as_ref().map_or("", |r| r.as_str());
    let verified =
        router.verify((msg.subject.as_str(), reply), msg.headers.as_ref(), &msg.payload)?;
    check_operation(msg, interface, function)?;
    // The verifier refused passed deadlines; a deadline that passes right now is a timeout.
    let remaining = remaining(verified.deadline_ms).ok_or_else(|| {
        InvokeError::new(InvokeErrorKind::Timeout, "the invocation's deadline passed on arrival")
    })?;
    Ok((interface, function, remaining, verified.proof))
}
