//! A lock-free latency histogram with fixed buckets, for the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (Prometheus `le`, cumulative when rendered).
pub(crate) const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// Counts of observations per bucket (the last counts everything above the largest bound).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The time all observed calls took, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// Cumulative counts per bound (the last is the total), and the sum in microseconds.
    pub fn snapshot(&self) -> ([u64; BOUNDS_US.len() + 1], u64) {
        let mut cumulative = [0u64; BOUNDS_US.len() + 1];
        let mut running = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            cumulative[i] = running;
        }
        (cumulative, self.sum_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(60));
        let (cumulative, sum) = h.snapshot();
        assert_eq!(cumulative[0], 1, "<= 100 µs");
        assert_eq!(cumulative[2], 2, "<= 500 µs");
        assert_eq!(cumulative[BOUNDS_US.len() - 1], 2, "<= 30 s");
        assert_eq!(cumulative[BOUNDS_US.len()], 3, "+Inf");
        assert_eq!(sum, 50 + 300 + 60_000_000);
    }
}
