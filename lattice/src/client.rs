//! The typed control-plane client: what the CLI, tests and the scheduler use to drive a lattice.

use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use trellis_proto as pb;

use crate::envelope::{InvokeError, InvokeErrorKind};
use crate::state::{LatticeState, StateError};
use crate::subject::{HostVerb, InvalidId, Subjects};

/// A control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No host with this id is listening.
    #[error("no host `{host}` in lattice `{lattice}`; list hosts with `trellis get hosts`")]
    NoSuchHost {
        /// The id asked for.
        host: String,
        /// The lattice searched.
        lattice: String,
    },
    /// The host did not answer in time.
    #[error("host `{host}` did not answer within {timeout:?}")]
    Timeout {
        /// The host asked.
        host: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The host answered with an error code.
    #[error("host refused: {message} ({code:?})")]
    Remote {
        /// The code from the reply.
        code: pb::ErrorCode,
        /// The host's explanation.
        message: String,
    },
    /// A reply could not be decoded.
    #[error("undecodable reply from {from}: {reason}")]
    Decode {
        /// Who sent it.
        from: String,
        /// Why decoding failed.
        reason: String,
    },
    /// Lattice state (KV or object store) failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// An id or lattice name is invalid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// NATS failed underneath.
    #[error("NATS request failed: {0}")]
    Nats(String),
}

impl ControlError {
    /// The error code, when the host refused.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        match self {
            ControlError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A cheap, cloneable handle that drives one lattice.
#[derive(Clone, Debug)]
pub struct LatticeClient {
    nats: Client,
    lattice: String,
    subjects: Subjects,
    timeout: Duration,
    answers: Option<std::sync::Arc<crate::answers::Answers>>,
    operator: Option<std::sync::Arc<crate::signing::OperatorKey>>,
    js_domain: Option<String>,
    js_replicas: usize,
}

impl LatticeClient {
    /// A client of `lattice` over an established NATS connection.
    pub fn new(nats: Client, lattice: &str) -> Result<Self, InvalidId> {
        Ok(Self {
            nats,
            lattice: lattice.to_owned(),
            subjects: Subjects::new(lattice)?,
            timeout: Duration::from_secs(10),
            answers: None,
            operator: None,
            js_domain: None,
            js_replicas: 1,
        })
    }

    /// Reaches the lattice's JetStream state in `domain` (from a leaf node; see deploy/nats/).
    pub fn with_js_domain(mut self, domain: Option<String>) -> Self {
        self.js_domain = domain;
        self
    }

    /// Creates missing buckets of the lattice's state with `replicas` replicas.
    pub fn with_js_replicas(mut self, replicas: usize) -> Self {
        self.js_replicas = replicas.max(1);
        self
    }

    /// Replicas of buckets this client creates.
    pub fn js_replicas(&self) -> usize {
        self.js_replicas
    }

    /// The JetStream context of the lattice's state.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        crate::connect::jetstream(&self.nats, self.js_domain.as_deref())
    }

    /// Signs invocations with `signer` (a host key), as strict hosts require, and takes only
    /// authentic answers to them, in the signer's inbox (see [`crate::answers`]).
    pub fn with_signer(mut self, signer: crate::signing::Signer) -> Self {
        let answers = crate::answers::Answers::new(self.nats.clone(), std::sync::Arc::new(signer));
        self.answers = Some(std::sync::Arc::new(answers));
        self
    }

    /// Signs control requests with `operator`'s key, as strict hosts require of anything that
    /// changes them.
    pub fn with_operator(mut self, operator: std::sync::Arc<crate::signing::OperatorKey>) -> Self {
        self.operator = Some(operator);
        self
    }

    /// Answers to its signed calls refused as forged so far.
    pub fn forged_answers(&self) -> u64 {
        self.answers.as_ref().map_or(0, |answers| answers.signer().forged_answers())
    }

    /// The operator key it signs requests with, if any.
    pub fn operator(&self) -> Option<std::sync::Arc<crate::signing::OperatorKey>> {
        self.operator.clone()
    }

