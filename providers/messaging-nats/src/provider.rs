//! Subscriptions that feed linked components, and publish/request for components.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use rmpv::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind};
use trellis_lattice::link::Link;
use trellis_lattice::telemetry::{Kind, Span};
use trellis_lattice::trace::{NatsHeaders, TraceContext};
use trellis_provider::{Call, Context, Provider};

use crate::messages::{self, BrokerMessage};

const HANDLER: &str = "wasmcloud:messaging/handler";
const CONSUMER: &str = "wasmcloud:messaging/consumer";
/// How long a component may take to handle one message.
const HANDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The provider.
#[derive(Debug, Default)]
pub struct Messaging {
    /// Subscription tasks by link key.
    subscriptions: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
    /// Connections to other NATS servers, by url.
    clients: Mutex<HashMap<String, async_nats::Client>>,
}

/// A subject a component may use: not the lattice's own (`trellis.>`), not the server's APIs
/// (`$JS.>`, `$KV.>`, `$O.>`, `$SYS.>` ...: a KV put is a publish, so these would let a component
/// rewrite links), and no leading wildcard that would match them.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty()
        || subject.split('.').any(str::is_empty)
        || subject.bytes().any(|b| b.is_ascii_whitespace())
    {
        return Err(format!("`{subject}` is not a valid subject"));
    }
    let first = subject.split('.').next().unwrap_or_default();
    if matches!(first, "trellis" | "*" | ">") || first.starts_with('$') {
        return Err(format!(
            "`{subject}` would reach the lattice's own subjects (`trellis.>`) or the server's \
             (`$...`); use application subjects"
        ));
    }
    Ok(())
}

impl Messaging {
    async fn client(&self, ctx: &Context, link: &Link) -> Result<async_nats::Client, String> {
        let Some(url) = link.config.get("url") else {
            return ctx.nats().cloned().ok_or_else(|| "not connected to NATS yet".to_owned());
        };
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let client = async_nats::connect(url.as_str())
            .await
            .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
        clients.insert(url.clone(), client.clone());
        Ok(client)
    }

    /// Subscribes to the link's subjects; each message calls the target component.
    async fn subscribe(&self, ctx: &Context, link: &Link) -> Result<Vec<JoinHandle<()>>, String> {
        let subjects = link
            .config
            .get("subscriptions")
            .ok_or("link config needs `subscriptions` (comma-separated subjects)")?;
        let subjects: Vec<&str> =
            subjects.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if subjects.is_empty() {
            return Err("`subscriptions` names no subject".into());
        }
        for subject in &subjects {
            check_subject(subject)?;
        }
        let client = self.client(ctx, link).await?;
        let mut tasks = Vec::new();
        for subject in subjects {
            let sub = match link.config.get("queue") {
                Some(queue) => client.queue_subscribe(subject.to_owned(), queue.clone()).await,
                None => client.subscribe(subject.to_owned()).await,
            };
            let mut sub = sub.map_err(|e| format!("cannot subscribe to `{subject}`: {e}"))?;
            let (ctx, target) = (ctx.clone(), link.target.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let (ctx, target) = (ctx.clone(), target.clone());
                    tokio::spawn(async move { deliver(&ctx, &target, msg).await });
                }
            }));
        }
        // Subscriptions must be on the server before the link is reported applied.
        client.flush().await.map_err(|e| format!("cannot reach NATS: {e}"))?;
        Ok(tasks)
    }

    async fn publish(
        &self,
        ctx: &Context,
        (link, trace): (&Link, TraceContext),
        args: &[Value],
    ) -> Result<Option<Value>, String> {
        let msg = BrokerMessage::from_value(args.first().ok_or("publish takes a message")?)?;
        check_subject(&msg.subject)?;
        if let Some(reply) = &msg.reply_to {
            check_subject(reply)?;
        }
        let client = self.client(ctx, link).await?;
        let headers = trace_headers(trace);
        let published = match msg.reply_to {
            Some(reply) => {
                client
                    .publish_with_reply_and_headers(msg.subject, reply, headers, msg.body.into())
                    .await
            }
            None => client.publish_with_headers(msg.subject, headers, msg.body.into()).await,
        };
        published.map_err(|e| format!("publish failed: {e}"))?;
        Ok(None)
    }

    async fn request(
        &self,
        ctx: &Context,
        (link, trace): (&Link, TraceContext),
        args: &[Value],
    ) -> Result<Option<Value>, String> {
        let [subject, body, timeout] = args else {
            return Err("request takes subject, body and timeout-ms".into());
        };
        let subject = subject.as_str().ok_or("subject is not a string")?.to_owned();
        check_subject(&subject)?;
        let body = messages::bytes(body)?;
        let timeout = Duration::from_millis(timeout.as_u64().ok_or("timeout-ms is not a number")?);
        let client = self.client(ctx, link).await?;
        let request = async_nats::Request::new()
            .payload(body.into())
            .headers(trace_headers(trace))
            .timeout(Some(timeout));
        let reply = client
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| format!("request to `{subject}` failed: {e}"))?;
        let reply = BrokerMessage {
            subject: reply.subject.to_string(),
            body: reply.payload.to_vec(),
            reply_to: reply.reply.map(|r| r.to_string()),
        };
        Ok(Some(reply.to_value()))
    }
}

