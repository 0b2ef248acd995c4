//! `GET /metrics` in the Prometheus text exposition format (0.0.4), written by
//! `prometheus-client` from a [`Snapshot`] taken on each scrape.

use std::fmt;
use std::sync::Arc;

use hyper::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::{self, CONTENT_TYPE};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::{DURATION, Kind, Number, Snapshot};
use crate::histogram::BOUNDS_US;
use crate::host::Host;

/// Serves `/metrics` until the task is dropped.
pub(crate) async fn serve(host: Arc<Host>, listener: TcpListener) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(host)));
    crate::endpoint::serve(listener, move |path| match path {
        "/metrics" => (StatusCode::OK, CONTENT_TYPE, render(&registry)),
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".to_owned()),
    })
    .await
}

/// The host's metrics, measured when scraped.
#[derive(Debug)]
struct Scrape(Arc<Host>);

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        encode(&super::collect(&self.0), encoder)
    }
}

/// What `registry` holds, as text.
fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing to a String fails only if a collector does, and ours do not.
    let _ = prometheus_text::encode(&mut out, registry);
    out
}

/// `snapshot`'s families, every series labelled with the host, then the call durations.
fn encode(snapshot: &Snapshot, mut encoder: DescriptorEncoder) -> fmt::Result {
    let host = snapshot.host.as_str();
    for family in &snapshot.families {
        let (name, kind) = match family.kind {
            // The encoder names a counter's series `<name>_total`.
            Kind::Counter => {
                (family.name.strip_suffix("_total").unwrap_or(family.name), MetricType::Counter)
            }
            Kind::Gauge => (family.name, MetricType::Gauge),
        };
        let mut metric = encoder.encode_descriptor(name, family.help, None, kind)?;
        for point in &family.points {
            let labels: Vec<(&str, &str)> = std::iter::once(("host", host))
                .chain(point.labels.iter().map(|(k, v)| (*k, v.as_str())))
                .collect();
            let series = metric.encode_family(&labels)?;
            match (family.kind, point.value) {
                (Kind::Counter, Number::Int(v)) => ConstCounter::new(v).encode(series),
                (Kind::Counter, Number::Float(v)) => ConstCounter::new(v).encode(series),
                (Kind::Gauge, Number::Int(v)) => {
                    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(series)
                }
                (Kind::Gauge, Number::Float(v)) => ConstGauge::new(v).encode(series),
            }?;
        }
    }
    let (name, help) = DURATION;
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for d in &snapshot.durations {
        let labels = [("host", host), ("component", d.component.as_str())];
        // Per bucket: the encoder adds them up again.
        let mut previous = 0;
        let buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .zip(&d.cumulative)
            .map(|(&bound, &running)| {
                let count = running - previous;
                previous = running;
                (bound as f64 / 1e6, count)
            })
            .collect();
        let total = d.cumulative[BOUNDS_US.len()];
        metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            d.sum_seconds,
            total,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Snapshot);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            encode(&self.0, encoder)
        }
    }

    #[test]
    fn families_and_histograms_render_in_the_text_format() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(super::super::sample())));
        let text = render(&registry);
        assert!(text.contains("# TYPE trellis_invocations_total counter\n"), "{text}");
        assert!(text.contains("trellis_invocations_total{host=\"NH\",component=\"web\"} 7\n"));
        assert!(text.contains("# TYPE trellis_heartbeat_age_seconds gauge\n"), "{text}");
        assert!(text.contains("trellis_heartbeat_age_seconds{host=\"NH\"} 0.5\n"), "{text}");
        assert!(text.contains("# TYPE trellis_invocation_duration_seconds histogram\n"), "{text}");
        let bucket = "trellis_invocation_duration_seconds_bucket{host=\"NH\",component=\"web\",le=\"0.00025\"} 2\n";
        assert!(text.contains(bucket), "{text}");
        assert!(text.contains("_bucket{host=\"NH\",component=\"web\",le=\"30\"} 2\n"), "{text}");
        assert!(text.contains("_bucket{host=\"NH\",component=\"web\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("_sum{host=\"NH\",component=\"web\"} 40"), "{text}");
        assert!(text.contains("_count{host=\"NH\",component=\"web\"} 3\n"), "{text}");
    }
}
