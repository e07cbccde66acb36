//! Per-machine insights, with the definitions of the seed report
//! (`testdata/seed/distilbert-benchmark-report.md`) so that every
//! figure can be checked by hand from the metrics table:
//!
//! - best batch size for throughput: the largest samples/s;
//! - best batch size for latency: the smallest mean latency;
//! - most memory-efficient batch size: the least memory per sample, where
//!   memory per sample is the process's CPU memory divided by the batch size
//!   (GPU memory per sample is given too when the device is a GPU);
//! - scaling efficiency: (throughput at the largest batch / throughput at the
//!   smallest) / (largest batch / smallest), 1.0 being perfectly linear;
//! - scaling declines after the first batch size whose step to the next one
//!   gains less than 80% of linear throughput growth;
//! - estimated daily throughput: best throughput × 86,400 s.
//!
//! Only measured points take part; failed points are listed separately.

use serde::{Deserialize, Serialize};

use fleetbench_common::result::{DeviceKind, MachineReport, PointResult};

/// Mebibytes, the unit the seed calls "MB".
pub const MB: f64 = 1024.0 * 1024.0;
/// Below this share of linear growth a step counts as the start of the decline.
pub const DECLINE_THRESHOLD: f64 = 0.8;
/// A smaller batch within this share of the best throughput is worth recommending.
pub const NEAR_BEST_SHARE: f64 = 0.95;
const SECONDS_PER_DAY: f64 = 86_400.0;
/// On a GPU, latency that grows by less than this share of the extra work
/// between the two smallest batch sizes means the kernels are too small to
/// fill the device: the time goes to launching them and synchronising, and
/// the arithmetic is nearly free. A quarter is a deliberately wide margin:
/// a compute-bound GPU's latency grows almost in proportion to the batch.
pub const LAUNCH_BOUND_GROWTH: f64 = 0.25;

/// The figures of one measured point the insights need.
#[derive(Clone, Debug, PartialEq)]
pub struct InsightPoint {
    pub batch_size: usize,
    pub mean_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub throughput: f64,
    pub cpu_memory_mb: Option<f64>,
    pub gpu_memory_mb: Option<f64>,
    pub cv: f64,
    pub throttled: bool,
}

impl InsightPoint {
    /// A point with only the seed table's columns.
    pub fn seed_row(
        batch: usize,
        latency_ms: f64,
        throughput: f64,
        cpu_mb: f64,
        gpu_mb: Option<f64>,
    ) -> Self {
        InsightPoint {
            batch_size: batch,
            mean_latency_ms: latency_ms,
            p50_latency_ms: latency_ms,
            p99_latency_ms: latency_ms,
            throughput,
            cpu_memory_mb: Some(cpu_mb),
            gpu_memory_mb: gpu_mb,
            cv: 0.0,
            throttled: false,
        }
    }

    pub fn from_result(result: &PointResult) -> Option<Self> {
        let s = result.stats()?;
        let mb = |b: Option<u64>| b.map(|b| b as f64 / MB);
        Some(InsightPoint {
            batch_size: result.batch_size,
            mean_latency_ms: s.latency.mean_ms,
            p50_latency_ms: s.latency.p50_ms,
            p99_latency_ms: s.latency.p99_ms,
            throughput: s.throughput,
            cpu_memory_mb: mb(s.peak_rss_bytes),
            gpu_memory_mb: mb(s.gpu_memory_bytes()),
            cv: s.latency.cv,
            throttled: !s.throttle_reasons.is_empty(),
        })
    }
}

/// A batch size and the figure it achieved.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchFigure {
    pub batch_size: usize,
    pub value: f64,
}

/// Everything the "Performance Insights", "Potential Bottlenecks",
/// "Recommendations" and "Conclusion" sections say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Insights {
    pub best_throughput: Option<BatchFigure>,
    pub best_latency_ms: Option<BatchFigure>,
    /// MB of CPU memory per sample at the most memory-efficient batch size.
    pub most_memory_efficient: Option<BatchFigure>,
    pub most_gpu_memory_efficient: Option<BatchFigure>,
    pub scaling_efficiency: Option<f64>,
    pub scaling_declines_after: Option<usize>,
    pub daily_samples: Option<f64>,
    /// Smallest batch within 95% of the best throughput, when smaller than the best.
    pub near_best: Option<NearBest>,
    pub bottlenecks: Vec<String>,
    pub recommendations: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NearBest {
    pub batch_size: usize,
    pub share_of_best: f64,
    pub latency_ms: f64,
    pub best_batch_latency_ms: f64,
}

