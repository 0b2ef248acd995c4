//! Metrics in the Prometheus text format on `--metrics-listen` (`GET /metrics`): calls and
//! errors per component, denied calls, instances in use, providers' restarts and health.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::StatusCode;
use tokio::net::TcpListener;

use trellis_lattice::envelope::InvokeErrorKind;

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
    let components = host.components().all();
    let per_component = |value: &dyn Fn(&crate::components::Running) -> u64| {
        components
            .iter()
            .map(|c| (format!(",component=\"{}\"", c.id), value(c)))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        h,
        "trellis_invocations_total",
        "counter",
        "Calls served by a component of this host.",
        &per_component(&|c| c.invocations.load(Ordering::Relaxed)),
    );
    family(
        &mut out,
        h,
        "trellis_invocation_errors_total",
        "counter",
        "Calls a component of this host answered with an error.",
        &per_component(&|c| c.errors.load(Ordering::Relaxed)),
    );
    let by_kind: Vec<(String, u64)> = components
        .iter()
        .flat_map(|c| {
            InvokeErrorKind::ALL.iter().map(move |kind| {
                let count = c.errors_by_kind[*kind as usize].load(Ordering::Relaxed);
                (format!(",component=\"{}\",kind=\"{}\"", c.id, kind.as_str()), count)
            })
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    family(
        &mut out,
        h,
        "trellis_invocation_errors_by_kind_total",
        "counter",
        "Failed calls per component and error kind (Trap, Timeout, TooLarge, ...).",
        &by_kind,
    );
    let info = host.info();
    family(
        &mut out,
        h,
        "trellis_invocations_denied_total",
        "counter",
        "Calls refused by signature, replay, claims or policy checks.",
        &[(String::new(), info.invocations_denied)],
    );
    family(
        &mut out,
        h,
        "trellis_components",
        "gauge",
        "Components running on this host.",
        &[(String::new(), u64::from(info.components))],
    );
    let (in_use, max) = host.instances();
    family(
        &mut out,
        h,
        "trellis_calls_in_flight",
        "gauge",
        "Calls running on this host.",
        &[(String::new(), in_use)],
    );
    family(
        &mut out,
        h,
        "trellis_calls_max",
        "gauge",
        "Calls this host runs at once at most.",
        &[(String::new(), max)],
    );
    family(
        &mut out,
        h,
        "trellis_spans_exported_total",
        "counter",
        "Spans sent to the OpenTelemetry collector.",
        &[(String::new(), trellis_lattice::telemetry::exported_spans())],
    );
    family(
        &mut out,
        h,
        "trellis_spans_dropped_total",
        "counter",
        "Spans dropped: the export queue was full or the collector did not take them.",
        &[(String::new(), trellis_lattice::telemetry::dropped_spans())],
    );
    let nats = &host.nats_health;
    family(
        &mut out,
        h,
        "trellis_nats_connected",
        "gauge",
        "1 while the host is connected to NATS.",
        &[(String::new(), u64::from(host.nats_connected()))],
    );
    family(
        &mut out,
        h,
        "trellis_nats_reconnects_total",
        "counter",
        "Reconnections to NATS after a lost connection.",
        &[(String::new(), nats.reconnects.load(Ordering::Relaxed))],
    );
    family(
        &mut out,
        h,
        "trellis_nats_slow_consumer_total",
        "counter",
        "Times a subscription fell behind and NATS messages were dropped.",
        &[(String::new(), nats.slow_consumers.load(Ordering::Relaxed))],
    );
    if let Some(rss) = resources::rss_bytes() {
        family(
            &mut out,
            h,
            "trellis_host_memory_rss_bytes",
            "gauge",
            "Resident memory of the host process.",
            &[(String::new(), rss)],
        );
    }
    if let Some(cpu) = resources::cpu_seconds() {
        let help = "CPU time of the host process.";
        family(
            &mut out,
            h,
            "trellis_host_cpu_seconds_total",
            "counter",
            help,
            &[(String::new(), Seconds(cpu))],
        );
    }
    let last = nats.last_heartbeat_ms.load(Ordering::Relaxed);
    if last > 0 {
        let age = host.uptime().as_secs_f64() - last as f64 / 1e3;
        family(
            &mut out,
            h,
            "trellis_heartbeat_age_seconds",
            "gauge",
            "Seconds since this host's last heartbeat reached NATS.",
            &[(String::new(), Seconds(age.max(0.0)))],
        );
    }
    family(
        &mut out,
        h,
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
    family(
        &mut out,
        h,
        "trellis_provider_restarts_total",
        "counter",
        "Times a provider of this host was restarted after it ended.",
        &per_provider(&|p| u64::from(p.restarts)),
    );
    family(
        &mut out,
        h,
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

/// One metric family: its help, type and samples (label text after the host label, value).
fn family<V: std::fmt::Display>(
    out: &mut String,
    host: &str,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(String, V)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{host=\"{host}\"{labels}}} {value}");
    }
}

/// Seconds with millisecond precision.
struct Seconds(f64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}", self.0)
    }
}

/// This process's resource use, from /proc (Linux).
mod resources {
    /// Resident set size in bytes.
    pub fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// User plus system CPU time in seconds (Linux reports clock ticks of 1/100 s).
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) in parentheses; utime and stime
        // are the 14th and 15th fields of the line, the 12th and 13th after it.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }
}
