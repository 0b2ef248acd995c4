//! The inbound gate: what a call received over NATS must pass before anything runs it.
//!
//! Plain data in (subject, reply subject, headers, body, `now`), a verdict out: the call's
//! interface, function, caller and time left, or the typed error to answer with. The subject
//! must be an invocation, the envelope must verify (signature or pair-key MAC, signer, reply
//! inbox, replay, deadline), and the signed operation must name what the subject routes to.
//! The policy service's word, when the host has one, is the one step that does I/O
//! ([`Gate::authorize`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use trellis_lattice::envelope::{InvokeError, InvokeErrorKind, header};
use trellis_lattice::policy::Policy;
use trellis_lattice::signing::{Body, Proof, Verifier};
use trellis_lattice::subject::{Subject, Subjects};

/// One in this many answers to MAC'd calls names its host.
const REMIND_EVERY: u64 = 16;

/// A call as it arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival<'m> {
    pub subject: &'m str,
    /// Where the answer goes (must lie in a signer's inbox).
    pub reply: &'m str,
    pub headers: Option<&'m HeaderMap>,
    /// The body, or the length and digest of one in chunks (pulled only once the call passed).
    pub body: Body<'m>,
}

impl<'m> Arrival<'m> {
    /// A header of the envelope; empty when absent.
    pub fn field(&self, name: &'static str) -> &'m str {
        trellis_lattice::envelope::field(self.headers, name).unwrap_or_default()
    }
}

/// A call the gate let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted<'m> {
    /// `ns:pkg/iface`, without version.
    pub interface: &'m str,
    pub function: &'m str,
    /// The calling component or provider (verified with the envelope).
    pub source: &'m str,
    /// Time left until the caller's deadline, at most the host's longest call.
    pub timeout: Duration,
    /// Whether the answer names this host (`trellis-by`), see [`Gate::check`].
    pub introduce: bool,
    /// The host that signed or MAC'd the call, whose answer is authenticated for it.
    pub caller_host: Option<&'m str>,
}

/// The checks a received call passes, and their counters.
#[derive(Debug)]
pub(crate) struct Gate {
    subjects: Subjects,
    verifier: Verifier,
    /// Asked before a received call runs, when the host uses a policy service.
    policy: Option<Policy>,
    /// No call runs longer than this, whatever its caller asked.
    max_call_time: Duration,
    /// Calls refused.
    denied: AtomicU64,
    /// MAC'd calls let through, for the one-in-[`REMIND_EVERY`] introductions.
    reminders: AtomicU64,
}

impl Gate {
    pub fn new(
        subjects: Subjects,
        verifier: Verifier,
        policy: Option<Policy>,
        max_call_time: Duration,
    ) -> Self {
        Self {
            subjects,
            verifier,
            policy,
            max_call_time,
            denied: AtomicU64::new(0),
            reminders: AtomicU64::new(0),
        }
    }

