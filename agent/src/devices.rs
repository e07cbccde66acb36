//! Which devices a `--device` selector means on this host.
//!
//! A GPU is known to two libraries that number it differently: CUDA (after
//! `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER`, fastest first by default)
//! and NVML (PCI order, every GPU of the host). The ordinal candle opens and
//! the NVML index the telemetry reads must describe the same card, so they are
//! matched by UUID, never assumed equal. Every visible GPU is its own device;
//! one that cannot be used (too old for this build, exclusive-process mode
//! and busy, a MIG GPU without a usable instance, a fault) becomes a
//! [`DeviceFailure`] with its reason while the others are measured. An NVML
//! that loads but fails is an error, never a quiet fall-back to the CPU.

use std::fmt;

use candle_core::Device;
use fleetbench_common::{DeviceDescription, DeviceKind, DeviceSelector, Precision};
use thiserror::Error;

use crate::gpu::compat::{self, CudaBuild, CudaVersion};
use crate::gpu::visible::{self, PhysicalGpu};
use crate::probe::{GpuProbe, GpuProbeError};

/// CUDA as the agent uses it: behind a trait so the rules here are tested
/// with a fake runtime on machines without a GPU.
pub trait CudaRuntime: fmt::Debug + Send + Sync {
    /// The CUDA build of this agent; `None` when it was built without CUDA.
    fn build(&self) -> Option<CudaBuild>;
    /// (ordinal, UUID bytes) of every device CUDA lets this process see.
    fn visible_devices(&self) -> Result<Vec<(u32, [u8; 16])>, String>;
    /// Opens a device for a sweep.
    fn open(&self, ordinal: u32) -> Result<Device, String>;
}

/// The real CUDA runtime of this build.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemCuda;

impl CudaRuntime for SystemCuda {
    fn build(&self) -> Option<CudaBuild> {
        CudaBuild::this_build()
    }

    #[cfg(feature = "cuda")]
    fn visible_devices(&self) -> Result<Vec<(u32, [u8; 16])>, String> {
        crate::gpu::cuda::visible_devices()
    }

    #[cfg(not(feature = "cuda"))]
    fn visible_devices(&self) -> Result<Vec<(u32, [u8; 16])>, String> {
        Err(NOT_COMPILED.to_string())
    }

    #[cfg(feature = "cuda")]
    fn open(&self, ordinal: u32) -> Result<Device, String> {
        crate::gpu::cuda::open(ordinal)
    }

    #[cfg(not(feature = "cuda"))]
    fn open(&self, _ordinal: u32) -> Result<Device, String> {
        Err(NOT_COMPILED.to_string())
    }
}

const NOT_COMPILED: &str = "this fleetbench-agent was built without the `cuda` feature: use a GPU build (deploy/cuda/build.sh) or --device cpu";

/// A device the sweep can run on.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    pub description: DeviceDescription,
    pub device: Device,
    /// NVML's index of the GPU (the parent GPU of a MIG instance): where the
    /// telemetry is read.
    pub nvml_index: Option<u32>,
}

impl ResolvedDevice {
    pub fn cpu(cpu_name: &str) -> ResolvedDevice {
        ResolvedDevice {
            description: DeviceDescription::cpu(cpu_name),
            device: Device::Cpu,
            nvml_index: None,
        }
    }
}

/// A GPU of this host that cannot be measured, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFailure {
    /// `cuda:N`, or `nvml:N` for a GPU NVML saw but could not read.
    pub id: String,
    pub name: String,
    pub reason: String,
}

impl fmt::Display for DeviceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.id, self.name, self.reason)
    }
}

/// What a selector resolved to.
#[derive(Debug, Default)]
pub struct Resolution {
    pub devices: Vec<ResolvedDevice>,
    pub failed: Vec<DeviceFailure>,
    /// Facts a report should carry, e.g. a MIG instance's shared telemetry.
    pub notes: Vec<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("{0}")]
    NotCompiled(&'static str),
    #[error("--device {selector}: {why}")]
    NoGpu { selector: String, why: String },
    #[error(
        "NVML failed ({0}): this host's GPUs can be neither measured nor described; check `nvidia-smi`, or run with --device cpu"
    )]
    Nvml(String),
    #[error("{0}")]
    Incompatible(String),
    #[error("CUDA failed ({0}) although NVML sees GPUs: check the driver with `nvidia-smi`")]
    Cuda(String),
    #[error("--device cuda:{asked}: this process sees {count} GPU(s){range}")]
    NoSuchOrdinal {
        asked: u32,
        count: usize,
        range: String,
    },
}

