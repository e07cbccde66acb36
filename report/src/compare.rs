//! Comparing two sweeps of the fleet and flagging the changes beyond noise,
//! for `fleetbench compare`.
//!
//! Choices, so that a reader can check every verdict by hand:
//! - Devices are matched by (host, device id), points by batch size. Only
//!   measured points take part: a failed point has nothing to compare, and
//!   the per-machine reports already list failures.
//! - A point's change is (throughput B - throughput A) / throughput A, the
//!   throughput being the batch size over the mean latency (`PointStats`).
//! - Whether a change is real is decided by Welch's two-sample t-test
//!   (Welch 1947) on the two vectors of per-iteration latencies. Unlike
//!   Student's pooled test it does not assume both sweeps had the same
//!   spread, which on shared fleet machines they rarely do. The two-sided
//!   p-value comes from Student's t distribution with the Welch–Satterthwaite
//!   degrees of freedom (Satterthwaite 1946), through the regularized
//!   incomplete beta function: P(|T| > t) = I_{ν/(ν+t²)}(ν/2, 1/2)
//!   (Numerical Recipes, 2nd ed., §6.4).
//! - A change is flagged only when it is both significant (p < 1%) and large
//!   (throughput moved by more than 2%). Either test alone fails: with
//!   hundreds of iterations the t-test finds shifts far too small to matter
//!   (a 0.5% clock difference is "significant"), and consecutive iterations
//!   are not independent (clocks and temperature drift), so its p-values are
//!   optimistic; a threshold alone flags a noisy machine whose mean moved a
//!   few percent by chance. criterion.rs uses the same pair
//!   (`significance_level` 0.05, `noise_threshold` 0.01); we are stricter,
//!   0.01 and 2%, because fleet machines are shared and noisy and a fleet
//!   report that cries wolf stops being read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use fleetbench_common::result::{PointResult, PointStats};

use crate::format::text_table;

/// A change counts only when Welch's test gives a p-value below this.
pub const SIGNIFICANCE: f64 = 0.01;
/// A change counts only when the throughput moved by more than this share.
pub const NOISE_THRESHOLD: f64 = 0.02;

/// One host's device in one sweep: its points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DevicePoints {
    pub host: String,
    pub device_id: String,
    /// CPU model or GPU name, e.g. "NVIDIA H100 80GB HBM3".
    pub hardware: String,
    pub points: Vec<PointResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Significantly slower, by more than the noise threshold.
    Regression,
    /// Significantly faster, by more than the noise threshold.
    Improvement,
    /// Not significant, or smaller than the noise threshold.
    WithinNoise,
    /// Too few samples (fewer than 2 on a side) to test.
    Insufficient,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::WithinNoise => "within noise",
            Verdict::Insufficient => "insufficient",
        }
    }
}

/// One batch size measured on the same device in both sweeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointChange {
    pub host: String,
    pub device_id: String,
    pub batch_size: usize,
    /// Samples per second in sweep A.
    pub throughput_a: f64,
    /// Samples per second in sweep B.
    pub throughput_b: f64,
    /// (b - a) / a: negative when B is slower. 0 when A's throughput is not
    /// a positive number (the verdict is then `Insufficient`).
    pub change: f64,
    /// Two-sided p-value of Welch's test on the latency samples; `None` when
    /// the test could not run.
    pub p_value: Option<f64>,
    pub verdict: Verdict,
}

/// One device present in both sweeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostChange {
    pub host: String,
    pub device_id: String,
    /// The device's hardware; "A → B" when it changed between the sweeps.
    pub hardware: String,
    /// Best throughput over all measured points of sweep A.
    pub best_a: Option<f64>,
    /// Best throughput over all measured points of sweep B.
    pub best_b: Option<f64>,
    /// (best_b - best_a) / best_a.
    pub change: Option<f64>,
    pub regressions: usize,
    pub improvements: usize,
    /// `Regression` if any point regressed, else `Improvement` if any
    /// improved, else `WithinNoise` if any point could be tested, else
    /// `Insufficient`.
    pub verdict: Verdict,
}

