//! Whether this agent's CUDA build can run on the host's driver and GPUs,
//! and the one-line sentence that says what to do when it cannot.
//!
//! Two facts of candle's CUDA build decide it. Its kernels are PTX compiled
//! by nvcc for one compute capability (`CUDA_COMPUTE_CAP`): the driver
//! JIT-compiles that PTX at load time, which works on that capability and
//! every newer one, and only with a driver that supports the PTX's CUDA
//! version, i.e. at least the nvcc release that wrote it (CUDA's minor-version
//! compatibility covers SASS, not PTX). And candle's bf16 kernels exist only
//! from compute 8.0.

use std::fmt;
use std::str::FromStr;

use fleetbench_common::Precision;

/// A CUDA version, e.g. 12.2 (the toolkit's release, or the newest CUDA a
/// driver supports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CudaVersion {
    pub major: u32,
    pub minor: u32,
}

/// Text that is not a CUDA version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a CUDA version such as 12.2")]
pub struct BadCudaVersion(pub String);

impl CudaVersion {
    pub const fn new(major: u32, minor: u32) -> CudaVersion {
        CudaVersion { major, minor }
    }

    /// NVML's `nvmlSystemGetCudaDriverVersion` integer: 12020 is 12.2; `None`
    /// for a value that is no version (zero or negative).
    pub fn from_nvml(version: i32) -> Option<CudaVersion> {
        if version <= 0 {
            return None;
        }
        let major = u32::try_from(nvml_wrapper::cuda_driver_version_major(version)).ok()?;
        let minor = u32::try_from(nvml_wrapper::cuda_driver_version_minor(version)).ok()?;
        Some(CudaVersion { major, minor })
    }
}

impl FromStr for CudaVersion {
    type Err = BadCudaVersion;

    /// "12.2", or "12.2.140" (the patch level is dropped).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCudaVersion(text.to_string());
        let mut parts = text.trim().split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if parts.any(|p| p.parse::<u32>().is_err()) {
            return Err(bad());
        }
        Ok(CudaVersion { major, minor })
    }
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The oldest Linux driver branch that supports each CUDA release (NVIDIA's
/// CUDA Toolkit release notes, table 3). There was no CUDA 12.7.
const DRIVER_BRANCHES: &[(CudaVersion, u32)] = &[
    (CudaVersion::new(11, 0), 450),
    (CudaVersion::new(11, 1), 455),
    (CudaVersion::new(11, 2), 460),
    (CudaVersion::new(11, 3), 465),
    (CudaVersion::new(11, 4), 470),
    (CudaVersion::new(11, 5), 495),
    (CudaVersion::new(11, 6), 510),
    (CudaVersion::new(11, 7), 515),
    (CudaVersion::new(11, 8), 520),
    (CudaVersion::new(12, 0), 525),
    (CudaVersion::new(12, 1), 530),
    (CudaVersion::new(12, 2), 535),
    (CudaVersion::new(12, 3), 545),
    (CudaVersion::new(12, 4), 550),
    (CudaVersion::new(12, 5), 555),
    (CudaVersion::new(12, 6), 560),
    (CudaVersion::new(12, 8), 570),
    (CudaVersion::new(12, 9), 575),
    (CudaVersion::new(13, 0), 580),
];

/// The first driver branch that supports `version` (`None` past the table).
pub fn minimum_driver_branch(version: CudaVersion) -> Option<u32> {
    DRIVER_BRANCHES
        .iter()
        .find(|(v, _)| *v >= version)
        .map(|(_, branch)| *branch)
}

/// What to update the driver to for `toolkit`.
fn driver_advice(toolkit: CudaVersion) -> String {
    match minimum_driver_branch(toolkit) {
        Some(branch) => format!("update the driver to R{branch} or newer"),
        None => format!("update the driver to one that supports CUDA {toolkit}"),
    }
}

/// The compute capability whose kernels the `fleet` build carries (PTX that
/// every newer GPU compiles at load); `turing` is the build for compute 7.5.
pub const FLEET_COMPUTE_CAP: u32 = 80;
/// The `turing` build's compute capability: T4 and the other Turing cards.
pub const TURING_COMPUTE_CAP: u32 = 75;
/// candle has bf16 kernels only from this compute capability on.
pub const BF16_COMPUTE_CAP: u32 = 80;

/// A `CUDA_COMPUTE_CAP`-style number as text: 80 is "8.0", 120 is "12.0".
pub fn compute_cap_text(cap: u32) -> String {
    format!("{}.{}", cap / 10, cap % 10)
}

/// (8, 6) -> 86, the form `CUDA_COMPUTE_CAP` uses.
pub fn compute_cap_number((major, minor): (u32, u32)) -> u32 {
    major * 10 + minor
}

/// The name a build goes by: `fleet`, `turing`, or its compute capability.
pub fn build_name(compute_cap: u32) -> String {
    match compute_cap {
        FLEET_COMPUTE_CAP => "fleet build".to_string(),
        TURING_COMPUTE_CAP => "turing build".to_string(),
        cap => format!("compute {} build", compute_cap_text(cap)),
    }
}

/// This agent's CUDA build: the nvcc release that compiled its kernels and
/// the compute capability they target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaBuild {
    pub toolkit: CudaVersion,
    /// `CUDA_COMPUTE_CAP` as candle's build read it, e.g. 80.
    pub compute_cap: u32,
}