    /// The lattice name.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    /// The subjects of this lattice.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &Client {
        &self.nats
    }

    /// Opens the lattice's JetStream state.
    pub async fn state(&self) -> Result<LatticeState, StateError> {
        let state =
            LatticeState::open_replicated(&self.jetstream(), &self.lattice, self.js_replicas)
                .await?;
        Ok(state.with_sealer(self.operator.clone()))
    }

    /// Every host that answers a ping, sorted by id. Returns once replies have stopped
    /// coming for a quiet gap after the last one (see [`ping_quiet_gap`]), at once when no
    /// host listens at all, and at the latest after `wait`.
    ///
    /// Hosts answer a ping as soon as they hear it, so their replies come in one burst however
    /// many there are; a fixed wait would be too short for a large lattice and needlessly long
    /// for a small one.
    pub async fn hosts(&self, wait: Duration) -> Result<Vec<pb::HostInfo>, ControlError> {
        let inbox = self.nats.new_inbox();
        let mut replies = self.nats.subscribe(inbox.clone()).await.map_err(nats_err)?;
        let ping = pb::PingRequest {}.encode_to_vec();
        let asked = tokio::time::Instant::now();
        self.nats
            .publish_with_reply(self.subjects.hosts_ping(), inbox, ping.into())
            .await
            .map_err(nats_err)?;
        self.nats.flush().await.map_err(nats_err)?;
        let mut hosts = Vec::new();
        let deadline = asked + wait;
        let mut quiet = None;
        loop {
            let until = quiet.map_or(deadline, |(last, gap)| deadline.min(last + gap));
            let Ok(Some(msg)) = tokio::time::timeout_at(until, replies.next()).await else {
                break;
            };
            // A status message is the server's, not a host's: no responders means no host
            // listens, so no reply will come.
            if let Some(status) = msg.status {
                if status == async_nats::StatusCode::NO_RESPONDERS {
                    break;
                }
                continue;
            }
            let now = tokio::time::Instant::now();
            let gap = quiet.map_or_else(|| ping_quiet_gap(now - asked), |(_, gap)| gap);
            quiet = Some((now, gap));
            match pb::HostInfo::decode(msg.payload) {
                Ok(info) => hosts.push(info),
                Err(e) => tracing::warn!(error = %e, "ignoring undecodable ping reply"),
            }
        }
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        hosts.dedup_by(|a, b| a.id == b.id);
        Ok(hosts)
    }

    /// The full inventory of one host.
    pub async fn inventory(&self, host: &str) -> Result<pb::Inventory, ControlError> {
        let reply: pb::InventoryReply =
            self.request(host, HostVerb::Inventory, &pb::InventoryRequest {}).await?;
        check(reply.status)?;
        reply.inventory.ok_or_else(|| ControlError::Decode {
            from: host.to_owned(),
            reason: "inventory reply without inventory".into(),
        })
    }

    /// Every host's inventory (or why it could not be read), from one ping round.
    pub async fn inventories(
        &self,
        wait: Duration,
    ) -> Result<Vec<(pb::HostInfo, Result<pb::Inventory, ControlError>)>, ControlError> {
        let hosts = self.hosts(wait).await?;
        let inventories =
            futures::future::join_all(hosts.iter().map(|h| self.inventory(&h.id))).await;
        Ok(hosts.into_iter().zip(inventories).collect())
    }

    /// Starts component `id` from artifact `digest` on `host` with the host's default limits.
    pub async fn start_component(
        &self,
        host: &str,
        id: &str,
        digest: &str,
    ) -> Result<(), ControlError> {
        let req = pb::StartComponentRequest {
            component_id: id.to_owned(),
            digest: digest.to_owned(),
            ..Default::default()
        };
        self.start_component_with(host, req).await
    }

    /// Starts a component on `host` as `req` says (limits, named config).
    pub async fn start_component_with(
        &self,
        host: &str,
        req: pb::StartComponentRequest,
    ) -> Result<(), ControlError> {
        // Fetching and compiling a large component takes longer than other verbs.
        let timeout = self.timeout.max(Duration::from_secs(60));
        let reply: pb::StartComponentReply =
            self.request_within(host, HostVerb::StartComponent, &req, timeout).await?;
        check(reply.status)
    }

    /// Stops component `id` on `host`.
    pub async fn stop_component(&self, host: &str, id: &str) -> Result<(), ControlError> {
        let req = pb::StopComponentRequest { component_id: id.to_owned() };
        let reply: pb::StopComponentReply =
            self.request(host, HostVerb::StopComponent, &req).await?;
        check(reply.status)
    }

    /// Starts provider `id` of `kind` (for example `http-server`) on `host`, as a process or,
    /// with `builtin`, inside the host.
    pub async fn start_provider(
        &self,
        host: &str,
        id: &str,
        kind: &str,
        builtin: bool,
    ) -> Result<(), ControlError> {
        let req = pb::StartProviderRequest {
            provider_id: id.to_owned(),
            kind: kind.to_owned(),
            builtin,
            ..Default::default()
        };
        self.start_provider_with(host, req).await
    }

    /// Starts a provider on `host` as `req` says.
    pub async fn start_provider_with(
        &self,
        host: &str,
        req: pb::StartProviderRequest,
    ) -> Result<(), ControlError> {
        let reply: pb::StartProviderReply =
            self.request(host, HostVerb::StartProvider, &req).await?;
        check(reply.status)
    }

    /// Stops provider `id` on `host`.
    pub async fn stop_provider(&self, host: &str, id: &str) -> Result<(), ControlError> {
        let req = pb::StopProviderRequest { provider_id: id.to_owned() };
        let reply: pb::StopProviderReply = self.request(host, HostVerb::StopProvider, &req).await?;
        check(reply.status)
    }

    /// Asks `host` to drain (see [`pb::DrainRequest`]); it answers at once and drains in the
    /// background: watch its `draining` flag and inventory, or wait for it to leave.
    pub async fn drain_host(&self, host: &str, req: pb::DrainRequest) -> Result<(), ControlError> {
        let reply: pb::DrainReply = self.request(host, HostVerb::Drain, &req).await?;
        check(reply.status)
    }

    /// Asks `host` to compile artifact `digest` into the lattice's compile cache, ahead of any
    /// start (see [`pb::CompileRequest`]); answers once the code is stored: `true` when the
    /// cache already held it. Waits at least a minute (a large component compiles for seconds).
    pub async fn compile_ahead(&self, host: &str, digest: &str) -> Result<bool, ControlError> {
        let req = pb::CompileRequest { digest: digest.to_owned() };
        let timeout = self.timeout.max(Duration::from_secs(120));
        let reply: pb::CompileReply =
            self.request_within(host, HostVerb::Compile, &req, timeout).await?;
        check(reply.status)?;
        Ok(reply.already_cached)
    }

    /// Asks `host` (which must hold the lattice's secrets key) for secret `name`, sealed to
    /// `recipient` (a one-time public xkey whose seed only the caller holds). Needs an admin
    /// operator's signature.
    pub async fn secret_get(
        &self,
        host: &str,
        name: &str,
        recipient: &str,
    ) -> Result<Vec<u8>, ControlError> {
        let req =
            pb::SecretGetRequest { name: name.to_owned(), recipient_xkey: recipient.to_owned() };
        let reply: pb::SecretGetReply = self.request(host, HostVerb::SecretGet, &req).await?;
        check(reply.status)?;
        Ok(reply.sealed)
    }

    /// Invokes `interface.function` of `target` with a msgpack `payload`; returns the msgpack
    /// result. Errors are typed: match on [`InvokeError::kind`].
    pub async fn invoke(
        &self,
        target: &str,
        interface: &str,
        function: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, InvokeError> {
        let link = crate::link::DEFAULT_LINK_NAME;
        let call = Call {
            source: "cli",
            target,
            interface,
            function,
            link,
            payload,
            timeout,
            trace: None,
            caller: None,
            depth: 0,
        };
        send_invocation(&self.nats, &self.subjects, self.answers.as_deref(), call).await
    }

    async fn request<Req: Message, Rep: Message + Default>(
        &self,
        host: &str,
        verb: HostVerb,
        req: &Req,
    ) -> Result<Rep, ControlError> {
        self.request_within(host, verb, req, self.timeout).await
    }

    async fn request_within<Req: Message, Rep: Message + Default>(
        &self,
        host: &str,
        verb: HostVerb,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, ControlError> {
        crate::subject::validate_id("host id", host)?;
        let subject = self.subjects.host_control(host, verb);
        let body = req.encode_to_vec();
        let mut request = async_nats::Request::new().timeout(Some(timeout));
        if let Some(operator) = &self.operator {
            let deadline = crate::envelope::unix_ms()
                .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
            request = request.headers(operator.sign(&subject, &body, deadline));
        }
        let request = request.payload(body.into());
        let msg = self.nats.send_request(subject, request).await.map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => {
                ControlError::NoSuchHost { host: host.to_owned(), lattice: self.lattice.clone() }
            }
            RequestErrorKind::TimedOut => ControlError::Timeout { host: host.to_owned(), timeout },
            _ => nats_err(e),
        })?;
        Rep::decode(msg.payload)
            .map_err(|e| ControlError::Decode { from: host.to_owned(), reason: e.to_string() })
    }
}

