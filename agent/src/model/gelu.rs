//! GELU (erf form) for f32 on the CPU, vectorisable.
//!
//! candle's `gelu_erf` calls a scalar `erf` per element: 51 instructions an
//! element and 8-10% of a DistilBERT forward on two cores, where PyTorch
//! spends a third of that (bench/RESULTS.md, "CPU: where the time goes").
//! Here erf is the rational approximation Eigen uses for f32
//! (`generic_fast_erf_float`, also XLA's and TVM's): x·P(x²)/Q(x²) on x
//! clamped to [-4, 4], where erf is ±1 to f32 precision beyond. It has no
//! branch and no libm call, so the loop compiles to SIMD arithmetic.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use super::cpu_f32::contiguous_f32;
use rayon::prelude::*;

/// P's coefficients (odd powers, x¹ to x¹³) and Q's (even, x⁰ to x⁸), as
/// Eigen publishes them (more digits than f32 keeps, for traceability).
#[allow(clippy::excessive_precision)]
const ALPHA: [f32; 7] = [
    -1.60960333262415e-02,
    -2.95459980854025e-03,
    -7.34990630326855e-04,
    -5.69250639462346e-05,
    -2.10102402082508e-06,
    2.77068142495902e-08,
    -2.72614225801306e-10,
];
#[allow(clippy::excessive_precision)]
const BETA: [f32; 5] = [
    -1.42647390514189e-02,
    -7.37332916720468e-03,
    -1.68282697438203e-03,
    -2.13374055278905e-04,
    -1.45660718464996e-05,
];

#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for a in ALPHA[..6].iter().rev() {
        p = p * x2 + a;
    }
    let mut q = BETA[4];
    for b in BETA[..4].iter().rev() {
        q = q * x2 + b;
    }
    x * p / q
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let g = 0.5 * x * (1.0 + erf(z));
    // Beyond the clamp erf is ±1 exactly in f32, but the approximation at
    // ±4 is 6e-8 short of it, which a large |x| would multiply: take the
    // limits there (selects, which vectorise like the rest).
    if z <= -4.0 {
        0.0
    } else if z >= 4.0 {
        x
    } else {
        g
    }
}

/// The op, for `Tensor::apply_op1_no_bwd`: f32 CPU storage only.
struct GeluErfF32;

impl CustomOp1 for GeluErfF32 {
    fn name(&self) -> &'static str {
        "gelu-erf-f32-rational"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0.0f32; src.len()];
        // Chunks of 64 Ki elements over the threads (a batch-8 FFN
        // activation is 3 Mi elements); each chunk's loop vectorises.
        out.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(out, src)| {
                for (o, &x) in out.iter_mut().zip(src) {
                    *o = gelu(x);
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// GELU in place over a slice, its chunks over the threads: the
/// feed-forward activation of the CPU forward, whose output already holds
/// `x·W + bias` (`dense.rs`).
pub(super) fn gelu_in_place(xs: &mut [f32]) {
    xs.par_chunks_mut(1 << 16).for_each(|chunk| {
        for x in chunk {
            *x = gelu(*x);
        }
    });
}

/// GELU with erf: the vectorisable form for contiguous f32 tensors on the
/// CPU, candle's own everywhere else (GPUs, half precision).
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        x.apply_op1_no_bwd(&GeluErfF32)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candles_exact_gelu_to_f32_precision() {
        // -12 to 12 in steps of 1/1024, and the extremes.
        let mut xs: Vec<f32> = (-12 * 1024..=12 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        xs.extend([-1e30, -100.0, 100.0, 1e30, 0.0, -0.0]);
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).expect("tensor");
        let fast = gelu_erf(&t).expect("fast").to_vec1::<f32>().expect("vec");
        let exact = t.gelu_erf().expect("exact").to_vec1::<f32>().expect("vec");
        let mut worst = (0.0f32, 0.0f32);
        for (x, (f, e)) in xs.iter().zip(fast.iter().zip(&exact)) {
            // Relative to the value's size, with an absolute floor near 0.
            let err = (f - e).abs() / e.abs().max(1.0);
            if err > worst.0 {
                worst = (err, *x);
            }
        }
        assert!(
            worst.0 < 2e-6,
            "largest error {:e} at x = {}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn other_dtypes_and_layouts_use_candles_op() {
        let t = Tensor::new(&[[1.0f32, -2.0], [0.5, 3.0]], &Device::Cpu).expect("tensor");
        let transposed = t.t().expect("t");
        let a = gelu_erf(&transposed)
            .expect("gelu")
            .to_vec2::<f32>()
            .expect("vec");
        let b = transposed
            .gelu_erf()
            .expect("gelu")
            .to_vec2::<f32>()
            .expect("vec");
        assert_eq!(a, b);
        let half = t.to_dtype(DType::BF16).expect("bf16");
        assert_eq!(gelu_erf(&half).expect("gelu").dtype(), DType::BF16);
    }

    #[test]
    fn in_place_gelu_equals_the_op() {
        let x = Tensor::randn(0f32, 2.0, (37, 50), &Device::Cpu).expect("x");
        let mut in_place = x
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec");
        gelu_in_place(&mut in_place);
        let op = gelu_erf(&x)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec");
        assert_eq!(in_place, op);
    }
}
