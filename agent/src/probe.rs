//! Host and GPU facts: the inventory `fleetbench-agent info` prints and the
//! coordinator keeps, and the per-point samples (memory, power, energy,
//! throttling) the runner records.
//!
//! NVML sits behind the [`GpuProbe`] trait so tests can stand in a fake; the
//! real probe loads `libnvidia-ml.so.1` at run time, so the agent builds and
//! runs on machines without NVIDIA software and simply reports no GPU there.

use std::fmt;

use fleetbench_common::{GpuInfo, HostInventory};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::enums::device::UsedGpuMemory;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// What a GPU reports at one instant. Metrics a card does not support are `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuSample {
    pub device_used_bytes: Option<u64>,
    /// Memory used by this process on the device (NVML reports host PIDs, so
    /// inside a container this may be absent).
    pub process_used_bytes: Option<u64>,
    pub power_watts: Option<f64>,
    /// Total energy since the driver loaded, in millijoules.
    pub energy_millijoules: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub throttle_reasons: Vec<String>,
}

/// The GPUs of a host.
pub trait GpuProbe: Send + Sync + fmt::Debug {
    /// Every GPU, or why there are none (e.g. "no NVIDIA GPU found: ...").
    fn gpus(&self) -> Result<Vec<GpuInfo>, String>;
    /// A sample of GPU `index`, `None` when it cannot be read at all.
    fn sample(&self, index: u32) -> Option<GpuSample>;
}

/// The real probe: NVML, loaded at run time.
pub struct NvmlProbe {
    nvml: Result<Nvml, String>,
}

impl fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlProbe")
            .field("loaded", &self.nvml.is_ok())
            .finish()
    }
}

impl NvmlProbe {
    /// Loads NVML; never fails: a host without it has no GPUs.
    pub fn new() -> NvmlProbe {
        let nvml = Nvml::init().map_err(|e| format!("no NVIDIA GPU found (NVML unavailable: {e})"));
        NvmlProbe { nvml }
    }
}

impl Default for NvmlProbe {
    fn default() -> Self {
        NvmlProbe::new()
    }
}

/// Names of the throttle reasons that mean lost performance. `GPU_IDLE` and
/// the clock-setting reasons are normal and left out.
fn throttle_names(r: ThrottleReasons) -> Vec<String> {
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

impl GpuProbe for NvmlProbe {
    fn gpus(&self) -> Result<Vec<GpuInfo>, String> {
        let nvml = self.nvml.as_ref().map_err(Clone::clone)?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML could not count GPUs: {e}"))?;
        if count == 0 {
            return Err("no NVIDIA GPU found (NVML sees 0 devices)".to_string());
        }
        let driver = nvml.sys_driver_version().unwrap_or_default();
        let cuda = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        let mut out = Vec::new();
        for index in 0..count {
            let d = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML could not open GPU {index}: {e}"))?;
            out.push(GpuInfo {
                index,
                name: d.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
                uuid: d.uuid().unwrap_or_default(),
                memory_total_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
                driver_version: driver.clone(),
                cuda_version: cuda.clone(),
                pcie_generation: d.current_pcie_link_gen().ok(),
                pcie_width: d.current_pcie_link_width().ok(),
                power_limit_watts: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
            });
        }
        Ok(out)
    }

    fn sample(&self, index: u32) -> Option<GpuSample> {
        let nvml = self.nvml.as_ref().ok()?;
        let d = nvml.device_by_index(index).ok()?;
        let pid = std::process::id();
        let process_used_bytes = d.running_compute_processes().ok().and_then(|ps| {
            ps.into_iter()
                .find(|p| p.pid == pid)
                .and_then(|p| match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                })
        });
        Some(GpuSample {
            device_used_bytes: d.memory_info().ok().map(|m| m.used),
            process_used_bytes,
            power_watts: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
            energy_millijoules: d.total_energy_consumption().ok(),
            sm_clock_mhz: d.clock_info(Clock::SM).ok(),
            throttle_reasons: d
                .current_throttle_reasons()
                .map(throttle_names)
                .unwrap_or_default(),
        })
    }
}

/// The host's inventory: OS, CPU, memory (sysinfo) and GPUs (the probe).
pub fn host_inventory(gpu: &dyn GpuProbe) -> HostInventory {
    let refresh = RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing())
        .with_memory(MemoryRefreshKind::everything());
    let sys = System::new_with_specifics(refresh).ok();
    let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or_default();
    let (gpus, gpu_note) = match gpu.gpus() {
        Ok(g) => (g, None),
        Err(note) => (Vec::new(), Some(note)),
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
    }
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
    /// refused the peak stays process-wide, which over-reports but never under.
    pub fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
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
                    .is_some_and(|n| n.contains("no NVIDIA GPU"))
            );
        }
    }

    #[test]
    fn rss_is_readable_and_peak_is_at_least_current() {
        let rss = process_memory::rss_bytes().expect("rss");
        let peak = process_memory::peak_rss_bytes().expect("peak");
        assert!(rss > 0 && peak >= rss / 2);
    }
}
