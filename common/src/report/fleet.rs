//! The fleet report's data: one row per host and device, and the fleet's totals.

use serde::{Deserialize, Serialize};

use crate::hardware::lookup_gpu_model;
use crate::insights::{BatchFigure, Insights, MB};
use crate::result::{DeviceKind, MachineReport};
use crate::spec::SweepSpec;

/// How one host's part of a sweep ended, as the coordinator recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostOutcome {
    pub host: String,
    /// e.g. "completed", "failed", "cancelled".
    pub status: String,
    pub error: Option<String>,
    pub simulated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetHostRow {
    pub host: String,
    pub device_id: String,
    pub device_name: String,
    /// The GPU model key from the peak table (e.g. "H100-SXM"), "CPU", or the raw name.
    pub hardware: String,
    pub simulated: bool,
    pub status: String,
    pub error: Option<String>,
    pub points_measured: usize,
    pub points_failed: usize,
    pub best_throughput: Option<BatchFigure>,
    pub best_latency_ms: Option<BatchFigure>,
    pub peak_cpu_memory_mb: Option<f64>,
    pub peak_gpu_memory_mb: Option<f64>,
    pub daily_samples: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetTotals {
    pub hosts: usize,
    pub hosts_completed: usize,
    pub hosts_failed: usize,
    pub simulated_hosts: usize,
    pub devices_measured: usize,
    /// Sum over devices of each one's best throughput: the fleet's capacity
    /// if every device served at its best batch size.
    pub total_best_throughput: f64,
    pub daily_samples: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    pub sweep_id: String,
    pub generated_at: String,
    pub state: String,
    pub spec: SweepSpec,
    pub rows: Vec<FleetHostRow>,
    pub totals: FleetTotals,
}

impl FleetReport {
    /// Builds the fleet report from every machine report of a sweep and the
    /// coordinator's record of how each host ended. A host without any machine
    /// report (it failed before its first result) still gets a row.
    pub fn build(
        sweep_id: &str,
        state: &str,
        spec: &SweepSpec,
        machines: &[MachineReport],
        outcomes: &[HostOutcome],
        generated_at: String,
    ) -> FleetReport {
        let mut rows = Vec::new();
        for outcome in outcomes {
            let mine: Vec<&MachineReport> = machines
                .iter()
                .filter(|m| m.host.hostname == outcome.host)
                .collect();
            if mine.is_empty() {
                rows.push(FleetHostRow {
                    host: outcome.host.clone(),
                    device_id: "-".into(),
                    device_name: "-".into(),
                    hardware: "-".into(),
                    simulated: outcome.simulated,
                    status: outcome.status.clone(),
                    error: outcome.error.clone(),
                    points_measured: 0,
                    points_failed: 0,
                    best_throughput: None,
                    best_latency_ms: None,
                    peak_cpu_memory_mb: None,
                    peak_gpu_memory_mb: None,
                    daily_samples: None,
                });
            }
            for m in mine {
                let ins = Insights::of_report(m);
                let measured: Vec<_> = m.points.iter().filter_map(|p| p.stats()).collect();
                let max_mb = |f: fn(&crate::result::PointStats) -> Option<u64>| {
                    measured
                        .iter()
                        .filter_map(|s| f(s))
                        .max()
                        .map(|b| b as f64 / MB)
                };
                rows.push(FleetHostRow {
                    host: outcome.host.clone(),
                    device_id: m.device.id.clone(),
                    device_name: m.device.name.clone(),
                    hardware: hardware_label(m),
                    simulated: m.simulated() || outcome.simulated,
                    status: outcome.status.clone(),
                    error: outcome.error.clone(),
                    points_measured: measured.len(),
                    points_failed: m.points.len() - measured.len(),
                    best_throughput: ins.best_throughput,
                    best_latency_ms: ins.best_latency_ms,
                    peak_cpu_memory_mb: max_mb(|s| s.peak_rss_bytes),
                    peak_gpu_memory_mb: max_mb(|s| s.gpu_process_bytes.or(s.gpu_device_bytes)),
                    daily_samples: ins.daily_samples,
                });
            }
        }
        rows.sort_by(|a, b| (&a.host, &a.device_id).cmp(&(&b.host, &b.device_id)));
        let total_best_throughput: f64 = rows
            .iter()
            .filter_map(|r| r.best_throughput.map(|b| b.value))
            .sum();
        let totals = FleetTotals {
            hosts: outcomes.len(),
            hosts_completed: outcomes.iter().filter(|o| o.status == "completed").count(),
            hosts_failed: outcomes.iter().filter(|o| o.status != "completed").count(),
            simulated_hosts: outcomes.iter().filter(|o| o.simulated).count(),
            devices_measured: rows.iter().filter(|r| r.best_throughput.is_some()).count(),
            total_best_throughput,
            daily_samples: total_best_throughput * 86_400.0,
        };
        FleetReport {
            sweep_id: sweep_id.to_string(),
            generated_at,
            state: state.to_string(),
            spec: spec.clone(),
            rows,
            totals,
        }
    }
}

fn hardware_label(m: &MachineReport) -> String {
    match m.device.kind {
        DeviceKind::Cpu => "CPU".to_string(),
        DeviceKind::Cuda => lookup_gpu_model(&m.device.name)
            .map(|g| g.key.to_string())
            .unwrap_or_else(|| m.device.name.clone()),
    }
}
