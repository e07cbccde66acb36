//! Host and GPU facts: the inventory `fleetbench-agent info` prints and the
//! coordinator keeps, and the GPU samples (memory, power, energy, clocks,
//! temperature, clock-event reasons) the runner records.
//!
//! NVML sits behind the [`GpuProbe`] trait so tests can stand in a fake; the
//! real probe loads `libnvidia-ml.so.1` at run time, so the agent builds and
//! runs on machines without NVIDIA software and says so in plain words there.
//! A host whose NVML loads but fails is a broken GPU host
//! ([`GpuProbeError::Failed`]), never a CPU host.

use std::fmt;
use std::os::raw::c_ulonglong;

use fleetbench_common::{GpuInfo, HostInventory};
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper::{Device, Nvml};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use crate::gpu::compat::{self, CudaBuild, CudaVersion};
pub use crate::gpu::topology::{AccessLimit, GpuFailure};
use crate::gpu::topology::{Topology, read_access_limits, read_topology};
use crate::gpu::visible::{
    DeviceOrder, ListStop, PhysicalGpu, Resolution, VISIBLE_DEVICES_VAR, VisibleDevices,
    parse_compute_capability, resolve_visible,
};

/// What a GPU reports at one instant. `None` is "could not be read", never
/// zero or "nothing to report".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuSample {
    /// Memory in use on the whole device, every process included.
    pub device_used_bytes: Option<u64>,
    /// Memory NVML attributes to this process; `None` when NVML's process
    /// list does not show it (see `pid_listed`) or has no figure for it.
    pub process_used_bytes: Option<u64>,
    /// Whether NVML's compute-process list shows this process's PID. NVML
    /// lists host PIDs, so inside a container it usually does not
    /// (`Some(false)`) and only the device-wide figure is ours to give;
    /// `None` when the list could not be read.
    pub pid_listed: Option<bool>,
    pub power_watts: Option<f64>,
    /// Total energy since the driver loaded, in millijoules (Volta and newer).
    pub energy_millijoules: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    /// GPU die temperature, °C.
    pub temperature_c: Option<u32>,
    /// The clock-event (throttle) reasons that cost performance, e.g.
    /// "sw-thermal"; `Some(vec![])` is "none", `None` is "could not be read".
    pub clock_event_reasons: Option<Vec<String>>,
}

/// Every GPU NVML sees: those it could read and those it could not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuList {
    pub gpus: Vec<GpuInfo>,
    pub failed: Vec<GpuFailure>,
}

impl GpuList {
    /// The GPUs as device matching needs them.
    pub fn physical(&self) -> Vec<PhysicalGpu> {
        self.gpus.iter().map(PhysicalGpu::from_info).collect()
    }
}

/// A listed GPU with something that may keep this process off it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitedGpu {
    pub nvml_index: u32,
    pub limit: AccessLimit,
}

/// CUDA's devices predicted from the list and the environment (see
/// [`resolve_visible`]), leaving out GPUs in MIG mode without an instance,
/// which CUDA cannot see.
pub fn predict_visible(
    gpus: &[GpuInfo],
    limited: &[LimitedGpu],
    visible: &VisibleDevices,
    order: DeviceOrder,
) -> Resolution {
    let physical: Vec<PhysicalGpu> = gpus
        .iter()
        .filter(|g| {
            !limited.contains(&LimitedGpu {
                nvml_index: g.index,
                limit: AccessLimit::MigWithoutInstance,
            })
        })
        .map(PhysicalGpu::from_info)
        .collect();
    resolve_visible(&physical, visible, order)
}

