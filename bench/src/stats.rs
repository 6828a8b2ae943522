//! Latency summaries.

use serde_json::{Value, json};
use std::time::Duration;

/// Median and p95 (nearest rank) of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (mean of the two middle samples when `n` is even).
    pub median_ms: f64,
    /// 95th percentile, nearest-rank.
    pub p95_ms: f64,
    /// Smallest sample.
    pub min_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when empty.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median_ms = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        let rank = (n * 95).div_ceil(100).max(1);
        Some(Summary {
            n,
            median_ms,
            p95_ms: ms[rank - 1],
            min_ms: ms[0],
            max_ms: ms[n - 1],
        })
    }

    /// The summary as JSON.
    pub fn to_json(self) -> Value {
        json!({
            "n": self.n,
            "median_ms": round3(self.median_ms),
            "p95_ms": round3(self.p95_ms),
            "min_ms": round3(self.min_ms),
            "max_ms": round3(self.max_ms),
        })
    }
}

/// Rounds to 3 decimals (JSON readability).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_millis(x)).collect()
    }

    #[test]
    fn median_and_p95() {
        let s = Summary::of(&ms(&[5, 1, 3])).unwrap();
        assert_eq!(s.median_ms, 3.0);
        assert_eq!(s.p95_ms, 5.0);
        let s = Summary::of(&ms(&[4, 1, 3, 2])).unwrap();
        assert_eq!(s.median_ms, 2.5);
        let v: Vec<u64> = (1..=100).collect();
        let s = Summary::of(&ms(&v)).unwrap();
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 100.0);
        assert!(Summary::of(&[]).is_none());
    }
}
