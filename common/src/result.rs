//! What a sweep produces: host facts, the device and model measured, and one
//! result per batch size. These are the types the agent sends and the
//! coordinator stores; reports are rendered from them.

use serde::{Deserialize, Serialize};

use crate::spec::{Engine, Precision, SweepSpec};
use crate::stats::{LatencySummary, Stability};

/// The host as `fleetbench-agent info` sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInventory {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpu_logical_cores: u32,
    pub cpu_physical_cores: Option<u32>,
    pub memory_bytes: u64,
    pub gpus: Vec<GpuInfo>,
    /// Why there are no GPUs, e.g. "no NVIDIA GPU found (libnvidia-ml.so.1 not loadable)".
    pub gpu_note: Option<String>,
    /// A simulated host answers sweeps from a performance model, not from candle.
    pub simulated: bool,
    /// The agent's CUDA build, e.g. "CUDA 12.2, kernels for compute 8.0";
    /// `None` for an agent built without CUDA.
    #[serde(default)]
    pub cuda_build: Option<String>,
}

/// One GPU as NVML describes it. Fields a card does not report are `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_total_bytes: u64,
    pub driver_version: String,
    pub cuda_version: Option<String>,
    pub pcie_generation: Option<u32>,
    pub pcie_width: Option<u32>,
    pub power_limit_watts: Option<f64>,
    /// CUDA compute capability, e.g. "8.0" (NVML).
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// PCI bus id, e.g. "00000000:17:00.0": the order `CUDA_DEVICE_ORDER=PCI_BUS_ID` follows.
    #[serde(default)]
    pub pci_bus_id: Option<String>,
    /// UUIDs of the MIG instances when MIG mode is on (empty otherwise).
    #[serde(default)]
    pub mig_instances: Vec<String>,
    /// This agent's CUDA ordinal for the GPU (after `CUDA_VISIBLE_DEVICES` and
    /// `CUDA_DEVICE_ORDER`); `None` when the agent cannot see it.
    #[serde(default)]
    pub cuda_ordinal: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// The device one sweep ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDescription {
    /// `cpu` or `cuda:N`: stable across agent restarts, part of a result's key.
    pub id: String,
    pub kind: DeviceKind,
    /// CPU model or GPU name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    pub simulated: bool,
}

impl DeviceDescription {
    pub fn cpu(name: impl Into<String>) -> Self {
        DeviceDescription {
            id: "cpu".into(),
            kind: DeviceKind::Cpu,
            name: name.into(),
            simulated: false,
        }
    }

    /// `cpu`, `cuda0`: safe in file names.
    pub fn file_stem(&self) -> String {
        self.id.replace(':', "")
    }
}

/// Where the weights that were measured came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum WeightsSource {
    /// Downloaded or cached from the Hugging Face hub.
    Hub { repo: String, revision: String },
    /// A local Hugging Face style directory.
    Directory { path: String },
    /// Seeded random values: timings are true, predictions are not.
    Random { seed: u64 },
    /// No model ran: a simulated host's performance model.
    Simulated,
}

impl WeightsSource {
    pub fn describe(&self) -> String {
        match self {
            WeightsSource::Hub { repo, revision } => format!("hub: {repo} ({revision})"),
            WeightsSource::Directory { path } => format!("local directory {path}"),
            WeightsSource::Random { seed } => {
                format!(
                    "synthetic (seeded random, seed {seed}): timings are real, predictions are not"
                )
            }
            WeightsSource::Simulated => "none (simulated host)".to_string(),
        }
    }
}

/// The model as loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub weights: WeightsSource,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub parameters: u64,
    pub dtype: Precision,
    pub engine: Engine,
}

impl ModelInfo {
    /// The parameters of distilbert-base-uncased with its 2-label
    /// classification head (what `fleetbench-agent info` counts on the real
    /// SST-2 checkpoint).
    pub const DISTILBERT_BASE_PARAMETERS: u64 = 66_955_010;

    /// `name` with distilbert-base-uncased's dimensions (the SST-2 model the
    /// sweep measures): what simulated hosts report, and the shape tests use.
    pub fn distilbert_base(
        name: impl Into<String>,
        weights: WeightsSource,
        dtype: Precision,
        engine: Engine,
    ) -> ModelInfo {
        ModelInfo {
            name: name.into(),
            weights,
            hidden_size: 768,
            layers: 6,
            heads: 12,
            intermediate_size: 3072,
            vocab_size: 30522,
            max_positions: 512,
            parameters: Self::DISTILBERT_BASE_PARAMETERS,
            dtype,
            engine,
        }
    }

    /// The dimensions the FLOP count needs.
    pub fn dims(&self) -> crate::flops::ModelDims {
        crate::flops::ModelDims {
            hidden: self.hidden_size,
            layers: self.layers,
            intermediate: self.intermediate_size,
        }
    }
}

/// Software and settings of the run, for reproducing it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEnvironment {
    pub agent_version: String,
    pub candle_version: String,
    pub threads: Option<usize>,
    pub build_features: Vec<String>,
}