impl Insights {
    /// Insights of a per-machine report.
    pub fn of_report(report: &MachineReport) -> Insights {
        let points: Vec<InsightPoint> = report
            .points
            .iter()
            .filter_map(InsightPoint::from_result)
            .collect();
        Insights::compute(&points, &report.failed_points(), report.device.kind)
    }

    /// Insights of measured points (any order) and failed batch sizes on a
    /// device of `kind` (the bottleneck wording differs between CPU and GPU).
    pub fn compute(
        points: &[InsightPoint],
        failed: &[(usize, &str)],
        kind: DeviceKind,
    ) -> Insights {
        let mut pts: Vec<&InsightPoint> = points.iter().collect();
        pts.sort_by_key(|p| p.batch_size);

        let best_throughput = pts
            .iter()
            .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
            .map(|p| BatchFigure {
                batch_size: p.batch_size,
                value: p.throughput,
            });
        let best_latency_ms = pts
            .iter()
            .min_by(|a, b| a.mean_latency_ms.total_cmp(&b.mean_latency_ms))
            .map(|p| BatchFigure {
                batch_size: p.batch_size,
                value: p.mean_latency_ms,
            });
        let per_sample = |mem: fn(&InsightPoint) -> Option<f64>| {
            pts.iter()
                .filter_map(|p| {
                    mem(p).map(|m| BatchFigure {
                        batch_size: p.batch_size,
                        value: m / p.batch_size as f64,
                    })
                })
                .min_by(|a, b| a.value.total_cmp(&b.value))
        };
        let most_memory_efficient = per_sample(|p| p.cpu_memory_mb);
        let most_gpu_memory_efficient = per_sample(|p| p.gpu_memory_mb);

        let scaling_efficiency = match (pts.first(), pts.last()) {
            (Some(lo), Some(hi)) if pts.len() >= 2 && lo.throughput > 0.0 => Some(
                (hi.throughput / lo.throughput) / (hi.batch_size as f64 / lo.batch_size as f64),
            ),
            _ => None,
        };
        let scaling_declines_after = pts.windows(2).find_map(|w| {
            let linear = w[1].batch_size as f64 / w[0].batch_size as f64;
            let gain = w[1].throughput / w[0].throughput;
            (gain / linear < DECLINE_THRESHOLD).then_some(w[0].batch_size)
        });
        let daily_samples = best_throughput.map(|b| b.value * SECONDS_PER_DAY);

        let near_best = best_throughput.and_then(|best| {
            let best_latency = pts
                .iter()
                .find(|p| p.batch_size == best.batch_size)?
                .mean_latency_ms;
            pts.iter()
                .filter(|p| {
                    p.batch_size < best.batch_size && p.throughput >= NEAR_BEST_SHARE * best.value
                })
                .min_by_key(|p| p.batch_size)
                .map(|p| NearBest {
                    batch_size: p.batch_size,
                    share_of_best: p.throughput / best.value,
                    latency_ms: p.mean_latency_ms,
                    best_batch_latency_ms: best_latency,
                })
        });

        let mut insights = Insights {
            best_throughput,
            best_latency_ms,
            most_memory_efficient,
            most_gpu_memory_efficient,
            scaling_efficiency,
            scaling_declines_after,
            daily_samples,
            near_best,
            bottlenecks: Vec::new(),
            recommendations: Vec::new(),
        };
        insights.bottlenecks = bottlenecks(&pts, &insights, failed, kind);
        insights.recommendations = recommendations(&insights, failed, kind);
        insights
    }

