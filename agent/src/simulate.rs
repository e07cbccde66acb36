//! Simulated hosts, for tests and scale runs: a sweep answered from a simple
//! performance model of a GPU instead of running candle. Everything a
//! simulated host produces is labelled simulated (inventory, device, model
//! weights), and simulation is never a default.
//!
//! The model: a forward pass costs a fixed launch overhead plus the FLOPs of
//! the batch at an efficiency that grows with batch size and saturates at 45%
//! of the card's dense peak for the dtype (a typical eager-mode share);
//! memory is the weights plus activations per sample. Figures get a small,
//! seeded jitter so that statistics are not degenerate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleetbench_common::flops::{ModelDims, flops_per_sample};
use fleetbench_common::hardware::{GpuModelSpec, lookup_gpu_model};
use fleetbench_common::rng::SplitMix64;
use fleetbench_common::stats::LatencySummary;
use fleetbench_common::{
    DeviceDescription, DeviceKind, Engine, GpuInfo, HostInventory, ModelInfo, PointOutcome,
    PointResult, PointStats, SweepSpec, WeightsSource,
};

use crate::runner::{DeviceSweep, Phase, RunEvent};

/// Parameters of distilbert-base-uncased with the SST-2 head.
const PARAMETERS: u64 = ModelInfo::DISTILBERT_BASE_PARAMETERS;
const LAUNCH_OVERHEAD_MS: f64 = 1.5;
const PEAK_SHARE: f64 = 0.45;
/// Batch size at which half of the saturated efficiency is reached.
const HALF_EFFICIENCY_BATCH: f64 = 12.0;

/// Driver version simulated hosts report, and the older one of `SimCause::Driver`.
const SIM_DRIVER: &str = "580.95.05";
const SIM_OLD_DRIVER: &str = "550.54.15";

/// Why a deliberately slow simulated host is slow: each leaves the trace in
/// the inventory or the measurements that a real one would, so the fleet
/// report's outlier analysis can be tested end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimCause {
    /// NVML reports thermal throttling during every point.
    Thermal,
    /// NVML reports the software power cap during every point.
    PowerCap,
    /// The card sits in a PCIe gen 3 x8 link instead of gen 4 x16.
    Pcie,
    /// Lower SM clocks (application clocks set down, say).
    Clocks,
    /// An older driver.
    Driver,
    /// Nothing the agent can see.
    Unknown,
}

impl std::str::FromStr for SimCause {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "thermal" => SimCause::Thermal,
            "power-cap" => SimCause::PowerCap,
            "pcie" => SimCause::Pcie,
            "clocks" => SimCause::Clocks,
            "driver" => SimCause::Driver,
            "unknown" => SimCause::Unknown,
            other => {
                return Err(format!(
                    "unknown --simulate-cause '{other}': use thermal, power-cap, pcie, clocks, driver or unknown"
                ));
            }
        })
    }
}

/// A simulated GPU host.
#[derive(Debug, Clone)]
pub struct SimulatedGpu {
    pub spec: &'static GpuModelSpec,
    /// Multiplies every latency: >1 makes a deliberately slow host.
    pub slowdown: f64,
    /// What a slow host shows as the reason (only with `slowdown` > 1).
    pub cause: SimCause,
    /// Real time each point takes, so that tests can act mid-sweep.
    pub point_delay: Duration,
}

impl SimulatedGpu {
    pub fn new(model: &str, slowdown: f64, point_delay: Duration) -> Result<SimulatedGpu, String> {
        let spec = lookup_gpu_model(model).ok_or_else(|| {
            let known: Vec<&str> = fleetbench_common::hardware::GPU_MODELS
                .iter()
                .map(|m| m.key)
                .collect();
            format!(
                "unknown GPU model '{model}' for --simulate: use one of {}",
                known.join(", ")
            )
        })?;
        if !(slowdown.is_finite() && slowdown > 0.0) {
            return Err(format!(
                "--simulate-slowdown must be a positive number, got {slowdown}"
            ));
        }
        Ok(SimulatedGpu {
            spec,
            slowdown,
            cause: SimCause::Unknown,
            point_delay,
        })
    }

