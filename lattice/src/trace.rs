//! W3C trace context (`traceparent`), carried on every hop of a call: HTTP in and out, the
//! host–provider pipe, and invocations over NATS, so one request is one trace across hosts.
//!
//! Each hop that receives a call continues the caller's trace with a span of its own
//! ([`TraceContext::next`] of the parsed `traceparent`); what it sends on is that span's
//! `traceparent`. A missing
//! or malformed `traceparent` starts a new trace.
//!
//! A carrier (NATS headers, HTTP headers) is read and written through OpenTelemetry's
//! [`Extractor`] and [`Injector`], as a `TextMapPropagator` would: [`NatsHeaders`] for NATS
//! messages, `opentelemetry-http`'s [`HeaderExtractor`] and [`HeaderInjector`] for HTTP.

use std::cell::Cell;
use std::fmt;

use async_nats::HeaderMap;
pub use opentelemetry::propagation::{Extractor, Injector};
pub use opentelemetry_http::{HeaderExtractor, HeaderInjector};

/// The `traceparent` header name (HTTP, NATS headers).
pub const TRACEPARENT: &str = "traceparent";

/// One span's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace: the same on every hop of one request.
    pub trace_id: u128,
    /// This span.
    pub span_id: u64,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when it is malformed, has
    /// the invalid version `ff`, or an all-zero id.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let value = traceparent.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may append more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !is_hex(version, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(is_hex(trace, 32).then_some(trace)?, 16).ok()?;
        let span_id = u64::from_str_radix(is_hex(span, 16).then_some(span)?, 16).ok()?;
        let flags = u8::from_str_radix(is_hex(flags, 2).then_some(flags)?, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self { trace_id, span_id, flags })
    }

    /// A new trace (sampled).
    pub fn root() -> Self {
        let trace_id = (u128::from(random()) << 64) | u128::from(random());
        Self { trace_id: trace_id.max(1), span_id: random().max(1), flags: 1 }
    }

    /// A new span in the same trace, whose parent is this one.
    pub fn child(&self) -> Self {
        Self { span_id: random().max(1), ..*self }
    }

    /// The span of a hop called from span `parent`: its child, or a new trace without one.
    pub fn next(parent: Option<TraceContext>) -> Self {
        parent.map_or_else(Self::root, |parent| parent.child())
    }

    /// The trace id as 32 hex digits (what logs and trace backends show).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// Writes this span's `traceparent` into `carrier`.
    pub fn inject(&self, carrier: &mut dyn Injector) {
        carrier.set(TRACEPARENT, self.to_string());
    }

    /// The caller's span `carrier` names; `None` when it names none or a malformed one.
    pub fn extract(carrier: &dyn Extractor) -> Option<Self> {
        Self::parse(carrier.get(TRACEPARENT)?)
    }
}

/// The headers of a NATS message as a carrier of trace context: `NatsHeaders(&headers)` to
/// read, `NatsHeaders(&mut headers)` to write.
#[derive(Debug)]
pub struct NatsHeaders<H>(pub H);

impl Injector for NatsHeaders<&mut HeaderMap> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            // A static name: no check and no copy of it on every call.
            TRACEPARENT => crate::envelope::set(self.0, TRACEPARENT, value),
            _ => self.0.insert(key, value),
        }
    }
}

impl Extractor for NatsHeaders<&HeaderMap> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => crate::envelope::field(Some(self.0), TRACEPARENT),
            _ => self.0.get(key).map(async_nats::HeaderValue::as_str),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value of this span.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

/// `len` lowercase hex digits, as W3C trace context requires.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // The OS's randomness once per thread; a fixed seed only if it is unavailable.
    if getrandom::getrandom(&mut bytes).is_err() {
        bytes = 0x9e37_79b9_7f4a_7c15u64.to_le_bytes();
    }
    u64::from_le_bytes(bytes) | 1
}

/// A fast random u64 (xorshift64*), unique enough for span ids; not for secrets.
fn random() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_parse_and_print_back() {
        let t = TraceContext::parse(GOOD).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(t.to_string(), GOOD);
        // A later version may carry more fields.
        assert!(TraceContext::parse(&format!("01{}-extra", &GOOD[2..])).is_some());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn nats_headers_carry_the_context_both_ways() {
        let sent = TraceContext::parse(GOOD).unwrap();
        let mut headers = HeaderMap::new();
        sent.inject(&mut NatsHeaders(&mut headers));
        assert_eq!(headers.get(TRACEPARENT).map(|v| v.as_str()), Some(GOOD));
        let carrier = NatsHeaders(&headers);
        assert_eq!(TraceContext::extract(&carrier), Some(sent));
        assert_eq!(carrier.keys(), [TRACEPARENT]);
        NatsHeaders(&mut headers).set("tracestate", "k=v".into());
        assert_eq!(NatsHeaders(&headers).get("tracestate"), Some("k=v"));
        assert_eq!(TraceContext::extract(&NatsHeaders(&HeaderMap::new())), None);
    }

    #[test]
    fn a_hop_continues_the_trace_with_a_span_of_its_own() {
        let parent = TraceContext::parse(GOOD).unwrap();
        let hop = TraceContext::next(TraceContext::parse(GOOD));
        assert_eq!(hop.trace_id, parent.trace_id);
        assert_ne!(hop.span_id, parent.span_id);
        let fresh = TraceContext::next(TraceContext::parse("garbage"));
        assert_ne!(fresh.trace_id, parent.trace_id);
        assert_ne!(TraceContext::root().trace_id, TraceContext::root().trace_id);
    }
}
