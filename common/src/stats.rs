//! Statistics over the timed iterations of one point.
//!
//! Choices, so that a reader can check every figure by hand:
//! - Percentiles interpolate linearly between the two nearest order statistics
//!   (Hyndman & Fan 1996, definition 7; numpy's and R's default), so p50 is
//!   the usual median and small samples give no surprises.
//! - The standard deviation is the sample one (divisor n - 1): the iterations
//!   are a sample of the process, not the whole population.
//! - The coefficient of variation is std / mean, a unit-free spread that lets
//!   points of different batch sizes be compared.

use serde::{Deserialize, Serialize};

/// Latency distribution of one point, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub std_ms: f64,
    pub cv: f64,
}

impl LatencySummary {
    /// Summarises iteration latencies; `None` when there are none or any is not finite.
    pub fn from_samples_ms(samples: &[f64]) -> Option<LatencySummary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let std = if sorted.len() > 1 {
            (sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Some(LatencySummary {
            mean_ms: mean,
            p50_ms: percentile_sorted(&sorted, 0.50),
            p90_ms: percentile_sorted(&sorted, 0.90),
            p99_ms: percentile_sorted(&sorted, 0.99),
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
            std_ms: std,
            cv: if mean > 0.0 { std / mean } else { 0.0 },
        })
    }

    /// Tail latency relative to the median: 1.0 means no tail at all.
    pub fn tail_ratio(&self) -> f64 {
        if self.p50_ms > 0.0 {
            self.p99_ms / self.p50_ms
        } else {
            f64::NAN
        }
    }
}

/// Percentile `q` in [0, 1] of already sorted data (Hyndman & Fan definition 7).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

/// How far one point's figures can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stability {
    /// Spread under 5% of the mean: differences above a few percent are real.
    Stable,
    /// Spread between 5% and 15%: compare with care, rerun with more iterations.
    Noisy,
    /// Spread above 15%: something else was using the device, or clocks moved.
    Unstable,
    /// Fewer timed seconds than asked for (`--min-seconds`): too short to judge.
    TooShort,
}

/// Coefficient-of-variation bounds of the verdicts. 5% is the run-to-run noise
/// of a quiet machine in our measurements; above 15% a point is dominated by
/// interference rather than by the model.
pub const STABLE_CV: f64 = 0.05;
pub const NOISY_CV: f64 = 0.15;

impl Stability {
    pub fn judge(cv: f64, timed_seconds: f64, min_seconds: f64) -> Stability {
        if min_seconds > 0.0 && timed_seconds + 1e-9 < min_seconds {
            Stability::TooShort
        } else if cv <= STABLE_CV {
            Stability::Stable
        } else if cv <= NOISY_CV {
            Stability::Noisy
        } else {
            Stability::Unstable
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stability::Stable => "stable",
            Stability::Noisy => "noisy",
            Stability::Unstable => "unstable",
            Stability::TooShort => "too short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_hand_computation() {
        // numpy.percentile([1,2,3,4,5,6,7,8,9,10], [50, 90, 99]) = 5.5, 9.1, 9.91
        let s: Vec<f64> = (1..=10).map(f64::from).collect();
        let sum = LatencySummary::from_samples_ms(&s).expect("summary");
        assert!((sum.p50_ms - 5.5).abs() < 1e-12);
        assert!((sum.p90_ms - 9.1).abs() < 1e-12);
        assert!((sum.p99_ms - 9.91).abs() < 1e-12);
        assert_eq!((sum.min_ms, sum.max_ms), (1.0, 10.0));
        assert!((sum.mean_ms - 5.5).abs() < 1e-12);
        // sample std of 1..10 = sqrt(82.5/9) = 3.0276503540974917
        assert!((sum.std_ms - 3.027_650_354_097_491_7).abs() < 1e-12);
        assert!((sum.cv - 3.027_650_354_097_491_7 / 5.5).abs() < 1e-12);
    }

    #[test]
    fn order_of_samples_does_not_matter_and_empty_is_none() {
        let a = LatencySummary::from_samples_ms(&[3.0, 1.0, 2.0]).expect("summary");
        let b = LatencySummary::from_samples_ms(&[1.0, 2.0, 3.0]).expect("summary");
        assert_eq!(a, b);
        assert!(LatencySummary::from_samples_ms(&[]).is_none());
        assert!(LatencySummary::from_samples_ms(&[1.0, f64::NAN]).is_none());
        let one = LatencySummary::from_samples_ms(&[4.0]).expect("summary");
        assert_eq!((one.p99_ms, one.std_ms), (4.0, 0.0));
    }

    #[test]
    fn stability_verdicts_follow_the_bounds() {
        assert_eq!(Stability::judge(0.01, 2.0, 1.0), Stability::Stable);
        assert_eq!(Stability::judge(0.10, 2.0, 0.0), Stability::Noisy);
        assert_eq!(Stability::judge(0.30, 2.0, 0.0), Stability::Unstable);
        assert_eq!(Stability::judge(0.01, 0.5, 1.0), Stability::TooShort);
    }

    /// Fuzz finding F3 (fuzz/RESULTS.md, targets agent_message and
    /// control_request): serde_json without its `float_roundtrip` feature
    /// reads some f64 back one bit off, so a point the coordinator stores as
    /// JSON is not the point the agent measured (here std_ms
    /// 1.0801234497346437 came back as ...435). Fixed by the feature in the
    /// root Cargo.toml's [workspace.dependencies].
    #[test]
    fn summaries_survive_the_stores_json_exactly() {
        let summary = LatencySummary::from_samples_ms(&[20.0, 21.0, 22.5, 20.5]).expect("summary");
        let json = serde_json::to_string(&summary).expect("serialise");
        let back: LatencySummary = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, summary, "{json}");
        let min_seconds = 15872.000003814695_f64;
        let back: f64 =
            serde_json::from_str(&serde_json::to_string(&min_seconds).expect("serialise"))
                .expect("parse");
        assert_eq!(back.to_bits(), min_seconds.to_bits());
    }
}
