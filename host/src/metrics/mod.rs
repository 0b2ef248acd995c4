//! The host's metrics: calls and errors per component, denied calls, instances in use,
//! providers' restarts and health, NATS health, resources. [`collect`] takes one snapshot;
//! [`prometheus`] renders it for `GET /metrics` on `--metrics-listen` and [`otlp`] pushes it to
//! an OpenTelemetry collector. Both carry the same names, so one dashboard reads either.

pub(crate) mod otlp;
pub(crate) mod prometheus;

use std::sync::atomic::Ordering;

use trellis_lattice::envelope::InvokeErrorKind;

use crate::histogram::BOUNDS_US;
use crate::host::Host;

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows (from the host's start).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    Int(u64),
    Float(f64),
}

/// One series: its labels (besides `host`) and value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    pub labels: Vec<(&'static str, String)>,
    pub value: Number,
}

/// One metric and its series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// UCUM, as OTLP wants it: `1`, `s`, `By`.
    pub unit: &'static str,
    pub points: Vec<Point>,
}

/// The call-duration histogram of one component.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Durations {
    pub component: String,
    /// Cumulative counts per bound of [`BOUNDS_US`]; the last counts every call.
    pub cumulative: [u64; BOUNDS_US.len() + 1],
    pub sum_seconds: f64,
}

/// Name and help of the duration histogram.
pub(crate) const DURATION: (&str, &str) =
    ("trellis_invocation_duration_seconds", "How long a component's calls took.");

/// Everything measured at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// The host's id: the `host` label of every series.
    pub host: String,
    pub families: Vec<Family>,
    pub durations: Vec<Durations>,
}

fn one(value: Number) -> Vec<Point> {
    vec![Point { labels: Vec::new(), value }]
}

