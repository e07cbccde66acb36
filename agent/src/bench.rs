//! The standalone sweep (`fleetbench-agent bench`): run the spec on this
//! host's devices and write the per-machine report.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use fleetbench_common::{MachineReport, SweepSpec};
use fleetbench_report::{safe_file_stem, write_machine_reports};
use indicatif::{ProgressBar, ProgressStyle};

use crate::devices::{SystemCuda, resolve_devices};
use crate::probe::{GpuProbe, host_inventory};
use crate::runner::{self, Phase, RunEvent};

/// What `bench` did: a report per device that ran, and the devices that could
/// not, with their reasons.
#[derive(Debug)]
pub struct BenchRun {
    pub outputs: Vec<BenchOutput>,
    pub failed: Vec<String>,
}

/// One device's report and the files it was written to.
#[derive(Debug)]
pub struct BenchOutput {
    pub report: MachineReport,
    pub files: Vec<PathBuf>,
}

/// Runs the sweep on every device `spec.device` selects and writes
/// `<host>.md/.json/.csv/.html` (or `<host>-<device>.*` when there are several).
pub fn run_bench(
    spec: &SweepSpec,
    out_dir: &Path,
    gpu: &dyn GpuProbe,
    cancel: &AtomicBool,
) -> anyhow::Result<BenchRun> {
    spec.validate()?;
    let host = host_inventory(gpu);
    let resolution = resolve_devices(spec.device, spec.dtype, gpu, &SystemCuda, &host.cpu_model)?;
    let devices = &resolution.devices;
    let several = devices.len() + resolution.failed.len() > 1;
    let mut outputs = Vec::new();
    let mut failures: Vec<String> = resolution.failed.iter().map(ToString::to_string).collect();
    for failure in &failures {
        tracing::error!("{failure}");
    }
    for dev in devices {
        let bar = progress_bar(spec.batch_sizes.len() as u64, &dev.description.id);
        let mut sink = |ev: RunEvent| match ev {
            RunEvent::Progress {
                batch_size,
                phase,
                done,
                ..
            } => {
                let text = match phase {
                    Phase::Loading => "loading model".to_string(),
                    _ => format!("batch {batch_size} {}", phase.as_str()),
                };
                match &bar {
                    Some(b) => {
                        b.set_position(done as u64);
                        b.set_message(text);
                    }
                    None => tracing::info!(device = %dev.description.id, "{text}"),
                }
            }
            RunEvent::Point { point, .. } => {
                let line = match point.stats() {
                    Some(s) => format!(
                        "batch {:>4}: {:>9.2} ms mean, {:>9.2} samples/s (cv {:.1}%)",
                        point.batch_size,
                        s.latency.mean_ms,
                        s.throughput,
                        s.latency.cv * 100.0
                    ),
                    None => format!(
                        "batch {:>4}: failed: {}",
                        point.batch_size,
                        point.error().unwrap_or_default()
                    ),
                };
                match &bar {
                    Some(b) => {
                        b.inc(1);
                        b.println(line);
                    }
                    None => tracing::info!(device = %dev.description.id, "{line}"),
                }
            }
        };
        let mut sweep = match runner::run_device(spec, dev, gpu, &|_| false, cancel, &mut sink) {
            Ok(sweep) => sweep,
            // One device that cannot run the sweep (a model that does not
            // load there, a warm-up rule) must not cost the others theirs.
            Err(e) if devices.len() > 1 => {
                let failure = format!("{}: {e}", dev.description.id);
                tracing::error!("{failure}");
                failures.push(failure);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        sweep.notes.extend(resolution.notes.iter().cloned());
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        for note in &sweep.notes {
            tracing::warn!("{note}");
        }
        let report = MachineReport {
            generated_at: fleetbench_common::time::now_rfc3339(),
            host: host.clone(),
            device: sweep.device.clone(),
            model: sweep.model,
            spec: spec.clone(),
            points: sweep.points,
            environment: runner::environment(),
            notes: sweep.notes,
        };
        let stem = if several {
            format!(
                "{}-{}",
                safe_file_stem(&host.hostname),
                sweep.device.file_stem()
            )
        } else {
            safe_file_stem(&host.hostname)
        };
        let files = write_machine_reports(out_dir, &stem, &report)?;
        outputs.push(BenchOutput { report, files });
    }
    Ok(BenchRun {
        outputs,
        failed: failures,
    })
}

/// A progress bar on a terminal, `None` (plain log lines) otherwise.
fn progress_bar(len: u64, device: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batch sizes  {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(device.to_string());
    Some(bar)
}
