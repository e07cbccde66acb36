//! The sweep: for every batch size, warm-up then timed iterations of the
//! forward pass on one device, with the device synchronised before each clock
//! read, and GPU power, energy, clocks and memory sampled during the timed
//! window by a background thread (see [`crate::gpu::sampler`]).
//!
//! A batch size that fails (out of memory, say) becomes a failed point and the
//! sweep goes on; only a model that cannot be loaded stops a device's sweep.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use fleetbench_common::stats::LatencySummary;
use fleetbench_common::{
    DeviceDescription, ModelInfo, PointOutcome, PointResult, PointStats, RunEnvironment, SweepSpec,
};
use thiserror::Error;

pub use crate::devices::ResolvedDevice;
use crate::gpu::sampler::{SAMPLE_INTERVAL, sample_while, summarise};
use crate::model::{LoadedModel, ModelError, ModelRequest};
use crate::plan::{TimingError, TimingPlan, check_kernel_limits, check_memory};
use crate::probe::{GpuProbe, process_memory};

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
    #[error(transparent)]
    Timing(#[from] TimingError),
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
    #[cfg(feature = "cuda")]
    if crate::gpu::cuda::stock_allocator() {
        // Reports must say the allocator was left as candle has it.
        build_features.push("cuda-stock-allocator".to_string());
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
    // Checked before the model loads: a rule broken for the whole device
    // should cost nothing.
    let plan = TimingPlan::for_device(spec, device.description.kind)?;
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
    let mut notes = model.notes().to_vec();
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
        // The activations' width: half precisions halve it on GPUs, while
        // the CPU keeps its activations in f32 in every dtype (bf16 rounds
        // only the products' inputs; f16 is widened by candle).
        let dtype_bytes = match (spec.dtype, device.description.kind) {
            (fleetbench_common::Precision::F32, _) | (_, fleetbench_common::DeviceKind::Cpu) => 4,
            _ => 2,
        };
        let fits = check_kernel_limits(model.info(), batch, spec.seq_len, device.description.kind)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                check_memory(
                    model.info(),
                    batch,
                    spec.seq_len,
                    dtype_bytes,
                    free_memory(device, gpu),
                )
                .map_err(|e| e.to_string())
            });
        let outcome = match fits {
            Err(error) => PointOutcome::Failed { error },
            Ok(()) => match measure_point(
                &model,
                spec,
                &plan,
                batch,
                device,
                gpu,
                cancel,
                &mut progress,
            ) {
                Ok(measured) => {
                    if let Some(note) = measured.note
                        && !notes.contains(&note)
                    {
                        notes.push(note);
                    }
                    PointOutcome::Measured(measured.stats)
                }
                Err(_) if cancel.load(Ordering::Relaxed) => break,
                Err(error) => PointOutcome::Failed { error },
            },
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
        notes,
        points,
    })
}

/// Memory free on `device` now (after the model's weights are loaded):
/// the host's available memory for the CPU, NVML's total minus used for a
/// GPU; `None` when it cannot be read (the point is then not refused).
fn free_memory(device: &ResolvedDevice, gpu: &dyn GpuProbe) -> Option<u64> {
    match device.nvml_index {
        None => {
            let mut system = sysinfo::System::new().ok()?;
            system.refresh_memory();
            Some(system.available_memory()).filter(|m| *m > 0)
        }
        Some(index) => {
            let total = gpu
                .gpus()
                .ok()?
                .gpus
                .iter()
                .find(|g| g.index == index)?
                .memory_total_bytes;
            let used = gpu.sample(index)?.device_used_bytes?;
            Some(total.saturating_sub(used))
        }
    }
}

/// A measured point, and a fact about how it was measured that the report
/// must carry (e.g. which memory figure a container allows).
struct MeasuredPoint {
    stats: PointStats,
    note: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn measure_point(
    model: &LoadedModel,
    spec: &SweepSpec,
    plan: &TimingPlan,
    batch: usize,
    device: &ResolvedDevice,
    gpu: &dyn GpuProbe,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Phase),
) -> Result<MeasuredPoint, String> {
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
    for _ in 0..plan.warmup {
        cancelled()?;
        step()?;
    }
    // The pool's high-water mark from here on: the timed window's peak.
    device_memory::reset_peak(&device.device)?;
    progress(Phase::Timed);
    // Nothing but the forward pass (and its synchronisation, which the
    // per-iteration clock needs) runs between the timed iterations: the GPU
    // sensors are read by a background thread.
    let timed = || -> Result<Vec<f64>, String> {
        let started = Instant::now();
        let mut samples_ms = Vec::with_capacity(plan.iterations as usize);
        while plan.wants_more(samples_ms.len(), started.elapsed()) {
            cancelled()?;
            let t0 = Instant::now();
            step()?;
            samples_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(samples_ms)
    };
    let (samples_ms, window) = match device.nvml_index {
        Some(index) => {
            let (samples, readings) = sample_while(gpu, index, SAMPLE_INTERVAL, timed);
            (samples?, Some(summarise(&readings)))
        }
        None => (timed()?, None),
    };
    let pool_peak = device_memory::peak_bytes(&device.device)?;
    let latency =
        LatencySummary::from_samples_ms(&samples_ms).ok_or("no finite timings were recorded")?;
    let window = window.unwrap_or_default();
    let note = match (device.nvml_index, window.process_listed) {
        (Some(_), Some(false)) => Some(
            "NVML's process list does not show this agent (a container's PID namespace): GPU memory is given as the CUDA pool's peak and the whole device's use; the per-process NVML figure is absent".to_string(),
        ),
        _ => None,
    };
    let mut throttle_reasons = window.clock_events;
    if window.clock_events_unreadable > 0 {
        throttle_reasons.push("unknown (clock-event reasons unreadable)".to_string());
    }
    Ok(MeasuredPoint {
        stats: PointStats {
            warmup: plan.warmup,
            iterations: samples_ms.len() as u32,
            timed_seconds: samples_ms.iter().sum::<f64>() / 1e3,
            throughput: batch as f64 / (latency.mean_ms / 1e3),
            latency,
            samples_ms,
            peak_rss_bytes: process_memory::peak_rss_bytes(),
            gpu_process_bytes: window.process_peak_bytes,
            gpu_device_bytes: window.device_peak_bytes,
            avg_power_watts: window.avg_power_watts,
            energy_joules: window.energy_joules,
            throttle_reasons,
            sm_clock_mhz: window.sm_clock_median_mhz,
            gpu_pool_peak_bytes: pool_peak,
            gpu_temperature_c: window.temperature_max_c,
            energy_method: window.energy_method,
            gpu_samples: window.samples,
        },
        note,
    })
}

/// The CUDA pool's high-water mark where there is one.
mod device_memory {
    use candle_core::Device;

    pub fn reset_peak(device: &Device) -> Result<(), String> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => crate::gpu::cuda::reset_pool_peak(device),
            _ => Ok(()),
        }
    }

    pub fn peak_bytes(device: &Device) -> Result<Option<u64>, String> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => crate::gpu::cuda::pool_peak_bytes(device),
            _ => Ok(None),
        }
    }
}