/// One invocation to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Caller id.
    pub source: &'a str,
    /// Component or provider id.
    pub target: &'a str,
    /// `ns:pkg/iface` without version.
    pub interface: &'a str,
    /// Function name.
    pub function: &'a str,
    /// The caller's link name (picks the target provider's config for this caller).
    pub link: &'a str,
    /// msgpack arguments.
    pub payload: Bytes,
    /// How long to wait.
    pub timeout: Duration,
    /// The caller's span; `None` starts a new trace at the receiver.
    pub trace: Option<crate::trace::TraceContext>,
    /// When a component calls: its name in its claims (empty when unsigned); the target's
    /// claims may admit only some callers.
    pub caller: Option<&'a str>,
    /// Calls before this one in its chain (0 for a call that starts one).
    pub depth: u32,
}

/// Sends `call` over NATS (queue group of the target's replicas), authenticated when
/// `answers` (a signer's) are given, and returns the msgpack result or the typed error.
///
/// A signer MACs the call for the replicas it has met (pair keys) and signs it otherwise; a
/// replica it has not met yet refuses the MACs and gets the call again, signed, and its answer
/// introduces it (see [`crate::signing`]). Answers to an authenticated call are taken only
/// when they authenticate ([`crate::answers`]).
pub async fn send_invocation(
    nats: &Client,
    subjects: &Subjects,
    answers: Option<&crate::answers::Answers>,
    call: Call<'_>,
) -> Result<Bytes, InvokeError> {
    use crate::envelope::field;
    use crate::signing::{BY, KEY_NEEDED, Proof, Signed};
    let Call { source, target, interface, function, link, payload, timeout, trace, caller, depth } =
        call;
    let op = format!("{interface}.{function}");
    // A subject is shared, not copied, by a retry.
    let subject = async_nats::Subject::from(subjects.rpc(target, interface, function));
    let started = tokio::time::Instant::now();
    let chunked = crate::chunks::needs_chunks(nats, &payload);
    // Hashed once, for the signature and a body in chunks alike.
    let digest = (answers.is_some() || chunked).then(|| crate::signing::BodyDigest::of(&payload));
    // A body in chunks is offered once: signed, so no replica can ask for it again.
    let mut signature_only = chunked;
    // Sent again after a leaving replica's refusal (it did not run it).
    let mut resent = 0;
    // One call, one id: sent again signed, it is still the same call, so a replica that already
    // ran it refuses it as a replay rather than run it twice.
    let inv = crate::envelope::Invocation::new(source, &op, timeout, nuid::next().to_string())
        .with_link(link)
        .with_trace(trace)
        .with_caller(caller)
        .with_depth(depth);
    let msg = loop {
        let left = timeout.saturating_sub(started.elapsed());
        let mut headers = inv.to_headers();
        let proof = answers.zip(digest).map(|(answers, digest)| {
            // The signature or MACs cover the whole body, however it travels.
            let signed = Signed::of(&inv, subject.as_str(), digest);
            if signature_only {
                answers.signer().sign(&mut headers, &signed);
                Proof::Signature
            } else {
                answers.signer().authenticate(&mut headers, &signed, target)
            }
        });
        let body = if let Some(digest) = digest.filter(|_| chunked) {
            crate::chunks::offer(nats, &mut headers, payload.clone(), &digest, left).await?;
            Bytes::new()
        } else {
            payload.clone()
        };
        let msg = match answers.zip(proof) {
            Some((answers, proof)) => {
                // Kept to tell the answer of a host the call was MAC'd for from a stranger's.
                let macs = field(Some(&headers), crate::signing::MAC).map(str::to_owned);
                let expect = crate::answers::Expect { jti: inv.jti.clone(), proof, macs };
                answers
                    .request(subject.clone(), headers, body, expect, left)
                    .await
                    .map_err(|e| answer_error(target, timeout, e))?
            }
            None => {
                let request =
                    async_nats::Request::new().headers(headers).payload(body).timeout(Some(left));
                nats.send_request(subject.clone(), request)
                    .await
                    .map_err(|e| invoke_request_error(target, timeout, e.kind(), &e))?
            }
        };
        if let Some(err) = InvokeError::from_reply(msg.headers.as_ref(), &msg.payload) {
            let has = |name: &'static str| field(msg.headers.as_ref(), name).is_some();
            // A replica this host has not met asks for the signature (only of MAC'd calls).
            if has(KEY_NEEDED)
                && proof == Some(Proof::PairKey)
                && crate::signing::is_key_needed(&err)
            {
                signature_only = true;
                continue;
            }
            // A replica leaving its queue group did not run it: another one will (or, once it
            // has left and none is left, the call ends with `NoResponders`).
            if has(crate::envelope::header::LEAVING) && resent < MAX_RESENDS {
                resent += 1;
                continue;
            }
            return Err(err);
        }
        if let (Some(answers), Some(by)) = (answers, field(msg.headers.as_ref(), BY)) {
            answers.signer().learn(target, by);
        }
        break msg;
    };
    match crate::chunks::announced(msg.headers.as_ref()).transpose()? {
        Some(announced) => {
            let left = timeout.saturating_sub(started.elapsed());
            crate::chunks::fetch(nats, &announced, left).await
        }
        None => Ok(msg.payload),
    }
}

