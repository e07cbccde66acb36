//! Peak rates of GPU models, for "share of peak" figures and for simulated hosts.
//!
//! Dense (no structured sparsity) tensor-core rates from NVIDIA's data sheets:
//! T4 (Tesla T4 data sheet, 2019), A10 (A10 data sheet, 2021), L4 (L4 data
//! sheet, 2023), L40S (L40S data sheet, 2023), A100 (A100 data sheet, 2021:
//! 312 TFLOPS BF16, 19.5 FP32), H100 (H100 data sheet, 2023: SXM 989 / PCIe 756
//! TFLOPS BF16), H200 (H200 data sheet, 2024: same SM array as H100 SXM) and
//! B200 (DGX B200 data sheet, 2024: 2.25 PFLOPS dense BF16 per GPU). The sheets
//! quote sparse rates for tensor cores; those are halved here. A model not in
//! the table gets no peak: it is never guessed.

use serde::Serialize;

use crate::spec::Precision;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GpuModelSpec {
    /// Short name used in reports and `--simulate`, e.g. "H100-SXM".
    pub key: &'static str,
    /// Architecture generation, e.g. "Hopper".
    pub generation: &'static str,
    /// Substrings of NVML's name that identify the model (all must match).
    pub name_contains: &'static [&'static str],
    pub fp32_tflops: f64,
    /// Dense FP16/BF16 tensor-core rate (T4: FP16 only, see `bf16`).
    pub fp16_tflops: f64,
    pub bf16_tflops: Option<f64>,
    pub memory_gib: f64,
    pub memory_bandwidth_gbs: f64,
    pub tdp_watts: f64,
    /// Boost SM clock from the same data sheets; simulated hosts report it.
    pub boost_clock_mhz: f64,
}

impl GpuModelSpec {
    pub fn peak_tflops(&self, dtype: Precision) -> Option<f64> {
        match dtype {
            Precision::F32 => Some(self.fp32_tflops),
            Precision::F16 => Some(self.fp16_tflops),
            Precision::Bf16 => self.bf16_tflops,
        }
    }
}

pub const GPU_MODELS: &[GpuModelSpec] = &[
    GpuModelSpec {
        key: "T4",
        generation: "Turing",
        name_contains: &["T4"],
        fp32_tflops: 8.1,
        fp16_tflops: 65.0,
        bf16_tflops: None,
        memory_gib: 16.0,
        memory_bandwidth_gbs: 320.0,
        tdp_watts: 70.0,
        boost_clock_mhz: 1590.0,
    },
    GpuModelSpec {
        key: "A10",
        generation: "Ampere",
        name_contains: &["A10"],
        fp32_tflops: 31.2,
        fp16_tflops: 125.0,
        bf16_tflops: Some(125.0),
        memory_gib: 24.0,
        memory_bandwidth_gbs: 600.0,
        tdp_watts: 150.0,
        boost_clock_mhz: 1695.0,
    },
    GpuModelSpec {
        key: "L4",
        generation: "Ada Lovelace",
        name_contains: &["L4"],
        fp32_tflops: 30.3,
        fp16_tflops: 121.0,
        bf16_tflops: Some(121.0),
        memory_gib: 24.0,
        memory_bandwidth_gbs: 300.0,
        tdp_watts: 72.0,
        boost_clock_mhz: 2040.0,
    },
    GpuModelSpec {
        key: "L40S",
        generation: "Ada Lovelace",
        name_contains: &["L40S"],
        fp32_tflops: 91.6,
        fp16_tflops: 362.0,
        bf16_tflops: Some(362.0),
        memory_gib: 48.0,
        memory_bandwidth_gbs: 864.0,
        tdp_watts: 350.0,
        boost_clock_mhz: 2520.0,
    },
    GpuModelSpec {
        key: "A100-40GB",
        generation: "Ampere",
        name_contains: &["A100", "40GB"],
        fp32_tflops: 19.5,
        fp16_tflops: 312.0,
        bf16_tflops: Some(312.0),
        memory_gib: 40.0,
        memory_bandwidth_gbs: 1555.0,
        tdp_watts: 400.0,
        boost_clock_mhz: 1410.0,
    },
    GpuModelSpec {
        key: "A100-80GB",
        generation: "Ampere",
        name_contains: &["A100", "80GB"],
        fp32_tflops: 19.5,
        fp16_tflops: 312.0,
        bf16_tflops: Some(312.0),
        memory_gib: 80.0,
        memory_bandwidth_gbs: 2039.0,
        tdp_watts: 400.0,
        boost_clock_mhz: 1410.0,
    },
    GpuModelSpec {
        key: "H100-PCIe",
        generation: "Hopper",
        name_contains: &["H100", "PCIe"],
        fp32_tflops: 51.2,
        fp16_tflops: 756.0,
        bf16_tflops: Some(756.0),
        memory_gib: 80.0,
        memory_bandwidth_gbs: 2000.0,
        tdp_watts: 350.0,
        boost_clock_mhz: 1755.0,
    },
    GpuModelSpec {
        key: "H100-SXM",
        generation: "Hopper",
        name_contains: &["H100"],
        fp32_tflops: 66.9,
        fp16_tflops: 989.0,
        bf16_tflops: Some(989.0),
        memory_gib: 80.0,
        memory_bandwidth_gbs: 3350.0,
        tdp_watts: 700.0,
        boost_clock_mhz: 1980.0,
    },
    GpuModelSpec {
        key: "H200",
        generation: "Hopper",
        name_contains: &["H200"],
        fp32_tflops: 66.9,
        fp16_tflops: 989.0,
        bf16_tflops: Some(989.0),
        memory_gib: 141.0,
        memory_bandwidth_gbs: 4800.0,
        tdp_watts: 700.0,
        boost_clock_mhz: 1980.0,
    },
    GpuModelSpec {
        key: "B200",
        generation: "Blackwell",
        name_contains: &["B200"],
        fp32_tflops: 80.0,
        fp16_tflops: 2250.0,
        bf16_tflops: Some(2250.0),
        memory_gib: 180.0,
        memory_bandwidth_gbs: 8000.0,
        tdp_watts: 1000.0,
        boost_clock_mhz: 1965.0,
    },
];