/// Everything `fleetbench compare` says about two sweeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepComparison {
    pub sweep_a: String,
    pub sweep_b: String,
    /// Ordered by host, then device.
    pub hosts: Vec<HostChange>,
    /// Ordered by host, then device, then batch size.
    pub points: Vec<PointChange>,
    /// "host device" present in only one of the sweeps, sorted.
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
}

/// Welch's two-sample t-test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WelchTest {
    /// (mean a - mean b) / sqrt(var a / n a + var b / n b).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided.
    pub p_value: f64,
}

/// Compares sweep B against sweep A (the baseline). A device listed twice in
/// one sweep counts once (its first entry), as does a batch size measured
/// twice on one device.
pub fn compare(
    sweep_a: &str,
    a: &[DevicePoints],
    sweep_b: &str,
    b: &[DevicePoints],
) -> SweepComparison {
    let (map_a, map_b) = (index(a), index(b));
    let label = |(host, device): &(String, String)| format!("{host} {device}");

    let mut hosts = Vec::new();
    let mut points = Vec::new();
    let mut only_in_a = Vec::new();
    for (key, dev_a) in &map_a {
        let Some(dev_b) = map_b.get(key) else {
            only_in_a.push(label(key));
            continue;
        };
        let (measured_a, measured_b) = (measured(dev_a), measured(dev_b));
        let changes: Vec<PointChange> = measured_a
            .iter()
            .filter_map(|(&batch, sa)| {
                let sb = measured_b.get(&batch)?;
                Some(point_change(&key.0, &key.1, batch, sa, sb))
            })
            .collect();
        hosts.push(host_change(
            dev_a,
            dev_b,
            &measured_a,
            &measured_b,
            &changes,
        ));
        points.extend(changes);
    }
    let only_in_b = map_b
        .keys()
        .filter(|k| !map_a.contains_key(*k))
        .map(label)
        .collect();

    SweepComparison {
        sweep_a: sweep_a.to_string(),
        sweep_b: sweep_b.to_string(),
        hosts,
        points,
        only_in_a,
        only_in_b,
    }
}

/// Devices by (host, device id), the first entry of each.
fn index(sweep: &[DevicePoints]) -> BTreeMap<(String, String), &DevicePoints> {
    let mut map = BTreeMap::new();
    for d in sweep {
        map.entry((d.host.clone(), d.device_id.clone()))
            .or_insert(d);
    }
    map
}

/// Measured points by batch size, the first one of each batch size.
fn measured(device: &DevicePoints) -> BTreeMap<usize, &PointStats> {
    let mut map = BTreeMap::new();
    for p in &device.points {
        if let Some(s) = p.stats() {
            map.entry(p.batch_size).or_insert(s);
        }
    }
    map
}

fn point_change(
    host: &str,
    device_id: &str,
    batch_size: usize,
    a: &PointStats,
    b: &PointStats,
) -> PointChange {
    let comparable = a.throughput > 0.0 && a.throughput.is_finite() && b.throughput.is_finite();
    let change = if comparable {
        (b.throughput - a.throughput) / a.throughput
    } else {
        0.0
    };
    let p_value = if comparable {
        latency_p_value(&a.samples_ms, &b.samples_ms)
    } else {
        None
    };
    let verdict = match p_value {
        None => Verdict::Insufficient,
        Some(p) if p < SIGNIFICANCE && change < -NOISE_THRESHOLD => Verdict::Regression,
        Some(p) if p < SIGNIFICANCE && change > NOISE_THRESHOLD => Verdict::Improvement,
        Some(_) => Verdict::WithinNoise,
    };
    PointChange {
        host: host.to_string(),
        device_id: device_id.to_string(),
        batch_size,
        throughput_a: a.throughput,
        throughput_b: b.throughput,
        change,
        p_value,
        verdict,
    }
}

