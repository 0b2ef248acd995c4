//! Spans and metrics for an OpenTelemetry collector, over OTLP/HTTP or OTLP/gRPC (protobuf),
//! when the standard `OTEL_EXPORTER_OTLP_*` variables (or a host's flags) say where.
//!
//! Off by default and free when off: [`Span::start`] checks one flag and builds nothing. When on,
//! finished spans go to a bounded queue; a background task sends them in batches. A full queue
//! drops the span and counts it ([`dropped_spans`]): telemetry never slows a call, and a
//! collector that is down costs nothing but the dropped spans. Metrics are the host's to
//! collect; it pushes them with an [`Exporter`] of its own.
//!
//! The span ids are the ones [`crate::trace`] propagates, so what a collector receives links up
//! across hosts and providers exactly as the `traceparent` headers did.

mod config;
mod export;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tokio::sync::mpsc;
use trellis_proto::otlp;

pub use config::{Config, ConfigError, Endpoint, Protocol, Signal};
pub use export::Exporter;

use crate::trace::TraceContext;

/// Spans waiting for export at most; more are dropped and counted.
const QUEUE: usize = 4096;
/// Spans per export request at most.
const BATCH: usize = 512;

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

struct Spans {
    queue: mpsc::Sender<otlp::Span>,
}

static EXPORTER: OnceLock<Spans> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Starts exporting spans as `config` says (when it has a traces endpoint), from a task on the
/// current tokio runtime. Once per process: later calls (a builtin provider inside a host) keep
/// the first exporter.
pub fn init(config: &Config) {
    let Some(endpoint) = config.traces.clone() else { return };
    let (queue, spans) = mpsc::channel(QUEUE);
    if EXPORTER.set(Spans { queue }).is_ok() {
        tracing::info!(
            url = %endpoint.url,
            protocol = endpoint.protocol.as_str(),
            service = %config.service_name,
            "exporting traces over OTLP"
        );
        tokio::spawn(export(Exporter::new(endpoint), resource(config), spans));
    }
}

/// The resource every export names: `service.name` and the configured attributes.
pub fn resource(config: &Config) -> otlp::Resource {
    let mut attributes = vec![otlp::KeyValue {
        key: "service.name".into(),
        value: value(config.service_name.clone()),
    }];
    for (k, v) in &config.resource {
        attributes.push(otlp::KeyValue { key: k.clone(), value: value(v.clone()) });
    }
    otlp::Resource { attributes }
}

/// The instrumentation scope of everything Trellis exports.
pub fn scope() -> otlp::InstrumentationScope {
    otlp::InstrumentationScope { name: "trellis".into(), version: env!("CARGO_PKG_VERSION").into() }
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Spans dropped because the export queue was full (the collector is slow or down).
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Spans handed to the collector.
pub fn exported_spans() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

/// One span: started now, ended (and queued for export) when dropped.
#[derive(Debug)]
pub struct Span {
    record: Option<Box<otlp::Span>>,
}

/// Now, in nanoseconds since the Unix epoch (OTLP timestamps).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A string attribute value.
pub fn value(v: String) -> Option<otlp::AnyValue> {
    Some(otlp::AnyValue { value: Some(otlp::any_value::Value::StringValue(v)) })
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
        if !enabled() {
            return Self { record: None };
        }
        let kind = match kind {
            Kind::Internal => otlp::span::SpanKind::Internal,
            Kind::Server => otlp::span::SpanKind::Server,
            Kind::Client => otlp::span::SpanKind::Client,
            Kind::Producer => otlp::span::SpanKind::Producer,
            Kind::Consumer => otlp::span::SpanKind::Consumer,
        };
        let record = otlp::Span {
            trace_id: this.trace_id.to_be_bytes().to_vec(),
            span_id: this.span_id.to_be_bytes().to_vec(),
            parent_span_id: parent
                .filter(|p| p.trace_id == this.trace_id)
                .map(|p| p.span_id.to_be_bytes().to_vec())
                .unwrap_or_default(),
            name: name(),
            kind: kind.into(),
            start_time_unix_nano: now_ns(),
            flags: u32::from(this.flags),
            ..Default::default()
        };
        Self { record: Some(Box::new(record)) }
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

    /// Adds attribute `key` (the value is only built when exporting).
    pub fn attr(&mut self, key: &str, value_of: impl FnOnce() -> String) {
        if let Some(record) = &mut self.record {
            record
                .attributes
                .push(otlp::KeyValue { key: key.to_owned(), value: value(value_of()) });
        }
    }

    /// Marks the span failed with `message`.
    pub fn fail(&mut self, message: impl FnOnce() -> String) {
        if let Some(record) = &mut self.record {
            record.status = Some(otlp::Status {
                message: message(),
                code: otlp::status::StatusCode::Error.into(),
            });
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(mut record), Some(exporter)) = (self.record.take(), EXPORTER.get()) else {
            return;
        };
        record.end_time_unix_nano = now_ns();
        if exporter.queue.try_send(*record).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends queued spans in batches until the process ends.
async fn export(
    exporter: Exporter,
    resource: otlp::Resource,
    mut spans: mpsc::Receiver<otlp::Span>,
) {
    let mut warned = false;
    loop {
        let Some(first) = spans.recv().await else { return };
        // Let a batch gather for a moment: fewer, larger requests.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let request = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(scope()),
                    spans: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        match exporter.send(request.encode_to_vec()).await {
            Ok(()) => {
                EXPORTED.fetch_add(count, Ordering::Relaxed);
                warned = false;
            }
            Err(e) => {
                DROPPED.fetch_add(count, Ordering::Relaxed);
                // Once per outage, not once per batch.
                if !warned {
                    tracing::warn!(url = %exporter.endpoint().url, error = %e, "cannot export traces; dropping spans until the collector answers");
                    warned = true;
                }
            }
        }
    }
}
