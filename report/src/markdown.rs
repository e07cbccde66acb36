//! Markdown: the seed report's sections in the seed's order, then more
//! (the seed: `testdata/seed/distilbert-benchmark-report.md`).

use std::fmt::Write as _;

use super::format::{gpu_line, md_text, thousands};
use super::tables;
use super::{Exporter, FleetReport, ReportError};
use crate::insights::{Insights, MB};
use fleetbench_common::result::{DeviceKind, MachineReport};
use fleetbench_common::spec::join_batch_sizes;

#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn extension(&self) -> &'static str {
        "md"
    }

    fn machine(&self, r: &MachineReport) -> Result<String, ReportError> {
        let ins = Insights::of_report(r);
        let device_word = match r.device.kind {
            DeviceKind::Cpu => "CPU",
            DeviceKind::Cuda => "CUDA",
        };
        let mut o = String::new();
        let _ = writeln!(o, "# DistilBERT Benchmark Insights Report\n");
        let _ = writeln!(o, "*Generated on {}*\n", r.generated_at);
        if r.simulated() {
            let _ = writeln!(
                o,
                "> **SIMULATED HOST**: these figures come from a performance model of the {}, not from a measurement.\n",
                md_text(&r.device.name)
            );
        }
        for note in &r.notes {
            let _ = writeln!(o, "> **Note**: {}\n", md_text(note));
        }

        let _ = writeln!(o, "## Model Information\n");
        let _ = writeln!(o, "- **Model**: {}", md_text(&r.model.name));
        let _ = writeln!(o, "- **Weights**: {}", md_text(&r.model.weights.describe()));
        let _ = writeln!(o, "- **Hidden Size**: {}", r.model.hidden_size);
        let _ = writeln!(o, "- **Hidden Layers**: {}", r.model.layers);
        let _ = writeln!(o, "- **Attention Heads**: {}", r.model.heads);
        let _ = writeln!(
            o,
            "- **Parameters**: {}",
            thousands(r.model.parameters as f64)
        );
        let _ = writeln!(o, "- **Precision**: {}", r.model.dtype);
        let _ = writeln!(o, "- **Engine**: {}\n", r.model.engine);

        let _ = writeln!(o, "## System Information\n");
        let h = &r.host;
        let _ = writeln!(
            o,
            "- **Host**: {}{}",
            md_text(&h.hostname),
            if r.simulated() { " (simulated)" } else { "" }
        );
        let _ = writeln!(
            o,
            "- **Platform**: {} (kernel {})",
            md_text(&h.os),
            md_text(&h.kernel)
        );
        let _ = writeln!(o, "- **Processor**: {}", md_text(&h.cpu_model));
        let _ = writeln!(
            o,
            "- **CPU Count**: {}{}",
            h.cpu_logical_cores,
            h.cpu_physical_cores
                .map(|p| format!(" ({p} physical cores)"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "- **Memory**: {:.1} GiB",
            h.memory_bytes as f64 / (MB * 1024.0)
        );
        if h.gpus.is_empty() {
            let _ = writeln!(
                o,
                "- **GPUs**: {}",
                md_text(h.gpu_note.as_deref().unwrap_or("none"))
            );
        }
        for g in &h.gpus {
            let _ = writeln!(o, "- **GPU {}**: {}", g.index, md_text(&gpu_line(g)));
        }
        let _ = writeln!(
            o,
            "- **Agent Version**: fleetbench-agent {}",
            md_text(&r.environment.agent_version)
        );
        let _ = writeln!(
            o,
            "- **candle Version**: {}",
            md_text(&r.environment.candle_version)
        );
        if let Some(t) = r.environment.threads {
            let _ = writeln!(o, "- **Compute Threads**: {t}");
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Benchmark Summary\n");
        let _ = writeln!(
            o,
            "- **Device**: {device_word} ({}: {})",
            md_text(&r.device.id),
            md_text(&r.device.name)
        );
        let _ = writeln!(
            o,
            "- **Batch Sizes Tested**: {}",
            join_batch_sizes(&r.spec.batch_sizes).replace(',', ", ")
        );
        let _ = writeln!(o, "- **Sequence Length**: {}", r.spec.seq_len);
        let _ = writeln!(o, "- **Iterations**: {}", r.spec.iterations);
        let _ = writeln!(o, "- **Warmup Runs**: {}", r.spec.warmup);
        if r.spec.min_seconds > 0.0 {
            let _ = writeln!(
                o,
                "- **Minimum Timed Seconds per Batch Size**: {}",
                r.spec.min_seconds
            );
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Key Performance Metrics\n");
        o.push_str(&tables::machine_metrics(r).render());
        let _ = writeln!(o);

        let _ = writeln!(o, "### Latency Distribution and Stability\n");
        o.push_str(&tables::machine_distribution(r).render());
        if let Some(gpu) = tables::machine_gpu_window(r) {
            let _ = writeln!(o, "\n### GPU During the Timed Window\n");
            let _ = writeln!(o, "{}\n", tables::GPU_WINDOW_NOTE);
            o.push_str(&gpu.render());
        }
        let failed = r.failed_points();
        if !failed.is_empty() {
            let _ = writeln!(o, "\n### Failed Batch Sizes\n");
            for (b, e) in &failed {
                let _ = writeln!(o, "- **{b}**: {}", md_text(e));
            }
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Performance Insights\n");
        if let Some(b) = ins.best_throughput {
            let _ = writeln!(
                o,
                "- **Optimal Batch Size for Throughput**: {}",
                b.batch_size
            );
            let _ = writeln!(o, "  - Achieves {:.2} samples/second", b.value);
        }
        if let Some(b) = ins.best_latency_ms {
            let _ = writeln!(o, "- **Optimal Batch Size for Latency**: {}", b.batch_size);
            let _ = writeln!(o, "  - Achieves {:.2} ms latency", b.value);
        }
        if let Some(b) = ins.most_memory_efficient {
            let _ = writeln!(
                o,
                "- **Most Memory-Efficient Batch Size**: {}",
                b.batch_size
            );
            let _ = writeln!(o, "  - Uses {:.2} MB per sample", b.value);
        }
        if let Some(b) = ins.most_gpu_memory_efficient {
            let _ = writeln!(
                o,
                "- **Most GPU-Memory-Efficient Batch Size**: {}",
                b.batch_size
            );
            let _ = writeln!(o, "  - Uses {:.2} MB of GPU memory per sample", b.value);
        }
        if let Some(e) = ins.scaling_efficiency {
            let _ = writeln!(o, "- **Scaling Efficiency**: {e:.2}");
            match ins.scaling_declines_after {
                Some(b) => {
                    let _ = writeln!(o, "  - Scaling starts to decline after batch size {b}");
                }
                None => {
                    let _ = writeln!(
                        o,
                        "  - Throughput grows with batch size at every step tested"
                    );
                }
            }
        }
        if let Some(d) = ins.daily_samples {
            let _ = writeln!(
                o,
                "- **Estimated Daily Throughput**: {} samples/day",
                thousands(d)
            );
            let _ = writeln!(o, "  - Equivalent to {:.2} million samples/day", d / 1e6);
        }
        if ins.best_throughput.is_none() {
            let _ = writeln!(o, "- No batch size was measured successfully.");
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Potential Bottlenecks\n");
        if ins.bottlenecks.is_empty() {
            let _ = writeln!(
                o,
                "- None identified: throughput keeps growing with batch size and measurements are stable"
            );
        }
        for b in &ins.bottlenecks {
            let _ = writeln!(o, "- {}", md_text(b));
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Recommendations\n");
        for rec in &ins.recommendations {
            if rec.starts_with("  ") {
                let _ = writeln!(o, "{rec}");
            } else {
                let _ = writeln!(o, "- {rec}");
            }
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Conclusion\n");
        let _ = writeln!(o, "{}", ins.conclusion(device_word, r.simulated()));
        Ok(o)
    }

    fn fleet(&self, f: &FleetReport) -> Result<String, ReportError> {
        let mut o = String::new();
        let _ = writeln!(o, "# Fleet Benchmark Report\n");
        let _ = writeln!(
            o,
            "*Sweep {} ({}), generated on {}*\n",
            f.sweep_id, f.state, f.generated_at
        );
        if f.totals.simulated_hosts > 0 {
            let _ = writeln!(
                o,
                "> **{} of {} hosts are SIMULATED**: their rows come from a performance model, not a measurement.\n",
                f.totals.simulated_hosts, f.totals.hosts
            );
        }
        for note in &f.notes {
            let _ = writeln!(o, "> **Note**: {}\n", md_text(note));
        }
        let _ = writeln!(o, "## Sweep\n");
        let _ = writeln!(o, "- **Spec**: {}", md_text(&f.spec.summary()));
        if let Some(b) = &f.baseline {
            let _ = writeln!(o, "- **Baseline for speed-ups**: {}", md_text(b));
        }
        let _ = writeln!(o);
        fleet_groups(&mut o, f);
        fleet_hosts(&mut o, f);
        fleet_outliers(&mut o, f);

        let _ = writeln!(o, "## Fleet Totals\n");
        let tt = &f.totals;
        let _ = writeln!(
            o,
            "- **Hosts**: {} ({} completed, {} not completed, {} simulated)",
            tt.hosts, tt.hosts_completed, tt.hosts_failed, tt.simulated_hosts
        );
        let _ = writeln!(o, "- **Devices Measured**: {}", tt.devices_measured);
        let _ = writeln!(
            o,
            "- **Total Best Throughput**: {:.2} samples/second",
            tt.total_best_throughput
        );
        let _ = writeln!(
            o,
            "- **Estimated Daily Capacity**: {} samples/day ({:.2} million)\n",
            thousands(tt.daily_samples),
            tt.daily_samples / 1e6
        );
        if !f.failures.is_empty() {
            let _ = writeln!(o, "## Failures\n");
            o.push_str(&tables::fleet_failures(f).render());
            let _ = writeln!(o);
        }
        if let Some(h) = &f.history {
            let _ = writeln!(o, "## Changes Since Sweep {}\n", h.sweep_a);
            o.push_str(&history_table(h));
        }
        Ok(o)
    }
}

fn fleet_groups(o: &mut String, f: &FleetReport) {
    if f.groups.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Hardware Generations\n");
    if let Some(t) = tables::fleet_groups(f) {
        o.push_str(&t.render());
    }
    let _ = writeln!(
        o,
        "\n### Throughput by Batch Size (median samples/s per group)\n"
    );
    o.push_str(&tables::fleet_throughput_by_batch(f).render());
    let _ = writeln!(o);
}

fn fleet_hosts(o: &mut String, f: &FleetReport) {
    let _ = writeln!(o, "## Hosts\n");
    o.push_str(&tables::fleet_hosts(f).render());
    let _ = writeln!(o);
}

fn fleet_outliers(o: &mut String, f: &FleetReport) {
    let _ = writeln!(o, "## Outliers\n");
    if f.outliers.is_empty() {
        let _ = writeln!(
            o,
            "- None: every host is within {:.0}% of its group's median best throughput, with stable measurements\n",
            crate::fleet::OUTLIER_SHORTFALL * 100.0
        );
        return;
    }
    for x in &f.outliers {
        let _ = writeln!(
            o,
            "- **{}** ({}): {}",
            md_text(&x.host),
            md_text(&x.device_id),
            md_text(&x.summary())
        );
    }
    let _ = writeln!(o);
}

/// The history section's table, shared with `fleetbench compare`.
pub(crate) fn history_table(h: &crate::compare::SweepComparison) -> String {
    let mut out = tables::history(h).render();
    for name in &h.only_in_a {
        out.push_str(&format!(
            "\n- {}: only in sweep {}",
            md_text(name),
            h.sweep_a
        ));
    }
    for name in &h.only_in_b {
        out.push_str(&format!(
            "\n- {}: only in sweep {}",
            md_text(name),
            h.sweep_b
        ));
    }
    out.push('\n');
    out
}
