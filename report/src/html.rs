//! HTML: one self-contained page per report (inline style and SVG charts, no
//! scripts, fonts, images or URLs), with the Markdown report's sections and
//! wording, so that it can be mailed, archived or opened offline.
//!
//! Every piece of text that comes from data (host names, device and model
//! names, errors, notes) goes through [`escape`].

use std::fmt::Write as _;

use super::fleet::HardwareGroup;
use super::format::{gpu_line, thousands};
use super::svg::{Bar, BarChart, LineChart, NEUTRAL, Series, escape, palette};
use super::tables;
use super::{Exporter, FleetReport, ReportError};
use crate::insights::{Insights, MB};
use fleetbench_common::result::{DeviceKind, MachineReport};
use fleetbench_common::spec::join_batch_sizes;

#[derive(Debug, Clone, Copy, Default)]
pub struct HtmlExporter;

/// Shown in the samples-per-joule chart when no group has energy figures.
const NO_ENERGY: &str = "no energy data (CPU hosts or GPUs without NVML energy counters)";

const STYLE: &str = "
:root { color-scheme: light; }
body { font-family: sans-serif; color: #1a1a1a; background: #ffffff; margin: 0; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.8rem; margin: 0 0 .3rem; }
h2 { font-size: 1.35rem; margin: 2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid #0072B2; }
h3 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
p.meta { color: #555555; font-style: italic; margin-top: 0; }
.banner { border-left: 6px solid #D55E00; background: #fdf0e6; padding: .6rem .9rem; margin: .8rem 0; }
.note { border-left: 6px solid #0072B2; background: #eef5fb; padding: .6rem .9rem; margin: .8rem 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #cccccc; padding: .3rem .55rem; vertical-align: top; }
th { background: #f0f3f6; text-align: left; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tr.simulated td { background: #fdf6e3; }
tr.simulated td:first-child { font-style: italic; }
tr.failed td { color: #a33c00; }
figure { margin: 1rem 0 1.6rem; }
figcaption { color: #444444; font-size: .9rem; margin-top: .3rem; max-width: 900px; }
svg.chart { max-width: 100%; height: auto; display: block; border: 1px solid #e3e3e3; }
code { font-family: monospace; }
@media print { main { max-width: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
";

/// Escapes `s` and turns the Markdown `**bold**` of the insight wording into `<strong>`.
fn rich(s: &str) -> String {
    let escaped = escape(s);
    let parts: Vec<&str> = escaped.split("**").collect();
    if parts.len().is_multiple_of(2) {
        // An unpaired `**`: leave it as text.
        return escaped;
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<strong>{part}</strong>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn page_start(o: &mut String, title: &str) {
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    );
}

fn page_end(o: &mut String) {
    o.push_str("</main>\n</body>\n</html>\n");
}

/// `<li><strong>key</strong>: value</li>`, the value escaped.
fn item(o: &mut String, key: &str, value: &str) {
    let _ = writeln!(
        o,
        "<li><strong>{}</strong>: {}</li>",
        escape(key),
        escape(value)
    );
}

fn figure(o: &mut String, svg: &str, caption: &str) {
    let _ = writeln!(
        o,
        "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
        escape(caption)
    );
}

fn device_word(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Cpu => "CPU",
        DeviceKind::Cuda => "CUDA",
    }
}

/// A group's name for chart legends: "(simulated)" when any member is.
fn group_label(g: &HardwareGroup) -> String {
    if g.simulated_devices == 0 {
        g.hardware.clone()
    } else if g.simulated_devices >= g.devices {
        format!("{} (simulated)", g.hardware)
    } else {
        format!(
            "{} ({} of {} simulated)",
            g.hardware, g.simulated_devices, g.devices
        )
    }
}

impl Exporter for HtmlExporter {
    fn extension(&self) -> &'static str {
        "html"
    }

    fn machine(&self, r: &MachineReport) -> Result<String, ReportError> {
        let ins = Insights::of_report(r);
        let word = device_word(r.device.kind);
        let sim = if r.simulated() { " (simulated)" } else { "" };
        let mut o = String::new();
        page_start(
            &mut o,
            &format!(
                "DistilBERT Benchmark Insights Report: {}{sim} {}",
                r.host.hostname, r.device.id
            ),
        );
        let _ = writeln!(o, "<h1>DistilBERT Benchmark Insights Report</h1>");
        let _ = writeln!(
            o,
            "<p class=\"meta\">Generated on {}</p>",
            escape(&r.generated_at)
        );
        if r.simulated() {
            let _ = writeln!(
                o,
                "<div class=\"banner\"><strong>SIMULATED HOST</strong>: these figures come from a performance model of the {}, not from a measurement.</div>",
                escape(&r.device.name)
            );
        }
        for note in &r.notes {
            let _ = writeln!(
                o,
                "<div class=\"note\"><strong>Note</strong>: {}</div>",
                escape(note)
            );
        }

        machine_model_and_system(&mut o, r);

        let _ = writeln!(o, "<h2>Benchmark Summary</h2>\n<ul>");
        item(
            &mut o,
            "Device",
            &format!("{word} ({}: {})", r.device.id, r.device.name),
        );
        item(
            &mut o,
            "Batch Sizes Tested",
            &join_batch_sizes(&r.spec.batch_sizes).replace(',', ", "),
        );
        item(&mut o, "Sequence Length", &r.spec.seq_len.to_string());
        item(&mut o, "Iterations", &r.spec.iterations.to_string());
        item(&mut o, "Warmup Runs", &r.spec.warmup.to_string());
        if r.spec.min_seconds > 0.0 {
            item(
                &mut o,
                "Minimum Timed Seconds per Batch Size",
                &r.spec.min_seconds.to_string(),
            );
        }
        o.push_str("</ul>\n");

        machine_metrics(&mut o, r);
        machine_insights(&mut o, &ins);

        let _ = writeln!(o, "<h2>Conclusion</h2>");
        let _ = writeln!(o, "<p>{}</p>", escape(&ins.conclusion(word, r.simulated())));
        page_end(&mut o);
        Ok(o)
    }

    fn fleet(&self, f: &FleetReport) -> Result<String, ReportError> {
        let mut o = String::new();
        page_start(
            &mut o,
            &format!("Fleet Benchmark Report: sweep {}", f.sweep_id),
        );
        let _ = writeln!(o, "<h1>Fleet Benchmark Report</h1>");
        let _ = writeln!(
            o,
            "<p class=\"meta\">Sweep {} ({}), generated on {}</p>",
            escape(&f.sweep_id),
            escape(&f.state),
            escape(&f.generated_at)
        );
        if f.totals.simulated_hosts > 0 {
            let _ = writeln!(
                o,
                "<div class=\"banner\"><strong>{} of {} hosts are SIMULATED</strong>: their rows come from a performance model, not a measurement.</div>",
                f.totals.simulated_hosts, f.totals.hosts
            );
        }
        for note in &f.notes {
            let _ = writeln!(
                o,
                "<div class=\"note\"><strong>Note</strong>: {}</div>",
                escape(note)
            );
        }
        let _ = writeln!(o, "<h2>Sweep</h2>\n<ul>");
        item(&mut o, "Spec", &f.spec.summary());
        if let Some(b) = &f.baseline {
            item(&mut o, "Baseline for speed-ups", b);
        }
        o.push_str("</ul>\n");

        fleet_groups(&mut o, f);
        fleet_hosts(&mut o, f);
        fleet_outliers(&mut o, f);

        let _ = writeln!(o, "<h2>Fleet Totals</h2>\n<ul>");
        let tt = &f.totals;
        item(
            &mut o,
            "Hosts",
            &format!(
                "{} ({} completed, {} not completed, {} simulated)",
                tt.hosts, tt.hosts_completed, tt.hosts_failed, tt.simulated_hosts
            ),
        );
        item(&mut o, "Devices Measured", &tt.devices_measured.to_string());
        item(
            &mut o,
            "Total Best Throughput",
            &format!("{:.2} samples/second", tt.total_best_throughput),
        );
        item(
            &mut o,
            "Estimated Daily Capacity",
            &format!(
                "{} samples/day ({:.2} million)",
                thousands(tt.daily_samples),
                tt.daily_samples / 1e6
            ),
        );
        o.push_str("</ul>\n");

        if !f.failures.is_empty() {
            let _ = writeln!(o, "<h2>Failures</h2>");
            tables::fleet_failures(f).render_html(&mut o);
        }
        if let Some(h) = &f.history {
            let _ = writeln!(o, "<h2>Changes Since Sweep {}</h2>", escape(&h.sweep_a));
            let _ = writeln!(
                o,
                "<p>Best throughput per device in sweep {} (before) and sweep {} (now).</p>",
                escape(&h.sweep_a),
                escape(&h.sweep_b)
            );
            tables::history(h).render_html(&mut o);
        }
        page_end(&mut o);
        Ok(o)
    }
}

fn machine_model_and_system(o: &mut String, r: &MachineReport) {
    let _ = writeln!(o, "<h2>Model Information</h2>\n<ul>");
    item(o, "Model", &r.model.name);
    item(o, "Weights", &r.model.weights.describe());
    item(o, "Hidden Size", &r.model.hidden_size.to_string());
    item(o, "Hidden Layers", &r.model.layers.to_string());
    item(o, "Attention Heads", &r.model.heads.to_string());
    item(o, "Parameters", &thousands(r.model.parameters as f64));
    item(o, "Precision", &r.model.dtype.to_string());
    item(o, "Engine", &r.model.engine.to_string());
    o.push_str("</ul>\n");

    let _ = writeln!(o, "<h2>System Information</h2>\n<ul>");
    let h = &r.host;
    item(
        o,
        "Host",
        &format!(
            "{}{}",
            h.hostname,
            if r.simulated() { " (simulated)" } else { "" }
        ),
    );
    item(o, "Platform", &format!("{} (kernel {})", h.os, h.kernel));
    item(o, "Processor", &h.cpu_model);
    item(
        o,
        "CPU Count",
        &format!(
            "{}{}",
            h.cpu_logical_cores,
            h.cpu_physical_cores
                .map(|p| format!(" ({p} physical cores)"))
                .unwrap_or_default()
        ),
    );
    item(
        o,
        "Memory",
        &format!("{:.1} GiB", h.memory_bytes as f64 / (MB * 1024.0)),
    );
    if h.gpus.is_empty() {
        item(o, "GPUs", h.gpu_note.as_deref().unwrap_or("none"));
    }
    for g in &h.gpus {
        item(o, &format!("GPU {}", g.index), &gpu_line(g));
    }
    item(
        o,
        "Agent Version",
        &format!("fleetbench-agent {}", r.environment.agent_version),
    );
    item(o, "candle Version", &r.environment.candle_version);
    if let Some(t) = r.environment.threads {
        item(o, "Compute Threads", &t.to_string());
    }
    o.push_str("</ul>\n");
}

fn machine_metrics(o: &mut String, r: &MachineReport) {
    let _ = writeln!(o, "<h2>Key Performance Metrics</h2>");
    tables::machine_metrics(r).render_html(o);

    // The two charts: throughput, and latency with its tail.
    let sim = if r.simulated() { " (simulated)" } else { "" };
    let measured: Vec<(f64, &fleetbench_common::result::PointStats)> = r
        .points
        .iter()
        .filter_map(|p| p.stats().map(|s| (p.batch_size as f64, s)))
        .collect();
    let name = format!("{}{sim}", r.device.id);
    let throughput = LineChart::new(
        format!("Throughput vs batch size{sim}"),
        "Batch size",
        "Throughput (samples/s)",
    )
    .series(Series::new(
        name.clone(),
        measured.iter().map(|(b, s)| (*b, s.throughput)).collect(),
        palette(0),
    ))
    .render();
    figure(
        o,
        &throughput,
        &format!(
            "Throughput (samples/s) at each batch size on {}{sim}; batch sizes on a log2 axis.",
            r.device.name
        ),
    );
    let latency = LineChart::new(
        format!("Latency vs batch size{sim}"),
        "Batch size",
        "Latency (ms)",
    )
    .series(Series::new(
        format!("p50{sim}"),
        measured
            .iter()
            .map(|(b, s)| (*b, s.latency.p50_ms))
            .collect(),
        palette(0),
    ))
    .series(
        Series::new(
            format!("p99{sim}"),
            measured
                .iter()
                .map(|(b, s)| (*b, s.latency.p99_ms))
                .collect(),
            palette(1),
        )
        .dashed(),
    )
    .render();
    figure(
        o,
        &latency,
        &format!(
            "Median (p50, solid) and tail (p99, dashed) latency per batch on {}{sim}; batch sizes on a log2 axis.",
            r.device.name
        ),
    );

    let _ = writeln!(o, "<h3>Latency Distribution and Stability</h3>");
    tables::machine_distribution(r).render_html(o);
    if let Some(gpu) = tables::machine_gpu_window(r) {
        let _ = writeln!(o, "<h3>GPU During the Timed Window</h3>");
        let _ = writeln!(o, "<p>{}</p>", escape(tables::GPU_WINDOW_NOTE));
        gpu.render_html(o);
    }
    let failed = r.failed_points();
    if !failed.is_empty() {
        let _ = writeln!(o, "<h3>Failed Batch Sizes</h3>\n<ul>");
        for (b, e) in &failed {
            item(o, &b.to_string(), e);
        }
        o.push_str("</ul>\n");
    }
}

fn machine_insights(o: &mut String, ins: &Insights) {
    let _ = writeln!(o, "<h2>Performance Insights</h2>\n<ul>");
    let with_sub = |o: &mut String, key: &str, value: String, sub: String| {
        let _ = writeln!(
            o,
            "<li><strong>{}</strong>: {}<ul><li>{}</li></ul></li>",
            escape(key),
            escape(&value),
            escape(&sub)
        );
    };
    if let Some(b) = ins.best_throughput {
        with_sub(
            o,
            "Optimal Batch Size for Throughput",
            b.batch_size.to_string(),
            format!("Achieves {:.2} samples/second", b.value),
        );
    }
    if let Some(b) = ins.best_latency_ms {
        with_sub(
            o,
            "Optimal Batch Size for Latency",
            b.batch_size.to_string(),
            format!("Achieves {:.2} ms latency", b.value),
        );
    }
    if let Some(b) = ins.most_memory_efficient {
        with_sub(
            o,
            "Most Memory-Efficient Batch Size",
            b.batch_size.to_string(),
            format!("Uses {:.2} MB per sample", b.value),
        );
    }
    if let Some(b) = ins.most_gpu_memory_efficient {
        with_sub(
            o,
            "Most GPU-Memory-Efficient Batch Size",
            b.batch_size.to_string(),
            format!("Uses {:.2} MB of GPU memory per sample", b.value),
        );
    }
    if let Some(e) = ins.scaling_efficiency {
        with_sub(
            o,
            "Scaling Efficiency",
            format!("{e:.2}"),
            match ins.scaling_declines_after {
                Some(b) => format!("Scaling starts to decline after batch size {b}"),
                None => "Throughput grows with batch size at every step tested".to_string(),
            },
        );
    }
    if let Some(d) = ins.daily_samples {
        with_sub(
            o,
            "Estimated Daily Throughput",
            format!("{} samples/day", thousands(d)),
            format!("Equivalent to {:.2} million samples/day", d / 1e6),
        );
    }
    if ins.best_throughput.is_none() {
        let _ = writeln!(o, "<li>No batch size was measured successfully.</li>");
    }
    o.push_str("</ul>\n");

    let _ = writeln!(o, "<h2>Potential Bottlenecks</h2>\n<ul>");
    if ins.bottlenecks.is_empty() {
        let _ = writeln!(
            o,
            "<li>None identified: throughput keeps growing with batch size and measurements are stable</li>"
        );
    }
    for b in &ins.bottlenecks {
        let _ = writeln!(o, "<li>{}</li>", rich(b));
    }
    o.push_str("</ul>\n");

    // Recommendations indented by two spaces ("  - ...") belong to the one before.
    let _ = writeln!(o, "<h2>Recommendations</h2>\n<ul>");
    let mut open = false;
    for rec in &ins.recommendations {
        if let Some(sub) = rec.strip_prefix("  ") {
            let sub = sub
                .trim_start()
                .strip_prefix("- ")
                .unwrap_or(sub.trim_start());
            if !open {
                o.push_str("<li>");
            }
            let _ = write!(o, "<ul><li>{}</li></ul>", rich(sub));
            o.push_str("</li>\n");
            open = false;
        } else {
            if open {
                o.push_str("</li>\n");
            }
            let _ = write!(o, "<li>{}", rich(rec));
            open = true;
        }
    }
    if open {
        o.push_str("</li>\n");
    }
    o.push_str("</ul>\n");
}

fn fleet_groups(o: &mut String, f: &FleetReport) {
    let _ = writeln!(o, "<h2>Hardware Generations</h2>");
    if f.groups.is_empty() {
        let _ = writeln!(
            o,
            "<p>No device completed a batch size, so there are no hardware generations to compare.</p>"
        );
    } else {
        if let Some(t) = tables::fleet_groups(f) {
            t.render_html(o);
        }
    }

    // Samples per joule per group.
    let mut energy = BarChart::new(
        "Energy efficiency per hardware group",
        "Samples per joule (median)",
    );
    energy.empty_message = NO_ENERGY.to_string();
    energy.bars = f
        .groups
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            g.median_samples_per_joule.map(|v| Bar {
                label: group_label(g),
                value: v,
                color: palette(i).to_string(),
                muted: g.simulated_devices > 0 && g.simulated_devices >= g.devices,
            })
        })
        .collect();
    figure(
        o,
        &energy.render(),
        "Median samples per joule at each device's best-throughput batch size, per hardware group (NVML energy counters; more is better).",
    );

    let _ = writeln!(
        o,
        "<h3>Throughput by Batch Size (median samples/s per group)</h3>"
    );
    if !f.groups.is_empty() {
        tables::fleet_throughput_by_batch(f).render_html(o);
    }

    let curve_chart = |title: &str, y_label: &str, y: fn(&super::fleet::CurvePoint) -> f64| {
        f.groups
            .iter()
            .enumerate()
            .fold(
                LineChart::new(title, "Batch size", y_label),
                |chart, (i, g)| {
                    chart.series(Series::new(
                        group_label(g),
                        g.curve
                            .iter()
                            .map(|c| (c.batch_size as f64, y(c)))
                            .collect(),
                        palette(i),
                    ))
                },
            )
            .render()
    };
    figure(
        o,
        &curve_chart(
            "Throughput vs batch size per hardware group",
            "Throughput (samples/s, group median)",
            |c| c.throughput,
        ),
        "Median throughput of each hardware group at each batch size; batch sizes on a log2 axis.",
    );
    figure(
        o,
        &curve_chart(
            "Latency vs batch size per hardware group",
            "Mean latency (ms, group median)",
            |c| c.latency_ms,
        ),
        "Median of the devices' mean latency per batch for each hardware group; batch sizes on a log2 axis.",
    );
}

fn fleet_hosts(o: &mut String, f: &FleetReport) {
    let _ = writeln!(o, "<h2>Hosts</h2>");
    tables::fleet_hosts(f).render_html(o);

    let mut chart = BarChart::new("Best throughput per host", "Best throughput (samples/s)");
    chart.bars = f
        .rows
        .iter()
        .filter_map(|r| {
            let best = r.best_throughput?;
            let group = f.groups.iter().position(|g| g.hardware == r.hardware);
            let mut label = r.host.clone();
            if r.device_id != "-" {
                label.push(' ');
                label.push_str(&r.device_id);
            }
            if r.simulated {
                label.push_str(" (simulated)");
            }
            Some(Bar {
                label,
                value: best.value,
                color: group.map(palette).unwrap_or(NEUTRAL).to_string(),
                muted: r.simulated,
            })
        })
        .collect();
    chart.legend = f
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (group_label(g), palette(i).to_string()))
        .collect();
    figure(
        o,
        &chart.render(),
        "Each device's best throughput (at its best batch size), coloured by hardware group. Simulated hosts are drawn lighter with a dashed outline and labelled (simulated).",
    );
}

fn fleet_outliers(o: &mut String, f: &FleetReport) {
    let _ = writeln!(o, "<h2>Outliers</h2>\n<ul>");
    if f.outliers.is_empty() {
        let _ = writeln!(
            o,
            "<li>None: every host is within {:.0}% of its group's median best throughput, with stable measurements</li>",
            super::fleet::OUTLIER_SHORTFALL * 100.0
        );
    }
    for x in &f.outliers {
        let _ = writeln!(
            o,
            "<li><strong>{}</strong> ({}): {}</li>",
            escape(&x.host),
            escape(&x.device_id),
            escape(&x.summary())
        );
    }
    o.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{CurvePoint, FailureRow, FleetHostRow, FleetTotals, Outlier};
    use crate::insights::BatchFigure;
    use fleetbench_common::result::{
        DeviceDescription, GpuInfo, HostInventory, ModelInfo, PointOutcome, PointResult,
        PointStats, RunEnvironment, WeightsSource,
    };
    use fleetbench_common::spec::{Engine, Precision, SweepSpec};
    use fleetbench_common::stats::LatencySummary;

    fn row(host: &str, hardware: &str, best: f64, simulated: bool) -> FleetHostRow {
        FleetHostRow {
            host: host.into(),
            device_id: "cuda:0".into(),
            device_name: format!("NVIDIA {hardware}"),
            hardware: hardware.into(),
            generation: Some("Gen".into()),
            simulated,
            status: "completed".into(),
            error: None,
            points_measured: 3,
            points_failed: 0,
            best_throughput: Some(BatchFigure {
                batch_size: 32,
                value: best,
            }),
            best_latency_ms: Some(BatchFigure {
                batch_size: 8,
                value: 4.0,
            }),
            peak_cpu_memory_mb: Some(1500.0),
            peak_gpu_memory_mb: Some(900.0),
            daily_samples: Some(best * 86_400.0),
            samples_per_joule: Some(best / 300.0),
            max_cv: Some(0.02),
            sm_clock_mhz: Some(1700.0),
            throttle_reasons: Vec::new(),
            pcie_generation: Some(4),
            pcie_width: Some(16),
            driver_version: Some("550.54".into()),
            samples_per_dollar: None,
            curve: Vec::new(),
        }
    }

    fn curve(scale: f64) -> Vec<CurvePoint> {
        [(8, 0.6), (16, 0.85), (32, 1.0), (64, 0.97)]
            .iter()
            .map(|&(b, s)| CurvePoint {
                batch_size: b,
                throughput: s * scale,
                latency_ms: b as f64 * 1000.0 / (s * scale),
            })
            .collect()
    }

    fn group(hardware: &str, devices: usize, simulated: usize, best: f64) -> HardwareGroup {
        HardwareGroup {
            hardware: hardware.into(),
            generation: Some("Gen".into()),
            devices,
            simulated_devices: simulated,
            median_best_throughput: best,
            median_best_latency_ms: Some(4.0),
            median_samples_per_joule: Some(best / 300.0),
            median_peak_gpu_memory_mb: Some(900.0),
            speedup_vs_baseline: None,
            curve: curve(best),
            price_per_gpu_hour: None,
            samples_per_dollar: None,
        }
    }

    fn sample_fleet() -> FleetReport {
        let mut h100 = group("H100-SXM", 2, 1, 4200.0);
        h100.speedup_vs_baseline = Some(4200.0 / 1400.0);
        let mut a10 = group("A10G", 1, 0, 1400.0);
        a10.speedup_vs_baseline = Some(1.0);
        FleetReport {
            sweep_id: "sw-0042".into(),
            generated_at: "2025-06-01 12:00:00 UTC".into(),
            state: "completed".into(),
            spec: SweepSpec::default(),
            rows: vec![
                row("<evil>", "H100-SXM", 3300.0, false),
                row("gpu-h100-02", "H100-SXM", 4200.0, true),
                row("gpu-a10-01", "A10G", 1400.0, false),
            ],
            groups: vec![h100, a10],
            baseline: Some("A10G".into()),
            outliers: vec![Outlier {
                host: "<evil>".into(),
                device_id: "cuda:0".into(),
                hardware: "H100-SXM".into(),
                shortfall: Some(0.21),
                unstable: false,
                causes: vec!["the GPU throttled its clocks (sw-thermal)".into()],
            }],
            failures: vec![FailureRow {
                host: "gpu-a10-01".into(),
                device_id: Some("cuda:0".into()),
                batch_size: Some(128),
                error: "CUDA_ERROR_OUT_OF_MEMORY: out of memory & <more>".into(),
            }],
            totals: FleetTotals {
                hosts: 3,
                hosts_completed: 3,
                hosts_failed: 0,
                simulated_hosts: 1,
                devices_measured: 3,
                total_best_throughput: 8900.0,
                daily_samples: 8900.0 * 86_400.0,
            },
            history: None,
            notes: vec!["baseline 'V100' is not among this sweep's hardware".into()],
        }
    }

    fn stats(batch: usize, mean_ms: f64) -> PointStats {
        PointStats {
            warmup: 5,
            iterations: 20,
            timed_seconds: mean_ms * 20.0 / 1000.0,
            latency: LatencySummary {
                mean_ms,
                p50_ms: mean_ms * 0.98,
                p90_ms: mean_ms * 1.1,
                p99_ms: mean_ms * 1.3,
                min_ms: mean_ms * 0.9,
                max_ms: mean_ms * 1.4,
                std_ms: mean_ms * 0.03,
                cv: 0.03,
            },
            throughput: batch as f64 * 1000.0 / mean_ms,
            samples_ms: Vec::new(),
            peak_rss_bytes: Some(1600 * 1024 * 1024),
            gpu_process_bytes: Some((700 + batch as u64 * 6) * 1024 * 1024),
            gpu_device_bytes: None,
            avg_power_watts: Some(250.0),
            energy_joules: Some(250.0 * mean_ms * 20.0 / 1000.0),
            throttle_reasons: Vec::new(),
            sm_clock_mhz: Some(1710.0),
            gpu_pool_peak_bytes: None,
            gpu_temperature_c: None,
            energy_method: None,
            gpu_samples: 0,
        }
    }

    fn sample_machine() -> MachineReport {
        let point = |b: usize, ms: f64| PointResult {
            batch_size: b,
            seq_len: 128,
            outcome: PointOutcome::Measured(stats(b, ms)),
        };
        MachineReport {
            generated_at: "2025-06-01 12:00:00 UTC".into(),
            host: HostInventory {
                hostname: "<evil>".into(),
                os: "Ubuntu 24.04".into(),
                kernel: "6.8.0".into(),
                cpu_model: "AMD EPYC 9454".into(),
                cpu_logical_cores: 96,
                cpu_physical_cores: Some(48),
                memory_bytes: 512 * 1024 * 1024 * 1024,
                gpus: vec![GpuInfo {
                    index: 0,
                    name: "NVIDIA H100 80GB HBM3".into(),
                    uuid: "GPU-1".into(),
                    memory_total_bytes: 80 * 1024 * 1024 * 1024,
                    driver_version: "550.54".into(),
                    cuda_version: Some("12.4".into()),
                    pcie_generation: Some(5),
                    pcie_width: Some(16),
                    power_limit_watts: Some(700.0),
                    ..GpuInfo::default()
                }],
                gpu_note: None,
                simulated: true,
                cuda_build: None,
            },
            device: DeviceDescription {
                id: "cuda:0".into(),
                kind: DeviceKind::Cuda,
                name: "NVIDIA H100 80GB HBM3".into(),
                simulated: true,
            },
            model: ModelInfo {
                // The encoder alone, as a report of another checkpoint would count it.
                parameters: 66_362_880,
                ..ModelInfo::distilbert_base(
                    "distilbert-base-uncased",
                    WeightsSource::Simulated,
                    Precision::F32,
                    Engine::Fleetbench,
                )
            },
            spec: SweepSpec::default(),
            points: vec![
                point(8, 2.0),
                point(16, 3.4),
                point(32, 6.5),
                point(64, 13.5),
                PointResult {
                    batch_size: 128,
                    seq_len: 128,
                    outcome: PointOutcome::Failed {
                        error: "CUDA_ERROR_OUT_OF_MEMORY: out of memory <x>".into(),
                    },
                },
            ],
            environment: RunEnvironment {
                agent_version: "0.1.0".into(),
                candle_version: "0.11.1".into(),
                threads: None,
                build_features: vec!["cuda".into()],
            },
            notes: vec!["synthetic weights & co".into()],
        }
    }

    fn self_contained(page: &str) {
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(!page.to_ascii_lowercase().contains("<script"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("NaN"));
        assert!(page.contains("simulated"));
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert_eq!(
            page.matches("<figure>").count(),
            page.matches("<svg").count()
        );
        assert_eq!(
            page.matches("<figcaption>").count(),
            page.matches("<svg").count()
        );
    }

    #[test]
    fn fleet_page_has_every_section_four_charts_and_escapes_data() {
        let page = HtmlExporter.fleet(&sample_fleet()).expect("render");
        self_contained(&page);
        assert_eq!(page.matches("<svg").count(), 4, "{page}");
        for heading in [
            "<h1>Fleet Benchmark Report</h1>",
            "<h2>Sweep</h2>",
            "<h2>Hardware Generations</h2>",
            "<h3>Throughput by Batch Size (median samples/s per group)</h3>",
            "<h2>Hosts</h2>",
            "<h2>Outliers</h2>",
            "<h2>Fleet Totals</h2>",
            "<h2>Failures</h2>",
        ] {
            assert!(page.contains(heading), "missing {heading}");
        }
        assert!(page.contains("&lt;evil&gt;") && !page.contains("<evil>"));
        assert!(page.contains("out of memory &amp; &lt;more&gt;"));
        assert!(page.contains("1 of 3 hosts are SIMULATED"));
        assert!(page.contains("gpu-h100-02 (simulated)"));
        assert!(page.contains("H100-SXM (1 of 2 simulated)"), "legend");
        assert!(page.contains("Speed-up vs A10G") && page.contains("3.00x"));
        assert!(page.contains("21% below the H100-SXM group&#39;s median best throughput"));
        assert!(page.contains("Likely cause: the GPU throttled its clocks (sw-thermal)."));
        assert!(page.contains("Baseline for speed-ups"));
        assert!(!page.contains(NO_ENERGY));
    }

    #[test]
    fn fleet_page_without_energy_or_devices_still_has_its_charts() {
        let mut f = sample_fleet();
        for g in &mut f.groups {
            g.median_samples_per_joule = None;
        }
        let page = HtmlExporter.fleet(&f).expect("render");
        assert!(page.contains(NO_ENERGY));
        assert_eq!(page.matches("<svg").count(), 4);

        f.groups.clear();
        f.rows.clear();
        f.outliers.clear();
        f.failures.clear();
        f.totals.simulated_hosts = 0;
        let page = HtmlExporter.fleet(&f).expect("render");
        assert_eq!(page.matches("<svg").count(), 4);
        assert!(!page.contains("NaN") && !page.contains("inf\""));
        assert!(!page.contains("<h2>Failures</h2>"));
    }

    #[test]
    fn the_gpu_window_table_names_the_energy_method_and_never_shows_a_stalled_counter_as_zero() {
        let mut r = sample_machine();
        // Without in-window GPU figures (a CPU, an older agent) there is no table.
        assert!(tables::machine_gpu_window(&r).is_none());
        let mut measured = 0;
        for p in &mut r.points {
            if let PointOutcome::Measured(s) = &mut p.outcome {
                s.gpu_samples = 80;
                s.gpu_pool_peak_bytes = Some(3 << 30);
                s.gpu_temperature_c = Some(71.0);
                if measured == 0 {
                    s.energy_method = Some(fleetbench_common::result::EnergyMethod::CounterStalled);
                    s.energy_joules = None;
                    s.avg_power_watts = None;
                    s.throttle_reasons = vec!["sw-thermal".into()];
                } else {
                    s.energy_method = Some(fleetbench_common::result::EnergyMethod::Counter);
                }
                measured += 1;
            }
        }
        let page = HtmlExporter.machine(&r).expect("render");
        assert!(page.contains("<h3>GPU During the Timed Window</h3>"));
        assert!(page.contains("none: the energy counter did not advance"));
        assert!(page.contains("NVML energy counter"));
        assert!(page.contains("sw-thermal"));
        assert!(page.contains("3072.00"), "pool peak in MB");
        let md = crate::markdown::MarkdownExporter
            .machine(&r)
            .expect("markdown");
        let stalled_row = md
            .lines()
            .find(|l| l.contains("did not advance"))
            .expect("stalled row");
        // Columns: batch, pool, process, device, power, energy, method, ...
        let cells: Vec<&str> = stalled_row.split('|').map(str::trim).collect();
        assert_eq!(cells[6], "-", "energy of a stalled counter: {stalled_row}");
        assert_eq!(cells[5], "-", "power of a stalled counter: {stalled_row}");
    }

    #[test]
    fn machine_page_has_the_seed_sections_in_order_and_two_charts() {
        let page = HtmlExporter.machine(&sample_machine()).expect("render");
        self_contained(&page);
        assert_eq!(page.matches("<svg").count(), 2);
        let mut at = 0;
        for heading in [
            "<h1>DistilBERT Benchmark Insights Report</h1>",
            "<h2>Model Information</h2>",
            "<h2>System Information</h2>",
            "<h2>Benchmark Summary</h2>",
            "<h2>Key Performance Metrics</h2>",
            "<h3>Latency Distribution and Stability</h3>",
            "<h3>Failed Batch Sizes</h3>",
            "<h2>Performance Insights</h2>",
            "<h2>Potential Bottlenecks</h2>",
            "<h2>Recommendations</h2>",
            "<h2>Conclusion</h2>",
        ] {
            let found = page[at..]
                .find(heading)
                .unwrap_or_else(|| panic!("{heading} missing or out of order"));
            at += found + heading.len();
        }
        assert!(page.contains("&lt;evil&gt; (simulated)") && !page.contains("<evil>"));
        assert!(page.contains("SIMULATED HOST"));
        assert!(page.contains("out of memory &lt;x&gt;"));
        assert!(page.contains("synthetic weights &amp; co"));
        assert!(page.contains("p99 (simulated)"), "latency legend");
        // Insight wording comes from Insights, bold turned into HTML.
        let ins = Insights::of_report(&sample_machine());
        let best = ins.best_throughput.expect("best");
        assert!(page.contains(&format!(
            "For maximum throughput, use batch size <strong>{}</strong>",
            best.batch_size
        )));
        assert!(page.contains(&format!("Achieves {:.2} samples/second", best.value)));
        assert!(page.contains("The DistilBERT model demonstrates"));
    }

    #[test]
    fn rich_text_turns_pairs_of_stars_into_strong() {
        assert_eq!(
            rich("use **8** & <b>"),
            "use <strong>8</strong> &amp; &lt;b&gt;"
        );
        assert_eq!(rich("a ** b"), "a ** b");
    }

    /// Writes the sample fleet page for a look in a browser:
    /// `cargo test --release -p fleetbench-common -- --ignored write_sample_fleet_page`.
    #[test]
    #[ignore = "writes /tmp/fleet-sample.html"]
    fn write_sample_fleet_page() {
        let page = HtmlExporter.fleet(&sample_fleet()).expect("render");
        std::fs::write("/tmp/fleet-sample.html", page).expect("write");
        let page = HtmlExporter.machine(&sample_machine()).expect("render");
        std::fs::write("/tmp/machine-sample.html", page).expect("write");
    }
}
