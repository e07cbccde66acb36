//! NVML's view of the host's GPUs: identity (UUID, PCI bus id, compute
//! capability), MIG instances, and what may stop this process from using a
//! GPU (compute mode, MIG without an instance).
//!
//! Each GPU is read on its own: one NVML cannot open is a [`GpuFailure`]
//! with its reason, and the others are still listed.

use nvml_wrapper::enum_wrappers::device::ComputeMode;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use crate::gpu::visible::PhysicalGpu;

/// A GPU NVML counts but cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuFailure {
    pub nvml_index: u32,
    /// What NVML said, e.g. "NVML cannot open it: GPU is lost".
    pub reason: String,
}

/// Why a GPU NVML lists may still refuse this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessLimit {
    /// Compute mode EXCLUSIVE_PROCESS (or the retired EXCLUSIVE_THREAD): one
    /// process at a time, so opening fails while another process holds it.
    #[error(
        "it is in exclusive-process compute mode: only one process may use it at a time (`nvidia-smi -c DEFAULT` allows sharing)"
    )]
    ExclusiveProcess,
    /// Compute mode PROHIBITED: no process may use it for compute.
    #[error(
        "it is in prohibited compute mode: no process may run on it (`nvidia-smi -c DEFAULT` allows it)"
    )]
    Prohibited,
    /// MIG mode is on and no MIG instance exists, so CUDA cannot use it.
    #[error(
        "MIG mode is on but it has no MIG instance: create one (`nvidia-smi mig -cgi ... -C`) or turn MIG off"
    )]
    MigWithoutInstance,
}

/// `nvmlDeviceGetMigMode`'s "enabled" (NVML_DEVICE_MIG_ENABLE in nvml.h).
const NVML_DEVICE_MIG_ENABLE: u32 = 1;

/// What NVML says of one GPU it could open.
#[derive(Clone, Debug, PartialEq)]
pub struct NvmlGpu {
    pub physical: PhysicalGpu,
    pub name: String,
    pub memory_total_bytes: u64,
    pub pcie_generation: Option<u32>,
    pub pcie_width: Option<u32>,
    pub power_limit_watts: Option<f64>,
    pub access_limits: Vec<AccessLimit>,
}

/// Every GPU NVML counted: those it could read, and those it could not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    pub gpus: Vec<NvmlGpu>,
    pub failed: Vec<GpuFailure>,
}

/// Reads GPUs `0..count` (NVML's count), each on its own.
pub fn read_topology(nvml: &Nvml, count: u32) -> Topology {
    let mut topology = Topology::default();
    for nvml_index in 0..count {
        match read_gpu(nvml, nvml_index) {
            Ok(gpu) => topology.gpus.push(gpu),
            Err(failure) => topology.failed.push(failure),
        }
    }
    topology
}

/// One GPU. Facts a card does not report are `None`; only a GPU that cannot
/// be opened, or whose UUID cannot be read (it could not be matched to a
/// CUDA device), fails.
pub fn read_gpu(nvml: &Nvml, nvml_index: u32) -> Result<NvmlGpu, GpuFailure> {
    let fail = |what: &str, e: NvmlError| GpuFailure {
        nvml_index,
        reason: format!("NVML cannot {what}: {e}"),
    };
    let device = nvml
        .device_by_index(nvml_index)
        .map_err(|e| fail("open it", e))?;
    let uuid = device.uuid().map_err(|e| fail("read its UUID", e))?;
    let (mig_enabled, mig_instances) = mig_instances(&device);
    let access_limits = access_limits(device.compute_mode().ok(), mig_enabled, mig_instances.len());
    Ok(NvmlGpu {
        physical: PhysicalGpu {
            nvml_index,
            uuid,
            pci_bus_id: device.pci_info().map(|p| p.bus_id).unwrap_or_default(),
            compute_capability: device
                .cuda_compute_capability()
                .ok()
                .and_then(|c| Some((u32::try_from(c.major).ok()?, u32::try_from(c.minor).ok()?))),
            // NVML's device attributes (with the SM count) answer for MIG
            // handles only; `num_cores` counts CUDA cores, not SMs.
            multiprocessors: device
                .attributes()
                .ok()
                .map(|a| a.multiprocessor_count)
                .filter(|n| *n > 0),
            mig_instances,
        },
        name: device
            .name()
            .unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
        memory_total_bytes: device.memory_info().map(|m| m.total).unwrap_or(0),
        pcie_generation: device.current_pcie_link_gen().ok(),
        pcie_width: device.current_pcie_link_width().ok(),
        power_limit_watts: device
            .enforced_power_limit()
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        access_limits,
    })
}

/// The MIG instances NVML lists under a GPU (a slot without an instance
/// answers NOT_FOUND and is skipped); MIG mode counts as off where NVML
/// cannot say (pre-Ampere GPUs answer NOT_SUPPORTED).
fn mig_instances(device: &Device<'_>) -> (bool, Vec<String>) {
    let enabled = device
        .mig_mode()
        .is_ok_and(|m| m.current == NVML_DEVICE_MIG_ENABLE);
    if !enabled {
        return (false, Vec::new());
    }
    let slots = device.mig_device_count().unwrap_or(0);
    let instances = (0..slots)
        .filter_map(|slot| device.mig_device_by_index(slot).ok()?.uuid().ok())
        .collect();
    (true, instances)
}

/// What may keep this process off the GPU with this NVML index (nothing
/// when NVML cannot open it: that is a [`GpuFailure`]).
pub fn read_access_limits(nvml: &Nvml, nvml_index: u32) -> Vec<AccessLimit> {
    let Ok(device) = nvml.device_by_index(nvml_index) else {
        return Vec::new();
    };
    let (mig_enabled, instances) = mig_instances(&device);
    access_limits(device.compute_mode().ok(), mig_enabled, instances.len())
}

/// What may keep this process off a GPU.
pub fn access_limits(
    compute_mode: Option<ComputeMode>,
    mig_enabled: bool,
    mig_instances: usize,
) -> Vec<AccessLimit> {
    let mut limits = Vec::new();
    match compute_mode {
        Some(ComputeMode::ExclusiveProcess | ComputeMode::ExclusiveThread) => {
            limits.push(AccessLimit::ExclusiveProcess)
        }
        Some(ComputeMode::Prohibited) => limits.push(AccessLimit::Prohibited),
        Some(ComputeMode::Default) | None => {}
    }
    if mig_enabled && mig_instances == 0 {
        limits.push(AccessLimit::MigWithoutInstance);
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_prohibited_modes_and_empty_mig_limit_access() {
        assert_eq!(access_limits(Some(ComputeMode::Default), false, 0), vec![]);
        assert_eq!(access_limits(None, false, 0), vec![]);
        assert_eq!(
            access_limits(Some(ComputeMode::ExclusiveProcess), false, 0),
            vec![AccessLimit::ExclusiveProcess]
        );
        assert_eq!(
            access_limits(Some(ComputeMode::ExclusiveThread), false, 0),
            vec![AccessLimit::ExclusiveProcess]
        );
        assert_eq!(
            access_limits(Some(ComputeMode::Prohibited), true, 0),
            vec![AccessLimit::Prohibited, AccessLimit::MigWithoutInstance]
        );
        assert_eq!(access_limits(Some(ComputeMode::Default), true, 2), vec![]);
    }

    #[test]
    fn limits_say_what_to_do_in_one_line() {
        for limit in [
            AccessLimit::ExclusiveProcess,
            AccessLimit::Prohibited,
            AccessLimit::MigWithoutInstance,
        ] {
            let text = limit.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains("nvidia-smi"), "{text}");
        }
    }
}
