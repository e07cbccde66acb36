//! The sweep: for every batch size, warm-up then timed iterations of the
//! forward pass on one device, with the device synchronised before each clock
//! read, and memory, power and throttling sampled around the point.
//!
//! A batch size that fails (out of memory, say) becomes a failed point and the
//! sweep goes on; only a model that cannot be loaded stops a device's sweep.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use fleetbench_common::spec::MAX_ITERATIONS;
use fleetbench_common::stats::LatencySummary;
use fleetbench_common::{
    DeviceDescription, DeviceKind, DeviceSelector, ModelInfo, PointOutcome, PointResult,
    PointStats, RunEnvironment, SweepSpec,
};
use thiserror::Error;

use crate::model::{LoadedModel, ModelError, ModelRequest};
use crate::probe::{GpuProbe, GpuSample, process_memory};

/// Sentences the sweep classifies: real text through the real tokenizer,
/// padded or truncated to the sequence length like a serving system would.
pub const SAMPLE_TEXTS: &[&str] = &[
    "I love this movie! The acting was superb and the story kept me on the edge of my seat from start to finish.",
    "This film was terrible. The plot made no sense, the dialogue was wooden and I walked out halfway through.",
    "A moving, beautifully shot story; the ending left the whole audience in tears, and I would watch it again.",
    "Mediocre at best: a few good jokes, but the second act drags and the characters never become people.",
    "An absolute triumph of animation, music and heart, the kind of film families will be quoting for years.",
    "The sequel nobody asked for, with twice the explosions, half the charm and none of the original's wit.",
    "Quietly brilliant. The performances are restrained, the camera patient, and every scene earns its place.",
    "I wanted to like it, but the pacing is glacial and the twist can be seen coming from the opening credits.",
];

/// Whether this build has candle's CUDA backend (the `cuda` feature).
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Device(String),
}

/// A device the sweep can run on.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    pub description: DeviceDescription,
    pub device: Device,
    /// NVML index when this is a GPU.
    pub gpu_index: Option<u32>,
}

/// The devices a selector means on this host.
pub fn resolve_devices(
    selector: DeviceSelector,
    gpu: &dyn GpuProbe,
    cpu_name: &str,
) -> Result<Vec<ResolvedDevice>, RunError> {
    let cpu = || ResolvedDevice {
        description: DeviceDescription::cpu(cpu_name),
        device: Device::Cpu,
        gpu_index: None,
    };
    let gpus = gpu.gpus();
    match selector {
        DeviceSelector::Cpu => Ok(vec![cpu()]),
        DeviceSelector::Auto => match gpus {
            Ok(list) if cfg!(feature = "cuda") && !list.is_empty() => {
                list.iter().map(|g| cuda_device(g.index, &g.name)).collect()
            }
            _ => Ok(vec![cpu()]),
        },
        DeviceSelector::Cuda(which) => {
            if !cfg!(feature = "cuda") {
                return Err(RunError::Device(
                    "this fleetbench-agent was built without the `cuda` feature: rebuild it with `--features cuda` (see README, \"GPU agent\") or use --device cpu".into(),
                ));
            }
            let list = gpus.map_err(|note| {
                RunError::Device(format!("--device {selector}: {note}; use --device cpu"))
            })?;
            match which {
                None => list.iter().map(|g| cuda_device(g.index, &g.name)).collect(),
                Some(n) => {
                    let g = list.iter().find(|g| g.index == n).ok_or_else(|| {
                        RunError::Device(format!(
                            "--device cuda:{n}: this host has {} GPU(s) (0 to {})",
                            list.len(),
                            list.len().saturating_sub(1)
                        ))
                    })?;
                    Ok(vec![cuda_device(g.index, &g.name)?])
                }
            }
        }
    }
}

fn cuda_device(index: u32, name: &str) -> Result<ResolvedDevice, RunError> {
    let device = Device::new_cuda(index as usize)
        .map_err(|e| RunError::Device(format!("cannot open CUDA device {index} ({name}): {e}")))?;
    Ok(ResolvedDevice {
        description: DeviceDescription {
            id: format!("cuda:{index}"),
            kind: DeviceKind::Cuda,
            name: name.to_string(),
            simulated: false,
        },
        device,
        gpu_index: Some(index),
    })
}

/// Where a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Loading,
    Warmup,
    Timed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Loading => "loading",
            Phase::Warmup => "warmup",
            Phase::Timed => "timed",
        }
    }
}

/// What a running sweep reports, in order.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Progress {
        device_id: String,
        batch_size: usize,
        phase: Phase,
        done: usize,
        total: usize,
    },
    Point {
        device: DeviceDescription,
        model: ModelInfo,
        point: PointResult,
    },
}

/// One device's finished sweep.
#[derive(Debug, Clone)]
pub struct DeviceSweep {
    pub device: DeviceDescription,
    pub model: ModelInfo,
    pub notes: Vec<String>,
    pub points: Vec<PointResult>,
}

/// The software this agent measures with.
pub fn environment() -> RunEnvironment {
    let mut build_features = Vec::new();
    if cfg!(feature = "cuda") {
        build_features.push("cuda".to_string());
    }
    RunEnvironment {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        candle_version: env!("FLEETBENCH_CANDLE_VERSION").to_string(),
        threads: Some(candle_core::utils::get_num_threads()),
        build_features,
    }
}