/// Headers carrying `trace` to whoever handles the message.
fn trace_headers(trace: TraceContext) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    trace.inject(&mut NatsHeaders(&mut headers));
    headers
}

/// Hands one message to the component; a failure is logged (NATS has no one to tell).
async fn deliver(ctx: &Context, target: &str, msg: async_nats::Message) {
    let message = BrokerMessage {
        subject: msg.subject.to_string(),
        body: msg.payload.to_vec(),
        reply_to: msg.reply.map(|r| r.to_string()),
    };
    let payload = messages::encode(vec![message.to_value()]);
    // The handler's span continues the publisher's trace (or starts one).
    let parent = msg.headers.as_ref().and_then(|h| TraceContext::extract(&NatsHeaders(h)));
    let mut span = Span::start(TraceContext::next(parent), parent, Kind::Consumer, || {
        format!("{} process", message.subject)
    });
    let trace = span.context();
    span.attr("messaging.system", || "nats".into());
    span.attr("messaging.destination.name", || message.subject.clone());
    span.attr("trellis.component", || target.to_owned());
    let outcome =
        match ctx.invoke(target, HANDLER, "handle-message", payload, HANDLE_TIMEOUT, trace).await {
            Ok(reply) => messages::read_result(&reply),
            Err(e) => Err(e.to_string()),
        };
    if let Err(e) = &outcome {
        span.fail(|| e.clone());
    }
    if let Err(e) = outcome {
        tracing::warn!(component = target, subject = %message.subject, error = %e, "message not handled");
    }
}

impl Provider for Messaging {
    async fn link_put(&self, ctx: &Context, link: Link) -> Result<(), String> {
        let interface = link.interface.to_string();
        if link.source == ctx.provider_id() {
            if interface != HANDLER {
                return Err(format!("messaging-nats delivers to {HANDLER}, not {interface}"));
            }
            let tasks = self.subscribe(ctx, &link).await?;
            if let Some(old) = self.subscriptions.lock().await.insert(link.key(), tasks) {
                old.iter().for_each(JoinHandle::abort);
            }
            Ok(())
        } else if interface == CONSUMER {
            self.client(ctx, &link).await.map(drop)
        } else {
            Err(format!("messaging-nats serves {CONSUMER}, not {interface}"))
        }
    }

    async fn link_deleted(&self, _ctx: &Context, link: Link) {
        if let Some(tasks) = self.subscriptions.lock().await.remove(&link.key()) {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }

    async fn invoke(&self, ctx: &Context, call: Call) -> Result<Vec<u8>, InvokeError> {
        let bad = |e: String| InvokeError::new(InvokeErrorKind::BadRequest, e);
        if call.link.interface.to_string() != CONSUMER {
            return Err(bad(format!("messaging-nats serves {CONSUMER}")));
        }
        let args = messages::args(&call.payload).map_err(bad)?;
        let outcome = match call.function.as_str() {
            "publish" => self.publish(ctx, (&call.link, call.trace), &args).await,
            "request" => self.request(ctx, (&call.link, call.trace), &args).await,
            other => return Err(bad(format!("{CONSUMER} has no function `{other}`"))),
        };
        Ok(messages::encode(vec![messages::result(outcome)]))
    }

    async fn shutdown(&self) {
        for (_, tasks) in self.subscriptions.lock().await.drain() {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_subjects_are_refused() {
        assert!(check_subject("orders.new").is_ok());
        assert!(check_subject("trellis.default.rpc.x").is_err());
        assert!(check_subject(">").is_err());
        assert!(check_subject("a..b").is_err());
        assert!(check_subject("*.>").is_err());
        assert!(check_subject("$KV.TRELLIS_default_LINKS.x").is_err());
        assert!(check_subject("$JS.API.STREAM.PURGE.KV_x").is_err());
        assert!(
            check_subject("_INBOX.abc").is_ok(),
            "replying to a request is publishing to its inbox"
        );
    }
}