impl CudaBuild {
    /// The build facts agent/build.rs recorded; `None` in a build without the
    /// `cuda` feature, or when build.rs could not read them (then nothing
    /// can be checked, see [`build_description`]).
    pub fn this_build() -> Option<CudaBuild> {
        if !cfg!(feature = "cuda") {
            return None;
        }
        CudaBuild::from_build_env(
            option_env!("FLEETBENCH_CUDA_BUILD_VERSION"),
            option_env!("FLEETBENCH_CUDA_COMPUTE_CAP"),
        )
    }

    /// The facts from build.rs's text ("12.2", "80"; "unknown" when it could
    /// not tell). A capability such as "90a" counts as 90.
    pub fn from_build_env(toolkit: Option<&str>, compute_cap: Option<&str>) -> Option<CudaBuild> {
        let toolkit = toolkit?.parse().ok()?;
        let cap_text = compute_cap?.trim();
        let digits = &cap_text[..cap_text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(cap_text.len())];
        let compute_cap = digits.parse().ok().filter(|c| *c > 0)?;
        Some(CudaBuild {
            toolkit,
            compute_cap,
        })
    }

    /// Whether candle has bf16 kernels in this build.
    pub fn has_bf16(&self) -> bool {
        self.compute_cap >= BF16_COMPUTE_CAP
    }

    /// "CUDA 12.2, kernels for compute 8.0 (fleet build)".
    pub fn describe(&self) -> String {
        format!(
            "CUDA {}, kernels for compute {} ({})",
            self.toolkit,
            compute_cap_text(self.compute_cap),
            build_name(self.compute_cap)
        )
    }
}

/// What `HostInventory.cuda_build` says of this agent: `None` without CUDA.
pub fn build_description() -> Option<String> {
    if !cfg!(feature = "cuda") {
        return None;
    }
    Some(match CudaBuild::this_build() {
        Some(build) => build.describe(),
        None => "CUDA (toolkit version and kernel target unknown: the build could not read nvcc --version or CUDA_COMPUTE_CAP)".to_string(),
    })
}

/// Why this build cannot run (or cannot run a dtype) on this host. Each
/// message is one line that says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Incompatibility {
    /// The driver cannot JIT-compile PTX newer than the CUDA it supports.
    #[error(
        "the NVIDIA driver supports CUDA {driver} but this agent was built with CUDA {toolkit}: {}",
        driver_advice(*.toolkit)
    )]
    DriverTooOld {
        driver: CudaVersion,
        toolkit: CudaVersion,
    },
    /// PTX for compute X runs on X and newer only.
    #[error(
        "{gpu} is compute {}.{} but this agent's kernels need compute {} or newer: {}",
        .compute.0,
        .compute.1,
        compute_cap_text(*.build_compute_cap),
        gpu_advice(*.compute)
    )]
    GpuTooOld {
        gpu: String,
        compute: (u32, u32),
        build_compute_cap: u32,
    },
    /// candle's bf16 kernels need compute 8.0.
    #[error(
        "bf16 needs compute 8.0 or newer; {gpu} is compute {}.{}: use --dtype f16 or f32",
        .compute.0,
        .compute.1
    )]
    Bf16Unsupported { gpu: String, compute: (u32, u32) },
    /// A build for compute below 8.0 has no bf16 kernels, whatever the GPU.
    #[error(
        "this agent is the {}, which has no bf16 kernels: use the fleet build for bf16",
        build_name(*.build_compute_cap)
    )]
    Bf16NotInBuild { build_compute_cap: u32 },
}

/// Which build a GPU too old for this one should run.
fn gpu_advice(compute: (u32, u32)) -> String {
    let cap = compute_cap_number(compute);
    if cap >= FLEET_COMPUTE_CAP {
        "run the `fleet` build (deploy/cuda/build.sh build fleet) on this host".to_string()
    } else if cap >= TURING_COMPUTE_CAP {
        "run the `turing` build (deploy/cuda/build.sh build turing) on this host".to_string()
    } else {
        format!(
            "fleetbench's GPU builds need compute {} or newer: use --device cpu on this host",
            compute_cap_text(TURING_COMPUTE_CAP)
        )
    }
}

