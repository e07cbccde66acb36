//! JSON: every raw number, the run's environment, and the derived insights,
//! so that a reader can recompute any figure of the Markdown report.

use serde::Serialize;

use super::{Exporter, FleetReport, ReportError};
use crate::insights::Insights;
use fleetbench_common::flops::{achieved_gflops, flops_per_sample};
use fleetbench_common::result::MachineReport;
use fleetbench_common::stats::Stability;

#[derive(Debug, Clone, Copy, Default)]
pub struct JsonExporter;

#[derive(Serialize)]
struct DerivedPoint {
    batch_size: usize,
    stability: Stability,
    p99_over_p50: f64,
    gflops_per_second: f64,
    flops_per_sample: f64,
    /// Share of the GPU's dense peak for the dtype; absent for CPUs and unknown GPUs.
    share_of_peak: Option<f64>,
}

#[derive(Serialize)]
struct MachineJson<'a> {
    #[serde(flatten)]
    report: &'a MachineReport,
    simulated: bool,
    insights: Insights,
    derived: Vec<DerivedPoint>,
}

impl Exporter for JsonExporter {
    fn extension(&self) -> &'static str {
        "json"
    }

    fn machine(&self, r: &MachineReport) -> Result<String, ReportError> {
        let derived = r
            .points
            .iter()
            .filter_map(|p| {
                p.stats().map(|s| DerivedPoint {
                    batch_size: p.batch_size,
                    stability: s.stability(r.spec.min_seconds),
                    p99_over_p50: s.latency.tail_ratio(),
                    gflops_per_second: achieved_gflops(r.model.dims(), p.seq_len, s.throughput),
                    share_of_peak: fleetbench_common::hardware::peak_share(
                        &r.device,
                        r.model.dtype,
                        achieved_gflops(r.model.dims(), p.seq_len, s.throughput),
                    ),
                    flops_per_sample: flops_per_sample(r.model.dims(), p.seq_len),
                })
            })
            .collect();
        let doc = MachineJson {
            report: r,
            simulated: r.simulated(),
            insights: Insights::of_report(r),
            derived,
        };
        Ok(serde_json::to_string_pretty(&doc)? + "\n")
    }

    fn fleet(&self, f: &FleetReport) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(f)? + "\n")
    }
}