/// The devices `selector` means on this host, for a sweep in `dtype`.
pub fn resolve_devices(
    selector: DeviceSelector,
    dtype: Precision,
    gpu: &dyn GpuProbe,
    cuda: &dyn CudaRuntime,
    cpu_name: &str,
) -> Result<Resolution, DeviceError> {
    let on_cpu = |note: Option<String>| Resolution {
        devices: vec![ResolvedDevice::cpu(cpu_name)],
        failed: Vec::new(),
        notes: note.into_iter().collect(),
    };
    let no_gpu = |why: String| -> Result<Resolution, DeviceError> {
        match selector {
            DeviceSelector::Auto => Ok(on_cpu(None)),
            _ => Err(DeviceError::NoGpu {
                selector: selector.to_string(),
                why,
            }),
        }
    };
    let wanted = match selector {
        DeviceSelector::Cpu => return Ok(on_cpu(None)),
        DeviceSelector::Auto => None,
        DeviceSelector::Cuda(which) => which,
    };
    let Some(build) = cuda.build() else {
        return match selector {
            DeviceSelector::Auto => Ok(on_cpu(None)),
            _ => Err(DeviceError::NotCompiled(NOT_COMPILED)),
        };
    };
    let list = match gpu.gpus() {
        Ok(list) => list,
        Err(e @ (GpuProbeError::NoDriver(_) | GpuProbeError::NoDevices)) => {
            return no_gpu(e.to_string());
        }
        Err(GpuProbeError::Failed(why)) => return Err(DeviceError::Nvml(why)),
    };
    let mut failed: Vec<DeviceFailure> = list
        .failed
        .iter()
        .map(|f| DeviceFailure {
            id: format!("nvml:{}", f.nvml_index),
            name: "NVIDIA GPU".into(),
            reason: format!("NVML could not read it: {}", f.reason),
        })
        .collect();
    if list.gpus.is_empty() && !failed.is_empty() {
        // Every GPU NVML found is unreadable: the host fails with the reasons.
        return Ok(Resolution {
            failed,
            ..Resolution::default()
        });
    }
    let driver = list
        .gpus
        .iter()
        .find_map(|g| g.cuda_version.as_deref())
        .and_then(|v| v.parse::<CudaVersion>().ok());
    compat::check_driver(&build, driver).map_err(|e| DeviceError::Incompatible(e.to_string()))?;
    let cuda_devices = cuda.visible_devices().map_err(DeviceError::Cuda)?;
    if cuda_devices.is_empty() {
        let why = format!(
            "NVML sees {} GPU(s) but none is visible to this process (CUDA_VISIBLE_DEVICES={:?})",
            list.gpus.len(),
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default()
        );
        return match selector {
            DeviceSelector::Auto => Ok(on_cpu(Some(why))),
            _ => no_gpu(why),
        };
    }
    if let Some(asked) = wanted
        && !cuda_devices.iter().any(|(ordinal, _)| *ordinal == asked)
    {
        return Err(DeviceError::NoSuchOrdinal {
            asked,
            count: cuda_devices.len(),
            range: match cuda_devices.len() {
                0 => String::new(),
                n => format!(" (cuda:0 to cuda:{})", n - 1),
            },
        });
    }
    let physical: Vec<PhysicalGpu> = list.gpus.iter().map(PhysicalGpu::from_info).collect();
    let matches = visible::match_cuda_uuids(&cuda_devices, &physical);
    let mut resolution = Resolution::default();
    for ((ordinal, uuid), matched) in cuda_devices.iter().zip(matches) {
        if wanted.is_some_and(|asked| asked != *ordinal) {
            continue;
        }
        let id = format!("cuda:{ordinal}");
        let visible = match matched {
            Ok(v) => v,
            Err(_) => {
                failed.push(DeviceFailure {
                    id,
                    name: format!("GPU-{}", visible::format_uuid(uuid)),
                    reason: "CUDA sees this GPU but NVML does not list its UUID, so its telemetry would describe another card; check that NVML and CUDA come from the same driver".into(),
                });
                continue;
            }
        };
        let Some(info) = list.gpus.iter().find(|g| g.index == visible.nvml_index) else {
            continue;
        };
        let capability = info
            .compute_capability
            .as_deref()
            .and_then(visible::parse_compute_capability);
        let checked = match capability {
            Some(cc) => compat::check_gpu(&build, &info.name, cc)
                .and_then(|()| compat::check_dtype(&build, &info.name, cc, dtype))
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let opened = checked.and_then(|()| {
            cuda.open(*ordinal).map_err(|e| {
                // NVML knows the likely cause (compute mode, MIG); otherwise
                // name the candidates.
                let limits = gpu.access_limits(info.index);
                let why = if limits.is_empty() {
                    format!(
                        "an exclusive-process GPU busy with another process, a MIG GPU without a usable instance, or a fault: see `nvidia-smi -q -i {}`",
                        info.index
                    )
                } else {
                    limits
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                format!("cannot open it: {e} ({why})")
            })
        });
        match opened {
            Ok(device) => {
                if visible.mig {
                    resolution.notes.push(format!(
                        "{id} is MIG instance {} of {} (NVML index {}): power, energy, clocks and device memory are the whole GPU's",
                        visible.uuid, info.name, info.index
                    ));
                }
                resolution.devices.push(ResolvedDevice {
                    description: DeviceDescription {
                        id,
                        kind: DeviceKind::Cuda,
                        name: info.name.clone(),
                        simulated: false,
                    },
                    device,
                    nvml_index: Some(info.index),
                });
            }
            Err(reason) => failed.push(DeviceFailure {
                id,
                name: info.name.clone(),
                reason,
            }),
        }
    }
    resolution.failed = failed;
    Ok(resolution)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::probe::{GpuFailure, GpuList, GpuSample};
    use fleetbench_common::GpuInfo;

    const H100: &str = "GPU-11111111-2222-3333-4444-555555555555";
    const A100: &str = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const T4: &str = "GPU-77777777-7777-7777-7777-777777777777";
    const MIG: &str = "MIG-99999999-8888-7777-6666-555555555555";

    fn bytes(uuid: &str) -> [u8; 16] {
        let hex: String = uuid[4..].chars().filter(|c| *c != '-').collect();
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    fn gpu(index: u32, name: &str, uuid: &str, cc: &str) -> GpuInfo {
        GpuInfo {
            index,
            name: name.into(),
            uuid: uuid.into(),
            driver_version: "550.54.15".into(),
            cuda_version: Some("12.4".into()),
            compute_capability: Some(cc.into()),
            pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x10 + index)),
            ..GpuInfo::default()
        }
    }

    #[derive(Debug)]
    struct FakeNvml(Result<GpuList, GpuProbeError>);

    impl GpuProbe for FakeNvml {
        fn gpus(&self) -> Result<GpuList, GpuProbeError> {
            self.0.clone()
        }
        fn sample(&self, _: u32) -> Option<GpuSample> {
            None
        }
    }

    fn nvml(gpus: Vec<GpuInfo>) -> FakeNvml {
        FakeNvml(Ok(GpuList {
            gpus,
            failed: Vec::new(),
        }))
    }

    #[derive(Debug)]
    struct FakeCuda {
        build: Option<CudaBuild>,
        devices: Result<Vec<(u32, [u8; 16])>, String>,
        refuse: Vec<u32>,
        opened: Mutex<Vec<u32>>,
    }

    fn cuda(uuids: &[&str]) -> FakeCuda {
        FakeCuda {
            build: Some(CudaBuild {
                toolkit: CudaVersion {
                    major: 12,
                    minor: 2,
                },
                compute_cap: 80,
            }),
            devices: Ok(uuids
                .iter()
                .enumerate()
                .map(|(i, u)| (i as u32, bytes(u)))
                .collect()),
            refuse: Vec::new(),
            opened: Mutex::new(Vec::new()),
        }
    }

    impl CudaRuntime for FakeCuda {
        fn build(&self) -> Option<CudaBuild> {
            self.build
        }
        fn visible_devices(&self) -> Result<Vec<(u32, [u8; 16])>, String> {
            self.devices.clone()
        }
        fn open(&self, ordinal: u32) -> Result<Device, String> {
            if self.refuse.contains(&ordinal) {
                return Err("CUDA_ERROR_DEVICE_UNAVAILABLE".into());
            }
            self.opened.lock().expect("lock").push(ordinal);
            Ok(Device::Cpu)
        }
    }

    fn resolve(
        selector: &str,
        nvml: &FakeNvml,
        cuda: &FakeCuda,
    ) -> Result<Resolution, DeviceError> {
        resolve_devices(
            selector.parse().expect("selector"),
            Precision::F32,
            nvml,
            cuda,
            "test CPU",
        )
    }

    fn ids(r: &Resolution) -> Vec<(String, String, Option<u32>)> {
        r.devices
            .iter()
            .map(|d| {
                (
                    d.description.id.clone(),
                    d.description.name.clone(),
                    d.nvml_index,
                )
            })
            .collect()
    }

    #[test]
    fn cuda_ordinals_are_matched_to_nvml_by_uuid_not_by_position() {
        // NVML (PCI order): 0 = A100, 1 = H100. CUDA (fastest first): 0 = H100, 1 = A100.
        let nvml = nvml(vec![
            gpu(0, "NVIDIA A100-SXM4-80GB", A100, "8.0"),
            gpu(1, "NVIDIA H100 80GB HBM3", H100, "9.0"),
        ]);
        let r = resolve("auto", &nvml, &cuda(&[H100, A100])).expect("resolved");
        assert_eq!(
            ids(&r),
            vec![
                ("cuda:0".into(), "NVIDIA H100 80GB HBM3".into(), Some(1)),
                ("cuda:1".into(), "NVIDIA A100-SXM4-80GB".into(), Some(0)),
            ]
        );
        assert!(r.failed.is_empty());
    }

    #[test]
    fn with_cuda_visible_devices_only_the_visible_gpu_is_measured_with_its_own_telemetry() {
        // CUDA_VISIBLE_DEVICES=1: CUDA's only device, ordinal 0, is NVML's GPU 1.
        let nvml = nvml(vec![
            gpu(0, "NVIDIA H100 80GB HBM3", A100, "9.0"),
            gpu(1, "NVIDIA H100 80GB HBM3", H100, "9.0"),
        ]);
        let r = resolve("cuda", &nvml, &cuda(&[H100])).expect("resolved");
        assert_eq!(ids(&r)[0].2, Some(1));
        assert_eq!(ids(&r).len(), 1);
        let err = resolve("cuda:1", &nvml, &cuda(&[H100])).expect_err("no cuda:1");
        assert_eq!(
            err.to_string(),
            "--device cuda:1: this process sees 1 GPU(s) (cuda:0 to cuda:0)"
        );
    }

    #[test]
    fn one_gpu_that_cannot_be_opened_fails_alone() {
        let nvml = nvml(vec![
            gpu(0, "NVIDIA H100 80GB HBM3", H100, "9.0"),
            gpu(1, "NVIDIA A100-SXM4-80GB", A100, "8.0"),
        ]);
        let mut cuda = cuda(&[H100, A100]);
        cuda.refuse = vec![0];
        let r = resolve("auto", &nvml, &cuda).expect("resolved");
        assert_eq!(
            ids(&r),
            vec![("cuda:1".into(), "NVIDIA A100-SXM4-80GB".into(), Some(1))]
        );
        assert_eq!(r.failed.len(), 1);
        let text = r.failed[0].to_string();
        assert!(
            text.starts_with(
                "cuda:0 (NVIDIA H100 80GB HBM3): cannot open it: CUDA_ERROR_DEVICE_UNAVAILABLE"
            ),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_gpu_nvml_cannot_read_is_a_failed_device_and_the_others_go_on() {
        let nvml = FakeNvml(Ok(GpuList {
            gpus: vec![gpu(0, "NVIDIA H100 80GB HBM3", H100, "9.0")],
            failed: vec![GpuFailure {
                nvml_index: 1,
                reason: "GPU is lost".into(),
            }],
        }));
        let r = resolve("auto", &nvml, &cuda(&[H100])).expect("resolved");
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.failed[0].id, "nvml:1");
        assert!(r.failed[0].reason.contains("GPU is lost"));
    }

    #[test]
    fn an_nvml_failure_is_an_error_never_a_cpu_run() {
        let broken = FakeNvml(Err(GpuProbeError::Failed("Unknown Error".into())));
        let err = resolve("auto", &broken, &cuda(&[H100])).expect_err("nvml broken");
        assert!(matches!(err, DeviceError::Nvml(_)), "{err}");
        // No driver at all is a CPU host: auto runs on the CPU, cuda says why not.
        let absent = FakeNvml(Err(GpuProbeError::NoDriver(
            "libnvidia-ml.so.1 missing".into(),
        )));
        let r = resolve("auto", &absent, &cuda(&[])).expect("cpu");
        assert_eq!(ids(&r), vec![("cpu".into(), "test CPU".into(), None)]);
        assert!(matches!(
            resolve("cuda", &absent, &cuda(&[])),
            Err(DeviceError::NoGpu { .. })
        ));
    }

    #[test]
    fn a_driver_older_than_the_build_fails_the_host_with_the_compat_sentence() {
        let mut old = gpu(0, "NVIDIA A100-SXM4-80GB", A100, "8.0");
        old.cuda_version = Some("12.0".into());
        let err = resolve("auto", &nvml(vec![old]), &cuda(&[A100])).expect_err("too old");
        let text = err.to_string();
        assert!(matches!(err, DeviceError::Incompatible(_)));
        assert!(text.contains("12.0") && text.contains("12.2"), "{text}");
    }

    #[test]
    fn a_t4_under_the_sm80_build_and_bf16_below_sm80_fail_that_device_only() {
        let nvml = nvml(vec![
            gpu(0, "NVIDIA A100-SXM4-80GB", A100, "8.0"),
            gpu(1, "Tesla T4", T4, "7.5"),
        ]);
        let r = resolve("auto", &nvml, &cuda(&[A100, T4])).expect("resolved");
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.failed[0].id, "cuda:1");
        assert!(r.failed[0].reason.contains("7.5"), "{}", r.failed[0].reason);

        let mut turing = cuda(&[A100, T4]);
        turing.build = Some(CudaBuild {
            toolkit: CudaVersion {
                major: 12,
                minor: 2,
            },
            compute_cap: 75,
        });
        let r = resolve_devices(DeviceSelector::Auto, Precision::Bf16, &nvml, &turing, "cpu")
            .expect("resolved");
        // Neither runs bf16: the turing build has no bf16 kernels at all.
        assert!(r.devices.is_empty());
        assert_eq!(r.failed.len(), 2);
        assert!(
            r.failed.iter().all(|f| f.reason.contains("bf16")),
            "{:?}",
            r.failed
        );
        assert!(turing.opened.lock().expect("lock").is_empty());
    }

    #[test]
    fn a_mig_instance_is_measured_with_its_parent_gpus_telemetry_and_says_so() {
        let mut a100 = gpu(3, "NVIDIA A100-SXM4-80GB", A100, "8.0");
        a100.mig_instances = vec![MIG.into()];
        let r = resolve("auto", &nvml(vec![a100]), &cuda(&[MIG])).expect("resolved");
        assert_eq!(
            ids(&r),
            vec![("cuda:0".into(), "NVIDIA A100-SXM4-80GB".into(), Some(3))]
        );
        assert!(r.notes[0].contains("MIG"), "{:?}", r.notes);
    }

    #[test]
    fn a_cuda_device_nvml_does_not_know_is_failed_not_guessed() {
        let nvml = nvml(vec![gpu(0, "NVIDIA H100 80GB HBM3", H100, "9.0")]);
        let r = resolve("auto", &nvml, &cuda(&[H100, A100])).expect("resolved");
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.failed[0].id, "cuda:1");
        assert!(r.failed[0].reason.contains("NVML does not list"));
    }

    #[test]
    fn nothing_visible_to_cuda_means_the_cpu_for_auto_and_an_error_for_cuda() {
        let nvml = nvml(vec![gpu(0, "NVIDIA H100 80GB HBM3", H100, "9.0")]);
        let r = resolve("auto", &nvml, &cuda(&[])).expect("cpu");
        assert_eq!(ids(&r)[0].0, "cpu");
        assert!(r.notes[0].contains("none is visible"));
        assert!(resolve("cuda", &nvml, &cuda(&[])).is_err());
    }

    #[test]
    fn a_build_without_cuda_runs_auto_on_the_cpu_and_refuses_cuda() {
        let nvml = nvml(vec![gpu(0, "NVIDIA H100 80GB HBM3", H100, "9.0")]);
        let mut cpu_build = cuda(&[H100]);
        cpu_build.build = None;
        assert_eq!(
            ids(&resolve("auto", &nvml, &cpu_build).expect("cpu"))[0].0,
            "cpu"
        );
        let err = resolve("cuda:0", &nvml, &cpu_build).expect_err("not compiled");
        assert!(err.to_string().contains("without the `cuda` feature"));
    }
}