/// Welch's p-value of two latency vectors; `None` when there are fewer than
/// 2 samples on a side or a sample is not finite.
///
/// Two constant vectors (zero variance on both sides, where the t statistic
/// is 0/0 or ±∞) have no noise at all: different means are a certain
/// difference (p = 0), equal means none (p = 1). The effect-size threshold
/// then still decides, so a constant 1% shift stays within noise.
fn latency_p_value(a: &[f64], b: &[f64]) -> Option<f64> {
    if let Some(w) = welch_t_test(a, b) {
        return Some(w.p_value);
    }
    if a.len() < 2 || b.len() < 2 || a.iter().chain(b).any(|x| !x.is_finite()) {
        return None;
    }
    // Both vectors are constant, or welch_t_test would have run.
    Some(if a[0] == b[0] { 1.0 } else { 0.0 })
}

fn host_change(
    dev_a: &DevicePoints,
    dev_b: &DevicePoints,
    measured_a: &BTreeMap<usize, &PointStats>,
    measured_b: &BTreeMap<usize, &PointStats>,
    changes: &[PointChange],
) -> HostChange {
    let best = |m: &BTreeMap<usize, &PointStats>| {
        m.values()
            .map(|s| s.throughput)
            .filter(|t| t.is_finite())
            .max_by(f64::total_cmp)
    };
    let (best_a, best_b) = (best(measured_a), best(measured_b));
    let change = match (best_a, best_b) {
        (Some(a), Some(b)) if a > 0.0 => Some((b - a) / a),
        _ => None,
    };
    let count = |v: Verdict| changes.iter().filter(|c| c.verdict == v).count();
    let (regressions, improvements) = (count(Verdict::Regression), count(Verdict::Improvement));
    let verdict = if regressions > 0 {
        Verdict::Regression
    } else if improvements > 0 {
        Verdict::Improvement
    } else if count(Verdict::WithinNoise) > 0 {
        Verdict::WithinNoise
    } else {
        Verdict::Insufficient
    };
    let hardware = if dev_a.hardware == dev_b.hardware {
        dev_b.hardware.clone()
    } else {
        format!("{} → {}", dev_a.hardware, dev_b.hardware)
    };
    HostChange {
        host: dev_a.host.clone(),
        device_id: dev_a.device_id.clone(),
        hardware,
        best_a,
        best_b,
        change,
        regressions,
        improvements,
        verdict,
    }
}

impl SweepComparison {
    /// Number of regressed points.
    pub fn regressions(&self) -> usize {
        self.points
            .iter()
            .filter(|p| p.verdict == Verdict::Regression)
            .count()
    }

    /// Plain text for the `fleetbench compare` command: one line per device
    /// with the best throughputs, their change and the verdict; then the
    /// regressed points; then the devices found in only one sweep.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "Sweep A: {}", self.sweep_a);
        let _ = writeln!(o, "Sweep B: {}", self.sweep_b);
        let _ = writeln!(
            o,
            "A point counts as changed when Welch's t-test on its latencies gives p < {} and its throughput moved by more than {:.0}%.\n",
            SIGNIFICANCE,
            NOISE_THRESHOLD * 100.0
        );

