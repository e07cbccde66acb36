//! The attention's mask addition and softmax fused into one pass over a row
//! of scores, for f32 on the CPU (`attention.rs` calls it per row).
//!
//! candle adds the mask (a new (b, h, s, s) tensor) and then runs its
//! softmax with a scalar `exp` per element: 5-6% of a forward at batch 8 on
//! two cores, plus the add. Here each row of scores gets its mask, its
//! maximum, a vectorisable `exp` (Cephes' `expf`: a degree-5 polynomial on
//! the reduced argument and the exponent set through the float's bits), its
//! sum and its scaling in one pass, in place.

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

/// One row of scores in place: `row = softmax(row + mask)`.
pub(super) fn masked_softmax_in_place(row: &mut [f32], mask: &[f32]) {
    debug_assert_eq!(row.len(), mask.len());
    let mut max = f32::NEG_INFINITY;
    for (d, m) in row.iter_mut().zip(mask) {
        *d += m;
        max = max.max(*d);
    }
    // Eight partial sums, so that the sum vectorises too.
    let mut sums = [0.0f32; 8];
    for chunk in row.chunks_mut(8) {
        for (d, acc) in chunk.iter_mut().zip(sums.iter_mut()) {
            *d = exp(*d - max);
            *acc += *d;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for d in row.iter_mut() {
        *d *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

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
        let (rows, s) = (6, 37);
        let scores = Tensor::randn(0f32, 3.0, (rows, s), &dev).expect("scores");
        // Padded after 20 tokens, as the engine masks a short sentence.
        let mut mask = vec![0.0f32; s];
        for m in &mut mask[20..] {
            *m = f32::MIN;
        }
        let mut fused = scores
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec");
        for row in fused.chunks_mut(s) {
            masked_softmax_in_place(row, &mask);
        }
        let mask = Tensor::from_vec(mask, (1, s), &dev).expect("mask");
        let reference =
            candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).expect("add"))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .expect("softmax");
        let diff = fused
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "largest difference {diff:e}");
    }
}