/// Measurements of one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointStats {
    pub warmup: u32,
    pub iterations: u32,
    /// Sum of the timed iterations, in seconds.
    pub timed_seconds: f64,
    pub latency: LatencySummary,
    /// Samples per second: batch size over mean latency.
    pub throughput: f64,
    /// Every timed iteration, in milliseconds, in the order measured.
    pub samples_ms: Vec<f64>,
    /// Peak resident memory of the process during the point.
    pub peak_rss_bytes: Option<u64>,
    /// Most GPU memory NVML showed for this process during the timed window
    /// (absent where NVML's process list does not show the agent's PID, as in
    /// many containers).
    pub gpu_process_bytes: Option<u64>,
    /// Most GPU memory in use on the whole device during the timed window
    /// (NVML, sampled), other processes included.
    pub gpu_device_bytes: Option<u64>,
    /// Mean power during the timed window: energy over wall time.
    pub avg_power_watts: Option<f64>,
    /// Energy the GPU used during the timed window; how it was measured is
    /// `energy_method`. Never a 0 J that only means "the counter did not move".
    pub energy_joules: Option<f64>,
    /// NVML clock-event (throttle) reasons seen during the timed window, e.g. "sw-thermal".
    pub throttle_reasons: Vec<String>,
    /// Median SM clock during the timed window (NVML), in MHz.
    #[serde(default)]
    pub sm_clock_mhz: Option<f64>,
    /// Peak bytes the process's CUDA memory pool held during the timed window
    /// (its high-water mark, reset at the start of the point).
    #[serde(default)]
    pub gpu_pool_peak_bytes: Option<u64>,
    /// Hottest GPU temperature sampled during the timed window, in °C.
    #[serde(default)]
    pub gpu_temperature_c: Option<f64>,
    /// How `energy_joules` was obtained.
    #[serde(default)]
    pub energy_method: Option<EnergyMethod>,
    /// GPU sensor samples taken during the timed window.
    #[serde(default)]
    pub gpu_samples: u32,
}

/// How a point's GPU energy was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnergyMethod {
    /// The delta of NVML's total-energy counter over the window (Volta and newer).
    Counter,
    /// Power samples integrated over time (trapezoids): the GPU has no energy counter.
    PowerIntegration,
    /// The energy counter did not advance during the window (too short for
    /// its update period), so the power samples were integrated instead.
    CounterStalledPowerIntegration,
    /// The energy counter did not advance and there were no power samples:
    /// no energy figure.
    CounterStalled,
}

impl EnergyMethod {
    pub const ALL: [EnergyMethod; 4] = [
        EnergyMethod::Counter,
        EnergyMethod::PowerIntegration,
        EnergyMethod::CounterStalledPowerIntegration,
        EnergyMethod::CounterStalled,
    ];

    /// The wire and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            EnergyMethod::Counter => "counter",
            EnergyMethod::PowerIntegration => "power-integration",
            EnergyMethod::CounterStalledPowerIntegration => "counter-stalled-power-integration",
            EnergyMethod::CounterStalled => "counter-stalled",
        }
    }

    /// What a report says about the figure.
    pub fn describe(self) -> &'static str {
        match self {
            EnergyMethod::Counter => "NVML energy counter",
            EnergyMethod::PowerIntegration => "power samples integrated (no energy counter)",
            EnergyMethod::CounterStalledPowerIntegration => {
                "power samples integrated (the energy counter did not advance)"
            }
            EnergyMethod::CounterStalled => "none: the energy counter did not advance",
        }
    }
}

impl std::str::FromStr for EnergyMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EnergyMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown energy method {:?}", crate::spec::one_line(s)))
    }
}

impl PointStats {
    /// The agent's own peak GPU memory: the CUDA pool's high-water mark, else
    /// NVML's per-process figure, else (older agents, containers) the whole
    /// device's use.
    pub fn gpu_memory_bytes(&self) -> Option<u64> {
        self.gpu_pool_peak_bytes
            .or(self.gpu_process_bytes)
            .or(self.gpu_device_bytes)
    }

    pub fn stability(&self, min_seconds: f64) -> Stability {
        Stability::judge(self.latency.cv, self.timed_seconds, min_seconds)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "status")]
pub enum PointOutcome {
    Measured(PointStats),
    Failed { error: String },
}

/// The result of one batch size on one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    pub batch_size: usize,
    pub seq_len: usize,
    pub outcome: PointOutcome,
}

impl PointResult {
    pub fn stats(&self) -> Option<&PointStats> {
        match &self.outcome {
            PointOutcome::Measured(s) => Some(s),
            PointOutcome::Failed { .. } => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            PointOutcome::Measured(_) => None,
            PointOutcome::Failed { error } => Some(error),
        }
    }
}

/// Everything one device's sweep on one host produced: the input of a
/// per-machine report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineReport {
    pub generated_at: String,
    pub host: HostInventory,
    pub device: DeviceDescription,
    pub model: ModelInfo,
    pub spec: SweepSpec,
    pub points: Vec<PointResult>,
    pub environment: RunEnvironment,
    /// Warnings a reader must see, e.g. synthetic weights or a failed host.
    pub notes: Vec<String>,
}

impl MachineReport {
    /// (batch size, error) of every point that failed, in sweep order.
    pub fn failed_points(&self) -> Vec<(usize, &str)> {
        self.points
            .iter()
            .filter_map(|p| p.error().map(|e| (p.batch_size, e)))
            .collect()
    }

    pub fn simulated(&self) -> bool {
        self.host.simulated || self.device.simulated
    }
}
