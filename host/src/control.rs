//! The control server: answers pings and the host's control verbs.

use std::sync::Arc;

use async_nats::{Message, Subscriber};
use futures::StreamExt;
use prost::Message as _;
use trellis_lattice::signing::{RequestDenied, Role};
use trellis_lattice::subject::{HostVerb, Subject};
use trellis_proto::{self as pb, ErrorCode};

use crate::host::{Host, HostError};
use crate::refused::{ControlResult, Refused};

/// The host's control subscriptions: its own verbs and the lattice-wide ping.
pub(crate) struct ControlSubscriptions {
    own: Subscriber,
    ping: Subscriber,
}

/// Subscribes before the host announces itself, so nobody who hears the announcement finds
/// the host deaf.
pub(crate) async fn subscribe(host: &Host) -> Result<ControlSubscriptions, HostError> {
    let (subjects, nats) = (host.subjects(), host.nats());
    let own =
        nats.subscribe(subjects.host_control_all(host.id())).await.map_err(HostError::nats)?;
    let ping = nats.subscribe(subjects.hosts_ping()).await.map_err(HostError::nats)?;
    trellis_lattice::connect::sync_with_server(nats).await.map_err(HostError::nats)?;
    Ok(ControlSubscriptions { own, ping })
}

/// Control requests handled at once (a start may take seconds to compile); more are refused
/// with `Busy` (pings go unanswered).
const MAX_IN_FLIGHT: usize = 256;
/// Signed requests checked per second (an Ed25519 verification each); more are refused with
/// `Busy` before any check, so a flood of requests costs this host bounded work.
const CHECKS_PER_S: u32 = 200;

/// Serves control requests until the subscriptions end: [`MAX_IN_FLIGHT`] at a time, and at most
/// [`CHECKS_PER_S`] signature checks a second; the rest are refused at once, and the
/// subscriptions keep being read.
pub(crate) async fn serve(host: Arc<Host>, subs: ControlSubscriptions) {
    let ControlSubscriptions { mut own, mut ping } = subs;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut checks = Window::default();
    loop {
        let msg = tokio::select! {
            Some(msg) = own.next() => msg,
            Some(msg) = ping.next() => msg,
            else => return,
        };
        let verb = match host.subjects().parse(&msg.subject) {
            Some(Subject::HostControl { verb, .. }) => Some(verb),
            _ => None,
        };
        let needs_check = verb.and_then(needs).is_some();
        let permit = in_flight.clone().try_acquire_owned().ok();
        let within_rate = !needs_check || checks.take(unix_s(), CHECKS_PER_S);
        let Some(permit) = permit.filter(|_| within_rate) else {
            host.count_busy();
            if let (Some(verb), Some(reply)) = (verb, msg.reply) {
                let busy = Refused::Busy(
                    "this host is taking as many control requests as it checks at a time; \
                     try again shortly"
                        .to_owned(),
                );
                let body = reply_of(verb, busy.status());
                if let Err(e) = host.nats().publish(reply, body.into()).await {
                    tracing::debug!(error = %e, "control refusal not sent");
                }
            }
            continue;
        };
        let host = host.clone();
        tokio::spawn(async move {
            handle(&host, msg).await;
            drop(permit);
        });
    }
}

/// Events counted in the current second.
#[derive(Debug, Default)]
struct Window {
    second: u64,
    taken: u32,
}

impl Window {
    /// Takes one of `per_s` this second, if any is left.
    fn take(&mut self, now_s: u64, per_s: u32) -> bool {
        if self.second != now_s {
            *self = Window { second: now_s, taken: 0 };
        }
        self.taken = self.taken.saturating_add(1);
        self.taken <= per_s
    }
}

fn unix_s() -> u64 {
    trellis_lattice::envelope::unix_ms() / 1000
}

async fn handle(host: &Arc<Host>, msg: Message) {
    let Some(reply) = msg.reply.clone() else {
        return;
    };
    let body = match host.subjects().parse(&msg.subject) {
        Some(Subject::HostsPing) => host.info().encode_to_vec(),
        Some(Subject::HostControl { verb, .. }) => {
            let authorized = match needs(verb) {
                Some(role) => {
                    // Reading a secret is never open to anyone, development or not.
                    let signed = verb == HostVerb::SecretGet;
                    let (subject, headers) = (&msg.subject, msg.headers.as_ref());
                    host.authorize_request(subject, headers, &msg.payload, (role, signed)).await
                }
                None => Ok(()),
            };
            match authorized {
                Ok(()) => dispatch(host, verb, &msg.payload).await,
                Err(denied) => refusal(verb, denied),
            }
        }
        _ => return,
    };
    if let Err(e) = host.nats().publish(reply, body.into()).await {
        tracing::warn!(error = %e, "control reply not sent");
    }
}

/// The role a verb needs; `None`: anyone who can reach the host may ask (reads).
fn needs(verb: HostVerb) -> Option<Role> {
    match verb {
        HostVerb::Inventory => None,
        HostVerb::StartComponent
        | HostVerb::StopComponent
        | HostVerb::StartProvider
        | HostVerb::StopProvider
        | HostVerb::Compile => Some(Role::Deployer),
        HostVerb::Drain | HostVerb::SecretGet => Some(Role::Admin),
    }
}