/// One sentence per thing a person should know of a host's GPUs: GPUs NVML
/// could not read, GPUs this process may not use, a `CUDA_VISIBLE_DEVICES`
/// entry CUDA stops at, and (given this agent's CUDA build) a driver or GPU
/// too old for it.
pub fn gpu_notes(
    list: &GpuList,
    limited: &[LimitedGpu],
    visible_stop: Option<&ListStop>,
    build: Option<&CudaBuild>,
) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for f in &list.failed {
        notes.push(format!("GPU {} cannot be used: {}", f.nvml_index, f.reason));
    }
    for l in limited {
        notes.push(format!("GPU {}: {}", l.nvml_index, l.limit));
    }
    if let Some(stop) = visible_stop {
        notes.push(stop.to_string());
    }
    if let Some(build) = build {
        let driver = list
            .gpus
            .iter()
            .find_map(|g| g.cuda_version.as_deref()?.parse::<CudaVersion>().ok());
        if let Err(e) = compat::check_driver(build, driver) {
            notes.push(e.to_string());
        }
        for g in &list.gpus {
            let Some(cc) = g
                .compute_capability
                .as_deref()
                .and_then(parse_compute_capability)
            else {
                continue;
            };
            if let Err(e) = compat::check_gpu(build, &g.name, cc) {
                let sentence = e.to_string();
                // Identical cards give one sentence.
                if !notes.contains(&sentence) {
                    notes.push(sentence);
                }
            }
        }
    }
    notes
}

/// Why a host has no GPU list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuProbeError {
    /// NVML cannot be used because there is no NVIDIA driver:
    /// libnvidia-ml.so.1 does not load (a CPU host), or it loads and the
    /// kernel driver is not loaded (a GPU image on a CPU machine, or a GPU
    /// host whose driver failed to load: the text says which it saw).
    #[error("no NVIDIA GPU found: no NVIDIA driver ({0})")]
    NoDriver(String),
    /// NVML works and counts no GPU.
    #[error("no NVIDIA GPU found: the NVIDIA driver is loaded but NVML sees 0 GPUs")]
    NoDevices,
    /// NVML loaded but failed (initialisation, the GPU count): a broken GPU
    /// host, never a CPU run.
    #[error(
        "NVML failed on this GPU host: {0} (`nvidia-smi` shows the same fault; fix the driver or use --device cpu)"
    )]
    Failed(String),
}

/// The GPUs of a host.
pub trait GpuProbe: Send + Sync + fmt::Debug {
    /// Every GPU NVML sees, and those it saw but could not read.
    fn gpus(&self) -> Result<GpuList, GpuProbeError>;
    /// A sample of the GPU with this NVML index; None when it cannot be read at all.
    fn sample(&self, nvml_index: u32) -> Option<GpuSample>;
    /// What may keep this process off the GPU with this NVML index
    /// (exclusive or prohibited compute mode, MIG without an instance): the
    /// explanation for a CUDA device that will not open. None by default.
    fn access_limits(&self, nvml_index: u32) -> Vec<AccessLimit> {
        let _ = nvml_index;
        Vec::new()
    }
}

/// The real probe: NVML, loaded at run time.
pub struct NvmlProbe {
    nvml: Result<Nvml, GpuProbeError>,
}

impl fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlProbe")
            .field("loaded", &self.nvml.is_ok())
            .finish()
    }
}

impl NvmlProbe {
    /// Loads NVML; never fails: why it could not is kept for [`GpuProbe::gpus`].
    pub fn new() -> NvmlProbe {
        NvmlProbe {
            nvml: Nvml::init().map_err(init_error),
        }
    }
}

impl Default for NvmlProbe {
    fn default() -> Self {
        NvmlProbe::new()
    }
}

/// Which of [`GpuProbeError`] an NVML start failure is.
fn init_error(e: NvmlError) -> GpuProbeError {
    match e {
        NvmlError::LibloadingError(cause) => {
            GpuProbeError::NoDriver(format!("libnvidia-ml.so.1 cannot be loaded: {cause}"))
        }
        NvmlError::DriverNotLoaded => GpuProbeError::NoDriver(
            "libnvidia-ml.so.1 is installed but the NVIDIA kernel driver is not loaded".into(),
        ),
        other => GpuProbeError::Failed(format!("NVML did not start: {other}")),
    }
}

impl GpuProbe for NvmlProbe {
    fn gpus(&self) -> Result<GpuList, GpuProbeError> {
        let nvml = self.nvml.as_ref().map_err(Clone::clone)?;
        let count = nvml
            .device_count()
            .map_err(|e| GpuProbeError::Failed(format!("NVML cannot count the GPUs: {e}")))?;
        if count == 0 {
            return Err(GpuProbeError::NoDevices);
        }
        Ok(gpu_list(
            read_topology(nvml, count),
            &nvml.sys_driver_version().unwrap_or_default(),
            nvml.sys_cuda_driver_version()
                .ok()
                .and_then(CudaVersion::from_nvml),
            &VisibleDevices::from_env(),
            DeviceOrder::from_env(),
        ))
    }