    /// The inventory of a simulated host: one GPU of the model, labelled simulated.
    pub fn inventory(&self, hostname: &str) -> HostInventory {
        HostInventory {
            hostname: hostname.to_string(),
            os: "simulated".into(),
            kernel: "simulated".into(),
            cpu_model: "simulated CPU".into(),
            cpu_logical_cores: 32,
            cpu_physical_cores: Some(16),
            memory_bytes: 512 << 30,
            gpus: vec![GpuInfo {
                index: 0,
                name: format!("{} (simulated)", self.spec.key),
                uuid: format!("GPU-simulated-{hostname}"),
                memory_total_bytes: (self.spec.memory_gib * (1u64 << 30) as f64) as u64,
                driver_version: if self.shows(SimCause::Driver) {
                    SIM_OLD_DRIVER
                } else {
                    SIM_DRIVER
                }
                .into(),
                cuda_version: Some("13.0".into()),
                pcie_generation: Some(if self.shows(SimCause::Pcie) { 3 } else { 4 }),
                pcie_width: Some(if self.shows(SimCause::Pcie) { 8 } else { 16 }),
                power_limit_watts: Some(self.spec.tdp_watts),
                cuda_ordinal: Some(0),
                ..GpuInfo::default()
            }],
            gpu_note: None,
            simulated: true,
            cuda_build: None,
        }
    }

    fn shows(&self, cause: SimCause) -> bool {
        self.slowdown > 1.0 && self.cause == cause
    }

    fn device(&self) -> DeviceDescription {
        DeviceDescription {
            id: "cuda:0".into(),
            kind: DeviceKind::Cuda,
            name: self.spec.key.to_string(),
            simulated: true,
        }
    }

    fn model(&self, spec: &SweepSpec) -> ModelInfo {
        ModelInfo::distilbert_base(
            spec.model.clone(),
            WeightsSource::Simulated,
            spec.dtype,
            Engine::Fleetbench,
        )
    }

    /// Mean latency of one forward pass of `batch` samples, in ms.
    pub fn latency_ms(&self, spec: &SweepSpec, batch: usize) -> f64 {
        let peak = self
            .spec
            .peak_tflops(spec.dtype)
            .unwrap_or(self.spec.fp32_tflops)
            * 1e12;
        let efficiency = PEAK_SHARE * batch as f64 / (batch as f64 + HALF_EFFICIENCY_BATCH);
        let flops = flops_per_sample(ModelDims::DISTILBERT_BASE, spec.seq_len) * batch as f64;
        (LAUNCH_OVERHEAD_MS + 1e3 * flops / (peak * efficiency)) * self.slowdown
    }

