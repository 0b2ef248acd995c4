//! `GET /metrics` in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::Arc;

use hyper::StatusCode;
use tokio::net::TcpListener;

use super::{DURATION, Kind, Number, Snapshot};
use crate::histogram::BOUNDS_US;
use crate::host::Host;

/// Serves `/metrics` until the task is dropped.
pub(crate) async fn serve(host: Arc<Host>, listener: TcpListener) {
    crate::endpoint::serve(listener, move |path| match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", render(&super::collect(&host))),
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".to_owned()),
    })
    .await
}

/// `snapshot` as text. Label values are ids (`[A-Za-z0-9_-]`) and provider kinds, which need
/// no escaping.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let host = &snapshot.host;
    for family in &snapshot.families {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ =
            writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", family.name, family.help, family.name);
        for point in &family.points {
            let _ = write!(out, "{}{{host=\"{host}\"", family.name);
            for (key, value) in &point.labels {
                let _ = write!(out, ",{key}=\"{value}\"");
            }
            let _ = match point.value {
                Number::Int(v) => writeln!(out, "}} {v}"),
                Number::Float(v) => writeln!(out, "}} {v:.3}"),
            };
        }
    }
    let (name, help) = DURATION;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for d in &snapshot.durations {
        let labels = format!("host=\"{host}\",component=\"{}\"", d.component);
        for (bound, count) in BOUNDS_US.iter().zip(&d.cumulative) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
        }
        let total = d.cumulative[BOUNDS_US.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", d.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_histograms_render_in_the_text_format() {
        let text = render(&super::super::sample());
        assert!(text.contains("# TYPE trellis_invocations_total counter\n"), "{text}");
        assert!(text.contains("trellis_invocations_total{host=\"NH\",component=\"web\"} 7\n"));
        assert!(text.contains("trellis_heartbeat_age_seconds{host=\"NH\"} 0.500\n"), "{text}");
        let bucket = "trellis_invocation_duration_seconds_bucket{host=\"NH\",component=\"web\",le=\"0.00025\"} 2\n";
        assert!(text.contains(bucket), "{text}");
        assert!(text.contains("_bucket{host=\"NH\",component=\"web\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("_count{host=\"NH\",component=\"web\"} 3\n"), "{text}");
    }
}