    fn sample(&self, nvml_index: u32) -> Option<GpuSample> {
        let nvml = self.nvml.as_ref().ok()?;
        let d = nvml.device_by_index(nvml_index).ok()?;
        let pid = std::process::id();
        let ours = d
            .running_compute_processes()
            .ok()
            .map(|ps| ps.into_iter().find(|p| p.pid == pid));
        Some(GpuSample {
            device_used_bytes: d.memory_info().ok().map(|m| m.used),
            process_used_bytes: ours
                .as_ref()
                .and_then(|p| match p.as_ref()?.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                }),
            pid_listed: ours.as_ref().map(Option::is_some),
            power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            energy_millijoules: d.total_energy_consumption().ok(),
            sm_clock_mhz: d.clock_info(Clock::SM).ok(),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
            clock_event_reasons: current_clock_event_reasons(&d).ok().map(clock_event_names),
        })
    }

    fn access_limits(&self, nvml_index: u32) -> Vec<AccessLimit> {
        match &self.nvml {
            Ok(nvml) => read_access_limits(nvml, nvml_index),
            Err(_) => Vec::new(),
        }
    }
}

/// The probe's list from what NVML read, the driver, and this process's
/// CUDA visibility, which gives each GPU its predicted CUDA ordinal (a GPU in
/// MIG mode is reached through its first visible instance). The runner
/// replaces the prediction with CUDA's own UUIDs when CUDA is up.
pub fn gpu_list(
    topology: Topology,
    driver_version: &str,
    driver_cuda: Option<CudaVersion>,
    visible: &VisibleDevices,
    order: DeviceOrder,
) -> GpuList {
    let mut limited = Vec::new();
    let mut gpus = Vec::new();
    for g in topology.gpus {
        let p = g.physical;
        limited.extend(g.access_limits.into_iter().map(|limit| LimitedGpu {
            nvml_index: p.nvml_index,
            limit,
        }));
        gpus.push(GpuInfo {
            index: p.nvml_index,
            name: g.name,
            uuid: p.uuid,
            memory_total_bytes: g.memory_total_bytes,
            driver_version: driver_version.to_string(),
            cuda_version: driver_cuda.map(|v| v.to_string()),
            pcie_generation: g.pcie_generation,
            pcie_width: g.pcie_width,
            power_limit_watts: g.power_limit_watts,
            compute_capability: p
                .compute_capability
                .map(|(major, minor)| format!("{major}.{minor}")),
            pci_bus_id: (!p.pci_bus_id.is_empty()).then_some(p.pci_bus_id),
            mig_instances: p.mig_instances,
            cuda_ordinal: None,
        });
    }
    let predicted = predict_visible(&gpus, &limited, visible, order).visible;
    for g in &mut gpus {
        g.cuda_ordinal = predicted
            .iter()
            .find(|v| v.nvml_index == g.index)
            .map(|v| v.cuda_ordinal);
    }
    GpuList {
        gpus,
        failed: topology.failed,
    }
}

/// Reads the clock-event reasons through NVML's current call
/// (`nvmlDeviceGetCurrentClocksEventReasons`, R535 and later), which
/// nvml-wrapper 0.13 does not wrap; drivers without it get the deprecated
/// `...ClocksThrottleReasons`, whose bits mean the same.
#[allow(unsafe_code)]
fn current_clock_event_reasons(device: &Device<'_>) -> Result<ThrottleReasons, NvmlError> {
    let Ok(current) = device
        .nvml()
        .lib()
        .nvmlDeviceGetCurrentClocksEventReasons
        .as_ref()
    else {
        return device.current_throttle_reasons();
    };
    let mut reasons: c_ulonglong = 0;
    // SAFETY: `device` borrows the `Nvml` it came from, so NVML is
    // initialised and the handle is valid for this call; the function writes
    // one unsigned long long through the pointer, which points at a local
    // that outlives the call; the symbol was resolved from that same library
    // with the signature nvml.h declares.
    let code = unsafe { current(device.handle(), &mut reasons) };
    nvml_try(code)?;
    Ok(ThrottleReasons::from_bits_truncate(reasons))
}

