//! The optional policy service: hosts ask it before starting a component or provider and before
//! running a call. No answer in time denies (fail closed). Decisions are cached until the
//! service publishes a change notice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use futures::StreamExt;
use prost::Message;
use trellis_proto::{PolicyReply, PolicyRequest};

use crate::subject::Subjects;

/// Decisions remembered before the cache starts over.
const MAX_DECISIONS: usize = 16 * 1024;

/// Encoded request → `Ok` or the denial reason.
type Decisions = HashMap<Vec<u8>, Result<(), PolicyError>>;

/// Why the policy service's word is no. Every variant denies: the host fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The service said no.
    #[error("policy denies {kind} `{id}`: {reason}")]
    Denied {
        /// What was asked about (`invoke`, `start_component`, ...).
        kind: String,
        /// The component or provider.
        id: String,
        /// The service's reason.
        reason: String,
    },
    /// Its reply could not be decoded.
    #[error("undecodable policy reply ({0}); denied")]
    BadReply(String),
    /// Nothing answers on the policy subject: start the policy service.
    #[error("no policy service answers on the lattice; denied")]
    NoService,
    /// The service did not answer in time (not cached: the next request asks again).
    #[error("the policy service did not answer within {0:?}; denied")]
    TimedOut(Duration),
    /// NATS failed.
    #[error("cannot ask the policy service ({0}); denied")]
    Unreachable(String),
}

/// Asks the policy service and remembers its answers.
#[derive(Debug, Clone)]
pub struct Policy {
    nats: Client,
    subject: String,
    timeout: Duration,
    /// Filled into every request: who asks, in which lattice.
    host_id: String,
    lattice: String,
    decisions: Arc<Mutex<Decisions>>,
    /// Bumped by every change notice: an answer asked for before a change is not cached.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Policy {
    /// A policy client; call [`Policy::follow_changes`] to keep its cache honest.
    pub fn new(
        nats: Client,
        subjects: &Subjects,
        timeout: Duration,
        host_id: &str,
        lattice: &str,
    ) -> Self {
        Self {
            nats,
            subject: subjects.policy(),
            timeout,
            host_id: host_id.to_owned(),
            lattice: lattice.to_owned(),
            decisions: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Forgets cached decisions whenever the service announces a change; runs until the
    /// subscription ends.
    pub async fn follow_changes(self, subjects: Subjects) {
        let mut changes = match self.nats.subscribe(subjects.policy_changed()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(error = %e, "cannot follow policy changes; decisions are not cached");
                return;
            }
        };
        while changes.next().await.is_some() {
            self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.lock().clear();
            tracing::info!("policy changed; cached decisions forgotten");
        }
    }

    /// `Ok` when allowed; otherwise why not.
    pub async fn decide(&self, mut request: PolicyRequest) -> Result<(), PolicyError> {
        request.host_id.clone_from(&self.host_id);
        request.lattice.clone_from(&self.lattice);
        let key = request.encode_to_vec();
        if let Some(decision) = self.lock().get(&key) {
            return decision.clone();
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let ask =
            async_nats::Request::new().payload(key.clone().into()).timeout(Some(self.timeout));
        let decision = match self.nats.send_request(self.subject.clone(), ask).await {
            Ok(msg) => match PolicyReply::decode(msg.payload) {
                Ok(reply) if reply.allow => Ok(()),
                Ok(reply) => Err(PolicyError::Denied {
                    kind: request.kind,
                    id: request.id,
                    reason: reply.reason,
                }),
                Err(e) => return Err(PolicyError::BadReply(e.to_string())),
            },
            // Fail closed, and do not cache: the next attempt asks again.
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                return Err(PolicyError::NoService);
            }
            Err(e) if e.kind() == RequestErrorKind::TimedOut => {
                return Err(PolicyError::TimedOut(self.timeout));
            }
            Err(e) => return Err(PolicyError::Unreachable(e.to_string())),
        };
        let mut decisions = self.lock();
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            // Bounded: callers choose some fields, so the key space is theirs.
            if decisions.len() >= MAX_DECISIONS {
                decisions.clear();
            }
            decisions.insert(key, decision.clone());
        }
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Decisions> {
        self.decisions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