/// The reply of a refused request, in the verb's own reply type.
fn refusal(verb: HostVerb, denied: RequestDenied) -> Vec<u8> {
    reply_of(verb, Refused::from(denied).status())
}

/// A reply of `verb`'s own type carrying only `status`.
fn reply_of(verb: HostVerb, status: pb::Status) -> Vec<u8> {
    let status = Some(status);
    match verb {
        HostVerb::Inventory => pb::InventoryReply { status, inventory: None }.encode_to_vec(),
        HostVerb::StartComponent => pb::StartComponentReply { status }.encode_to_vec(),
        HostVerb::StopComponent => pb::StopComponentReply { status }.encode_to_vec(),
        HostVerb::StartProvider => pb::StartProviderReply { status }.encode_to_vec(),
        HostVerb::StopProvider => pb::StopProviderReply { status }.encode_to_vec(),
        HostVerb::Drain => pb::DrainReply { status }.encode_to_vec(),
        HostVerb::SecretGet => pb::SecretGetReply { status, sealed: Vec::new() }.encode_to_vec(),
        HostVerb::Compile => pb::CompileReply { status, already_cached: false }.encode_to_vec(),
    }
}

async fn dispatch(host: &Arc<Host>, verb: HostVerb, payload: &[u8]) -> Vec<u8> {
    match verb {
        HostVerb::Inventory => {
            pb::InventoryReply { status: Some(ok()), inventory: Some(host.inventory()) }
                .encode_to_vec()
        }
        HostVerb::StartComponent => {
            let status = match pb::StartComponentRequest::decode(payload) {
                Ok(req) => status(host.start_component(req).await),
                Err(e) => bad_request(e),
            };
            pb::StartComponentReply { status: Some(status) }.encode_to_vec()
        }
        HostVerb::StopComponent => {
            let status = match pb::StopComponentRequest::decode(payload) {
                Ok(req) => status(host.stop_component(&req.component_id).await),
                Err(e) => bad_request(e),
            };
            pb::StopComponentReply { status: Some(status) }.encode_to_vec()
        }
        HostVerb::StartProvider => {
            let status = match pb::StartProviderRequest::decode(payload) {
                Ok(req) => status(
                    host.start_provider(&req.provider_id, &req.kind, req.builtin, req.owner).await,
                ),
                Err(e) => bad_request(e),
            };
            pb::StartProviderReply { status: Some(status) }.encode_to_vec()
        }
        HostVerb::StopProvider => {
            let status = match pb::StopProviderRequest::decode(payload) {
                Ok(req) => status(host.stop_provider(&req.provider_id).await),
                Err(e) => bad_request(e),
            };
            pb::StopProviderReply { status: Some(status) }.encode_to_vec()
        }
        HostVerb::Drain => {
            let status = match pb::DrainRequest::decode(payload) {
                Ok(req) => {
                    let wait = (req.timeout_ms > 0)
                        .then(|| std::time::Duration::from_millis(req.timeout_ms.into()));
                    crate::evacuate::start(host, req.stay, wait);
                    ok()
                }
                Err(e) => bad_request(e),
            };
            pb::DrainReply { status: Some(status) }.encode_to_vec()
        }
        HostVerb::SecretGet => secret_get(host, payload).await,
        HostVerb::Compile => {
            let (status, already_cached) = match pb::CompileRequest::decode(payload) {
                Ok(req) => match host.compile_ahead(&req.digest).await {
                    Ok(already_cached) => (ok(), already_cached),
                    Err(refused) => (refused.status(), false),
                },
                Err(e) => (bad_request(e), false),
            };
            pb::CompileReply { status: Some(status), already_cached }.encode_to_vec()
        }
    }
}

/// An admin operator's `trellis secret get`: the secret sealed to the key in the request.
async fn secret_get(host: &Arc<Host>, payload: &[u8]) -> Vec<u8> {
    let sealed = match pb::SecretGetRequest::decode(payload) {
        Err(e) => Err(Refused::BadRequest(format!("undecodable request: {e}"))),
        Ok(req) => match &host.secrets {
            None => Err(crate::secrets::no_key(host.id())),
            Some(secrets) => secrets.reseal(&req.name, &req.recipient_xkey, &host.records()).await,
        },
    };
    let (status, sealed) = match sealed {
        Ok(sealed) => (ok(), sealed),
        Err(refused) => (refused.status(), Vec::new()),
    };
    pb::SecretGetReply { status: Some(status), sealed }.encode_to_vec()
}

fn ok() -> pb::Status {
    pb::Status { code: ErrorCode::Ok.into(), message: String::new() }
}

fn status(result: ControlResult) -> pb::Status {
    match result {
        Ok(()) => ok(),
        Err(refused) => refused.status(),
    }
}

fn bad_request(e: prost::DecodeError) -> pb::Status {
    Refused::BadRequest(format!("undecodable request: {e}")).status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_so_many_a_second() {
        let mut w = Window::default();
        assert!((0..3).all(|_| w.take(7, 3)));
        assert!(!w.take(7, 3), "the fourth in second 7");
        assert!(w.take(8, 3), "a new second");
    }
}