/// Names of the clock-event reasons that cost performance. Idle, the
/// application and display clock settings and sync boost are normal and
/// left out.
fn clock_event_names(r: ThrottleReasons) -> Vec<String> {
    let table = [
        (ThrottleReasons::SW_POWER_CAP, "sw-power-cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw-slowdown"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw-thermal"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw-thermal"),
        (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw-power-brake"),
    ];
    table
        .iter()
        .filter(|(bit, _)| r.contains(*bit))
        .map(|(_, n)| n.to_string())
        .collect()
}

/// How [`host_inventory`] joins the GPU notes into `gpu_note`.
pub const NOTE_SEPARATOR: &str = "; ";

/// The host's inventory: OS, CPU, memory (sysinfo), GPUs (the probe), this
/// agent's CUDA build, and in `gpu_note` why there is no GPU or what is
/// wrong with some ([`gpu_notes`]).
pub fn host_inventory(gpu: &dyn GpuProbe) -> HostInventory {
    let refresh = RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing())
        .with_memory(MemoryRefreshKind::everything());
    let sys = System::new_with_specifics(refresh).ok();
    let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or_default();
    let (gpus, gpu_note) = match gpu.gpus() {
        Ok(list) => {
            let limited: Vec<LimitedGpu> = list
                .gpus
                .iter()
                .flat_map(|g| {
                    gpu.access_limits(g.index)
                        .into_iter()
                        .map(|limit| LimitedGpu {
                            nvml_index: g.index,
                            limit,
                        })
                })
                .collect();
            let stop = predict_visible(
                &list.gpus,
                &limited,
                &VisibleDevices::from_env(),
                DeviceOrder::from_env(),
            )
            .stop;
            let notes = gpu_notes(
                &list,
                &limited,
                stop.as_ref(),
                CudaBuild::this_build().as_ref(),
            );
            (
                list.gpus,
                (!notes.is_empty()).then(|| notes.join(NOTE_SEPARATOR)),
            )
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    HostInventory {
        hostname: System::host_name().unwrap_or_else(|_| "unknown-host".into()),
        os: System::long_os_version().unwrap_or_else(|_| std::env::consts::OS.into()),
        kernel: System::kernel_long_version().unwrap_or_default(),
        cpu_model: cpus
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.into()),
        cpu_logical_cores: if cpus.is_empty() {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        } else {
            cpus.len() as u32
        },
        cpu_physical_cores: System::physical_core_count().ok().map(|n| n as u32),
        memory_bytes: sys.as_ref().map(|s| s.total_memory()).unwrap_or(0),
        gpus,
        gpu_note,
        simulated: false,
        cuda_build: compat::build_description(),
    }
}

/// `fleetbench-agent info` as text: one screen. `build` is this agent's CUDA
/// build and `cuda_visible_devices` the variable's value, both passed in so
/// tests can choose them.
pub fn info_text(
    inv: &HostInventory,
    build: Option<&CudaBuild>,
    cuda_visible_devices: Option<&str>,
) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut lines = vec![
        format!("host:    {}", inv.hostname),
        format!("os:      {} (kernel {})", inv.os, inv.kernel),
        format!(
            "cpu:     {} ({} logical cores{})",
            inv.cpu_model,
            inv.cpu_logical_cores,
            inv.cpu_physical_cores
                .map(|p| format!(", {p} physical"))
                .unwrap_or_default()
        ),
        format!("memory:  {:.1} GiB", gib(inv.memory_bytes)),
    ];
    if inv.gpus.is_empty() {
        lines.push("gpus:    none".to_string());
    }
    for g in &inv.gpus {
        lines.push(format!(
            "gpu {}:   {} ({:.0} GiB, compute {}, PCIe gen {} x{}, power limit {} W)",
            g.index,
            g.name,
            gib(g.memory_total_bytes),
            g.compute_capability.as_deref().unwrap_or("-"),
            or_dash(g.pcie_generation.map(|v| v.to_string())),
            or_dash(g.pcie_width.map(|v| v.to_string())),
            or_dash(g.power_limit_watts.map(|v| format!("{v:.0}"))),
        ));
        let ordinal = match (g.cuda_ordinal, cuda_visible_devices) {
            (Some(n), _) => format!("CUDA ordinal {n}"),
            (None, Some(value)) => {
                format!("not visible ({VISIBLE_DEVICES_VAR}={value})")
            }
            (None, None) => "not visible to CUDA".to_string(),
        };
        lines.push(format!(
            "         {ordinal}, PCI {}, uuid {}",
            g.pci_bus_id.as_deref().unwrap_or("-"),
            g.uuid
        ));
        if !g.mig_instances.is_empty() {
            lines.push(format!(
                "         MIG instances: {}",
                g.mig_instances.join(", ")
            ));
        }
    }
    if let Some(g) = inv.gpus.first() {
        lines.push(format!("driver:  {}", g.driver_version));
    }
    let driver = match inv.gpus.first() {
        None => "no NVIDIA GPU".to_string(),
        Some(g) => match &g.cuda_version {
            Some(v) => format!("driver supports {v}"),
            None => "the driver's CUDA version is unknown".to_string(),
        },
    };
    let built = match (build, &inv.cuda_build) {
        (Some(b), _) => format!(
            "this agent was built with CUDA {} for compute {} ({})",
            b.toolkit,
            compat::compute_cap_text(b.compute_cap),
            compat::build_name(b.compute_cap)
        ),
        (None, Some(text)) => format!("this agent was built with {text}"),
        (None, None) => "this agent was built without CUDA".to_string(),
    };
    lines.push(format!("CUDA:    {driver}; {built}"));
    if let Some(note) = &inv.gpu_note {
        for (i, sentence) in note.split(NOTE_SEPARATOR).enumerate() {
            let label = if i == 0 { "note:   " } else { "        " };
            lines.push(format!("{label} {sentence}"));
        }
    }
    lines.join("\n")
}

