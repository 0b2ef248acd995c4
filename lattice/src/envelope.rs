//! The invocation envelope: NATS headers around a msgpack body, and the typed error a caller
//! gets back.
//!
//! A reply either carries the msgpack result, or the header [`header::ERROR`] naming an
//! [`InvokeErrorKind`] with a human message as the body. Callers match on the kind.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;

use crate::trace::{NatsHeaders, TraceContext};

/// Header names of the envelope.
pub mod header {
    /// Id of the caller (component, provider or `cli`).
    pub const SRC: &str = "trellis-src";
    /// The operation, `ns:pkg/iface.function`.
    pub const OP: &str = "trellis-op";
    /// Absolute deadline in unix milliseconds; the receiver drops work past it.
    pub const DEADLINE: &str = "trellis-deadline";
    /// Unique id of this invocation.
    pub const JTI: &str = "trellis-jti";
    /// The caller's link name, when not `default`: a provider picks that link's config.
    pub const LINK: &str = "trellis-link";
    /// On a call made by a component: its name in its claims (empty when unsigned). Absent on
    /// calls from providers and operators.
    pub const CALLER: &str = "trellis-caller";
    /// On a reply: the [`super::InvokeErrorKind`] of a failed call.
    pub const ERROR: &str = "trellis-error";
    /// On an `Unavailable` reply: the replica that got the call is leaving its queue group and
    /// did not run it; the caller sends the same call again, for another replica.
    pub const LEAVING: &str = "trellis-leaving";
    /// On an `Unavailable` reply: the replica that got the call was overloaded and did not
    /// look at it.
    pub const SHED: &str = "trellis-shed";
    /// On a message to a call's reply subject that is not its answer: the replica that took the
    /// call still runs it (see [`crate::answers`]).
    pub const RUNNING: &str = "trellis-running";
    /// How many calls deep in a chain of component calls this one is (absent: 0, the first).
    pub const DEPTH: &str = "trellis-depth";
}

/// The deepest chain of component calls (A calls B calls C ...) a call may be part of: a cycle
/// (A calls B calls A) ends here with `BadRequest` instead of filling every instance slot.
pub const MAX_CALL_DEPTH: u32 = 32;

/// What went wrong with an invocation. Stable names: they cross the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvokeErrorKind {
    /// No link binds the caller's import to a target.
    NoLink,
    /// No replica of the target is running anywhere in the lattice.
    NoResponders,
    /// The target did not answer before the deadline.
    Timeout,
    /// The call was refused by identity, claims or policy checks.
    Denied,
    /// The component trapped (or its handler failed) while serving the call.
    Trap,
    /// The payload exceeds what the lattice carries.
    TooLarge,
    /// The call could not be decoded or does not fit the target's interface.
    BadRequest,
    /// The target exists but cannot serve now (draining, overloaded, NATS down).
    Unavailable,
}

impl InvokeErrorKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [InvokeErrorKind; 8] = [
        InvokeErrorKind::NoLink,
        InvokeErrorKind::NoResponders,
        InvokeErrorKind::Timeout,
        InvokeErrorKind::Denied,
        InvokeErrorKind::Trap,
        InvokeErrorKind::TooLarge,
        InvokeErrorKind::BadRequest,
        InvokeErrorKind::Unavailable,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokeErrorKind::NoLink => "NoLink",
            InvokeErrorKind::NoResponders => "NoResponders",
            InvokeErrorKind::Timeout => "Timeout",
            InvokeErrorKind::Denied => "Denied",
            InvokeErrorKind::Trap => "Trap",
            InvokeErrorKind::TooLarge => "TooLarge",
            InvokeErrorKind::BadRequest => "BadRequest",
            InvokeErrorKind::Unavailable => "Unavailable",
        }
    }

    /// Parses a wire name; unknown names (from a newer peer) become `Unavailable`.
    pub fn from_wire(name: &str) -> Self {
        Self::ALL.into_iter().find(|k| k.as_str() == name).unwrap_or(InvokeErrorKind::Unavailable)
    }

    /// The HTTP status that best reports this kind to an HTTP client.
    pub fn http_status(self) -> u16 {
        match self {
            InvokeErrorKind::NoLink | InvokeErrorKind::NoResponders => 503,
            InvokeErrorKind::Unavailable => 503,
            InvokeErrorKind::Timeout => 504,
            InvokeErrorKind::Denied => 403,
            InvokeErrorKind::Trap => 500,
            InvokeErrorKind::TooLarge => 413,
            InvokeErrorKind::BadRequest => 400,
        }
    }
}

