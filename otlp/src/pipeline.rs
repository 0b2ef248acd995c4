//! What Trellis puts around the SDK's export pipeline: a bounded queue that counts what it drops
//! ([`Gate`]), and exporters that count what the collector took and warn once per outage
//! ([`Counted`]). (The span ids are chosen in `trellis_lattice::telemetry`.)

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use trellis_lattice::telemetry::Endpoint;

/// Spans in the queue or being exported.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

pub(crate) fn exported() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

/// A span processor that passes at most `limit` spans on to the one inside it (the SDK's batch
/// processor, whose queue holds as many) and drops the rest, counted. The SDK drops too when
/// full but only says how many at shutdown.
#[derive(Debug)]
pub(crate) struct Gate<P> {
    inner: P,
    limit: u64,
}

impl<P> Gate<P> {
    pub fn new(inner: P, limit: usize) -> Self {
        Self { inner, limit: limit as u64 }
    }
}

impl<P: SpanProcessor> SpanProcessor for Gate<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if QUEUED.fetch_add(1, Ordering::Relaxed) >= self.limit {
            QUEUED.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that counts the spans it sent or lost and warns once per outage, not once per
/// batch.
pub(crate) struct Counted<E> {
    inner: E,
    signal: &'static str,
    url: String,
    warned: AtomicBool,
}

impl<E> fmt::Debug for Counted<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counted").field("signal", &self.signal).field("url", &self.url).finish()
    }
}

impl<E> Counted<E> {
    pub fn new(inner: E, signal: &'static str, endpoint: &Endpoint) -> Self {
        Self { inner, signal, url: endpoint.url.clone(), warned: AtomicBool::new(false) }
    }

    /// Notes how one export went.
    fn outcome(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => self.warned.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %self.url,
                        error = %e,
                        "cannot export {}; dropping them until the collector answers",
                        self.signal
                    );
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let result = self.inner.export(batch).await;
        QUEUED.fetch_sub(count, Ordering::Relaxed);
        let counter = if result.is_ok() { &EXPORTED } else { &DROPPED };
        counter.fetch_add(count, Ordering::Relaxed);
        self.outcome(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.outcome(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
