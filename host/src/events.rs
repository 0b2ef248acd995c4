//! Publishing lattice events. Fire and forget: an event lost while NATS is down is fine, the
//! next heartbeat carries the state.

use async_nats::Client;
use trellis_lattice::envelope::unix_ms;
use trellis_lattice::subject::{EventKind, Subjects};
use trellis_proto as pb;

use prost::Message;

#[derive(Debug, Clone)]
pub(crate) struct Events {
    nats: Client,
    subjects: Subjects,
    host_id: String,
}

impl Events {
    pub fn new(nats: Client, subjects: Subjects, host_id: String) -> Self {
        Self { nats, subjects, host_id }
    }

    pub async fn publish(&self, kind: EventKind, body: pb::event::Body) {
        let event =
            pb::Event { time_ms: unix_ms(), host_id: self.host_id.clone(), body: Some(body) };
        if let Err(e) =
            self.nats.publish(self.subjects.event(kind), event.encode_to_vec().into()).await
        {
            tracing::debug!(error = %e, kind = kind.as_str(), "event not published");
        }
    }

    pub async fn component(&self, kind: EventKind, id: &str, digest: &str, reason: &str) {
        let body = pb::ComponentEvent {
            component_id: id.to_owned(),
            digest: digest.to_owned(),
            reason: reason.to_owned(),
        };
        self.publish(kind, pb::event::Body::Component(body)).await;
    }

    /// A refused control request (`request_denied`, on its subject) or state record
    /// (`record_denied`, on `<bucket>/<key>`).
    pub async fn denied(&self, kind: EventKind, subject: &str, operator: &str, reason: &str) {
        let body = pb::RequestEvent {
            subject: subject.to_owned(),
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        };
        self.publish(kind, pb::event::Body::Request(body)).await;
    }

    pub async fn provider(&self, kind: EventKind, id: &str, provider_kind: &str, reason: &str) {
        let body = pb::ProviderEvent {
            provider_id: id.to_owned(),
            kind: provider_kind.to_owned(),
            reason: reason.to_owned(),
        };
        self.publish(kind, pb::event::Body::Provider(body)).await;
    }
}
