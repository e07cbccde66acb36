//! CSV: one row per point (machine) or per host and device (fleet), for
//! spreadsheets. Fields are quoted only when they need it (RFC 4180).

use super::{Exporter, FleetReport, ReportError};
use crate::insights::MB;
use fleetbench_common::result::MachineReport;

#[derive(Debug, Clone, Copy, Default)]
pub struct CsvExporter;

/// One field. Text that a spreadsheet would run as a formula (it starts with
/// `=`, `+`, `-`, `@`, a tab or a carriage return: `=HYPERLINK(...)` in a GPU
/// name) gets a leading `'`, which spreadsheets show as text (OWASP's CSV
/// injection advice); numbers, negative ones included, stay numbers.
fn field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err();
    let s = if formula {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn line(cells: &[String]) -> String {
    let mut s = cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",");
    s.push('\n');
    s
}

impl Exporter for CsvExporter {
    fn extension(&self) -> &'static str {
        "csv"
    }

    fn machine(&self, r: &MachineReport) -> Result<String, ReportError> {
        let mut out = line(
            &[
                "host",
                "simulated",
                "device",
                "device_name",
                "dtype",
                "batch_size",
                "seq_len",
                "status",
                "mean_ms",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "min_ms",
                "max_ms",
                "std_ms",
                "cv",
                "throughput",
                "iterations",
                "timed_seconds",
                "cpu_memory_mb",
                "gpu_memory_mb",
                "avg_power_w",
                "energy_j",
                "energy_method",
                "gpu_device_used_mb",
                "sm_clock_mhz",
                "gpu_temperature_c",
                "clock_events",
                "error",
            ]
            .map(String::from),
        );
        for p in &r.points {
            let base = vec![
                r.host.hostname.clone(),
                r.simulated().to_string(),
                r.device.id.clone(),
                r.device.name.clone(),
                r.model.dtype.to_string(),
                p.batch_size.to_string(),
                p.seq_len.to_string(),
            ];
            let rest = match p.stats() {
                Some(s) => vec![
                    "measured".into(),
                    s.latency.mean_ms.to_string(),
                    s.latency.p50_ms.to_string(),
                    s.latency.p90_ms.to_string(),
                    s.latency.p99_ms.to_string(),
                    s.latency.min_ms.to_string(),
                    s.latency.max_ms.to_string(),
                    s.latency.std_ms.to_string(),
                    s.latency.cv.to_string(),
                    s.throughput.to_string(),
                    s.iterations.to_string(),
                    s.timed_seconds.to_string(),
                    opt(s.peak_rss_bytes.map(|b| b as f64 / MB)),
                    opt(s.gpu_memory_bytes().map(|b| b as f64 / MB)),
                    opt(s.avg_power_watts),
                    opt(s.energy_joules),
                    s.energy_method
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                    opt(s.gpu_device_bytes.map(|b| b as f64 / MB)),
                    opt(s.sm_clock_mhz),
                    opt(s.gpu_temperature_c),
                    s.throttle_reasons.join(";"),
                    String::new(),
                ],
                None => {
                    let mut v = vec!["failed".to_string()];
                    v.extend(std::iter::repeat_n(String::new(), 20));
                    v.push(p.error().unwrap_or_default().to_string());
                    v
                }
            };
            out.push_str(&line(&[base, rest].concat()));
        }
        Ok(out)
    }

    fn fleet(&self, f: &FleetReport) -> Result<String, ReportError> {
        let mut out = line(
            &[
                "sweep_id",
                "host",
                "simulated",
                "device",
                "device_name",
                "hardware",
                "generation",
                "status",
                "points_measured",
                "points_failed",
                "best_throughput",
                "best_throughput_batch",
                "best_latency_ms",
                "best_latency_batch",
                "peak_cpu_memory_mb",
                "peak_gpu_memory_mb",
                "daily_samples",
                "samples_per_joule",
                "samples_per_dollar",
                "group_speedup_vs_baseline",
                "outlier",
                "outlier_causes",
                "error",
            ]
            .map(String::from),
        );
        for r in &f.rows {
            let outlier = f
                .outliers
                .iter()
                .find(|o| o.host == r.host && o.device_id == r.device_id);
            let speedup = f
                .groups
                .iter()
                .find(|g| g.hardware == r.hardware)
                .and_then(|g| g.speedup_vs_baseline);
            out.push_str(&line(&[
                f.sweep_id.clone(),
                r.host.clone(),
                r.simulated.to_string(),
                r.device_id.clone(),
                r.device_name.clone(),
                r.hardware.clone(),
                r.generation.clone().unwrap_or_default(),
                r.status.clone(),
                r.points_measured.to_string(),
                r.points_failed.to_string(),
                opt(r.best_throughput.map(|b| b.value)),
                opt(r.best_throughput.map(|b| b.batch_size)),
                opt(r.best_latency_ms.map(|b| b.value)),
                opt(r.best_latency_ms.map(|b| b.batch_size)),
                opt(r.peak_cpu_memory_mb),
                opt(r.peak_gpu_memory_mb),
                opt(r.daily_samples),
                opt(r.samples_per_joule),
                opt(r.samples_per_dollar),
                opt(speedup),
                outlier.is_some().to_string(),
                outlier.map(|o| o.causes.join("; ")).unwrap_or_default(),
                r.error.clone().unwrap_or_default(),
            ]));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn formulas_are_neutralised_and_numbers_kept() {
        assert_eq!(
            field("=HYPERLINK(\"http://x\",\"H100\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"H100\"\")\""
        );
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("+1+cmd|' /C calc'!A0"), "'+1+cmd|' /C calc'!A0");
        assert_eq!(field("-2+3"), "'-2+3");
        assert_eq!(field("-1.5"), "-1.5");
        assert_eq!(field("NVIDIA A10"), "NVIDIA A10");
        assert_eq!(field("a,b"), "\"a,b\"");
    }
}
