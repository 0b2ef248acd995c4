//! Metrics in the Prometheus text format on `--metrics-listen` (`GET /metrics`): calls and
//! errors per component, denied calls, instances in use, providers' restarts and health.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::StatusCode;
use tokio::net::TcpListener;

use crate::histogram::BOUNDS_US;
use crate::host::Host;

/// Serves `/metrics` until the task is dropped.
pub(crate) async fn serve(host: Arc<Host>, listener: TcpListener) {
    crate::endpoint::serve(listener, move |path| match path {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", render(&host)),
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".to_owned()),
    })
    .await
}

/// The metrics of `host` in the Prometheus text exposition format. Label values are ids
/// (`[A-Za-z0-9_-]`), which need no escaping.
fn render(host: &Host) -> String {
    let mut out = String::with_capacity(2048);
    let h = host.id();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{host=\"{h}\"{labels}}} {value}");
        }
    };
    let components = host.components().all();
    let per_component = |value: &dyn Fn(&crate::components::Running) -> u64| {
        components
            .iter()
            .map(|c| (format!(",component=\"{}\"", c.id), value(c)))
            .collect::<Vec<_>>()
    };
    metric(
        "trellis_invocations_total",
        "counter",
        "Calls served by a component of this host.",
        &per_component(&|c| c.invocations.load(Ordering::Relaxed)),
    );
    metric(
        "trellis_invocation_errors_total",
        "counter",
        "Calls a component of this host answered with an error.",
        &per_component(&|c| c.errors.load(Ordering::Relaxed)),
    );
    let info = host.info();
    metric(
        "trellis_invocations_denied_total",
        "counter",
        "Calls refused by signature, replay, claims or policy checks.",
        &[(String::new(), info.invocations_denied)],
    );
    metric(
        "trellis_components",
        "gauge",
        "Components running on this host.",
        &[(String::new(), u64::from(info.components))],
    );
    let (in_use, max) = host.instances();
    metric(
        "trellis_calls_in_flight",
        "gauge",
        "Calls running on this host.",
        &[(String::new(), in_use)],
    );
    metric(
        "trellis_calls_max",
        "gauge",
        "Calls this host runs at once at most.",
        &[(String::new(), max)],
    );
    metric(
        "trellis_spans_exported_total",
        "counter",
        "Spans sent to the OpenTelemetry collector.",
        &[(String::new(), trellis_lattice::telemetry::exported_spans())],
    );
    metric(
        "trellis_spans_dropped_total",
        "counter",
        "Spans dropped: the export queue was full or the collector did not take them.",
        &[(String::new(), trellis_lattice::telemetry::dropped_spans())],
    );
    metric(
        "trellis_uptime_seconds",
        "gauge",
        "Seconds since the host started.",
        &[(String::new(), info.uptime_s)],
    );
    let providers = host.inventory().providers;
    let per_provider = |value: &dyn Fn(&trellis_proto::ProviderDescription) -> u64| {
        providers
            .iter()
            .map(|p| (format!(",provider=\"{}\",kind=\"{}\"", p.id, p.kind), value(p)))
            .collect::<Vec<_>>()
    };
    metric(
        "trellis_provider_restarts_total",
        "counter",
        "Times a provider of this host was restarted after it ended.",
        &per_provider(&|p| u64::from(p.restarts)),
    );
    metric(
        "trellis_provider_healthy",
        "gauge",
        "1 when a provider runs and reports no problem.",
        &per_provider(&|p| u64::from(p.healthy)),
    );
    let _ = writeln!(
        out,
        "# HELP trellis_invocation_duration_seconds How long a component's calls took.\n\
         # TYPE trellis_invocation_duration_seconds histogram"
    );
    for c in &components {
        let (cumulative, sum_us) = c.durations.snapshot();
        let labels = format!("host=\"{h}\",component=\"{}\"", c.id);
        for (bound, count) in BOUNDS_US.iter().zip(&cumulative) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "trellis_invocation_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}"
            );
        }
        let total = cumulative[BOUNDS_US.len()];
        let _ = writeln!(
            out,
            "trellis_invocation_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "trellis_invocation_duration_seconds_sum{{{labels}}} {}",
            sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "trellis_invocation_duration_seconds_count{{{labels}}} {total}");
    }
    out
}
