//! Spans of Trellis calls, in OpenTelemetry's terms, and where their export is configured.
//!
//! Trellis keeps a thin [`Span`] in front of the OpenTelemetry SDK so that telemetry costs nothing
//! when it is off: [`Span::start`] checks one flag, builds nothing and allocates nothing. The span
//! ids are the ones [`crate::trace`] propagates, so what a collector receives links up across
//! hosts and providers exactly as the `traceparent` headers do.
//!
//! Exporting is not part of the wire contract: the `trellis-otlp` crate builds the OTLP
//! exporters (HTTP or gRPC, with TLS) and hands the SDK's pipeline to [`install`]; the binaries
//! that export (the `trellis` host and the provider executables) call it. What this module keeps
//! is what crosses processes: where to export ([`Config`], sent to providers in their
//! bootstrap) and the span ids.
//!
//! ```
//! use trellis_lattice::telemetry::{Kind, Span};
//! use trellis_lattice::trace::TraceContext;
//!
//! // Nothing installed: the span is free and passes its ids on unchanged.
//! let this = TraceContext::root();
//! let mut span = Span::start(this, None, Kind::Server, || "GET /".into());
//! span.attr("url.path", || "/".into());
//! assert_eq!(span.context(), this);
//! ```

mod config;
mod ids;

use std::sync::OnceLock;

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, Span as SdkSpan, TracerProviderBuilder,
};

pub use config::{Config, ConfigError, Endpoint, Protocol, Signal};

use crate::trace::TraceContext;

/// What a span is, in OpenTelemetry's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside one process.
    Internal,
    /// Handling a request from elsewhere.
    Server,
    /// A request to elsewhere.
    Client,
    /// Handing a message on.
    Producer,
    /// Handling a message.
    Consumer,
}

impl From<Kind> for SpanKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Internal => SpanKind::Internal,
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
        }
    }
}

