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

/// Serves control requests until the subscriptions end.
pub(crate) async fn serve(host: Arc<Host>, subs: ControlSubscriptions) {
    let ControlSubscriptions { mut own, mut ping } = subs;
    loop {
        let msg = tokio::select! {
            Some(msg) = own.next() => msg,
            Some(msg) = ping.next() => msg,
            else => return,
        };
        let host = host.clone();
        tokio::spawn(async move { handle(&host, msg).await });
    }
}

async fn handle(host: &Host, msg: Message) {
    let Some(reply) = msg.reply.clone() else {
        return;
    };
    let body = match host.subjects().parse(&msg.subject) {
        Some(Subject::HostsPing) => host.info().encode_to_vec(),
        Some(Subject::HostControl { verb, .. }) => {
            let authorized = match needs(verb) {
                Some(role) => {
                    host.authorize_request(&msg.subject, msg.headers.as_ref(), &msg.payload, role)
                        .await
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
        | HostVerb::StopProvider => Some(Role::Deployer),
    }
}

/// The reply of a refused request, in the verb's own reply type.
fn refusal(verb: HostVerb, denied: RequestDenied) -> Vec<u8> {
    let status = Some(Refused::from(denied).status());
    match verb {
        HostVerb::Inventory => pb::InventoryReply { status, inventory: None }.encode_to_vec(),
        HostVerb::StartComponent => pb::StartComponentReply { status }.encode_to_vec(),
        HostVerb::StopComponent => pb::StopComponentReply { status }.encode_to_vec(),
        HostVerb::StartProvider => pb::StartProviderReply { status }.encode_to_vec(),
        HostVerb::StopProvider => pb::StopProviderReply { status }.encode_to_vec(),
    }
}

async fn dispatch(host: &Host, verb: HostVerb, payload: &[u8]) -> Vec<u8> {
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
    }
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
