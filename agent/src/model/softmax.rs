//! The attention's mask addition and softmax fused into one pass, for f32
//! on the CPU.
//!
//! candle adds the mask (a new (b, h, s, s) tensor) and then runs its
//! softmax with a scalar `exp` per element: 5-6% of a forward at batch 8 on
//! two cores, plus the add. Here each row of scores gets its mask, its
//! maximum, a vectorisable `exp` (Cephes' `expf`: a degree-5 polynomial on
//! the reduced argument and the exponent set through the float's bits), its
//! sum and its scaling in one pass, rows split over the threads.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gelu::contiguous_f32;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts, so that n·ln2 is subtracted without rounding error.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf`'s polynomial for e^r - 1 - r on [-ln2/2, ln2/2].
#[allow(clippy::excessive_precision)]
const P: [f32; 6] = [
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
];
/// 1.5·2²³: adding it rounds a float to an integer, without a libm call.
const ROUND: f32 = 12_582_912.0;

/// e^x, within a few ulp for x in [-87, 88]; below, the smallest normal
/// float's scale (about 1e-38, where e^x itself would be 0 or subnormal).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // The integer n sits in t's low mantissa bits.
    let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    e * scale
}

/// One row: `dst = softmax(src + mask)`.
fn masked_softmax_row(src: &[f32], mask: &[f32], dst: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for ((d, s), m) in dst.iter_mut().zip(src).zip(mask) {
        *d = s + m;
        max = max.max(*d);
    }
    // Eight partial sums, so that the sum vectorises too.
    let mut sums = [0.0f32; 8];
    for chunk in dst.chunks_mut(8) {
        for (d, acc) in chunk.iter_mut().zip(sums.iter_mut()) {
            *d = exp(*d - max);
            *acc += *d;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

/// scores (b, h, s, s) and the additive mask (b, 1, 1, s), both f32 and
/// contiguous on the CPU.
struct MaskedSoftmaxF32;

impl CustomOp2 for MaskedSoftmaxF32 {
    fn name(&self) -> &'static str {
        "masked-softmax-f32"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let scores_data = contiguous_f32(scores, scores_layout, self.name())?;
        let mask_data = contiguous_f32(mask, mask_layout, self.name())?;
        let (b, h, q, k) = scores_layout.shape().dims4()?;
        if mask_layout.shape().dims() != [b, 1, 1, k] || q == 0 || k == 0 {
            candle_core::bail!("masked-softmax-f32: the mask must be (b, 1, 1, s)")
        }
        let (scores, mask) = (scores_data, mask_data);
        let mut dst = vec![0.0f32; scores.len()];
        let rows_per_batch = h * q;
        dst.par_chunks_mut(k)
            .zip(scores.par_chunks(k))
            .enumerate()
            .for_each(|(row, (dst, src))| {
                let batch = row / rows_per_batch;
                masked_softmax_row(src, &mask[batch * k..(batch + 1) * k], dst);
            });
        Ok((CpuStorage::F32(dst), scores_layout.shape().clone()))
    }
}

/// softmax(scores + mask) over the last dimension in one pass, where it
/// applies (f32, CPU, contiguous, mask of shape (b, 1, 1, s)); `None`
/// elsewhere, for the caller's general path.
pub(crate) fn fused_masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Option<Tensor>> {
    let applies = scores.device().is_cpu()
        && scores.dtype() == DType::F32
        && mask.dtype() == DType::F32
        && scores.is_contiguous()
        && mask.is_contiguous()
        && scores.rank() == 4
        && mask.dims4().is_ok_and(|(b, h, q, k)| {
            h == 1
                && q == 1
                && scores
                    .dims4()
                    .is_ok_and(|(sb, _, _, sk)| sb == b && sk == k)
        });
    if !applies {
        return Ok(None);
    }
    scores.apply_op2_no_bwd(mask, &MaskedSoftmaxF32).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        let mut worst = 0.0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "largest relative error {worst:e}");
        assert!(exp(-1e30) < 1e-37 && exp(-1e30) >= 0.0);
    }

    #[test]
    fn matches_candles_mask_add_then_softmax() {
        let dev = Device::Cpu;
        let (b, h, s) = (2, 3, 37);
        let scores = Tensor::randn(0f32, 3.0, (b, h, s, s), &dev).expect("scores");
        // The second sequence is padded after 20 tokens, as the engine masks it.
        let mut mask = vec![0.0f32; b * s];
        for m in &mut mask[s + 20..] {
            *m = f32::MIN;
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, s), &dev).expect("mask");
        let fused = fused_masked_softmax(&scores, &mask)
            .expect("fused")
            .expect("applies");
        let reference =
            candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).expect("add"))
                .expect("softmax");
        let diff = (fused - &reference)
            .expect("sub")
            .abs()
            .expect("abs")
            .flatten_all()
            .expect("flat")
            .max(0)
            .expect("max")
            .to_scalar::<f32>()
            .expect("scalar");
        assert!(diff < 1e-6, "largest difference {diff:e}");
    }

    #[test]
    fn other_shapes_are_left_to_the_caller() {
        let dev = Device::Cpu;
        let scores = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).expect("scores");
        let full_mask = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).expect("mask");
        assert!(
            fused_masked_softmax(&scores, &full_mask)
                .expect("ok")
                .is_none()
        );
        let half = scores.to_dtype(DType::BF16).expect("bf16");
        let mask = Tensor::zeros((1, 1, 1, 4), DType::BF16, &dev).expect("mask");
        assert!(fused_masked_softmax(&half, &mask).expect("ok").is_none());
    }
}
