//! The metrics pushed to an OpenTelemetry collector (OTLP, cumulative temporality) every
//! `OTEL_METRIC_EXPORT_INTERVAL`, by the SDK's meter provider: each family of [`super::collect`]
//! is an observable instrument reading the host's counters when the SDK collects; call
//! durations are an SDK histogram the router records each call into.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use trellis_lattice::telemetry;

use super::{DURATION, Kind, Number, Snapshot};
use crate::histogram::BOUNDS_US;
use crate::host::Host;

/// The SDK histogram of call durations, and the `host` attribute of its points.
#[derive(Debug)]
pub(crate) struct Durations {
    histogram: Histogram<f64>,
    host: KeyValue,
}

impl Durations {
    /// Records one call of the component whose `component` attribute is `component`.
    pub fn record(&self, elapsed: Duration, component: &KeyValue) {
        self.histogram.record(elapsed.as_secs_f64(), &[self.host.clone(), component.clone()]);
    }
}

/// Pushing metrics; stops (with a last push, as the SDK does) when dropped.
#[derive(Debug)]
pub(crate) struct Push(Option<SdkMeterProvider>);

impl Drop for Push {
    fn drop(&mut self) {
        // The SDK's shutdown waits for its reader thread; not on a runtime's thread.
        if let Some(provider) = self.0.take() {
            std::thread::spawn(move || {
                let _ = provider.shutdown();
            });
        }
    }
}

/// Starts pushing `host`'s metrics as `config` says, if it names a metrics endpoint.
pub(crate) fn start(host: &Arc<Host>, config: &telemetry::Config) -> Option<Push> {
    let provider = trellis_otlp::meter_provider(config)?;
    let meter = provider.meter_with_scope(telemetry::scope());
    let latest = Arc::new(Latest { host: host.clone(), taken: Mutex::new(None) });
    for family in &latest.get().families {
        observe(&meter, family.name, family.kind, family.help, family.unit, latest.clone());
    }
    let (name, help) = DURATION;
    let histogram = meter
        .f64_histogram(name)
        .with_description(help)
        .with_unit("s")
        .with_boundaries(BOUNDS_US.iter().map(|&us| us as f64 / 1e6).collect())
        .build();
    let host_id = KeyValue::new("host", host.id().to_owned());
    let _ = host.router().durations.set(Durations { histogram, host: host_id });
    Some(Push(Some(provider)))
}

/// One observable instrument for family `name`, whose callback reads the latest snapshot.
fn observe(
    meter: &Meter,
    name: &'static str,
    kind: Kind,
    help: &'static str,
    unit: &'static str,
    latest: Arc<Latest>,
) {
    // Every value as a double: a family's series are all of one type, but a family without
    // series yet would not say which.
    let points = move |observe: &dyn Fn(f64, &[KeyValue])| {
        let snapshot = latest.get();
        let host = KeyValue::new("host", snapshot.host.clone());
        let Some(family) = snapshot.families.iter().find(|f| f.name == name) else { return };
        for point in &family.points {
            let attributes: Vec<KeyValue> = std::iter::once(host.clone())
                .chain(point.labels.iter().map(|(k, v)| KeyValue::new(*k, v.clone())))
                .collect();
            let value = match point.value {
                Number::Int(v) => v as f64,
                Number::Float(v) => v,
            };
            observe(value, &attributes);
        }
    };
    match kind {
        Kind::Counter => {
            meter
                .f64_observable_counter(name)
                .with_description(help)
                .with_unit(unit)
                .with_callback(move |o| points(&|v, a| o.observe(v, a)))
                .build();
        }
        Kind::Gauge => {
            meter
                .f64_observable_gauge(name)
                .with_description(help)
                .with_unit(unit)
                .with_callback(move |o| points(&|v, a| o.observe(v, a)))
                .build();
        }
    }
}

/// One snapshot serves every instrument of one collection (the SDK calls their callbacks one
/// after the other), not one snapshot each.
struct Latest {
    host: Arc<Host>,
    taken: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl Latest {
    /// A snapshot is fresh this long.
    const FRESH: Duration = Duration::from_millis(100);

    fn get(&self) -> Arc<Snapshot> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        match &*taken {
            Some((at, snapshot)) if at.elapsed() < Self::FRESH => snapshot.clone(),
            _ => {
                let snapshot = Arc::new(super::collect(&self.host));
                *taken = Some((Instant::now(), snapshot.clone()));
                snapshot
            }
        }
    }
}
