//! Results: latency percentiles, throughput, and the ratio to the baseline.

use std::time::Duration;

use serde::Serialize;

/// One measured configuration next to its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured, for example `1 in flight, 100 B`.
    pub case: String,
    /// Trellis figures.
    pub trellis: Figures,
    /// The baseline's figures, when the scenario has one.
    pub baseline: Option<Figures>,
    /// Trellis p50 / baseline p50 (lower is better).
    pub p50_ratio: Option<f64>,
    /// Trellis throughput / baseline throughput (higher is better).
    pub throughput_ratio: Option<f64>,
    /// What the baseline is.
    pub baseline_name: Option<String>,
}

/// Figures of one side.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Figures {
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// A scalar that is not a latency (bytes, milliseconds), when the row is about one.
    pub value: Option<f64>,
    /// Unit of `value`.
    pub unit: Option<&'static str>,
}

impl Figures {
    /// Figures from per-operation latencies over a run that took `elapsed`.
    pub fn from_samples(samples: &mut [Duration], elapsed: Duration) -> Self {
        samples.sort_unstable();
        let pick = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Self {
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            ops_per_s: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            value: None,
            unit: None,
        }
    }

    /// A single value (memory, a total time).
    pub fn value(value: f64, unit: &'static str) -> Self {
        Self { value: Some(value), unit: Some(unit), ..Self::default() }
    }
}

impl Row {
    /// A row with a baseline; ratios are computed.
    pub fn compared(
        case: impl Into<String>,
        trellis: Figures,
        baseline: Figures,
        name: &str,
    ) -> Self {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Self {
            case: case.into(),
            p50_ratio: ratio(trellis.p50_us, baseline.p50_us),
            throughput_ratio: ratio(trellis.ops_per_s, baseline.ops_per_s),
            trellis,
            baseline: Some(baseline),
            baseline_name: Some(name.to_owned()),
        }
    }

    /// A row without a baseline (an absolute target).
    pub fn alone(case: impl Into<String>, trellis: Figures) -> Self {
        Self {
            case: case.into(),
            trellis,
            baseline: None,
            p50_ratio: None,
            throughput_ratio: None,
            baseline_name: None,
        }
    }
}

/// A scenario's rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Whether counts were reduced.
    pub quick: bool,
    /// Results.
    pub rows: Vec<Row>,
}

impl Report {
    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let mut out = format!("## {}{}\n", self.scenario, if self.quick { " (quick)" } else { "" });
        out.push_str(&format!(
            "{:<40} {:>10} {:>10} {:>12} | {:>10} {:>10} {:>12} | {:>8} {:>8}\n",
            "case",
            "p50 µs",
            "p99 µs",
            "ops/s",
            "base p50",
            "base p99",
            "base ops/s",
            "p50 x",
            "ops x"
        ));
        for row in &self.rows {
            let t = &row.trellis;
            if let (Some(v), Some(unit)) = (t.value, t.unit) {
                out.push_str(&format!("{:<40} {:>10.1} {unit}\n", row.case, v));
                continue;
            }
            let b = row.baseline.unwrap_or_default();
            let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}"));
            out.push_str(&format!(
                "{:<40} {:>10.1} {:>10.1} {:>12.0} | {:>10.1} {:>10.1} {:>12.0} | {:>8} {:>8}\n",
                row.case,
                t.p50_us,
                t.p99_us,
                t.ops_per_s,
                b.p50_us,
                b.p99_us,
                b.ops_per_s,
                ratio(row.p50_ratio),
                ratio(row.throughput_ratio)
            ));
        }
        // Each baseline once, in the order rows first use it: a case `x/parts` is read against
        // the line starting `parts`.
        let mut named: Vec<&str> = Vec::new();
        for name in self.rows.iter().filter_map(|r| r.baseline_name.as_deref()) {
            if !named.contains(&name) {
                named.push(name);
                out.push_str(&format!("baseline {name}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_ratios() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let f = Figures::from_samples(&mut samples, Duration::from_secs(1));
        assert_eq!(f.p50_us.round(), 51.0);
        assert_eq!(f.p99_us.round(), 99.0);
        assert_eq!(f.ops_per_s, 100.0);
        let base = Figures { p50_us: 25.5, ops_per_s: 200.0, ..f };
        let row = Row::compared("x", f, base, "b");
        assert_eq!(row.p50_ratio.map(f64::round), Some(2.0));
        assert_eq!(row.throughput_ratio, Some(0.5));
    }
}