/// Whether the driver can load this build's kernels. `driver` is the newest
/// CUDA the driver supports (NVML); when it is unknown the check passes: the
/// version has been readable since R410, so an unknown one is a broken NVML
/// whose fault the GPU sweep reports anyway, and a driver that really is too
/// old then fails at CUDA start with CUDA's own error rather than being
/// refused on a guess.
pub fn check_driver(build: &CudaBuild, driver: Option<CudaVersion>) -> Result<(), Incompatibility> {
    match driver {
        Some(driver) if driver < build.toolkit => Err(Incompatibility::DriverTooOld {
            driver,
            toolkit: build.toolkit,
        }),
        _ => Ok(()),
    }
}

/// Whether this build's kernels run on a GPU of compute capability `compute`.
pub fn check_gpu(build: &CudaBuild, gpu: &str, compute: (u32, u32)) -> Result<(), Incompatibility> {
    if compute_cap_number(compute) < build.compute_cap {
        return Err(Incompatibility::GpuTooOld {
            gpu: gpu.to_string(),
            compute,
            build_compute_cap: build.compute_cap,
        });
    }
    Ok(())
}

/// Whether `dtype` can run on this GPU with this build (f32 and f16 always
/// can on the GPUs a build runs on; bf16 needs compute 8.0 in both).
pub fn check_dtype(
    build: &CudaBuild,
    gpu: &str,
    compute: (u32, u32),
    dtype: Precision,
) -> Result<(), Incompatibility> {
    if dtype != Precision::Bf16 {
        return Ok(());
    }
    if compute_cap_number(compute) < BF16_COMPUTE_CAP {
        return Err(Incompatibility::Bf16Unsupported {
            gpu: gpu.to_string(),
            compute,
        });
    }
    if !build.has_bf16() {
        return Err(Incompatibility::Bf16NotInBuild {
            build_compute_cap: build.compute_cap,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET_12_2: CudaBuild = CudaBuild {
        toolkit: CudaVersion::new(12, 2),
        compute_cap: 80,
    };
    const TURING_12_2: CudaBuild = CudaBuild {
        toolkit: CudaVersion::new(12, 2),
        compute_cap: 75,
    };

    #[test]
    fn versions_parse_print_and_order() {
        assert_eq!("12.2".parse(), Ok(CudaVersion::new(12, 2)));
        assert_eq!("12.2.140".parse(), Ok(CudaVersion::new(12, 2)));
        assert_eq!(" 13.0 ".parse(), Ok(CudaVersion::new(13, 0)));
        for bad in ["12", "", "twelve.2", "12.x", "12.2.x"] {
            assert!(bad.parse::<CudaVersion>().is_err(), "{bad}");
        }
        assert_eq!(CudaVersion::new(12, 10).to_string(), "12.10");
        assert!(CudaVersion::new(12, 10) > CudaVersion::new(12, 9));
        assert!(CudaVersion::new(13, 0) > CudaVersion::new(12, 9));
        assert_eq!(CudaVersion::from_nvml(12020), Some(CudaVersion::new(12, 2)));
        assert_eq!(CudaVersion::from_nvml(11080), Some(CudaVersion::new(11, 8)));
        assert_eq!(CudaVersion::from_nvml(-1), None);
    }

    #[test]
    fn build_facts_come_from_build_rs_text() {
        assert_eq!(
            CudaBuild::from_build_env(Some("12.2"), Some("80")),
            Some(FLEET_12_2)
        );
        assert_eq!(
            CudaBuild::from_build_env(Some("12.8"), Some("90a")).map(|b| b.compute_cap),
            Some(90)
        );
        assert_eq!(CudaBuild::from_build_env(Some("unknown"), Some("80")), None);
        assert_eq!(
            CudaBuild::from_build_env(Some("12.2"), Some("unknown")),
            None
        );
        assert_eq!(CudaBuild::from_build_env(None, None), None);
        // This test binary is a CPU build.
        if !cfg!(feature = "cuda") {
            assert_eq!(CudaBuild::this_build(), None);
            assert_eq!(build_description(), None);
        }
    }

    #[test]
    fn builds_describe_themselves() {
        assert_eq!(
            FLEET_12_2.describe(),
            "CUDA 12.2, kernels for compute 8.0 (fleet build)"
        );
        assert_eq!(
            TURING_12_2.describe(),
            "CUDA 12.2, kernels for compute 7.5 (turing build)"
        );
        assert!(FLEET_12_2.has_bf16());
        assert!(!TURING_12_2.has_bf16());
        assert_eq!(compute_cap_text(120), "12.0");
    }

    #[test]
    fn a_driver_older_than_the_toolkit_is_refused_with_the_branch_to_install() {
        // R525 supports CUDA 12.0.
        let err = check_driver(&FLEET_12_2, Some(CudaVersion::new(12, 0))).expect_err("too old");
        assert_eq!(
            err.to_string(),
            "the NVIDIA driver supports CUDA 12.0 but this agent was built with CUDA 12.2: update the driver to R535 or newer"
        );
        let cuda13 = CudaBuild {
            toolkit: CudaVersion::new(13, 0),
            ..FLEET_12_2
        };
        assert!(
            check_driver(&cuda13, Some(CudaVersion::new(12, 9)))
                .expect_err("too old")
                .to_string()
                .ends_with("update the driver to R580 or newer")
        );
        let future = CudaBuild {
            toolkit: CudaVersion::new(14, 1),
            ..FLEET_12_2
        };
        assert!(
            check_driver(&future, Some(CudaVersion::new(13, 0)))
                .expect_err("too old")
                .to_string()
                .ends_with("update the driver to one that supports CUDA 14.1")
        );
    }

    #[test]
    fn the_same_or_a_newer_driver_or_an_unknown_one_passes() {
        assert_eq!(
            check_driver(&FLEET_12_2, Some(CudaVersion::new(12, 2))),
            Ok(())
        );
        assert_eq!(
            check_driver(&FLEET_12_2, Some(CudaVersion::new(12, 4))),
            Ok(())
        );
        assert_eq!(
            check_driver(&FLEET_12_2, Some(CudaVersion::new(13, 0))),
            Ok(())
        );
        assert_eq!(check_driver(&FLEET_12_2, None), Ok(()));
    }

    #[test]
    fn driver_branches_cover_releases_between_rows() {
        assert_eq!(minimum_driver_branch(CudaVersion::new(12, 2)), Some(535));
        // 12.7 was never released: the next row's branch supports it.
        assert_eq!(minimum_driver_branch(CudaVersion::new(12, 7)), Some(570));
        assert_eq!(minimum_driver_branch(CudaVersion::new(13, 1)), None);
    }

    #[test]
    fn a_gpu_below_the_kernels_target_is_sent_to_the_build_that_fits() {
        let t4 = check_gpu(&FLEET_12_2, "NVIDIA T4", (7, 5)).expect_err("too old");
        assert_eq!(
            t4.to_string(),
            "NVIDIA T4 is compute 7.5 but this agent's kernels need compute 8.0 or newer: run the `turing` build (deploy/cuda/build.sh build turing) on this host"
        );
        let v100 = check_gpu(&TURING_12_2, "Tesla V100", (7, 0)).expect_err("too old");
        assert!(
            v100.to_string().ends_with("use --device cpu on this host"),
            "{v100}"
        );
        let hopper_build = CudaBuild {
            compute_cap: 90,
            ..FLEET_12_2
        };
        let a100 = check_gpu(&hopper_build, "NVIDIA A100", (8, 0)).expect_err("too old");
        assert!(a100.to_string().contains("the `fleet` build"), "{a100}");
    }

    #[test]
    fn a_gpu_at_or_above_the_target_runs() {
        assert_eq!(check_gpu(&FLEET_12_2, "NVIDIA A100", (8, 0)), Ok(()));
        assert_eq!(check_gpu(&FLEET_12_2, "NVIDIA H100", (9, 0)), Ok(()));
        assert_eq!(check_gpu(&FLEET_12_2, "NVIDIA L4", (8, 9)), Ok(()));
        assert_eq!(check_gpu(&TURING_12_2, "NVIDIA T4", (7, 5)), Ok(()));
    }

    #[test]
    fn bf16_needs_an_ampere_gpu_and_the_fleet_build() {
        let on_t4 =
            check_dtype(&TURING_12_2, "NVIDIA T4", (7, 5), Precision::Bf16).expect_err("no bf16");
        assert_eq!(
            on_t4.to_string(),
            "bf16 needs compute 8.0 or newer; NVIDIA T4 is compute 7.5: use --dtype f16 or f32"
        );
        let turing_on_a100 = check_dtype(&TURING_12_2, "NVIDIA A100", (8, 0), Precision::Bf16)
            .expect_err("no bf16 kernels");
        assert_eq!(
            turing_on_a100.to_string(),
            "this agent is the turing build, which has no bf16 kernels: use the fleet build for bf16"
        );
        assert_eq!(
            check_dtype(&FLEET_12_2, "NVIDIA A100", (8, 0), Precision::Bf16),
            Ok(())
        );
        for dtype in [Precision::F32, Precision::F16] {
            assert_eq!(
                check_dtype(&TURING_12_2, "NVIDIA T4", (7, 5), dtype),
                Ok(())
            );
        }
    }
}