impl fmt::Display for InvokeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed invocation: a kind to match on and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    kind: InvokeErrorKind,
    message: String,
}

impl InvokeError {
    /// A new error of `kind`.
    pub fn new(kind: InvokeErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// What went wrong.
    pub fn kind(&self) -> InvokeErrorKind {
        self.kind
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Headers of an error reply.
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        set(&mut headers, header::ERROR, self.kind.as_str());
        headers
    }

    /// Reads an error reply; `None` when the reply is a success.
    pub fn from_reply(headers: Option<&HeaderMap>, body: &[u8]) -> Option<Self> {
        let kind = field(headers, header::ERROR)?;
        Some(Self {
            kind: InvokeErrorKind::from_wire(kind),
            message: String::from_utf8_lossy(body).into_owned(),
        })
    }
}

/// The routing facts of one invocation, carried in headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Caller id.
    pub source: String,
    /// `ns:pkg/iface.function`
    pub operation: String,
    /// Unix milliseconds after which the call is abandoned.
    pub deadline_ms: u64,
    /// Unique id of the call.
    pub jti: String,
    /// The caller's link name ([`crate::link::DEFAULT_LINK_NAME`] when absent on the wire).
    pub link: String,
    /// The caller's span (`traceparent`); `None` when absent or malformed. Not signed: it
    /// decides nothing.
    pub trace: Option<TraceContext>,
    /// When a component calls: its name in its claims (empty when unsigned).
    pub caller: Option<String>,
    /// Calls before this one in its chain ([`MAX_CALL_DEPTH`]). Not signed: raising it only
    /// makes the call fail sooner.
    pub depth: u32,
}

impl Invocation {
    /// An invocation due `timeout` from now.
    pub fn new(source: &str, operation: &str, timeout: Duration, jti: String) -> Self {
        Self {
            source: source.to_owned(),
            operation: operation.to_owned(),
            deadline_ms: unix_ms()
                .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            jti,
            link: crate::link::DEFAULT_LINK_NAME.to_owned(),
            trace: None,
            caller: None,
            depth: 0,
        }
    }

    /// The same invocation `depth` calls deep in its chain.
    pub fn with_depth(mut self, depth: u32) -> Self {
        self.depth = depth;
        self
    }

    /// The same invocation made by the component named `caller` in its claims.
    pub fn with_caller(mut self, caller: Option<&str>) -> Self {
        self.caller = caller.map(str::to_owned);
        self
    }

    /// The same invocation made from span `trace`.
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The same invocation over link `name`.
    pub fn with_link(mut self, name: &str) -> Self {
        name.clone_into(&mut self.link);
        self
    }

    /// The envelope headers.
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        set(&mut headers, header::SRC, self.source.as_str());
        set(&mut headers, header::OP, self.operation.as_str());
        set(&mut headers, header::DEADLINE, self.deadline_ms.to_string());
        set(&mut headers, header::JTI, self.jti.as_str());
        if self.link != crate::link::DEFAULT_LINK_NAME {
            set(&mut headers, header::LINK, self.link.as_str());
        }
        if let Some(trace) = &self.trace {
            trace.inject(&mut NatsHeaders(&mut headers));
        }
        if let Some(caller) = &self.caller {
            set(&mut headers, header::CALLER, caller.as_str());
        }
        if self.depth > 0 {
            set(&mut headers, header::DEPTH, self.depth.to_string());
        }
        headers
    }

    /// Reads the envelope of a received invocation.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Result<Self, InvokeError> {
        let headers = headers.ok_or_else(|| bad("invocation carries no envelope headers"))?;
        let get = |name: &'static str| {
            field(Some(headers), name)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("invocation lacks the `{name}` header")))
        };
        let deadline_ms = get(header::DEADLINE)?
            .parse()
            .map_err(|_| bad("`trellis-deadline` is not unix milliseconds"))?;
        Ok(Self {
            source: get(header::SRC)?,
            operation: get(header::OP)?,
            deadline_ms,
            jti: get(header::JTI)?,
            link: link_name(Some(headers)).to_owned(),
            trace: trace_parent(Some(headers)),
            caller: field(Some(headers), header::CALLER).map(str::to_owned),
            depth: call_depth(Some(headers)),
        })
    }
}

