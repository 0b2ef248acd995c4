//! Serving a component's invocations from the lattice: one queue subscription per component.

use std::sync::Arc;

use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;
use trellis_lattice::envelope::{Invocation, InvokeError, InvokeErrorKind};
use trellis_lattice::subject::{Subject, Subjects};

use crate::components::Running;
use crate::router::Router;

/// Subscribes to the component's invocations, spread over its replicas by queue group.
pub(crate) async fn subscribe(
    nats: &Client,
    subjects: &Subjects,
    id: &str,
) -> Result<Subscriber, async_nats::SubscribeError> {
    nats.queue_subscribe(subjects.rpc_all(id), Subjects::rpc_queue_group(id))
        .await
}

/// Serves each message on its own task until the subscription ends.
pub(crate) async fn serve(
    mut sub: Subscriber,
    running: Arc<Running>,
    router: Arc<Router>,
    nats: Client,
    subjects: Subjects,
) {
    while let Some(msg) = sub.next().await {
        let (running, router, nats, subjects) = (
            running.clone(),
            router.clone(),
            nats.clone(),
            subjects.clone(),
        );
        tokio::spawn(async move { handle(msg, &running, &router, &nats, &subjects).await });
    }
}

async fn handle(
    msg: Message,
    running: &Running,
    router: &Router,
    nats: &Client,
    subjects: &Subjects,
) {
    let Some(reply) = msg.reply.clone() else {
        tracing::debug!(subject = %msg.subject, "invocation without reply subject dropped");
        return;
    };
    let result = match parse(&msg, subjects) {
        Ok((interface, function, remaining)) => {
            router
                .call_local(running, interface, function, &msg.payload, remaining)
                .await
        }
        Err(e) => Err(e),
    };
    let sent = match result {
        Ok(body) => nats.publish(reply, body).await,
        Err(e) => {
            tracing::debug!(component = %running.id, error = %e, "invocation failed");
            nats.publish_with_headers(reply, e.to_headers(), e.message().to_owned().into())
                .await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(component = %running.id, error = %e, "reply not sent");
    }
}

fn parse<'m>(
    msg: &'m Message,
    subjects: &Subjects,
) -> Result<(&'m str, &'m str, std::time::Duration), InvokeError> {
    let Some(Subject::Rpc {
        interface,
        function,
        ..
    }) = subjects.parse(msg.subject.as_str())
    else {
        return Err(InvokeError::new(
            InvokeErrorKind::BadRequest,
            "malformed invocation subject",
        ));
    };
    let invocation = Invocation::from_headers(msg.headers.as_ref())?;
    let remaining = invocation.remaining().ok_or_else(|| {
        InvokeError::new(
            InvokeErrorKind::Timeout,
            "the invocation's deadline passed before it arrived",
        )
    })?;
    Ok((interface, function, remaining))
}