    /// The report's closing paragraph, in the seed's wording; `device` is
    /// "CPU" or "CUDA".
    pub fn conclusion(&self, device: &str, simulated: bool) -> String {
        let (Some(t), Some(l)) = (self.best_throughput, self.best_latency_ms) else {
            return format!(
                "No batch size completed on {device}, so no performance conclusion can be drawn; see the failed batch sizes above."
            );
        };
        let mut c = format!(
            "The DistilBERT model demonstrates {:.2} samples/second maximum throughput and {:.2} ms minimum latency on {device}{}.",
            t.value,
            l.value,
            if simulated { " (simulated)" } else { "" }
        );
        if let Some(e) = self.scaling_efficiency {
            c.push_str(&format!(
                " The model shows {} scaling efficiency ({e:.2}) with larger batch sizes{}.",
                self.scaling_word(),
                if e < 0.7 {
                    ", suggesting resource limitations"
                } else {
                    ""
                }
            ));
        }
        if let Some(d) = self.daily_samples {
            c.push_str(&format!(
                " At optimal settings, this configuration can process approximately {:.2} million samples per day.",
                d / 1e6
            ));
        }
        c
    }

    /// "poor", "moderate" or "good", as the conclusion words it.
    pub fn scaling_word(&self) -> &'static str {
        match self.scaling_efficiency {
            Some(e) if e >= 0.7 => "good",
            Some(e) if e >= 0.3 => "moderate",
            _ => "poor",
        }
    }
}

fn bottlenecks(
    pts: &[&InsightPoint],
    ins: &Insights,
    failed: &[(usize, &str)],
    kind: DeviceKind,
) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(best), Some(first), Some(last)) = (ins.best_throughput, pts.first(), pts.last())
        && pts.len() >= 2
        && (best.batch_size < last.batch_size || ins.scaling_efficiency.is_some_and(|e| e < 0.5))
    {
        match kind {
            // A CPU that is flat from the smallest batch on is saturated by the
            // matrix products themselves: there is no idle parallelism for
            // batching to fill, so bandwidth is not the story.
            DeviceKind::Cpu if ins.scaling_declines_after == Some(first.batch_size) => out.push(format!(
                "Throughput is nearly flat across batch sizes: the CPU is compute-bound already at batch {}, so larger batches add latency without adding throughput",
                first.batch_size
            )),
            // The seed's wording: past the best batch size more work per call
            // buys no more samples per second, so a shared resource is saturated.
            _ => out.push("Throughput plateaus for large batch sizes, possibly due to memory bandwidth limitations".to_string()),
        }
    }
    if kind == DeviceKind::Cuda
        && let [a, b, ..] = pts
        && a.mean_latency_ms > 0.0
        && b.batch_size > a.batch_size
    {
        let work = b.batch_size as f64 / a.batch_size as f64;
        let latency = b.mean_latency_ms / a.mean_latency_ms;
        if latency < 1.0 + LAUNCH_BOUND_GROWTH * (work - 1.0) {
            out.push(format!(
                "Small batches are launch-bound: from batch {} to {} the work grows {work:.0}x but the latency only {latency:.2}x ({:.2} to {:.2} ms), so the GPU waits on kernel launches and synchronisation rather than arithmetic; larger batches, CUDA graphs or fewer, fused kernels raise throughput there",
                a.batch_size, b.batch_size, a.mean_latency_ms, b.mean_latency_ms
            ));
        }
    }
    let tails: Vec<String> = pts
        .iter()
        .filter(|p| p.p50_latency_ms > 0.0 && p.p99_latency_ms / p.p50_latency_ms > 1.5)
        .map(|p| {
            format!(
                "{} ({:.2}x)",
                p.batch_size,
                p.p99_latency_ms / p.p50_latency_ms
            )
        })
        .collect();
    if !tails.is_empty() {
        out.push(format!(
            "Long latency tail (p99 more than 1.5x p50) at batch size {}: other work on the device or clock changes",
            tails.join(", ")
        ));
    }
    let unstable: Vec<String> = pts
        .iter()
        .filter(|p| p.cv > fleetbench_common::stats::NOISY_CV)
        .map(|p| p.batch_size.to_string())
        .collect();
    if !unstable.is_empty() {
        out.push(format!(
            "Unstable measurements (coefficient of variation above {:.0}%) at batch size {}: the device was shared or its clocks moved",
            fleetbench_common::stats::NOISY_CV * 100.0,
            unstable.join(", ")
        ));
    }
    let throttled: Vec<String> = pts
        .iter()
        .filter(|p| p.throttled)
        .map(|p| p.batch_size.to_string())
        .collect();
    if !throttled.is_empty() {
        out.push(format!(
            "The GPU throttled its clocks during batch size {}",
            throttled.join(", ")
        ));
    }
    for (batch, error) in failed {
        out.push(format!("Batch size {batch} failed: {error}"));
    }
    out
}

