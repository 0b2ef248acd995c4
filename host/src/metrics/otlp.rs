//! The metrics pushed to an OpenTelemetry collector (OTLP, cumulative temporality) every
//! `OTEL_METRIC_EXPORT_INTERVAL`.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use trellis_lattice::telemetry::{self, Exporter, now_ns};
use trellis_proto::otlp;

use super::{DURATION, Kind, Number, Snapshot};
use crate::histogram::BOUNDS_US;
use crate::host::Host;

/// Pushes `host`'s metrics with `exporter` every `interval` until the task is dropped.
pub(crate) async fn push(
    host: Arc<Host>,
    exporter: Exporter,
    resource: otlp::Resource,
    interval: Duration,
) {
    let url = exporter.endpoint().url.clone();
    tracing::info!(%url, protocol = exporter.endpoint().protocol.as_str(), ?interval, "exporting metrics over OTLP");
    let started_ns = now_ns().saturating_sub(host.uptime().as_nanos() as u64);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut warned = false;
    loop {
        ticks.tick().await;
        let request = encode(&super::collect(&host), &resource, started_ns, now_ns());
        match exporter.send(request.encode_to_vec()).await {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                // Once per outage; the next push sends the totals again (cumulative).
                tracing::warn!(%url, error = %e, "cannot export metrics; trying again each interval");
                warned = true;
            }
            Err(_) => {}
        }
    }
}

/// `snapshot` as an OTLP export request: counters as cumulative monotonic sums since their
/// component started (or the host, `started_ns`), gauges as gauges, call durations as a
/// histogram in seconds.
pub(crate) fn encode(
    snapshot: &Snapshot,
    resource: &otlp::Resource,
    started_ns: u64,
    now_ns: u64,
) -> otlp::ExportMetricsServiceRequest {
    let attributes = |labels: &[(&str, String)]| {
        std::iter::once(("host", snapshot.host.clone()))
            .chain(labels.iter().map(|(k, v)| (*k, v.clone())))
            .map(|(k, v)| otlp::KeyValue { key: k.to_owned(), value: telemetry::value(v) })
            .collect::<Vec<_>>()
    };
    let cumulative = otlp::AggregationTemporality::Cumulative as i32;
    let mut metrics: Vec<otlp::Metric> = snapshot
        .families
        .iter()
        .map(|family| {
            let data_points = family
                .points
                .iter()
                .map(|point| otlp::NumberDataPoint {
                    attributes: attributes(&point.labels),
                    start_time_unix_nano: match family.kind {
                        Kind::Counter => point.since_ns.unwrap_or(started_ns),
                        Kind::Gauge => 0,
                    },
                    time_unix_nano: now_ns,
                    value: Some(match point.value {
                        Number::Int(v) => otlp::number_data_point::Value::AsInt(
                            i64::try_from(v).unwrap_or(i64::MAX),
                        ),
                        Number::Float(v) => otlp::number_data_point::Value::AsDouble(v),
                    }),
                })
                .collect();
            let data = match family.kind {
                Kind::Counter => otlp::metric::Data::Sum(otlp::Sum {
                    data_points,
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
                Kind::Gauge => otlp::metric::Data::Gauge(otlp::Gauge { data_points }),
            };
            otlp::Metric {
                name: family.name.to_owned(),
                description: family.help.to_owned(),
                unit: family.unit.to_owned(),
                data: Some(data),
            }
        })
        .collect();
    let (name, help) = DURATION;
    let data_points = snapshot
        .durations
        .iter()
        .map(|d| {
            let mut previous = 0;
            let bucket_counts = d
                .cumulative
                .iter()
                .map(|&running| {
                    let count = running.saturating_sub(previous);
                    previous = running;
                    count
                })
                .collect();
            otlp::HistogramDataPoint {
                attributes: attributes(&[("component", d.component.clone())]),
                start_time_unix_nano: d.since_ns,
                time_unix_nano: now_ns,
                count: d.cumulative[BOUNDS_US.len()],
                sum: Some(d.sum_seconds),
                bucket_counts,
                explicit_bounds: BOUNDS_US.iter().map(|&us| us as f64 / 1e6).collect(),
            }
        })
        .collect();
    metrics.push(otlp::Metric {
        name: name.to_owned(),
        description: help.to_owned(),
        unit: "s".into(),
        data: Some(otlp::metric::Data::Histogram(otlp::Histogram {
            data_points,
            aggregation_temporality: cumulative,
        })),
    });
    otlp::ExportMetricsServiceRequest {
        resource_metrics: vec![otlp::ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![otlp::ScopeMetrics {
                scope: Some(telemetry::scope()),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_map_to_their_otlp_kinds() {
        let request = encode(&super::super::sample(), &otlp::Resource::default(), 10, 20);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let Some(otlp::metric::Data::Sum(sum)) = &metrics[0].data else { panic!("{metrics:?}") };
        assert!(sum.is_monotonic);
        let point = &sum.data_points[0];
        assert_eq!(point.value, Some(otlp::number_data_point::Value::AsInt(7)));
        // A component's counter counts from the component's start, not the host's.
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (5, 20));
        let keys: Vec<&str> = point.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["host", "component"]);
        assert!(matches!(&metrics[1].data, Some(otlp::metric::Data::Gauge(_))));
        let Some(otlp::metric::Data::Histogram(h)) = &metrics[2].data else { panic!() };
        let point = &h.data_points[0];
        assert_eq!(point.count, 3);
        // Per bucket, not cumulative.
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 3);
        assert_eq!(point.bucket_counts[1], 2);
        assert_eq!(point.bucket_counts[BOUNDS_US.len()], 1);
        assert_eq!(point.explicit_bounds.len(), BOUNDS_US.len());
    }
}
