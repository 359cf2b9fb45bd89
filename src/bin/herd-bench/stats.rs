//! Latency samples and their percentiles, and the one-line `key=value` summary every
//! mode ends with.

use std::fmt::Display;

/// Latency samples in nanoseconds.
#[derive(Debug, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    /// Adds one sample.
    pub fn push(&mut self, ns: u64) {
        self.0.push(ns);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Moves every sample of `other` in.
    pub fn append(&mut self, other: &mut Samples) {
        self.0.append(&mut other.0);
    }

    /// The percentiles of the samples (sorting them).
    pub fn percentiles(&mut self) -> Percentiles {
        self.0.sort_unstable();
        let at = |p: f64| nearest_rank(&self.0, p);
        Percentiles {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            max: self.0.last().copied().unwrap_or(0),
        }
    }
}

/// The nearest-rank percentile `p` of sorted `samples` (0 when there are none).
fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest sample.
    pub max: u64,
}

impl Percentiles {
    /// Adds `p50_us= p90_us= p99_us= p999_us= max_us=` to `summary`, with `prefix`
    /// before each key.
    pub fn add_to(&self, summary: &mut Summary, prefix: &str) {
        for (key, ns) in [
            ("p50_us", self.p50),
            ("p90_us", self.p90),
            ("p99_us", self.p99),
            ("p999_us", self.p999),
            ("max_us", self.max),
        ] {
            summary.add(&format!("{prefix}{key}"), micros(ns));
        }
    }
}

/// Nanoseconds as microseconds with one decimal.
pub fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The `key=value` summary line a mode prints last, in insertion order.
#[derive(Debug, Default)]
pub struct Summary(Vec<(String, String)>);

impl Summary {
    /// A summary starting with `mode=MODE`.
    pub fn new(mode: &str) -> Summary {
        let mut s = Summary::default();
        s.add("mode", mode);
        s
    }

    /// Adds `key=value`; spaces in the value become `_` so the line stays splittable.
    pub fn add(&mut self, key: &str, value: impl Display) {
        self.0
            .push((key.to_string(), value.to_string().replace(' ', "_")));
    }

    /// The line.
    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ns in (1..=100).rev() {
            s.push(ns * 1000);
        }
        let p = s.percentiles();
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (50_000, 90_000, 99_000, 100_000)
        );
        assert_eq!(Samples::default().percentiles().p99, 0);
    }

    #[test]
    fn summary_is_one_splittable_line() {
        let mut s = Summary::new("latency");
        s.add("error", "connection refused");
        assert_eq!(s.line(), "mode=latency error=connection_refused");
    }
}