/// The table entry for a `--simulate` key or an NVML device name, if known.
///
/// Keys match exactly (case-insensitive); NVML names match by substrings, most
/// specific entry first (so "NVIDIA H100 PCIe" is the PCIe card, not the SXM).
pub fn lookup_gpu_model(name: &str) -> Option<&'static GpuModelSpec> {
    let upper = name.to_ascii_uppercase();
    if let Some(spec) = GPU_MODELS
        .iter()
        .find(|m| m.key.eq_ignore_ascii_case(name.trim()))
    {
        return Some(spec);
    }
    GPU_MODELS
        .iter()
        .filter(|m| {
            m.name_contains
                .iter()
                .all(|p| contains_token(&upper, &p.to_ascii_uppercase()))
        })
        .max_by_key(|m| m.name_contains.len())
}

/// Achieved GFLOP/s as a share of the device's dense peak for `dtype`; `None`
/// for CPUs and for GPU models not in the table (never guessed).
pub fn peak_share(
    device: &crate::result::DeviceDescription,
    dtype: Precision,
    gflops: f64,
) -> Option<f64> {
    if device.kind != crate::result::DeviceKind::Cuda {
        return None;
    }
    let peak = lookup_gpu_model(&device.name)?.peak_tflops(dtype)?;
    Some(gflops / (peak * 1e3))
}

/// `needle` occurs in `hay` and is not the prefix of a longer alphanumeric
/// word ("L4" must not match "L40S").
fn contains_token(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let end = i + needle.len();
        hay[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_names_find_the_right_model() {
        let key = |n: &str| lookup_gpu_model(n).map(|m| m.key);
        assert_eq!(key("NVIDIA H100 80GB HBM3"), Some("H100-SXM"));
        assert_eq!(key("NVIDIA H100 PCIe"), Some("H100-PCIe"));
        assert_eq!(key("NVIDIA H200"), Some("H200"));
        assert_eq!(key("NVIDIA A100-SXM4-40GB"), Some("A100-40GB"));
        assert_eq!(key("NVIDIA L40S"), Some("L40S"));
        assert_eq!(key("NVIDIA L4"), Some("L4"));
        assert_eq!(key("Tesla T4"), Some("T4"));
        assert_eq!(key("a10"), Some("A10"));
        assert_eq!(key("NVIDIA GeForce RTX 4090"), None);
    }

    #[test]
    fn peak_share_is_only_given_for_known_gpus() {
        use crate::result::{DeviceDescription, DeviceKind};
        let h100 = DeviceDescription {
            id: "cuda:0".into(),
            kind: DeviceKind::Cuda,
            name: "NVIDIA H100 80GB HBM3".into(),
            simulated: false,
        };
        // 98.9 TFLOP/s achieved in bf16 on a 989 TFLOP/s card is 10%.
        let share = peak_share(&h100, Precision::Bf16, 98_900.0).expect("known card");
        assert!((share - 0.1).abs() < 1e-12);
        let unknown = DeviceDescription {
            name: "NVIDIA GeForce RTX 4090".into(),
            ..h100.clone()
        };
        assert_eq!(peak_share(&unknown, Precision::Bf16, 1.0), None);
        assert_eq!(
            peak_share(&DeviceDescription::cpu("Xeon"), Precision::F32, 1.0),
            None
        );
    }

    #[test]
    fn peaks_are_dense_rates() {
        let h100 = lookup_gpu_model("H100-SXM").expect("known");
        assert_eq!(h100.peak_tflops(Precision::Bf16), Some(989.0));
        assert_eq!(
            lookup_gpu_model("T4").and_then(|m| m.peak_tflops(Precision::Bf16)),
            None
        );
    }
}