fn recommendations(ins: &Insights, failed: &[(usize, &str)], kind: DeviceKind) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(b) = ins.best_throughput {
        out.push(format!(
            "For maximum throughput, use batch size **{}**",
            b.batch_size
        ));
    }
    if let Some(b) = ins.best_latency_ms {
        out.push(format!(
            "For minimum latency, use batch size **{}**",
            b.batch_size
        ));
    }
    if let (Some(n), Some(best)) = (ins.near_best, ins.best_throughput) {
        out.push(format!(
            "Batch {} gives {:.0}% of the best throughput at {:.0}% of the latency of batch {}: a good serving compromise",
            n.batch_size,
            n.share_of_best * 100.0,
            100.0 * n.latency_ms / n.best_batch_latency_ms,
            best.batch_size
        ));
    }
    if ins.scaling_efficiency.is_some_and(|e| e < 0.5) {
        out.push("Address the identified bottlenecks to improve performance:".to_string());
        out.push(match kind {
            DeviceKind::Cuda => {
                "  - Consider using a device with more memory or optimizing memory usage".to_string()
            }
            DeviceKind::Cpu => "  - On a CPU, more cores, a GPU or a lower precision (--dtype bf16 on CPUs with AMX or AVX512-BF16) raise throughput; batching does not".to_string(),
        });
    }
    if failed
        .iter()
        .any(|(_, e)| e.to_ascii_lowercase().contains("out of memory"))
    {
        out.push("Batch sizes that ran out of memory need a device with more memory or a lower precision (--dtype bf16)".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Key Performance Metrics table of testdata/seed/distilbert-benchmark-report.md.
    fn seed_table() -> Vec<InsightPoint> {
        vec![
            InsightPoint::seed_row(8, 15.56, 514.72, 1601.66, Some(746.88)),
            InsightPoint::seed_row(16, 26.54, 602.75, 1602.78, Some(796.88)),
            InsightPoint::seed_row(32, 51.91, 616.49, 1616.91, Some(892.88)),
            InsightPoint::seed_row(64, 109.80, 582.91, 1617.16, Some(1084.88)),
            InsightPoint::seed_row(128, 221.10, 578.92, 1617.66, Some(1468.88)),
        ]
    }

    #[test]
    fn the_seed_table_gives_the_seed_insights() {
        let ins = Insights::compute(&seed_table(), &[], DeviceKind::Cuda);
        assert_eq!(
            ins.best_throughput,
            Some(BatchFigure {
                batch_size: 32,
                value: 616.49
            })
        );
        assert_eq!(
            ins.best_latency_ms,
            Some(BatchFigure {
                batch_size: 8,
                value: 15.56
            })
        );
        let mem = ins.most_memory_efficient.expect("memory");
        assert_eq!(mem.batch_size, 128);
        assert_eq!(format!("{:.2}", mem.value), "12.64");
        assert_eq!(
            format!("{:.2}", ins.scaling_efficiency.expect("scaling")),
            "0.07"
        );
        assert_eq!(ins.scaling_declines_after, Some(8));
        let daily = ins.daily_samples.expect("daily");
        assert_eq!(format!("{:.2}", daily / 1e6), "53.26");
        assert_eq!(ins.scaling_word(), "poor");
        assert_eq!(
            ins.conclusion("CUDA", false),
            "The DistilBERT model demonstrates 616.49 samples/second maximum throughput and 15.56 ms minimum latency on CUDA. The model shows poor scaling efficiency (0.07) with larger batch sizes, suggesting resource limitations. At optimal settings, this configuration can process approximately 53.26 million samples per day."
        );
        assert!(ins.bottlenecks[0].starts_with("Throughput plateaus for large batch sizes"));
        assert_eq!(
            ins.recommendations[0],
            "For maximum throughput, use batch size **32**"
        );
        assert_eq!(
            ins.recommendations[1],
            "For minimum latency, use batch size **8**"
        );
        // Batch 16 reaches 602.75 / 616.49 = 97.8% of the best at half the latency.
        let near = ins.near_best.expect("near best");
        assert_eq!(near.batch_size, 16);
        assert!((near.share_of_best - 602.75 / 616.49).abs() < 1e-12);
    }

    #[test]
    fn a_flat_cpu_is_called_compute_bound_not_bandwidth_bound() {
        let pts: Vec<InsightPoint> = [1usize, 4, 8, 16]
            .iter()
            .map(|&b| InsightPoint::seed_row(b, 80.0 * b as f64, 12.5, 300.0, None))
            .collect();
        let ins = Insights::compute(&pts, &[], DeviceKind::Cpu);
        assert_eq!(ins.scaling_declines_after, Some(1));
        assert!(
            ins.bottlenecks[0].contains("compute-bound already at batch 1"),
            "{:?}",
            ins.bottlenecks
        );
        assert!(
            ins.recommendations
                .iter()
                .any(|r| r.contains("batching does not"))
        );
    }

    #[test]
    fn linear_scaling_has_efficiency_one_and_no_decline() {
        let pts: Vec<InsightPoint> = [1usize, 2, 4]
            .iter()
            .map(|&b| InsightPoint::seed_row(b, 10.0, 100.0 * b as f64, 100.0, None))
            .collect();
        let ins = Insights::compute(&pts, &[], DeviceKind::Cpu);
        assert_eq!(ins.scaling_efficiency, Some(1.0));
        assert_eq!(ins.scaling_declines_after, None);
        assert_eq!(ins.best_throughput.map(|b| b.batch_size), Some(4));
        assert!(ins.bottlenecks.is_empty());
        assert_eq!(ins.scaling_word(), "good");
    }

    #[test]
    fn a_gpu_whose_latency_stays_flat_as_the_batch_grows_is_called_launch_bound() {
        // Latency 10 ms at batch 1, 11 ms at batch 2: twice the work for 1.1x the time.
        let flat: Vec<InsightPoint> = [(1usize, 10.0), (2, 11.0), (4, 20.0)]
            .iter()
            .map(|&(b, ms)| InsightPoint::seed_row(b, ms, b as f64 * 1000.0 / ms, 100.0, None))
            .collect();
        let ins = Insights::compute(&flat, &[], DeviceKind::Cuda);
        let launch = ins
            .bottlenecks
            .iter()
            .find(|b| b.starts_with("Small batches are launch-bound"))
            .expect("launch-bound");
        assert!(
            launch.contains("grows 2x but the latency only 1.10x"),
            "{launch}"
        );
        // The same figures on a CPU say nothing of launches.
        let cpu = Insights::compute(&flat, &[], DeviceKind::Cpu);
        assert!(cpu.bottlenecks.iter().all(|b| !b.contains("launch-bound")));
        // The seed's GPU table: 15.56 -> 26.54 ms for twice the work (1.71x) is not.
        let seed = Insights::compute(&seed_table(), &[], DeviceKind::Cuda);
        assert!(seed.bottlenecks.iter().all(|b| !b.contains("launch-bound")));
    }

    #[test]
    fn failed_points_are_named_and_no_points_give_no_figures() {
        let ins = Insights::compute(
            &[],
            &[(256, "CUDA_ERROR_OUT_OF_MEMORY: out of memory")],
            DeviceKind::Cuda,
        );
        assert_eq!(ins.best_throughput, None);
        assert_eq!(ins.scaling_efficiency, None);
        assert!(
            ins.bottlenecks
                .iter()
                .any(|b| b.contains("Batch size 256 failed"))
        );
        assert!(
            ins.recommendations
                .iter()
                .any(|r| r.contains("out of memory"))
        );
    }
}