/// The process's tracer, once exporting. Kept for the life of the process, as the exporter
/// before it was: a builtin provider inside a host shares it.
#[derive(Debug)]
struct Tracing {
    tracer: SdkTracer,
    _provider: SdkTracerProvider,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Starts recording spans into the pipeline `builder` holds (an exporter's span processor and
/// resource: see the `trellis-otlp` crate), with the span ids Trellis propagates. Once per
/// process: `false` when spans are already recorded (a builtin provider inside a host keeps the
/// host's pipeline), and `builder` is dropped.
pub fn install(builder: TracerProviderBuilder) -> bool {
    if enabled() {
        return false;
    }
    let provider = builder.with_id_generator(ids::PresetIds).build();
    let tracer = provider.tracer_with_scope(scope());
    TRACING.set(Tracing { tracer, _provider: provider }).is_ok()
}

/// The instrumentation scope of everything Trellis exports.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("trellis").with_version(env!("CARGO_PKG_VERSION")).build()
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// One span: started now, ended (and queued for export) when dropped.
#[derive(Debug)]
pub struct Span {
    /// The SDK's span while it records; `None` when off or not sampled.
    record: Option<Box<SdkSpan>>,
    /// Its ids, with the sampling decision in the flags.
    context: TraceContext,
}

impl Span {
    /// Starts span `this` (its ids), child of `parent` (`None`: a root), named by `name` (only
    /// called when exporting).
    pub fn start(
        this: TraceContext,
        parent: Option<TraceContext>,
        kind: Kind,
        name: impl FnOnce() -> String,
    ) -> Self {
        match TRACING.get() {
            None => Self { record: None, context: this },
            Some(tracing) => tracing.start(this, parent, kind, name()),
        }
    }

    /// A span of a Trellis call, `interface.function` from `source` to `target`, named and
    /// described as OpenTelemetry's RPC conventions say.
    pub fn rpc(
        (this, parent, kind): (TraceContext, Option<TraceContext>, Kind),
        (interface, function): (&str, &str),
        (source, target): (&str, &str),
    ) -> Self {
        let mut span = Self::start(this, parent, kind, || format!("{interface}/{function}"));
        span.attr("rpc.system", || "trellis".into());
        span.attr("rpc.service", || interface.to_owned());
        span.attr("rpc.method", || function.to_owned());
        span.attr("trellis.source", || source.to_owned());
        span.attr("trellis.target", || target.to_owned());
        span
    }

    /// The ids to pass on: the ones it started with, its flags saying whether it was sampled (so
    /// the next hop's parent-based sampler decides as this one did).
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Adds attribute `key` (the value is only built when recording).
    pub fn attr(&mut self, key: &'static str, value_of: impl FnOnce() -> String) {
        if let Some(record) = &mut self.record {
            record.set_attribute(KeyValue::new(key, value_of()));
        }
    }

    /// Marks the span failed with `message`.
    pub fn fail(&mut self, message: impl FnOnce() -> String) {
        if let Some(record) = &mut self.record {
            record.set_status(Status::error(message()));
        }
    }
}

impl Tracing {
    fn start(
        &self,
        this: TraceContext,
        parent: Option<TraceContext>,
        kind: Kind,
        name: String,
    ) -> Span {
        let parent = match parent.filter(|p| p.trace_id == this.trace_id) {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                p.trace_id.into(),
                p.span_id.into(),
                TraceFlags::new(p.flags),
                true,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        let builder = SpanBuilder::from_name(name).with_kind(kind.into());
        let span = ids::PresetIds::with(this, || self.tracer.build_with_context(builder, &parent));
        let sampled = span.span_context().is_sampled();
        let flags = if sampled { this.flags | 1 } else { this.flags & !1 };
        let record = span.is_recording().then(|| Box::new(span));
        Span { record, context: TraceContext { flags, ..this } }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use opentelemetry::trace::SpanId;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{Sampler, SpanData, SpanProcessor};

    use super::*;

    /// Keeps what ends, exports nothing: a queue that never drains.
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Kept {
        fn on_start(&self, _: &mut SdkSpan, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn tracing(sampler: Sampler, processor: impl SpanProcessor + 'static) -> Tracing {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_id_generator(ids::PresetIds)
            .with_sampler(sampler)
            .build();
        Tracing { tracer: provider.tracer("test"), _provider: provider }
    }

    fn parent_based(root: Sampler) -> Sampler {
        Sampler::ParentBased(Box::new(root))
    }

    #[test]
    fn exported_spans_carry_the_ids_trellis_propagates() {
        let kept = Kept::default();
        let tracing = tracing(parent_based(Sampler::AlwaysOn), kept.clone());
        let caller = TraceContext::root();
        let this = caller.child();
        let mut span = tracing.start(this, Some(caller), Kind::Server, "wasi:http/handler".into());
        span.attr("trellis.link", || "default".into());
        span.fail(|| "trapped".into());
        assert_eq!(span.context(), this);
        drop(span);
        let root = TraceContext::root();
        drop(tracing.start(root, None, Kind::Client, "root".into()));

        let spans = kept.0.lock().unwrap();
        let (child, root_span) = (&spans[0], &spans[1]);
        assert_eq!(child.span_context.trace_id(), this.trace_id.into());
        assert_eq!(child.span_context.span_id(), this.span_id.into());
        assert_eq!(child.parent_span_id, caller.span_id.into());
        assert_eq!(child.span_kind, SpanKind::Server);
        assert_eq!(child.status, Status::error("trapped"));
        assert_eq!(child.attributes, [KeyValue::new("trellis.link", "default")]);
        assert_eq!(root_span.span_context.span_id(), root.span_id.into());
        assert_eq!(root_span.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn a_span_sampled_out_records_nothing_and_tells_the_next_hop() {
        let kept = Kept::default();
        let tracing = tracing(parent_based(Sampler::TraceIdRatioBased(0.0)), kept.clone());
        let span = tracing.start(TraceContext::root(), None, Kind::Server, "in".into());
        let sent = span.context();
        assert_eq!(sent.flags & 1, 0, "not sampled, and the traceparent sent on says so");
        assert!(span.record.is_none());
        let next = tracing.start(sent.child(), Some(sent), Kind::Client, "out".into());
        assert_eq!(next.context().flags & 1, 0, "parent-based: not sampled either");
        // A caller elsewhere that sampled: so does this hop.
        let caller = TraceContext::root();
        let hop = tracing.start(caller.child(), Some(caller), Kind::Server, "hop".into());
        assert_eq!(hop.context().flags & 1, 1);
        drop((span, next, hop));
        assert_eq!(kept.0.lock().unwrap().len(), 1);
    }
}