        if self.hosts.is_empty() {
            let _ = writeln!(o, "No device was measured in both sweeps.");
        } else {
            let mut rows = vec![
                [
                    "HOST",
                    "DEVICE",
                    "HARDWARE",
                    "BEST A (samples/s)",
                    "BEST B (samples/s)",
                    "CHANGE",
                    "VERDICT",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for h in &self.hosts {
                let compared = self
                    .points
                    .iter()
                    .filter(|p| p.host == h.host && p.device_id == h.device_id)
                    .count();
                let verdict = match h.verdict {
                    Verdict::Regression => format!(
                        "regression ({} of {compared} point{}{})",
                        h.regressions,
                        plural(compared),
                        if h.improvements > 0 {
                            format!(", {} improved", h.improvements)
                        } else {
                            String::new()
                        }
                    ),
                    Verdict::Improvement => {
                        format!(
                            "improvement ({} of {compared} point{})",
                            h.improvements,
                            plural(compared)
                        )
                    }
                    v => format!("{} ({compared} point{})", v.as_str(), plural(compared)),
                };
                rows.push(vec![
                    h.host.clone(),
                    h.device_id.clone(),
                    h.hardware.clone(),
                    throughput(h.best_a),
                    throughput(h.best_b),
                    h.change.map_or_else(|| "-".to_string(), percent),
                    verdict,
                ]);
            }
            o.push_str(&text_table(
                &rows,
                &[false, false, false, true, true, true, false],
            ));
        }

        let regressed: Vec<&PointChange> = self
            .points
            .iter()
            .filter(|p| p.verdict == Verdict::Regression)
            .collect();
        let improved = self
            .points
            .iter()
            .filter(|p| p.verdict == Verdict::Improvement)
            .count();
        let _ = writeln!(
            o,
            "\n{} regression{}, {improved} improvement{} among {} compared points.",
            regressed.len(),
            plural(regressed.len()),
            plural(improved),
            self.points.len()
        );
        if !regressed.is_empty() {
            let _ = writeln!(o, "\nRegressed points:");
            for p in regressed {
                let _ = writeln!(
                    o,
                    "  {} {} batch {}: {:.1} -> {:.1} samples/s ({}), p = {}",
                    p.host,
                    p.device_id,
                    p.batch_size,
                    p.throughput_a,
                    p.throughput_b,
                    percent(p.change),
                    p.p_value.map_or_else(|| "-".to_string(), p_text)
                );
            }
        }
        if !self.only_in_a.is_empty() || !self.only_in_b.is_empty() {
            o.push('\n');
        }
        for d in &self.only_in_a {
            let _ = writeln!(o, "Only in A: {d}");
        }
        for d in &self.only_in_b {
            let _ = writeln!(o, "Only in B: {d}");
        }
        o
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn throughput(t: Option<f64>) -> String {
    t.map_or_else(|| "-".to_string(), |t| format!("{t:.1}"))
}

fn percent(change: f64) -> String {
    format!("{:+.1}%", change * 100.0)
}

fn p_text(p: f64) -> String {
    if p == 0.0 || p >= 1e-4 {
        format!("{p:.4}")
    } else {
        format!("{p:.1e}")
    }
}

/// Welch's two-sample t-test (Welch 1947). `None` when either side has fewer
/// than 2 samples, a sample is not finite, or both sides have zero variance
/// (the statistic is then undefined).
///
/// t = (x̄a - x̄b) / sqrt(sa²/na + sb²/nb) with sample variances (divisor
/// n - 1); the degrees of freedom are Welch–Satterthwaite's
/// ν = (sa²/na + sb²/nb)² / ((sa²/na)²/(na - 1) + (sb²/nb)²/(nb - 1)).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<WelchTest> {
    if a.len() < 2 || b.len() < 2 || a.iter().chain(b).any(|x| !x.is_finite()) {
        return None;
    }
    let (mean_a, var_a) = mean_var(a);
    let (mean_b, var_b) = mean_var(b);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (sa, sb) = (var_a / na, var_b / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return None;
    }
    let t = (mean_a - mean_b) / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    Some(WelchTest {
        t,
        df,
        p_value: student_t_two_sided_p(t, df),
    })
}

/// Mean and sample variance (divisor n - 1), two passes for accuracy.
fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Degrees of freedom beyond which Student's t is evaluated at this value:
/// there its two-sided p differs from the normal limit by under 1e-8, while
/// the log-gamma differences of `betai` start losing digits at larger ν.
const MAX_DF: f64 = 1e7;

/// Two-sided tail probability P(|T| ≥ |t|) of Student's t distribution with
/// `df` degrees of freedom (not necessarily an integer):
/// I_{ν/(ν+t²)}(ν/2, 1/2), Numerical Recipes (2nd ed.) §6.4. NaN when `t`
/// is NaN or `df` is not positive; an infinite `df` gives the normal limit.
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    let df = df.min(MAX_DF);
    let t2 = t * t;
    // x and 1 - x each computed directly: 1 - x is tiny for large ν.
    let x = df / (df + t2);
    let one_minus_x = t2 / (df + t2);
    betai_with_complement(0.5 * df, 0.5, x, one_minus_x).clamp(0.0, 1.0)
}

/// Regularized incomplete beta function I_x(a, b), for a, b > 0 and x in
/// [0, 1] (Numerical Recipes, 2nd ed., §6.4, `betai`): the continued
/// fraction converges fast for x < (a + 1) / (a + b + 2); above that the
/// symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used.
pub fn betai(a: f64, b: f64, x: f64) -> f64 {
    betai_with_complement(a, b, x, 1.0 - x)
}

fn betai_with_complement(a: f64, b: f64, x: f64, one_minus_x: f64) -> f64 {
    if x.is_nan() || a <= 0.0 || b <= 0.0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if one_minus_x <= 0.0 {
        return 1.0;
    }
    // The prefactor x^a (1-x)^b / (a B(a, b)), in logarithms.
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * one_minus_x.ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * betacf(a, b, x) / a
    } else {
        1.0 - front * betacf(b, a, one_minus_x) / b
    }
}

