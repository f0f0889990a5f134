//! Latency histogram with bounded memory: HDR-style log-linear buckets.
//!
//! Values below 256 are counted exactly; above, each power of two is split
//! into 128 buckets, so a reported percentile is at most 1/128 (0.8 %) above
//! the exact one and never below it. The whole range of `u64` fits in 7,424
//! counters (58 KiB), whatever the run's length. Counters are atomics so every
//! worker records into one histogram per operation without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

const LINEAR: u64 = 256;
const SUB_BUCKETS: u64 = 128;
/// Exact buckets plus 128 for each power of two from 2^8 to 2^63.
const BUCKETS: usize = (LINEAR + SUB_BUCKETS * (64 - 8)) as usize;

fn index(value: u64) -> usize {
    if value < LINEAR {
        return usize::try_from(value).unwrap_or(0);
    }
    let msb = 63 - u64::from(value.leading_zeros());
    let shift = msb - 7;
    let mantissa = (value >> shift) - SUB_BUCKETS;
    usize::try_from(LINEAR + (msb - 8) * SUB_BUCKETS + mantissa).unwrap_or(BUCKETS - 1)
}

/// The largest value that falls in bucket `i`.
fn highest_in(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let msb = (i - LINEAR) / SUB_BUCKETS + 8;
    let mantissa = (i - LINEAR) % SUB_BUCKETS + SUB_BUCKETS;
    let shift = msb - 7;
    ((mantissa + 1) << shift).wrapping_sub(1)
}

/// Counts of recorded values (microseconds, for latencies).
#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    #[must_use]
    pub fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        self.counts[index(value)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// Adds every value `other` recorded.
    pub fn merge(&self, other: &Self) {
        for (mine, theirs) in self.counts.iter().zip(other.counts.iter()) {
            let n = theirs.load(Ordering::Relaxed);
            if n > 0 {
                mine.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.total.fetch_add(other.count(), Ordering::Relaxed);
        self.sum
            .fetch_add(other.sum.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max.fetch_max(other.max(), Ordering::Relaxed);
    }

    #[must_use]
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        self.sum.load(Ordering::Relaxed) as f64 / n as f64
    }

    /// The smallest recorded value `v` (to bucket precision) such that at
    /// least `quantile` of all values are `<= v`; 0 when nothing was recorded.
    #[must_use]
    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return highest_in(i).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::payload::Rng;

    fn exact(sorted: &[u64], quantile: f64) -> u64 {
        let n = sorted.len() as f64;
        let rank = ((quantile * n).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut previous = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= previous, "{v}");
            assert!(highest_in(i) >= v, "{v}");
            if i > 0 {
                assert!(highest_in(i - 1) < v, "{v}");
            }
            previous = i;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(highest_in(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn percentiles_match_an_exact_computation() {
        let mut rng = Rng::new(3);
        // Latency-like: mostly around 1 ms, a long tail to seconds.
        let values: Vec<u64> = (0..200_000)
            .map(|_| {
                let base = 200 + rng.below(2_000);
                if rng.below(100) == 0 {
                    base * (1 + rng.below(2_000))
                } else {
                    base
                }
            })
            .collect();
        let h = Histogram::new();
        for v in &values {
            h.record(*v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(h.count(), 200_000);
        assert_eq!(h.max(), *sorted.last().unwrap());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            let want = exact(&sorted, q);
            let got = h.value_at_quantile(q);
            assert!(got >= want, "q={q}: {got} < exact {want}");
            assert!(
                got <= want + want / 128,
                "q={q}: {got} too far above exact {want}"
            );
        }
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((h.mean() - mean).abs() < 1e-6);
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let h = Histogram::new();
        assert_eq!(h.value_at_quantile(0.5), 0);
        for v in [1, 2, 3, 4, 100] {
            h.record(v);
        }
        assert_eq!(h.value_at_quantile(0.5), 3);
        assert_eq!(h.value_at_quantile(0.8), 4);
        assert_eq!(h.value_at_quantile(0.999), 100);
    }
}