    /// Checks `call` at `now_ms` (unix ms). Never builds an error on success.
    ///
    /// The answer to a let-through call names this host always for a signed call (the caller
    /// has not met this host, or knows many) and for one in [`REMIND_EVERY`] MAC'd calls, so
    /// callers keep the replicas that still answer ahead of those that stopped; never when this
    /// host cannot check MACs.
    pub fn check<'m>(&self, call: &Arrival<'m>, now_ms: u64) -> Result<Admitted<'m>, InvokeError> {
        let Some(Subject::Rpc { interface, function, .. }) = self.subjects.parse(call.subject)
        else {
            return Err(InvokeError::new(
                InvokeErrorKind::BadRequest,
                "malformed invocation subject",
            ));
        };
        let verified =
            self.verifier.verify((call.subject, call.reply), call.headers, call.body, now_ms)?;
        // The signed operation must name what the subject routes to, or a policy decision about
        // one function could admit a call of another.
        let op = call.field(header::OP);
        if op.strip_prefix(interface).and_then(|rest| rest.strip_prefix('.')) != Some(function) {
            return Err(InvokeError::new(
                InvokeErrorKind::Denied,
                "the operation header does not match the subject",
            ));
        }
        // The verifier refused passed deadlines, so some time is left.
        let left = Duration::from_millis(verified.deadline_ms.saturating_sub(now_ms));
        let introduce = self.verifier.takes_macs()
            && match verified.proof {
                Some(Proof::Signature) => true,
                Some(Proof::PairKey) => {
                    self.reminders.fetch_add(1, Ordering::Relaxed).is_multiple_of(REMIND_EVERY)
                }
                None => false,
            };
        Ok(Admitted {
            interface,
            function,
            source: call.field(header::SRC),
            timeout: left.min(self.max_call_time),
            introduce,
            caller_host: verified.proof.map(|_| call.field(trellis_lattice::signing::HOST)),
        })
    }

    /// Asks the policy service (if any) whether `source` may call `operation` of `target`.
    pub async fn authorize(
        &self,
        source: &str,
        target: &str,
        operation: &str,
    ) -> Result<(), InvokeError> {
        let Some(policy) = &self.policy else { return Ok(()) };
        let request = trellis_proto::PolicyRequest {
            kind: "invoke".into(),
            id: target.to_owned(),
            source: source.to_owned(),
            operation: operation.to_owned(),
            ..Default::default()
        };
        // Boxed: a request's future is large, and most calls never make one.
        Box::pin(policy.decide(request))
            .await
            .map_err(|e| InvokeError::new(InvokeErrorKind::Denied, e.to_string()))
    }

    /// Whether calls that stay on this host need the policy's word too.
    pub fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    /// Counts a refused call.
    pub fn count_denied(&self) {
        self.denied.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused since start.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Calls accepted by signature and by pair key.
    pub fn accepted(&self) -> (u64, u64) {
        self.verifier.accepted()
    }

    /// The longest a call may run here.
    pub fn max_call_time(&self) -> Duration {
        self.max_call_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkeys::KeyPair;
    use trellis_lattice::envelope::Invocation;
    use trellis_lattice::signing::{Signer, inbox_prefix, invocation_headers};

    const NOW: u64 = 1_800_000_000_000;

    struct Case {
        gate: Gate,
        subject: String,
        signer: Signer,
    }

    fn case(allow_unsigned: bool) -> Case {
        let subjects = Subjects::new("test").unwrap();
        let subject = subjects.rpc("greeter", "acme:greeter/api", "greet");
        let verifier = Verifier::new(vec![], allow_unsigned, 60_000);
        let gate = Gate::new(subjects, verifier, None, Duration::from_secs(5));
        Case { gate, subject, signer: Signer::new(KeyPair::new_server(), None) }
    }

    fn headers(case: &Case, op: &str, jti: &str, deadline_ms: u64, body: &[u8]) -> HeaderMap {
        let inv = Invocation::new("caller", op, Duration::ZERO, jti.into());
        let inv = Invocation { deadline_ms, ..inv };
        invocation_headers(&inv, &case.subject, body, Some(&case.signer))
    }

    fn reply(case: &Case) -> String {
        format!("{}.1", inbox_prefix(case.signer.public_key()))
    }

    #[test]
    fn a_signed_call_passes_with_its_time_left_capped() {
        let c = case(false);
        let h = headers(&c, "acme:greeter/api.greet", "j1", NOW + 30_000, b"x");
        let reply = reply(&c);
        let call = Arrival {
            subject: &c.subject,
            reply: &reply,
            headers: Some(&h),
            body: Body::Bytes(b"x"),
        };
        let ok = c.gate.check(&call, NOW).unwrap();
        assert_eq!((ok.interface, ok.function, ok.source), ("acme:greeter/api", "greet", "caller"));
        assert_eq!(ok.timeout, Duration::from_secs(5), "capped at the host's longest call");
        assert!(!ok.introduce, "a host without pair keys asks for no MACs");
        assert_eq!(c.gate.accepted(), (1, 0));
    }

    #[test]
    fn replays_bad_subjects_and_mismatched_operations_are_refused() {
        let c = case(false);
        let reply = reply(&c);
        let h = headers(&c, "acme:greeter/api.greet", "j1", NOW + 1000, b"x");
        let call = Arrival {
            subject: &c.subject,
            reply: &reply,
            headers: Some(&h),
            body: Body::Bytes(b"x"),
        };
        assert!(c.gate.check(&call, NOW).is_ok());
        let again = c.gate.check(&call, NOW).unwrap_err();
        assert_eq!(again.kind(), InvokeErrorKind::Denied, "{again}");

        let other = Arrival { subject: "trellis.test.ctl.hosts.ping", ..call };
        assert_eq!(c.gate.check(&other, NOW).unwrap_err().kind(), InvokeErrorKind::BadRequest);

        // Signed for another function than the subject names.
        let h = headers(&c, "acme:greeter/api.other", "j2", NOW + 1000, b"x");
        let call = Arrival { headers: Some(&h), ..call };
        let e = c.gate.check(&call, NOW).unwrap_err();
        assert!(e.message().contains("operation header"), "{e}");

        let tampered = Arrival { body: Body::Bytes(b"y"), ..call };
        assert_eq!(c.gate.check(&tampered, NOW).unwrap_err().kind(), InvokeErrorKind::Denied);
    }

    #[test]
    fn unsigned_calls_pass_only_on_development_hosts() {
        for allow in [false, true] {
            let c = case(allow);
            let inv =
                Invocation::new("caller", "acme:greeter/api.greet", Duration::ZERO, "j".into());
            let inv = Invocation { deadline_ms: NOW + 1000, ..inv };
            let h = invocation_headers(&inv, &c.subject, b"", None);
            let call = Arrival {
                subject: &c.subject,
                reply: "_INBOX.x.1",
                headers: Some(&h),
                body: Body::Bytes(b""),
            };
            assert_eq!(c.gate.check(&call, NOW).is_ok(), allow);
        }
    }

    #[test]
    fn late_calls_time_out_and_missing_envelopes_are_refused() {
        let c = case(true);
        let reply = reply(&c);
        let h = headers(&c, "acme:greeter/api.greet", "j1", NOW - 1, b"");
        let call = Arrival {
            subject: &c.subject,
            reply: &reply,
            headers: Some(&h),
            body: Body::Bytes(b""),
        };
        // Late is a timeout, not a denial: the caller has given up on it already.
        assert_eq!(c.gate.check(&call, NOW).unwrap_err().kind(), InvokeErrorKind::Timeout);
        let bare = Arrival { headers: None, ..call };
        assert_eq!(c.gate.check(&bare, NOW).unwrap_err().kind(), InvokeErrorKind::Denied);
    }

    #[test]
    fn hosts_with_pair_keys_introduce_themselves_to_signers() {
        let subjects = Subjects::new("test").unwrap();
        let me = Signer::new(KeyPair::new_server(), None);
        let verifier = Verifier::new(vec![], false, 60_000).with_pair_keys(me.pair_keys());
        let gate = Gate::new(subjects.clone(), verifier, None, Duration::from_secs(5));
        let c = Case { gate, subject: subjects.rpc("g", "a:b/c", "f"), signer: me };
        let h = headers(&c, "a:b/c.f", "j1", NOW + 1000, b"");
        let reply = reply(&c);
        let call = Arrival {
            subject: &c.subject,
            reply: &reply,
            headers: Some(&h),
            body: Body::Bytes(b""),
        };
        assert!(c.gate.check(&call, NOW).unwrap().introduce);
    }
}
