//! Exporting Trellis spans and metrics to an OpenTelemetry collector over OTLP/HTTP or
//! OTLP/gRPC (protobuf), when the standard `OTEL_EXPORTER_OTLP_*` variables (or a host's flags)
//! say where ([`Config`]).
//!
//! The OpenTelemetry SDK does the work: its batch span processor, samplers
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), resource detectors and the OTLP exporters.
//! [`init`] builds that pipeline and installs it behind `trellis_lattice::telemetry::Span`, which
//! every hop records through; [`meter_provider`] gives a host a provider that pushes its metrics.
//!
//! A finished span goes to the SDK's queue; a full queue drops the span and counts it
//! ([`dropped_spans`]): telemetry never slows a call, and a collector that is down costs nothing
//! but the dropped spans.
//!
//! Only the binaries that export link this crate (the `trellis` host and the provider
//! executables, which pass [`init`] to `trellis_provider::run`): it brings the HTTP and gRPC
//! clients, TLS roots and the OTLP protobufs, which the wire contract and the provider SDK do
//! without (see `docs/design/crates.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let env = |name: &str| std::env::var(name).ok();
//! if let Some(config) = trellis_lattice::telemetry::Config::from_vars("my-service", env)? {
//!     trellis_otlp::init(&config); // spans from now on go to the collector
//! }
//! # Ok(()) }
//! ```

mod export;
mod pipeline;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use trellis_lattice::telemetry::{self, Config};

/// Spans waiting for export at most; more are dropped and counted.
const QUEUE: usize = 4096;

/// Starts exporting spans as `config` says (when it has a traces endpoint), through the current
/// tokio runtime. Once per process: later calls (a builtin provider inside a host) keep the
/// first exporter.
pub fn init(config: &Config) {
    let Some(endpoint) = &config.traces else { return };
    if telemetry::enabled() {
        return;
    }
    let exporter = match export::spans(endpoint) {
        Ok(exporter) => pipeline::Counted::new(exporter, "traces", endpoint),
        Err(e) => {
            tracing::warn!(url = %endpoint.url, error = %e, "cannot export traces");
            return;
        }
    };
    let batch = BatchConfigBuilder::default().with_max_queue_size(QUEUE).build();
    let processor = pipeline::Gate::new(BatchSpanProcessor::new(exporter, batch), QUEUE);
    // The sampler is the SDK's: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, by default
    // parent-based always-on (a span is exported when its caller's was).
    let builder =
        SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource(config));
    if telemetry::install(builder) {
        tracing::info!(
            url = %endpoint.url,
            protocol = endpoint.protocol.as_str(),
            service = %config.service_name,
            "exporting traces over OTLP"
        );
    }
}

/// A meter provider pushing to `config`'s metrics endpoint every `metrics_interval`, through the
/// current tokio runtime; `None` when metrics go nowhere (or the endpoint is unusable, which it
/// logs). Shut it down (or drop it) to stop.
pub fn meter_provider(config: &Config) -> Option<SdkMeterProvider> {
    let endpoint = config.metrics.as_ref()?;
    let exporter = match export::metrics(endpoint) {
        Ok(exporter) => pipeline::Counted::new(exporter, "metrics", endpoint),
        Err(e) => {
            tracing::warn!(url = %endpoint.url, error = %e, "cannot export metrics");
            return None;
        }
    };
    let reader = PeriodicReader::builder(exporter).with_interval(config.metrics_interval).build();
    tracing::info!(
        url = %endpoint.url,
        protocol = endpoint.protocol.as_str(),
        interval = ?config.metrics_interval,
        "exporting metrics over OTLP"
    );
    Some(SdkMeterProvider::builder().with_reader(reader).with_resource(resource(config)).build())
}

/// The resource every export names: what the SDK's detectors find (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, the SDK's name and version), then `config`'s `service.name` and
/// attributes over them.
pub fn resource(config: &Config) -> Resource {
    let attributes = config.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes(attributes)
        .build()
}

/// Spans dropped because the export queue was full (the collector is slow or down) or the
/// collector did not take them.
pub fn dropped_spans() -> u64 {
    pipeline::dropped()
}

/// Spans handed to the collector.
pub fn exported_spans() -> u64 {
    pipeline::exported()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use opentelemetry::Context;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

    use super::*;

    /// Counts what ends, exports nothing: a queue that never drains.
    #[derive(Debug, Clone, Default)]
    struct Ended(Arc<AtomicUsize>);

    impl SpanProcessor for Ended {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, _: SpanData) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let ended = Ended::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(pipeline::Gate::new(ended.clone(), 2))
            .build();
        let tracer = provider.tracer("test");
        let dropped = dropped_spans();
        for _ in 0..3 {
            drop(tracer.start("s"));
        }
        assert_eq!(ended.0.load(Ordering::Relaxed), 2);
        assert_eq!(dropped_spans() - dropped, 1);
    }
}
