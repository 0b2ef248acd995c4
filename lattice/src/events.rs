//! Publishing lattice events, as hosts and schedulers do. Fire and forget: an event lost while
//! NATS is down is fine, the next heartbeat carries the state.

use async_nats::Client;
use prost::Message;
use trellis_proto as pb;

use crate::envelope::unix_ms;
use crate::subject::{EventKind, Subjects};

/// Publishes events on the lattice in the name of one host.
#[derive(Debug, Clone)]
pub struct Events {
    nats: Client,
    subjects: Subjects,
    host_id: String,
}

impl Events {
    /// Events of `host_id`, published on `nats` under `subjects`.
    pub fn new(nats: Client, subjects: Subjects, host_id: String) -> Self {
        Self { nats, subjects, host_id }
    }

    /// Publishes one event of `kind` now.
    pub async fn publish(&self, kind: EventKind, body: pb::event::Body) {
        let event =
            pb::Event { time_ms: unix_ms(), host_id: self.host_id.clone(), body: Some(body) };
        if let Err(e) =
            self.nats.publish(self.subjects.event(kind), event.encode_to_vec().into()).await
        {
            tracing::debug!(error = %e, kind = kind.as_str(), "event not published");
        }
    }

    /// A component event.
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

    /// The scheduler changed a component's replicas from its load (`component_scaled`).
    pub async fn scaled(&self, body: pb::ScaleEvent) {
        self.publish(EventKind::ComponentScaled, pb::event::Body::Scale(body)).await;
    }

    /// A provider event.
    pub async fn provider(&self, kind: EventKind, id: &str, provider_kind: &str, reason: &str) {
        let body = pb::ProviderEvent {
            provider_id: id.to_owned(),
            kind: provider_kind.to_owned(),
            reason: reason.to_owned(),
        };
        self.publish(kind, pb::event::Body::Provider(body)).await;
    }
}