/// Resident memory of this process.
pub mod process_memory {
    /// Current resident set size in bytes.
    pub fn rss_bytes() -> Option<u64> {
        status_field("VmRSS:")
    }

    /// Peak resident set size since the last [`reset_peak`] (or process start).
    pub fn peak_rss_bytes() -> Option<u64> {
        status_field("VmHWM:").or_else(rss_bytes)
    }

    /// Starts a new peak window, so each point reports its own peak. Linux
    /// resets VmHWM when "5" is written to clear_refs (proc(5)); where that is
    /// refused (`false`) the peak stays process-wide, which over-reports but
    /// never under.
    pub fn reset_peak() -> bool {
        // Memory the allocator keeps for reuse is resident: give it back
        // first, so that the new peak counts only what is used from now on.
        crate::alloc::release_free_memory();
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }

    fn status_field(name: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::topology::NvmlGpu;
    use crate::gpu::visible::InvalidEntry;

    #[test]
    fn inventory_of_this_host_has_cpu_facts_and_never_panics_without_nvml() {
        let inv = host_inventory(&NvmlProbe::new());
        assert!(!inv.hostname.is_empty());
        assert!(inv.cpu_logical_cores >= 1);
        assert!(inv.memory_bytes > 0);
        if inv.gpus.is_empty() {
            assert!(
                inv.gpu_note
                    .as_deref()
                    .is_some_and(|n| n.contains("no NVIDIA GPU")),
                "{:?}",
                inv.gpu_note
            );
        }
        let text = info_text(&inv, CudaBuild::this_build().as_ref(), None);
        assert!(text.contains("CUDA:"), "{text}");
    }

    #[test]
    fn a_host_without_nvml_is_no_driver_not_a_failure() {
        let probe = NvmlProbe::new();
        if let Err(e) = probe.gpus() {
            // This machine has no NVIDIA driver; a GPU host would list GPUs.
            assert!(matches!(e, GpuProbeError::NoDriver(_)), "{e}");
            assert!(probe.sample(0).is_none());
        }
    }

    #[test]
    fn nvml_start_failures_are_classified() {
        assert!(matches!(
            init_error(NvmlError::DriverNotLoaded),
            GpuProbeError::NoDriver(_)
        ));
        let broken = init_error(NvmlError::Unknown);
        assert!(matches!(broken, GpuProbeError::Failed(_)));
        assert!(
            broken
                .to_string()
                .starts_with("NVML failed on this GPU host")
        );
        assert!(
            !GpuProbeError::NoDevices.to_string().contains('\n')
                && GpuProbeError::NoDevices
                    .to_string()
                    .contains("no NVIDIA GPU")
        );
    }

    const T4: &str = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6";
    const A100: &str = "GPU-e429a63e-c61c-4795-b757-5132caeb8e70";
    const H100: &str = "GPU-5b2d9c1e-0a0f-5f5e-9d4c-6b1a2b3c4d5e";
    const MIG: &str = "MIG-d9a47cfb-d1f2-d08c-b40e-0812b597ae69";

    fn nvml_gpu(index: u32, name: &str, uuid: &str, bus: &str, cc: (u32, u32)) -> NvmlGpu {
        NvmlGpu {
            physical: PhysicalGpu {
                nvml_index: index,
                uuid: uuid.into(),
                pci_bus_id: bus.into(),
                compute_capability: Some(cc),
                multiprocessors: None,
                mig_instances: Vec::new(),
            },
            name: name.into(),
            memory_total_bytes: 16 << 30,
            pcie_generation: Some(4),
            pcie_width: Some(16),
            power_limit_watts: Some(70.0),
            access_limits: Vec::new(),
        }
    }

    /// NVML 0: T4 (bus 0x17); 1: A100 in MIG mode with one instance (0x65),
    /// in exclusive-process mode; 2: a GPU NVML cannot open; 3: an H100 in
    /// MIG mode without an instance (0xc1).
    fn mixed_topology() -> Topology {
        let mut a100 = nvml_gpu(1, "NVIDIA A100", A100, "00000000:65:00.0", (8, 0));
        a100.physical.mig_instances = vec![MIG.into()];
        a100.access_limits = vec![AccessLimit::ExclusiveProcess];
        let mut h100 = nvml_gpu(3, "NVIDIA H100", H100, "00000000:C1:00.0", (9, 0));
        h100.access_limits = vec![AccessLimit::MigWithoutInstance];
        Topology {
            gpus: vec![
                nvml_gpu(0, "Tesla T4", T4, "00000000:17:00.0", (7, 5)),
                a100,
                h100,
            ],
            failed: vec![GpuFailure {
                nvml_index: 2,
                reason: "NVML cannot open it: GPU is lost".into(),
            }],
        }
    }

    fn limits_of(topology: &Topology) -> Vec<LimitedGpu> {
        topology
            .gpus
            .iter()
            .flat_map(|g| {
                g.access_limits.iter().map(|l| LimitedGpu {
                    nvml_index: g.physical.nvml_index,
                    limit: *l,
                })
            })
            .collect()
    }

    const FLEET: CudaBuild = CudaBuild {
        toolkit: CudaVersion::new(12, 2),
        compute_cap: 80,
    };

    #[test]
    fn one_unreadable_gpu_leaves_the_others_listed() {
        let list = gpu_list(
            mixed_topology(),
            "535.104.05",
            Some(CudaVersion::new(12, 2)),
            &VisibleDevices::All,
            DeviceOrder::FastestFirst,
        );
        assert_eq!(list.gpus.len(), 3);
        assert_eq!(list.failed.len(), 1);
        assert_eq!(list.failed[0].nvml_index, 2);
        let t4 = &list.gpus[0];
        assert_eq!(t4.compute_capability.as_deref(), Some("7.5"));
        assert_eq!(t4.pci_bus_id.as_deref(), Some("00000000:17:00.0"));
        assert_eq!(t4.cuda_version.as_deref(), Some("12.2"));
        assert_eq!(t4.driver_version, "535.104.05");
        // Fastest first: the A100's MIG instance is ordinal 0, the T4 1; the
        // H100 without a MIG instance is invisible to CUDA.
        assert_eq!(t4.cuda_ordinal, Some(1));
        assert_eq!(list.gpus[1].cuda_ordinal, Some(0));
        assert_eq!(list.gpus[1].mig_instances, vec![MIG.to_string()]);
        assert_eq!(list.gpus[2].cuda_ordinal, None);
        // Back to what matching needs.
        let physical = list.physical();
        assert_eq!(physical[1].mig_instances, vec![MIG.to_string()]);
        assert_eq!(physical[0].compute_capability, Some((7, 5)));
    }

    #[test]
    fn hidden_gpus_have_no_ordinal_and_a_stopped_list_is_explained() {
        let topology = mixed_topology();
        let limited = limits_of(&topology);
        let visible = VisibleDevices::parse(Some("1,-1,0"));
        let list = gpu_list(
            topology,
            "535.104.05",
            Some(CudaVersion::new(12, 2)),
            &visible,
            DeviceOrder::PciBusId,
        );
        // PCI order: 0 is the T4, 1 the MIG instance; "-1" hides the rest.
        assert_eq!(list.gpus[0].cuda_ordinal, None);
        assert_eq!(list.gpus[1].cuda_ordinal, Some(0));
        let stop = predict_visible(&list.gpus, &limited, &visible, DeviceOrder::PciBusId).stop;
        assert!(matches!(
            stop,
            Some(ListStop::Invalid {
                reason: InvalidEntry::NotADevice,
                ..
            })
        ));
        let notes = gpu_notes(&list, &limited, stop.as_ref(), None);
        assert!(
            notes.iter().any(|n| n.contains("entry \"-1\"")),
            "{notes:?}"
        );
    }

    #[test]
    fn notes_name_failures_limits_and_incompatibilities() {
        let topology = mixed_topology();
        let limited = limits_of(&topology);
        let list = gpu_list(
            topology,
            "525.60.13",
            Some(CudaVersion::new(12, 0)),
            &VisibleDevices::All,
            DeviceOrder::PciBusId,
        );
        let notes = gpu_notes(&list, &limited, None, Some(&FLEET));
        assert_eq!(
            notes,
            vec![
                "GPU 2 cannot be used: NVML cannot open it: GPU is lost".to_string(),
                format!("GPU 1: {}", AccessLimit::ExclusiveProcess),
                format!("GPU 3: {}", AccessLimit::MigWithoutInstance),
                "the NVIDIA driver supports CUDA 12.0 but this agent was built with CUDA 12.2: update the driver to R535 or newer".to_string(),
                "Tesla T4 is compute 7.5 but this agent's kernels need compute 8.0 or newer: run the `turing` build (deploy/cuda/build.sh build turing) on this host".to_string(),
            ]
        );
        // A CPU build checks nothing against the driver or the GPUs.
        assert_eq!(gpu_notes(&list, &limited, None, None).len(), 3);
        // A good host has nothing to say.
        let mut good = GpuList {
            gpus: list.gpus[1..2].to_vec(),
            ..GpuList::default()
        };
        good.gpus[0].cuda_version = Some("12.4".into());
        assert!(gpu_notes(&good, &[], None, Some(&FLEET)).is_empty());
    }

    /// A probe that answers from a hand-made topology.
    #[derive(Debug)]
    struct FakeProbe(Topology);

    impl GpuProbe for FakeProbe {
        fn gpus(&self) -> Result<GpuList, GpuProbeError> {
            Ok(gpu_list(
                self.0.clone(),
                "535.104.05",
                Some(CudaVersion::new(12, 2)),
                &VisibleDevices::All,
                DeviceOrder::PciBusId,
            ))
        }
        fn sample(&self, _: u32) -> Option<GpuSample> {
            None
        }
        fn access_limits(&self, nvml_index: u32) -> Vec<AccessLimit> {
            limits_of(&self.0)
                .into_iter()
                .filter(|l| l.nvml_index == nvml_index)
                .map(|l| l.limit)
                .collect()
        }
    }

    #[test]
    fn the_inventory_keeps_readable_gpus_and_notes_the_rest() {
        let inv = host_inventory(&FakeProbe(mixed_topology()));
        assert_eq!(
            inv.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
        let note = inv.gpu_note.expect("a note");
        for part in [
            "GPU 2 cannot be used: NVML cannot open it: GPU is lost",
            "GPU 1: it is in exclusive-process compute mode",
            "GPU 3: MIG mode is on but it has no MIG instance",
        ] {
            assert!(note.contains(part), "missing {part:?} in {note}");
        }
        assert_eq!(inv.cuda_build, compat::build_description());
    }

    #[test]
    fn clock_event_names_keep_only_costly_reasons() {
        assert!(clock_event_names(ThrottleReasons::GPU_IDLE).is_empty());
        assert_eq!(
            clock_event_names(
                ThrottleReasons::SW_THERMAL_SLOWDOWN
                    | ThrottleReasons::SW_POWER_CAP
                    | ThrottleReasons::APPLICATIONS_CLOCKS_SETTING
            ),
            vec!["sw-power-cap".to_string(), "sw-thermal".to_string()]
        );
    }

    fn inventory(gpus: Vec<GpuInfo>, gpu_note: Option<String>) -> HostInventory {
        HostInventory {
            hostname: "gpu-7".into(),
            os: "Linux".into(),
            kernel: "6.1".into(),
            cpu_model: "EPYC".into(),
            cpu_logical_cores: 64,
            cpu_physical_cores: Some(32),
            memory_bytes: 512 << 30,
            gpus,
            gpu_note,
            simulated: false,
            cuda_build: None,
        }
    }

    #[test]
    fn info_shows_identity_visibility_and_the_cuda_line() {
        let list = gpu_list(
            mixed_topology(),
            "525.60.13",
            Some(CudaVersion::new(12, 0)),
            &VisibleDevices::parse(Some("MIG-d9a4")),
            DeviceOrder::FastestFirst,
        );
        let note = gpu_notes(&list, &[], None, Some(&FLEET)).join(NOTE_SEPARATOR);
        let mut inv = inventory(list.gpus, Some(note));
        inv.cuda_build = Some(FLEET.describe());
        let text = info_text(&inv, Some(&FLEET), Some("MIG-d9a4"));
        for expected in [
            "gpu 0:   Tesla T4 (16 GiB, compute 7.5, PCIe gen 4 x16, power limit 70 W)",
            "         not visible (CUDA_VISIBLE_DEVICES=MIG-d9a4), PCI 00000000:17:00.0, uuid GPU-8932f937",
            "         CUDA ordinal 0, PCI 00000000:65:00.0",
            &format!("         MIG instances: {MIG}"),
            "driver:  525.60.13",
            "CUDA:    driver supports 12.0; this agent was built with CUDA 12.2 for compute 8.0 (fleet build)",
            "note:    GPU 2 cannot be used",
            "         the NVIDIA driver supports CUDA 12.0 but this agent was built with CUDA 12.2: update the driver to R535 or newer",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(text.lines().count() <= 24, "{text}");
    }

    #[test]
    fn info_on_a_cpu_host_says_so() {
        let inv = inventory(
            Vec::new(),
            Some(GpuProbeError::NoDriver("libnvidia-ml.so.1 cannot be loaded".into()).to_string()),
        );
        let text = info_text(&inv, None, None);
        assert!(text.contains("gpus:    none"), "{text}");
        assert!(
            text.contains("CUDA:    no NVIDIA GPU; this agent was built without CUDA"),
            "{text}"
        );
        assert!(
            text.contains("note:    no NVIDIA GPU found: no NVIDIA driver"),
            "{text}"
        );
    }

    /// Set in the child process [`peak_rss_follows_a_touched_allocation_and_resets`] starts.
    const PEAK_CHILD_VAR: &str = "FLEETBENCH_PEAK_RSS_CHILD";
    const PEAK_CHILD_DONE: &str = "peak-rss-child: measured";

    /// The measurement, run alone in a child process so that other tests'
    /// allocations and frees cannot move this process's RSS meanwhile.
    #[test]
    fn peak_rss_child_process() {
        if std::env::var_os(PEAK_CHILD_VAR).is_none() {
            return;
        }
        const MIB: u64 = 1 << 20;
        assert!(
            process_memory::reset_peak(),
            "the kernel refused to reset VmHWM"
        );
        let before = process_memory::rss_bytes().expect("rss");
        let mut block = vec![0u8; (64 * MIB) as usize];
        // A zeroed allocation's pages are not resident until written.
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&block);
        let peak = process_memory::peak_rss_bytes().expect("peak");
        assert!(
            peak >= before + 60 * MIB,
            "peak {peak} is not 60 MiB above the {before} bytes before the allocation"
        );
        drop(block);
        assert!(process_memory::reset_peak());
        let restarted = process_memory::peak_rss_bytes().expect("peak");
        assert!(
            restarted + 60 * MIB <= peak,
            "after reset_peak the peak {restarted} still holds the freed block (was {peak})"
        );
        println!("{PEAK_CHILD_DONE}");
    }

    #[test]
    fn peak_rss_follows_a_touched_allocation_and_resets() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "probe::tests::peak_rss_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PEAK_CHILD_VAR, "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(PEAK_CHILD_DONE),
            "child failed or did not run:\n{stdout}\n{stderr}"
        );
    }
}