/// The continued fraction of the incomplete beta function, evaluated by the
/// modified Lentz method (Numerical Recipes, 2nd ed., §5.2 and §6.4,
/// `betacf`; Lentz 1976, Thompson & Barnett 1986).
fn betacf(a: f64, b: f64, x: f64) -> f64 {
    const MAX_ITERATIONS: usize = 10_000;
    const EPS: f64 = 1e-15;
    // Stands in for zero so that no division by zero occurs.
    const FPMIN: f64 = 1e-300;
    let nudge = |v: f64| if v.abs() < FPMIN { FPMIN } else { v };

    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / nudge(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_ITERATIONS {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step: d_{2m} = m (b - m) x / ((a - 1 + 2m) (a + 2m)).
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / nudge(1.0 + aa * d);
        c = nudge(1.0 + aa / c);
        h *= d * c;
        // Odd step: d_{2m+1} = -(a + m) (a + b + m) x / ((a + 2m) (a + 1 + 2m)).
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / nudge(1.0 + aa * d);
        c = nudge(1.0 + aa / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 by the Lanczos (1964) approximation with γ = 5 and six
/// coefficients, as in Numerical Recipes (2nd ed.) §6.1, `gammln`: error
/// below 2e-10 in Γ over the whole half-plane Re x > 0.
pub fn ln_gamma(x: f64) -> f64 {
    const COF: [f64; 6] = [
        76.180_091_729_471_46,
        -86.505_320_329_416_77,
        24.014_098_240_830_91,
        -1.231_739_572_450_155,
        0.120_865_097_386_617_9e-2,
        -0.539_523_938_495_3e-5,
    ];
    // sqrt(2π)
    const STP: f64 = 2.506_628_274_631_000_5;
    let tmp = x + 5.5;
    let tmp = tmp - (x + 0.5) * tmp.ln();
    let mut ser = 1.000_000_000_190_015;
    let mut y = x;
    for c in COF {
        y += 1.0;
        ser += c / y;
    }
    -tmp + (STP * ser / x).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_common::result::PointOutcome;
    use fleetbench_common::stats::LatencySummary;

    fn close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol,
            "{actual} is not within {tol} of {expected}"
        );
    }

    #[test]
    fn ln_gamma_matches_factorials_and_sqrt_pi() {
        // Γ(1) = 1, Γ(5) = 4! = 24, Γ(11) = 10! = 3628800, Γ(1/2) = √π.
        close(ln_gamma(1.0), 0.0, 1e-9);
        close(ln_gamma(5.0), 24f64.ln(), 1e-9);
        close(ln_gamma(11.0), 3_628_800f64.ln(), 1e-9);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-9);
    }

    #[test]
    fn betai_matches_closed_forms() {
        // I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b;
        // I_{1/2}(a, a) = 1/2 by symmetry.
        for x in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
            close(betai(1.0, 1.0, x), x, 1e-9);
            close(betai(3.0, 1.0, x), x.powi(3), 1e-9);
            close(betai(1.0, 4.0, x), 1.0 - (1.0 - x).powi(4), 1e-9);
        }
        for a in [0.5, 2.0, 7.5, 40.0] {
            close(betai(a, a, 0.5), 0.5, 1e-9);
        }
    }

    #[test]
    fn student_t_matches_tables_and_closed_forms() {
        // Two-sided critical values of Student's t tables.
        close(student_t_two_sided_p(2.0, 10.0), 0.07339, 1e-4);
        close(student_t_two_sided_p(2.228, 10.0), 0.05, 1e-4);
        close(student_t_two_sided_p(0.0, 10.0), 1.0, 1e-12);
        close(student_t_two_sided_p(3.0, 30.0), 0.005394, 1e-4);
        close(student_t_two_sided_p(-3.0, 30.0), 0.005394, 1e-4);
        // Large ν: the normal distribution, 2 (1 - Φ(1.96)) = 0.049996.
        close(student_t_two_sided_p(1.96, 1e6), 0.05, 1e-4);
        close(student_t_two_sided_p(1.96, f64::INFINITY), 0.05, 1e-4);
        // ν = 1 is Cauchy: p = 1 - (2/π) atan|t|; ν = 2: p = 1 - |t| / sqrt(2 + t²).
        for t in [0.3, 1.0, 4.0, 25.0] {
            close(
                student_t_two_sided_p(t, 1.0),
                1.0 - 2.0 / std::f64::consts::PI * f64::atan(t),
                1e-9,
            );
            close(
                student_t_two_sided_p(t, 2.0),
                1.0 - t / (2.0 + t * t).sqrt(),
                1e-9,
            );
        }
        assert_eq!(student_t_two_sided_p(f64::INFINITY, 5.0), 0.0);
        assert!(student_t_two_sided_p(1.0, 0.0).is_nan());
    }

    #[test]
    fn welch_matches_hand_computation() {
        // Means 3 and 5, both variances 2.5: t = -2 / sqrt(0.5 + 0.5) = -2,
        // ν = 1² / (0.25/4 + 0.25/4) = 8, p(|T| > 2, 8) = 0.0805.
        let w = welch_t_test(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 5.0, 6.0, 7.0])
            .expect("test runs");
        close(w.t, -2.0, 1e-12);
        close(w.df, 8.0, 1e-12);
        close(w.p_value, 0.0805, 1e-4);

        // Unequal sizes and variances: means 3 and 4, variances 2.5 and 4,
        // sa²/na = 0.5, sb²/nb = 4/3: t = -1 / sqrt(11/6) = -0.738549,
        // ν = (11/6)² / (0.25/4 + (16/9)/2) = (121/36) / (137/144) = 484/137.
        let w = welch_t_test(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 6.0]).expect("test runs");
        close(w.t, -1.0 / (11.0f64 / 6.0).sqrt(), 1e-12);
        close(w.df, 484.0 / 137.0, 1e-12);

        assert!(welch_t_test(&[1.0], &[1.0, 2.0]).is_none());
        assert!(welch_t_test(&[2.0, 2.0], &[3.0, 3.0]).is_none());
        assert!(welch_t_test(&[1.0, f64::NAN], &[1.0, 2.0]).is_none());
        // Zero variance on one side only is fine: ν = n - 1 of the other side.
        let w = welch_t_test(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).expect("test runs");
        close(w.df, 2.0, 1e-12);
    }

    /// 20 latencies centred exactly on `mean_ms`, spread ±2·`spread` of it.
    fn samples(mean_ms: f64, spread: f64) -> Vec<f64> {
        (0..20)
            .map(|i| mean_ms * (1.0 + spread * f64::from(i % 5 - 2)))
            .collect()
    }

    /// A measured point, throughput = batch / mean latency. Built through
    /// serde so that optional fields added to `PointStats` need no change here.
    fn point(batch: usize, samples_ms: &[f64]) -> PointResult {
        let latency = LatencySummary::from_samples_ms(samples_ms).expect("finite samples");
        let stats: PointStats = serde_json::from_value(serde_json::json!({
            "warmup": 2,
            "iterations": samples_ms.len(),
            "timed_seconds": samples_ms.iter().sum::<f64>() / 1000.0,
            "throughput": batch as f64 * 1000.0 / latency.mean_ms,
            "latency": latency,
            "samples_ms": samples_ms,
            "throttle_reasons": [],
        }))
        .expect("PointStats from JSON");
        PointResult {
            batch_size: batch,
            seq_len: 128,
            outcome: PointOutcome::Measured(stats),
        }
    }

    fn failed(batch: usize) -> PointResult {
        PointResult {
            batch_size: batch,
            seq_len: 128,
            outcome: PointOutcome::Failed {
                error: "CUDA out of memory".into(),
            },
        }
    }

    fn device(host: &str, id: &str, points: Vec<PointResult>) -> DevicePoints {
        DevicePoints {
            host: host.into(),
            device_id: id.into(),
            hardware: "NVIDIA H100 80GB HBM3".into(),
            points,
        }
    }

    fn fixture() -> SweepComparison {
        const TIGHT: f64 = 0.001;
        const HUGE: f64 = 0.25;
        let a = vec![
            device("h-small", "cuda:0", vec![point(8, &samples(10.0, TIGHT))]),
            device(
                "h-regress",
                "cuda:0",
                vec![
                    point(8, &samples(10.0, TIGHT)),
                    point(16, &samples(18.0, TIGHT)),
                    failed(32),
                ],
            ),
            device("h-noisy", "cuda:0", vec![point(8, &samples(10.0, HUGE))]),
            device(
                "h-faster",
                "cuda:0",
                vec![point(1, &[3.0]), point(8, &samples(10.0, TIGHT))],
            ),
            device("h-gone", "cpu", vec![point(8, &samples(50.0, TIGHT))]),
        ];
        let b = vec![
            // 10% less throughput: latency / 0.9.
            device(
                "h-regress",
                "cuda:0",
                vec![
                    point(8, &samples(10.0 / 0.9, TIGHT)),
                    point(16, &samples(18.0, TIGHT)),
                    point(32, &samples(30.0, TIGHT)),
                ],
            ),
            // 1% less throughput, tight: significant, but below 2%.
            device(
                "h-small",
                "cuda:0",
                vec![point(8, &samples(10.0 / 0.99, TIGHT))],
            ),
            // 10% less throughput, but a spread of ±50%.
            device(
                "h-noisy",
                "cuda:0",
                vec![point(8, &samples(10.0 / 0.9, HUGE))],
            ),
            // 10% more throughput.
            device(
                "h-faster",
                "cuda:0",
                vec![point(1, &[2.0]), point(8, &samples(10.0 / 1.1, TIGHT))],
            ),
            device("h-new", "cuda:1", vec![point(8, &samples(10.0, TIGHT))]),
        ];
        compare("sweep-1", &a, "sweep-2", &b)
    }

    fn find<'a>(c: &'a SweepComparison, host: &str, batch: usize) -> &'a PointChange {
        c.points
            .iter()
            .find(|p| p.host == host && p.batch_size == batch)
            .expect("point compared")
    }

    #[test]
    fn compare_flags_only_significant_and_large_changes() {
        let c = fixture();
        let hosts: Vec<(&str, Verdict)> = c
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.verdict))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("h-faster", Verdict::Improvement),
                ("h-noisy", Verdict::WithinNoise),
                ("h-regress", Verdict::Regression),
                ("h-small", Verdict::WithinNoise),
            ]
        );

        let r = find(&c, "h-regress", 8);
        assert_eq!(r.verdict, Verdict::Regression);
        close(r.change, -0.10, 1e-12);
        assert!(r.p_value.is_some_and(|p| p < 1e-6));
        assert_eq!(find(&c, "h-regress", 16).verdict, Verdict::WithinNoise);
        // Batch 32 failed in A: not compared, not mentioned.
        assert!(!c.points.iter().any(|p| p.batch_size == 32));

        let small = find(&c, "h-small", 8);
        close(small.change, -0.01, 1e-12);
        assert!(small.p_value.is_some_and(|p| p < SIGNIFICANCE));
        assert_eq!(small.verdict, Verdict::WithinNoise);

        let noisy = find(&c, "h-noisy", 8);
        close(noisy.change, -0.10, 1e-12);
        assert!(noisy.p_value.is_some_and(|p| p > SIGNIFICANCE));
        assert_eq!(noisy.verdict, Verdict::WithinNoise);

        let faster = find(&c, "h-faster", 8);
        close(faster.change, 0.10, 1e-12);
        assert_eq!(faster.verdict, Verdict::Improvement);
        let single = find(&c, "h-faster", 1);
        assert_eq!(
            (single.verdict, single.p_value),
            (Verdict::Insufficient, None)
        );

        // Ordered by host, then batch size.
        let order: Vec<(&str, usize)> = c
            .points
            .iter()
            .map(|p| (p.host.as_str(), p.batch_size))
            .collect();
        assert_eq!(
            order,
            vec![
                ("h-faster", 1),
                ("h-faster", 8),
                ("h-noisy", 8),
                ("h-regress", 8),
                ("h-regress", 16),
                ("h-small", 8),
            ]
        );
        assert_eq!(c.regressions(), 1);
        assert_eq!(c.only_in_a, vec!["h-gone cpu".to_string()]);
        assert_eq!(c.only_in_b, vec!["h-new cuda:1".to_string()]);

        // Best throughput over each sweep's measured points: in A batch 16 at
        // 18 ms (888.9/s) beats batch 8 at 10 ms (800/s); in B batch 32, which
        // failed in A, reaches 32 / 30 ms = 1066.7/s: +20%, while the host's
        // verdict is still the regression of batch 8.
        let h = &c.hosts[2];
        assert_eq!((h.regressions, h.improvements), (1, 0));
        close(h.best_a.expect("best a"), 16_000.0 / 18.0, 1e-9);
        close(h.best_b.expect("best b"), 32_000.0 / 30.0, 1e-9);
        close(h.change.expect("change"), 0.2, 1e-12);
    }

    #[test]
    fn constant_samples_are_judged_by_the_threshold_alone() {
        let a = vec![device(
            "h",
            "cuda:0",
            vec![point(8, &[10.0; 5]), point(16, &[20.0; 5])],
        )];
        let b = vec![device(
            "h",
            "cuda:0",
            vec![point(8, &[12.5; 5]), point(16, &[20.1; 5])],
        )];
        let c = compare("a", &a, "b", &b);
        // 10 ms -> 12.5 ms: throughput -20%, certain.
        assert_eq!(c.points[0].verdict, Verdict::Regression);
        assert_eq!(c.points[0].p_value, Some(0.0));
        // 20 ms -> 20.1 ms: -0.5%, certain but below the threshold.
        assert_eq!(c.points[1].verdict, Verdict::WithinNoise);
        let same = compare("a", &a, "a", &a);
        assert!(
            same.points
                .iter()
                .all(|p| p.verdict == Verdict::WithinNoise && p.p_value == Some(1.0))
        );
    }

    #[test]
    fn render_text_lists_hosts_regressions_and_unmatched_devices() {
        let text = fixture().render_text();
        assert!(text.contains("Sweep A: sweep-1"), "{text}");
        assert!(text.contains("regression (1 of 2 points)"), "{text}");
        assert!(text.contains("improvement (1 of 2 points)"), "{text}");
        assert!(text.contains("within noise (1 point)"), "{text}");
        assert!(
            text.contains("1 regression, 1 improvement among 6 compared points"),
            "{text}"
        );
        assert!(
            text.contains("h-regress cuda:0 batch 8: 800.0 -> 720.0 samples/s (-10.0%)"),
            "{text}"
        );
        assert!(text.contains("Only in A: h-gone cpu"), "{text}");
        assert!(text.contains("Only in B: h-new cuda:1"), "{text}");
        // The device table: a header and one line per device.
        let header = text
            .lines()
            .position(|l| l.starts_with("HOST"))
            .expect("table header");
        let rows: Vec<&str> = text.lines().skip(header + 1).take(4).collect();
        assert!(rows[2].starts_with("h-regress  cuda:0"), "{text}");
        assert!(rows[2].contains("888.9"), "{text}");
        assert!(rows[2].contains("1066.7"), "{text}");
        assert!(rows[2].contains("+20.0%"), "{text}");

        let empty = compare("a", &[], "b", &[]).render_text();
        assert!(empty.contains("No device was measured in both sweeps."));
    }
}