/// One header of `headers`, by a name known when compiling.
///
/// `HeaderMap::get(&str)` checks the name and copies it into a new allocation on every lookup;
/// a static name needs neither, and a call looks up a dozen headers on each end.
pub fn field<'h>(headers: Option<&'h HeaderMap>, name: &'static str) -> Option<&'h str> {
    headers?.get(async_nats::HeaderName::from_static(name)).map(async_nats::HeaderValue::as_str)
}

/// Sets one header of `headers`, by a name known when compiling.
///
/// `HeaderMap::insert(&str, ..)` checks the name and copies it into a new allocation; a static
/// name needs neither, and a call sets half a dozen headers. A `String` value is kept as it is.
pub fn set(
    headers: &mut HeaderMap,
    name: &'static str,
    value: impl async_nats::header::IntoHeaderValue,
) {
    headers.insert(async_nats::HeaderName::from_static(name), value);
}

/// How deep in its chain a received call is (0 when its headers do not say, or say nonsense).
pub fn call_depth(headers: Option<&HeaderMap>) -> u32 {
    field(headers, header::DEPTH).and_then(|d| d.parse().ok()).unwrap_or(0)
}

/// The link name an invocation's headers carry (`default` when they name none).
pub fn link_name(headers: Option<&HeaderMap>) -> &str {
    field(headers, header::LINK).unwrap_or(crate::link::DEFAULT_LINK_NAME)
}

/// The caller's span an invocation's headers carry; `None` when absent or malformed.
pub fn trace_parent(headers: Option<&HeaderMap>) -> Option<TraceContext> {
    TraceContext::extract(&NatsHeaders(headers?))
}

/// Time left until `deadline_ms`; `None` once it has passed.
pub fn remaining(deadline_ms: u64) -> Option<Duration> {
    let now = unix_ms();
    (deadline_ms > now).then(|| Duration::from_millis(deadline_ms - now))
}

fn bad(message: &str) -> InvokeError {
    InvokeError::new(InvokeErrorKind::BadRequest, message)
}

/// Milliseconds since the unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips() {
        let inv = Invocation::new(
            "web",
            "wasi:http/incoming-handler.handle",
            Duration::from_secs(5),
            "j1".into(),
        )
        .with_link("cache");
        let parsed = Invocation::from_headers(Some(&inv.to_headers())).unwrap();
        assert_eq!(parsed, inv);
        assert!(remaining(parsed.deadline_ms).unwrap() > Duration::from_secs(4));
    }

    #[test]
    fn missing_headers_are_bad_requests() {
        let err = Invocation::from_headers(None).unwrap_err();
        assert_eq!(err.kind(), InvokeErrorKind::BadRequest);
        let mut headers = Invocation::new("a", "b", Duration::ZERO, "j".into()).to_headers();
        headers.insert(header::DEADLINE, "soon");
        let err = Invocation::from_headers(Some(&headers)).unwrap_err();
        assert!(err.message().contains("trellis-deadline"), "{err}");
    }

    #[test]
    fn errors_round_trip_through_reply_headers() {
        for kind in InvokeErrorKind::ALL {
            let err = InvokeError::new(kind, "why");
            let back = InvokeError::from_reply(Some(&err.to_headers()), b"why").unwrap();
            assert_eq!(back, err);
        }
        assert_eq!(InvokeError::from_reply(None, b""), None);
        assert_eq!(InvokeErrorKind::from_wire("Martian"), InvokeErrorKind::Unavailable);
    }
}