    /// Runs the sweep against the model, taking `point_delay` of real time per point.
    pub fn run(
        &self,
        spec: &SweepSpec,
        hostname: &str,
        skip: &dyn Fn(usize) -> bool,
        cancel: &AtomicBool,
        sink: &mut dyn FnMut(RunEvent),
    ) -> DeviceSweep {
        let device = self.device();
        let model = self.model(spec);
        let todo: Vec<usize> = spec
            .batch_sizes
            .iter()
            .copied()
            .filter(|b| !skip(*b))
            .collect();
        let mut rng = SplitMix64::new(SplitMix64::seed_of(hostname));
        let mut points = Vec::new();
        for (done, &batch) in todo.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            sink(RunEvent::Progress {
                device_id: device.id.clone(),
                batch_size: batch,
                phase: Phase::Timed,
                done,
                total: todo.len(),
            });
            std::thread::sleep(self.point_delay);
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            let mean = self.latency_ms(spec, batch);
            let samples: Vec<f64> = (0..spec.iterations)
                .map(|_| mean * (1.0 + 0.02 * (rng.next_f64() - 0.5)))
                .collect();
            let outcome = match LatencySummary::from_samples_ms(&samples) {
                Some(latency) => {
                    let weights_mb = PARAMETERS as f64 * spec.dtype.size_bytes() as f64;
                    let activations =
                        (batch * spec.seq_len * 768 * 12 * spec.dtype.size_bytes()) as f64;
                    let timed = samples.iter().sum::<f64>() / 1e3;
                    let power = self.spec.tdp_watts
                        * (0.5 + 0.4 * batch as f64 / (batch as f64 + HALF_EFFICIENCY_BATCH));
                    PointOutcome::Measured(PointStats {
                        warmup: spec.warmup,
                        iterations: spec.iterations,
                        timed_seconds: timed,
                        throughput: batch as f64 / (latency.mean_ms / 1e3),
                        latency,
                        samples_ms: samples,
                        peak_rss_bytes: Some(1_200 << 20),
                        gpu_process_bytes: Some(
                            (weights_mb + activations + (300u64 << 20) as f64) as u64,
                        ),
                        gpu_device_bytes: Some(
                            (weights_mb + activations + (800u64 << 20) as f64) as u64,
                        ),
                        avg_power_watts: Some(power),
                        energy_joules: Some(power * timed),
                        throttle_reasons: match self.cause {
                            SimCause::Thermal if self.slowdown > 1.0 => {
                                vec!["sw-thermal".to_string()]
                            }
                            SimCause::PowerCap if self.slowdown > 1.0 => {
                                vec!["sw-power-cap".to_string()]
                            }
                            _ => Vec::new(),
                        },
                        sm_clock_mhz: Some(if self.shows(SimCause::Clocks) {
                            self.spec.boost_clock_mhz / self.slowdown
                        } else {
                            self.spec.boost_clock_mhz
                        }),
                        gpu_pool_peak_bytes: Some((weights_mb + activations) as u64),
                        gpu_temperature_c: Some(if self.shows(SimCause::Thermal) {
                            88.0
                        } else {
                            62.0
                        }),
                        energy_method: Some(fleetbench_common::EnergyMethod::Counter),
                        gpu_samples: (timed / 0.025).ceil() as u32,
                    })
                }
                None => PointOutcome::Failed {
                    error: "simulation produced no samples".into(),
                },
            };
            let point = PointResult {
                batch_size: batch,
                seq_len: spec.seq_len,
                outcome,
            };
            sink(RunEvent::Point {
                device: device.clone(),
                model: model.clone(),
                point: point.clone(),
            });
            points.push(point);
        }
        DeviceSweep {
            device,
            model,
            notes: vec![format!(
                "simulated host: {} performance model, not a measurement",
                self.spec.key
            )],
            points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faster_cards_are_faster_and_slowdown_slows() {
        let spec = SweepSpec::default();
        let h100 = SimulatedGpu::new("H100-SXM", 1.0, Duration::ZERO).expect("known");
        let t4 = SimulatedGpu::new("T4", 1.0, Duration::ZERO).expect("known");
        let slow = SimulatedGpu::new("H100-SXM", 1.5, Duration::ZERO).expect("known");
        assert!(h100.latency_ms(&spec, 64) < t4.latency_ms(&spec, 64));
        assert!((slow.latency_ms(&spec, 64) / h100.latency_ms(&spec, 64) - 1.5).abs() < 1e-9);
        assert!(SimulatedGpu::new("TPU", 1.0, Duration::ZERO).is_err());
    }

    #[test]
    fn a_simulated_sweep_is_labelled_and_skips_done_points() {
        let gpu = SimulatedGpu::new("A100-80GB", 1.0, Duration::ZERO).expect("known");
        let spec = SweepSpec {
            batch_sizes: vec![8, 16, 32],
            ..SweepSpec::default()
        };
        let mut events = 0;
        let out = gpu.run(
            &spec,
            "sim-1",
            &|b| b == 16,
            &AtomicBool::new(false),
            &mut |_| events += 1,
        );
        assert_eq!(
            out.points.iter().map(|p| p.batch_size).collect::<Vec<_>>(),
            vec![8, 32]
        );
        assert!(out.device.simulated && gpu.inventory("sim-1").simulated);
        assert_eq!(out.model.weights, WeightsSource::Simulated);
        assert_eq!(events, 4);
    }
}