/// How often a call is sent again after leaving replicas' refusals: a leaving replica takes at
/// most 64 more messages before it has left (see the host's `inbound::serve`).
const MAX_RESENDS: u32 = 128;

/// Maps a failure to get an authentic answer to its typed kind.
fn answer_error(target: &str, timeout: Duration, e: crate::answers::AnswerError) -> InvokeError {
    use crate::answers::AnswerError;
    let kind = match &e {
        AnswerError::NoResponders => RequestErrorKind::NoResponders,
        AnswerError::TimedOut => RequestErrorKind::TimedOut,
        AnswerError::Failed(_) => RequestErrorKind::Other,
        AnswerError::Silent => {
            return InvokeError::new(
                InvokeErrorKind::Unavailable,
                format!(
                    "the replica of `{target}` that took the call went silent: no answer and no \
                     word that it still runs it for {:?} (its host died or was cut off); the \
                     call may or may not have run",
                    crate::answers::SILENCE
                ),
            );
        }
    };
    invoke_request_error(target, timeout, kind, &e)
}

/// Maps a NATS request failure of an invocation to its typed kind.
pub fn invoke_request_error(
    target: &str,
    timeout: Duration,
    kind: RequestErrorKind,
    source: &dyn std::fmt::Display,
) -> InvokeError {
    match kind {
        RequestErrorKind::NoResponders => InvokeError::new(
            InvokeErrorKind::NoResponders,
            format!(
                "no replica of `{target}` is running in the lattice; start one with `trellis start component`"
            ),
        ),
        RequestErrorKind::TimedOut => InvokeError::new(
            InvokeErrorKind::Timeout,
            format!("`{target}` did not answer within {timeout:?}"),
        ),
        RequestErrorKind::InvalidSubject => InvokeError::new(
            InvokeErrorKind::BadRequest,
            format!("`{target}` is not a valid call target: {source}"),
        ),
        RequestErrorKind::MaxPayloadExceeded => InvokeError::new(
            InvokeErrorKind::TooLarge,
            format!("the call to `{target}` exceeds the lattice's message size: {source}"),
        ),
        _ => InvokeError::new(
            InvokeErrorKind::Unavailable,
            format!("cannot reach `{target}`: {source}"),
        ),
    }
}

/// How long [`LatticeClient::hosts`] waits after the last reply before it takes the list as
/// complete, given how long the first reply took: 100 ms, or twice the first round trip when
/// the lattice is slower than that (a loaded server or a distant leaf node), at most 2 s.
pub fn ping_quiet_gap(first_reply: Duration) -> Duration {
    (first_reply * 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

fn check(status: Option<pb::Status>) -> Result<(), ControlError> {
    let status = status.unwrap_or_default();
    match pb::ErrorCode::try_from(status.code) {
        Ok(pb::ErrorCode::Ok) => Ok(()),
        Ok(code) => Err(ControlError::Remote { code, message: status.message }),
        Err(_) => {
            Err(ControlError::Remote { code: pb::ErrorCode::Internal, message: status.message })
        }
    }
}

fn nats_err(e: impl std::fmt::Display) -> ControlError {
    ControlError::Nats(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quiet_gap_follows_a_slow_first_reply_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(ping_quiet_gap(ms(2)), ms(100), "a fast lattice waits 100 ms");
        assert_eq!(ping_quiet_gap(ms(300)), ms(600), "a slow one twice its round trip");
        assert_eq!(ping_quiet_gap(Duration::from_secs(5)), Duration::from_secs(2), "at most 2 s");
    }
}