/// Runs `spec` on one device. `skip(batch)` leaves out points already done
/// (a resumed sweep); `cancel` stops between iterations.
pub fn run_device(
    spec: &SweepSpec,
    device: &ResolvedDevice,
    gpu: &dyn GpuProbe,
    skip: &dyn Fn(usize) -> bool,
    cancel: &AtomicBool,
    sink: &mut dyn FnMut(RunEvent),
) -> Result<DeviceSweep, RunError> {
    let todo: Vec<usize> = spec
        .batch_sizes
        .iter()
        .copied()
        .filter(|b| !skip(*b))
        .collect();
    let total = todo.len();
    let id = device.description.id.clone();
    sink(RunEvent::Progress {
        device_id: id.clone(),
        batch_size: todo.first().copied().unwrap_or(0),
        phase: Phase::Loading,
        done: 0,
        total,
    });
    let request = ModelRequest {
        weights: spec.weights,
        engine: spec.engine,
        dtype: spec.dtype,
        ..ModelRequest::new(spec.model.clone())
    };
    let model = LoadedModel::load(&request, &device.device)?;
    let mut points = Vec::new();
    for (done, &batch) in todo.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut progress = |phase| {
            sink(RunEvent::Progress {
                device_id: id.clone(),
                batch_size: batch,
                phase,
                done,
                total,
            })
        };
        let outcome = match measure_point(&model, spec, batch, device, gpu, cancel, &mut progress) {
            Ok(stats) => PointOutcome::Measured(stats),
            Err(_) if cancel.load(Ordering::Relaxed) => break,
            Err(error) => PointOutcome::Failed { error },
        };
        let point = PointResult {
            batch_size: batch,
            seq_len: spec.seq_len,
            outcome,
        };
        sink(RunEvent::Point {
            device: device.description.clone(),
            model: model.info().clone(),
            point: point.clone(),
        });
        points.push(point);
    }
    Ok(DeviceSweep {
        device: device.description.clone(),
        model: model.info().clone(),
        notes: model.notes().to_vec(),
        points,
    })
}

fn measure_point(
    model: &LoadedModel,
    spec: &SweepSpec,
    batch: usize,
    device: &ResolvedDevice,
    gpu: &dyn GpuProbe,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Phase),
) -> Result<PointStats, String> {
    let texts: Vec<&str> = SAMPLE_TEXTS.iter().cycle().take(batch).copied().collect();
    let inputs = model
        .encode(&texts, spec.seq_len)
        .map_err(|e| e.to_string())?;
    let sync = || {
        device
            .device
            .synchronize()
            .map_err(|e| format!("device synchronisation failed: {e}"))
    };
    // A panic inside candle (a shape it does not support, say) must cost this
    // point, not the agent.
    let step = || -> Result<(), String> {
        match catch_unwind(AssertUnwindSafe(|| model.forward(&inputs))) {
            Ok(Ok(_)) => sync(),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!(
                "the forward pass panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or(panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown panic")
            )),
        }
    };
    let cancelled = || {
        if cancel.load(Ordering::Relaxed) {
            Err("cancelled".to_string())
        } else {
            Ok(())
        }
    };

    process_memory::reset_peak();
    progress(Phase::Warmup);
    for _ in 0..spec.warmup {
        cancelled()?;
        step()?;
    }
    let sample = |i: Option<u32>| i.and_then(|i| gpu.sample(i));
    let before = sample(device.gpu_index);
    let mut throttles: Vec<String> = Vec::new();
    let mut clocks: Vec<f64> = Vec::new();
    progress(Phase::Timed);
    let min_time = Duration::from_secs_f64(spec.min_seconds);
    let started = Instant::now();
    let mut samples_ms = Vec::with_capacity(spec.iterations as usize);
    while (samples_ms.len() < spec.iterations as usize || started.elapsed() < min_time)
        && samples_ms.len() < MAX_ITERATIONS as usize
    {
        cancelled()?;
        let t0 = Instant::now();
        step()?;
        samples_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if let Some(s) = sample(device.gpu_index) {
            clocks.extend(s.sm_clock_mhz.map(f64::from));
            for r in s.throttle_reasons {
                if !throttles.contains(&r) {
                    throttles.push(r);
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let after = sample(device.gpu_index);
    let latency =
        LatencySummary::from_samples_ms(&samples_ms).ok_or("no finite timings were recorded")?;
    let energy_joules = match (
        before.as_ref().and_then(|s| s.energy_millijoules),
        after.as_ref().and_then(|s| s.energy_millijoules),
    ) {
        (Some(b), Some(a)) if a >= b => Some((a - b) as f64 / 1000.0),
        _ => None,
    };
    let avg_power_watts = energy_joules
        .filter(|_| wall > 0.0)
        .map(|j| j / wall)
        .or_else(|| after.as_ref().and_then(|s: &GpuSample| s.power_watts));
    Ok(PointStats {
        warmup: spec.warmup,
        iterations: samples_ms.len() as u32,
        timed_seconds: samples_ms.iter().sum::<f64>() / 1e3,
        throughput: batch as f64 / (latency.mean_ms / 1e3),
        latency,
        samples_ms,
        peak_rss_bytes: process_memory::peak_rss_bytes(),
        gpu_process_bytes: after.as_ref().and_then(|s| s.process_used_bytes),
        gpu_device_bytes: after.as_ref().and_then(|s| s.device_used_bytes),
        avg_power_watts,
        energy_joules,
        throttle_reasons: throttles,
        sm_clock_mhz: (!clocks.is_empty()).then(|| {
            clocks.sort_by(f64::total_cmp);
            fleetbench_common::stats::percentile_sorted(&clocks, 0.5)
        }),
    })
}
