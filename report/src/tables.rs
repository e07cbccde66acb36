//! The tables of the reports, built once and rendered by every format: the
//! Markdown and HTML exporters show the same rows with the same wording.

use super::FleetReport;
use super::format::{opt_f, opt_mb, thousands};
use super::table::Table;
use fleetbench_common::flops::achieved_gflops;
use fleetbench_common::result::MachineReport;

pub(crate) fn machine_metrics(r: &MachineReport) -> Table {
    let mut t = Table::new(&[
        ("Batch Size", true),
        ("Latency (ms)", true),
        ("Throughput (samples/sec)", true),
        ("CPU Memory (MB)", true),
        ("GPU Memory (MB)", true),
    ]);
    for p in &r.points {
        match p.stats() {
            Some(s) => t.row(vec![
                format!("{:.2}", p.batch_size as f64),
                format!("{:.2}", s.latency.mean_ms),
                format!("{:.2}", s.throughput),
                opt_mb(s.peak_rss_bytes),
                opt_mb(s.gpu_memory_bytes()),
            ]),
            None => t.row_with_class(
                Some("failed"),
                vec![
                    format!("{:.2}", p.batch_size as f64),
                    "failed".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
            ),
        }
    }
    t
}

pub(crate) fn machine_distribution(r: &MachineReport) -> Table {
    let mut t = Table::new(&[
        ("Batch Size", true),
        ("p50 (ms)", true),
        ("p90 (ms)", true),
        ("p99 (ms)", true),
        ("Min (ms)", true),
        ("Max (ms)", true),
        ("Std (ms)", true),
        ("CV", true),
        ("p99/p50", true),
        ("Stability", false),
        ("GFLOP/s", true),
        ("% of Peak", true),
        ("Iterations", true),
        ("Timed (s)", true),
        ("Power (W)", true),
        ("Samples/J", true),
    ]);
    for p in &r.points {
        if let Some(s) = p.stats() {
            let gflops = achieved_gflops(r.model.dims(), p.seq_len, s.throughput);
            let per_joule = s
                .energy_joules
                .filter(|j| *j > 0.0)
                .map(|j| (p.batch_size as f64 * s.iterations as f64) / j);
            t.row(vec![
                p.batch_size.to_string(),
                format!("{:.2}", s.latency.p50_ms),
                format!("{:.2}", s.latency.p90_ms),
                format!("{:.2}", s.latency.p99_ms),
                format!("{:.2}", s.latency.min_ms),
                format!("{:.2}", s.latency.max_ms),
                format!("{:.2}", s.latency.std_ms),
                format!("{:.1}%", s.latency.cv * 100.0),
                format!("{:.2}", s.latency.tail_ratio()),
                s.stability(r.spec.min_seconds).as_str().to_string(),
                format!("{gflops:.1}"),
                fleetbench_common::hardware::peak_share(&r.device, r.model.dtype, gflops)
                    .map(|x| format!("{:.1}%", x * 100.0))
                    .unwrap_or_else(|| "-".into()),
                s.iterations.to_string(),
                format!("{:.2}", s.timed_seconds),
                opt_f(s.avg_power_watts, 1),
                opt_f(per_joule, 2),
            ]);
        }
    }
    t
}

/// What the GPU sensors saw during each point's timed window; `None` for a
/// device without GPU figures (a CPU).
/// How the GPU window table's figures were taken, said once under its title.
pub(crate) const GPU_WINDOW_NOTE: &str = "Sampled by a background thread every 25 ms while the timed iterations ran. Pool peak: the most the agent's CUDA memory pool held (its high-water mark, reset at each batch size). Process: NVML's figure for the agent (absent inside containers whose PIDs NVML does not show). Device used: the whole GPU, other processes included. Power is energy over the window's wall time.";

pub(crate) fn machine_gpu_window(r: &MachineReport) -> Option<Table> {
    let measured: Vec<_> = r
        .points
        .iter()
        .filter_map(|p| p.stats().map(|s| (p.batch_size, s)))
        .collect();
    let has_gpu_figures = measured.iter().any(|(_, s)| {
        s.gpu_samples > 0 || s.gpu_pool_peak_bytes.is_some() || s.gpu_device_bytes.is_some()
    });
    if !has_gpu_figures {
        return None;
    }
    let mut t = Table::new(&[
        ("Batch Size", true),
        ("Pool Peak (MB)", true),
        ("Process, NVML (MB)", true),
        ("Device Used (MB)", true),
        ("Power (W)", true),
        ("Energy (J)", true),
        ("Energy Method", false),
        ("SM Clock (MHz)", true),
        ("Max Temp (°C)", true),
        ("Clock Events", false),
        ("Sensor Samples", true),
    ]);
    for (batch, s) in measured {
        t.row(vec![
            batch.to_string(),
            opt_mb(s.gpu_pool_peak_bytes),
            opt_mb(s.gpu_process_bytes),
            opt_mb(s.gpu_device_bytes),
            opt_f(s.avg_power_watts, 1),
            opt_f(s.energy_joules, 2),
            s.energy_method
                .map(|m| m.describe().to_string())
                .unwrap_or_else(|| "-".into()),
            opt_f(s.sm_clock_mhz, 0),
            opt_f(s.gpu_temperature_c, 0),
            if s.throttle_reasons.is_empty() {
                "none".into()
            } else {
                s.throttle_reasons.join(", ").replace('|', "/")
            },
            s.gpu_samples.to_string(),
        ]);
    }
    Some(t)
}

pub(crate) fn fleet_failures(f: &FleetReport) -> Table {
    let mut t = Table::new(&[
        ("Host", false),
        ("Device", false),
        ("Batch Size", true),
        ("Error", false),
    ]);
    for x in &f.failures {
        t.row(vec![
            x.host.clone(),
            x.device_id.clone().unwrap_or_else(|| "-".into()),
            x.batch_size
                .map(|b| b.to_string())
                .unwrap_or_else(|| "all".into()),
            x.error.replace('|', "/"),
        ]);
    }
    t
}

/// `None` when no device completed a batch size.
pub(crate) fn fleet_groups(f: &FleetReport) -> Option<Table> {
    if f.groups.is_empty() {
        return None;
    }
    let base = f.baseline.clone().unwrap_or_else(|| "baseline".into());
    let speedup_header = format!("Speed-up vs {base}");
    let priced = f.groups.iter().any(|g| g.price_per_gpu_hour.is_some());
    let mut cols: Vec<(&str, bool)> = vec![
        ("Hardware", false),
        ("Generation", false),
        ("Devices", true),
        ("Median Best Throughput (samples/s)", true),
        (speedup_header.as_str(), true),
        ("Median Best Latency (ms)", true),
        ("Median Samples/J", true),
        ("Median Peak GPU Memory (MB)", true),
    ];
    if priced {
        cols.push(("$/GPU-hour", true));
        cols.push(("Samples/$", true));
    }
    let mut t = Table::new(&cols);
    for g in &f.groups {
        let mut row = vec![
            g.hardware.clone(),
            g.generation.clone().unwrap_or_else(|| "-".into()),
            if g.simulated_devices > 0 {
                format!("{} ({} simulated)", g.devices, g.simulated_devices)
            } else {
                g.devices.to_string()
            },
            format!("{:.2}", g.median_best_throughput),
            g.speedup_vs_baseline
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into()),
            opt_f(g.median_best_latency_ms, 2),
            opt_f(g.median_samples_per_joule, 2),
            opt_f(g.median_peak_gpu_memory_mb, 0),
        ];
        if priced {
            row.push(opt_f(g.price_per_gpu_hour, 2));
            row.push(
                g.samples_per_dollar
                    .map(thousands)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        t.row(row);
    }
    Some(t)
}

pub(crate) fn fleet_throughput_by_batch(f: &FleetReport) -> Table {
    let batches = f.batch_sizes();
    let headers: Vec<String> = std::iter::once("Batch Size".to_string())
        .chain(f.groups.iter().map(|g| g.hardware.clone()))
        .collect();
    let cols: Vec<(&str, bool)> = headers.iter().map(|h| (h.as_str(), true)).collect();
    let mut t = Table::new(&cols);
    for b in batches {
        let mut row = vec![b.to_string()];
        for g in &f.groups {
            row.push(opt_f(
                g.curve
                    .iter()
                    .find(|c| c.batch_size == b)
                    .map(|c| c.throughput),
                2,
            ));
        }
        t.row(row);
    }
    t
}

pub(crate) fn fleet_hosts(f: &FleetReport) -> Table {
    let mut t = Table::new(&[
        ("Host", false),
        ("Device", false),
        ("Hardware", false),
        ("Status", false),
        ("Points", true),
        ("Best Throughput (samples/s)", true),
        ("at Batch", true),
        ("Best Latency (ms)", true),
        ("at Batch", true),
        ("Samples/J", true),
        ("Peak CPU Memory (MB)", true),
        ("Peak GPU Memory (MB)", true),
    ]);
    for r in &f.rows {
        let class = if r.status != "completed" {
            Some("failed")
        } else if r.simulated {
            Some("simulated")
        } else {
            None
        };
        t.row_with_class(
            class,
            vec![
                if r.simulated {
                    format!("{} (simulated)", r.host)
                } else {
                    r.host.clone()
                },
                if r.device_id == "-" {
                    "-".into()
                } else {
                    format!("{} {}", r.device_id, r.device_name)
                },
                r.hardware.clone(),
                r.status.clone(),
                format!(
                    "{}/{}",
                    r.points_measured,
                    r.points_measured + r.points_failed
                ),
                opt_f(r.best_throughput.map(|b| b.value), 2),
                r.best_throughput
                    .map(|b| b.batch_size.to_string())
                    .unwrap_or_else(|| "-".into()),
                opt_f(r.best_latency_ms.map(|b| b.value), 2),
                r.best_latency_ms
                    .map(|b| b.batch_size.to_string())
                    .unwrap_or_else(|| "-".into()),
                opt_f(r.samples_per_joule, 2),
                opt_f(r.peak_cpu_memory_mb, 2),
                opt_f(r.peak_gpu_memory_mb, 2),
            ],
        );
    }
    t
}

pub(crate) fn history(h: &crate::compare::SweepComparison) -> Table {
    let mut t = Table::new(&[
        ("Host", false),
        ("Device", false),
        ("Hardware", false),
        ("Best Before (samples/s)", true),
        ("Best Now (samples/s)", true),
        ("Change", true),
        ("Verdict", false),
    ]);
    for c in &h.hosts {
        t.row(vec![
            c.host.clone(),
            c.device_id.clone(),
            c.hardware.clone(),
            opt_f(c.best_a, 2),
            opt_f(c.best_b, 2),
            c.change
                .map(|x| format!("{:+.1}%", x * 100.0))
                .unwrap_or_else(|| "-".into()),
            c.verdict.as_str().to_string(),
        ]);
    }
    t
}