/// Measures `host` now.
pub(crate) fn collect(host: &Host) -> Snapshot {
    use Kind::{Counter, Gauge};
    use Number::{Float, Int};
    let components = host.components().all();
    let per_component = |value: &dyn Fn(&crate::components::Running) -> u64| {
        components
            .iter()
            .map(|c| Point { labels: vec![("component", c.id.clone())], value: Int(value(c)) })
            .collect::<Vec<_>>()
    };
    let family = |name, kind, help, unit, points| Family { name, kind, help, unit, points };
    let mut families = vec![
        family(
            "trellis_invocations_total",
            Counter,
            "Calls served by a component of this host.",
            "1",
            per_component(&|c| c.invocations.load(Ordering::Relaxed)),
        ),
        family(
            "trellis_invocation_errors_total",
            Counter,
            "Calls a component of this host answered with an error.",
            "1",
            per_component(&|c| c.errors.load(Ordering::Relaxed)),
        ),
        family(
            "trellis_warm_instances",
            Gauge,
            "Idle instances a component keeps warm between calls (0 without --reuse).",
            "1",
            per_component(&|c| c.component.warm_instances() as u64),
        ),
    ];
    let by_kind = components
        .iter()
        .flat_map(|c| {
            InvokeErrorKind::ALL.iter().filter_map(move |kind| {
                let count = c.errors_by_kind[*kind as usize].load(Ordering::Relaxed);
                (count > 0).then(|| Point {
                    labels: vec![("component", c.id.clone()), ("kind", kind.as_str().to_owned())],
                    value: Int(count),
                })
            })
        })
        .collect();
    families.push(family(
        "trellis_invocation_errors_by_kind_total",
        Counter,
        "Failed calls per component and error kind (Trap, Timeout, TooLarge, ...).",
        "1",
        by_kind,
    ));
    let info = host.info();
    let (in_use, max) = host.instances();
    let nats = &host.nats_health;
    families.extend([
        family(
            "trellis_invocations_denied_total",
            Counter,
            "Calls refused by signature, replay, claims or policy checks.",
            "1",
            one(Int(info.invocations_denied)),
        ),
        family(
            "trellis_requests_denied_total",
            Counter,
            "Control requests refused: unsigned, untrusted operator, bad signature, replayed, \
             expired or out of role.",
            "1",
            one(Int(info.requests_denied)),
        ),
        family(
            "trellis_requests_busy_total",
            Counter,
            "Control requests refused with `Busy` before any check, and pings left unanswered, \
             because more came than the host checks at a time.",
            "1",
            one(Int(host.requests_busy())),
        ),
        family(
            "trellis_calls_shed_total",
            Counter,
            "Calls refused at once with `Unavailable` because this host's intake was full \
             (overload), before any check.",
            "1",
            one(Int(host.calls_shed())),
        ),
        family(
            "trellis_compile_cache_total",
            Counter,
            "Components this host loaded from the lattice's compile cache (`loaded`) or compiled \
             (`compiled`; `refused`: a cache entry failed its checks), and code it `stored` there \
             (or `store_failed`). Absent when the cache is off.",
            "1",
            host.compile_cache_counts()
                .into_iter()
                .flatten()
                .map(|(result, n)| Point {
                    labels: vec![("result", result.to_owned())],
                    value: Int(n),
                })
                .collect(),
        ),
        family(
            "trellis_answers_forged_total",
            Counter,
            "Answers to this host's calls dropped (the call waits on for its own): \
             unauthenticated, from a host the call was not sent to, or with a MAC that does not \
             verify.",
            "1",
            one(Int(host.forged_answers())),
        ),
        family(
            "trellis_calls_accepted_total",
            Counter,
            "Calls from other hosts accepted, by how they were authenticated: `signature` \
             (Ed25519, a caller's first call) or `pair_key` (MAC).",
            "",
            {
                let (signature, pair_key) = host.accepted_calls();
                let by =
                    |how: &str, n| Point { labels: vec![("by", how.to_owned())], value: Int(n) };
                vec![by("signature", signature), by("pair_key", pair_key)]
            },
        ),
        family(
            "trellis_components",
            Gauge,
            "Components running on this host.",
            "1",
            one(Int(u64::from(info.components))),
        ),
        family(
            "trellis_calls_in_flight",
            Gauge,
            "Calls running on this host.",
            "1",
            one(Int(in_use)),
        ),
        family(
            "trellis_calls_max",
            Gauge,
            "Calls this host runs at once at most.",
            "1",
            one(Int(max)),
        ),
        family(
            "trellis_spans_exported_total",
            Counter,
            "Spans sent to the OpenTelemetry collector.",
            "1",
            one(Int(trellis_otlp::exported_spans())),
        ),
        family(
            "trellis_spans_dropped_total",
            Counter,
            "Spans dropped: the export queue was full or the collector did not take them.",
            "1",
            one(Int(trellis_otlp::dropped_spans())),
        ),
        family(
            "trellis_nats_connected",
            Gauge,
            "1 while the host is connected to NATS.",
            "1",
            one(Int(u64::from(host.nats_connected()))),
        ),
        family(
            "trellis_nats_reconnects_total",
            Counter,
            "Reconnections to NATS after a lost connection.",
            "1",
            one(Int(nats.reconnects.load(Ordering::Relaxed))),
        ),
        family(
            "trellis_nats_slow_consumer_total",
            Counter,
            "Times a subscription fell behind and NATS messages were dropped.",
            "1",
            one(Int(nats.slow_consumers.load(Ordering::Relaxed))),
        ),
    ]);
    // Every family is there from the start, with no series while it cannot be measured: the
    // OTLP push registers its instruments once.
    let optional = |value: Option<Number>| value.map(one).unwrap_or_default();
    let last = nats.last_heartbeat_ms.load(Ordering::Relaxed);
    let age = (last > 0).then(|| Float((host.uptime().as_secs_f64() - last as f64 / 1e3).max(0.0)));
    families.extend([
        family(
            "trellis_host_memory_rss_bytes",
            Gauge,
            "Resident memory of the host process.",
            "By",
            optional(resources::rss_bytes().map(Int)),
        ),
        family(
            "trellis_host_cpu_seconds_total",
            Counter,
            "CPU time of the host process.",
            "s",
            optional(resources::cpu_seconds().map(Float)),
        ),
        family(
            "trellis_heartbeat_age_seconds",
            Gauge,
            "Seconds since this host's last heartbeat reached NATS.",
            "s",
            optional(age),
        ),
    ]);
    families.push(family(
        "trellis_uptime_seconds",
        Gauge,
        "Seconds since the host started.",
        "s",
        one(Int(info.uptime_s)),
    ));
    if host.runs_scheduler() {
        let stats = &host.scheduler;
        families.push(family(
            "trellis_scheduler_leading",
            Gauge,
            "1 while this host's scheduler holds the lease and acts.",
            "1",
            one(Int(u64::from(stats.leading.load(Ordering::Relaxed)))),
        ));
        families.push(family(
            "trellis_scheduler_term",
            Gauge,
            "The lease term this host's scheduler leads in (the lease entry's revision when it \
             took it); 0 when it does not lead.",
            "1",
            one(Int(stats.term.load(Ordering::Relaxed))),
        ));
        families.push(family(
            "trellis_scheduler_term_start_unix_ms",
            Gauge,
            "When (unix ms, this host's clock) its current or last term began.",
            "ms",
            one(Int(stats.term_start_ms.load(Ordering::Relaxed))),
        ));
        families.push(family(
            "trellis_scheduler_lease_until_unix_ms",
            Gauge,
            "Until when (unix ms) the last lease it was granted lets it act.",
            "ms",
            one(Int(stats.lease_until_ms.load(Ordering::Relaxed))),
        ));
        families.push(family(
            "trellis_scheduler_commands_total",
            Counter,
            "Start, stop and replace commands this host's scheduler sent to hosts.",
            "1",
            one(Int(stats.commands.load(Ordering::Relaxed))),
        ));
    }
    let providers = host.inventory().providers;
    let per_provider = |value: &dyn Fn(&trellis_proto::ProviderDescription) -> u64| {
        providers
            .iter()
            .map(|p| Point {
                labels: vec![("provider", p.id.clone()), ("kind", p.kind.clone())],
                value: Int(value(p)),
            })
            .collect::<Vec<_>>()
    };
    families.push(family(
        "trellis_provider_restarts_total",
        Counter,
        "Times a provider of this host was restarted after it ended.",
        "1",
        per_provider(&|p| u64::from(p.restarts)),
    ));
    families.push(family(
        "trellis_provider_healthy",
        Gauge,
        "1 when a provider runs and reports no problem.",
        "1",
        per_provider(&|p| u64::from(p.healthy)),
    ));
    let durations = components
        .iter()
        .map(|c| {
            let (cumulative, sum_us) = c.durations.snapshot();
            Durations { component: c.id.clone(), cumulative, sum_seconds: sum_us as f64 / 1e6 }
        })
        .collect();
    Snapshot { host: host.id().to_owned(), families, durations }
}

/// A snapshot for the encoders' tests: a counter with a label, a float gauge, and a histogram
/// of three calls (two in the second bucket, one above the largest bound).
#[cfg(test)]
pub(crate) fn sample() -> Snapshot {
    let mut cumulative = [2; BOUNDS_US.len() + 1];
    cumulative[0] = 0;
    cumulative[BOUNDS_US.len()] = 3;
    Snapshot {
        host: "NH".into(),
        families: vec![
            Family {
                name: "trellis_invocations_total",
                kind: Kind::Counter,
                help: "Calls.",
                unit: "1",
                points: vec![Point {
                    labels: vec![("component", "web".into())],
                    value: Number::Int(7),
                }],
            },
            Family {
                name: "trellis_heartbeat_age_seconds",
                kind: Kind::Gauge,
                help: "Age.",
                unit: "s",
                points: vec![Point { labels: vec![], value: Number::Float(0.5) }],
            },
        ],
        durations: vec![Durations { component: "web".into(), cumulative, sum_seconds: 40.0 }],
    }
}

/// This process's resource use, from /proc (Linux).
pub(crate) mod resources {
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
