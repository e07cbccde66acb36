//! bf16 matrix products on x86 CPUs with `avx512_bf16`: weights rounded to
//! bf16 once at load and packed for `vdpbf16ps`, activations rounded to
//! bf16 as they enter a product, f32 accumulation and f32 outputs.
//!
//! Why its own kernel: candle has no bf16 CPU product (it widens both
//! operands to f32, multiplies, and narrows the result back: slower than f32,
//! candle-core 0.11 `cpu_backend`), and the gemm crate has none either.
//! `vdpbf16ps` does 32 multiply-adds per 512-bit instruction where an f32
//! FMA does 16, and bf16 weights are half the memory traffic.
//!
//! Layout (the "VNNI" layout oneDNN also uses): `vdpbf16ps` multiplies pairs
//! of adjacent bf16 values in each 32-bit lane and adds both products to the
//! f32 lane. The weights W (k x n) are stored as panels of [`NR`] = 32
//! columns; inside a panel, for each pair of rows (2p, 2p+1) of W, the 32
//! columns' pairs (W[2p][c], W[2p+1][c]), i.e. two 512-bit vectors per pair.
//! An activation row in plain row-major bf16 already has its pairs
//! (a[2p], a[2p+1]) side by side, so it is broadcast as one 32-bit value
//! without any packing.
//!
//! Blocking: [`KCP`] pairs of k and [`MC`] rows of A at a time, so that the
//! block of A stays in L2 while every panel of W passes over it, and a
//! panel's slice streams through L1 as the micro-kernel walks down A's rows.

use rayon::prelude::*;

/// Columns per panel: two 512-bit vectors of f32 accumulators.
pub(super) const NR: usize = 32;
/// Rows per micro-kernel call: 8 x 2 accumulators, 2 loads of the panel and
/// the broadcasts fit the 32 vector registers with room to spare.
pub(super) const MR: usize = 8;
/// Pairs of k per block (768 values of k: all of a 768-wide input at once).
pub(super) const KCP: usize = 384;
/// Rows of A per block: 256 rows x 768 bf16 = 384 KiB, kept in L2 while
/// every panel of W passes over it. KCP and MC were chosen by measurement
/// on the forward's shapes (AMD EPYC, 2 threads, bench/RESULTS.md): 128 x
/// unblocked 286-347 GFLOP/s, 384 x 256 about 390-400.
pub(super) const MC: usize = 256;

/// f32 to bf16, rounding to nearest even (NaN stays NaN).
pub(super) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// W (k x n, row-major f32) in bf16 panels.
#[derive(Debug, Clone)]
pub(super) struct PackedBf16 {
    k: usize,
    n: usize,
    /// k rounded up to pairs.
    pairs: usize,
    data: Vec<u16>,
}

impl PackedBf16 {
    pub(super) fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "W is {k} x {n}");
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * pairs * NR * 2];
        for (j, panel) in data.chunks_mut(pairs * NR * 2).enumerate() {
            for (p, pair) in panel.chunks_mut(NR * 2).enumerate() {
                for c in 0..NR.min(n - j * NR) {
                    for t in 0..2 {
                        let row = 2 * p + t;
                        if row < k {
                            pair[2 * c + t] = to_bf16(w[row * n + j * NR + c]);
                        }
                    }
                }
            }
        }
        PackedBf16 { k, n, pairs, data }
    }

    /// (k, n): the shape of W.
    pub(super) fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The bf16 row width an activation needs: k rounded up to pairs.
    pub(super) fn row_width(&self) -> usize {
        2 * self.pairs
    }
}

/// Rows of f32 (rows x k) as bf16 rows of `2 * pairs` (the odd k padded
/// with a zero), over the threads.
pub(super) fn rows_to_bf16(x: &[f32], k: usize, pairs: usize) -> Vec<u16> {
    let width = 2 * pairs;
    let rows = x.len() / k.max(1);
    let mut out = vec![0u16; rows * width];
    out.par_chunks_mut(width * 64)
        .zip(x.par_chunks(k * 64))
        .for_each(|(out, x)| {
            for (o, x) in out.chunks_mut(width).zip(x.chunks(k)) {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = to_bf16(v);
                }
            }
        });
    out
}

/// Whether this CPU has the instructions (std caches the answer).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c (rows x n) += a (rows x k, bf16 rows from [`rows_to_bf16`]) . W`,
/// rows split over `threads`. Panics without [`available`] or when the
/// shapes do not fit (a caller's bug, never the input's).
pub(super) fn gemm_bf16(c: &mut [f32], a: &[u16], w: &PackedBf16, threads: usize) {
    assert!(available(), "gemm_bf16 needs avx512_bf16");
    let width = 2 * w.pairs;
    let rows = a.len() / width.max(1);
    assert_eq!(c.len(), rows * w.n, "the output is rows x n");
    assert_eq!(a.len(), rows * width, "a is rows x 2*pairs");
    if rows == 0 || w.n == 0 {
        return;
    }
    // Whole micro-kernel blocks per thread.
    let per_thread = rows.div_ceil(threads.max(1)).div_ceil(MR) * MR;
    c.par_chunks_mut(per_thread * w.n)
        .zip(a.par_chunks(per_thread * width))
        .for_each(|(c, a)| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has avx512f and avx512bf16 (asserted above),
            // which is all `block` requires of its caller; each chunk holds
            // whole rows of both operands.
            #[allow(unsafe_code)]
            unsafe {
                block(c, a, w)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("available() is false off x86-64: {} {}", c.len(), a.len())
        });
}

/// One thread's rows: C += A . W, k in blocks of [`KCP`] pairs, then A's
/// rows in blocks of [`MC`], then the panels of W, then rows in [`MR`]s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn block(c: &mut [f32], a: &[u16], w: &PackedBf16) {
    let (n, pairs) = (w.n, w.pairs);
    let width = 2 * pairs;
    let rows = a.len() / width;
    let panels = n.div_ceil(NR);
    let mut p0 = 0;
    while p0 < pairs {
        let kcp = KCP.min(pairs - p0);
        for i0 in (0..rows).step_by(MC) {
            let i_end = rows.min(i0 + MC);
            for j in 0..panels {
                let cols = NR.min(n - j * NR);
                let panel = &w.data[(j * pairs + p0) * NR * 2..][..kcp * NR * 2];
                let mut i = i0;
                while i < i_end {
                    let r = MR.min(i_end - i);
                    let a = &a[i * width + 2 * p0..];
                    let c = &mut c[i * n + j * NR..];
                    let tile = Tile {
                        a,
                        a_stride: width,
                        panel,
                        pairs: kcp,
                        c,
                        c_stride: n,
                        cols,
                    };
                    match r {
                        8 => micro::<8>(tile),
                        7 => micro::<7>(tile),
                        6 => micro::<6>(tile),
                        5 => micro::<5>(tile),
                        4 => micro::<4>(tile),
                        3 => micro::<3>(tile),
                        2 => micro::<2>(tile),
                        _ => micro::<1>(tile),
                    }
                    i += r;
                }
            }
        }
        p0 += kcp;
    }
}

/// One micro-kernel call's operands: R rows of A from `a` (rows `a_stride`
/// apart, `pairs` pairs each), a panel slice, and R rows of `cols` (<= 32)
/// columns of C from `c`.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    a: &'a [u16],
    a_stride: usize,
    panel: &'a [u16],
    pairs: usize,
    c: &'a mut [f32],
    c_stride: usize,
    cols: usize,
}

/// R rows x 32 columns: C += A . panel, accumulators in registers, columns
/// past `cols` masked off.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn micro<const R: usize>(t: Tile<'_>) {
    use std::arch::x86_64::*;
    // Every access below is inside these bounds.
    assert!(R > 0 && t.cols > 0 && t.cols <= NR);
    assert!(t.panel.len() >= t.pairs * NR * 2);
    assert!(t.a.len() >= (R - 1) * t.a_stride + 2 * t.pairs);
    assert!(t.c.len() >= (R - 1) * t.c_stride + t.cols);
    let mask = if t.cols == NR {
        u32::MAX
    } else {
        (1u32 << t.cols) - 1
    };
    let (lo, hi) = (mask as u16, (mask >> 16) as u16);
    let (a, panel, c) = (t.a.as_ptr(), t.panel.as_ptr(), t.c.as_mut_ptr());
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    // SAFETY: by the asserts above, row r's columns [0, cols) of C, A's
    // pairs [0, pairs) of rows [0, R) and the panel's pairs [0, pairs) are
    // inside their slices. Masked-off lanes are neither read nor written
    // (AVX-512 masked moves do not touch them, nor fault on them), and the
    // pointer to a row's upper half is formed with wrapping_add, so it may
    // lie past the slice when that half is masked off entirely.
    #[allow(unsafe_code)]
    unsafe {
        for r in 0..R {
            let row = c.add(r * t.c_stride);
            acc0[r] = _mm512_maskz_loadu_ps(lo, row);
            acc1[r] = _mm512_maskz_loadu_ps(hi, row.wrapping_add(16));
        }
        for p in 0..t.pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(panel.add(p * 64).cast()));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(panel.add(p * 64 + 32).cast()));
            for r in 0..R {
                let pair = a.add(r * t.a_stride + 2 * p).cast::<i32>().read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
            }
        }
        for r in 0..R {
            let row = c.add(r * t.c_stride);
            _mm512_mask_storeu_ps(row, lo, acc0[r]);
            _mm512_mask_storeu_ps(row.wrapping_add(16), hi, acc1[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to even (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to even.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn products_match_the_triple_loop_on_bf16_rounded_inputs() {
        if !available() {
            eprintln!("skipped: this CPU has no avx512_bf16");
            return;
        }
        // Odd k (a padded pair), n not a multiple of 32 (a masked panel),
        // rows not a multiple of 8 (a short micro-kernel), k over one block.
        // Rows over one block of MC, too.
        for (m, k, n, threads) in [
            (37, 51, 70, 2),
            (9, 2 * KCP + 3, 33, 1),
            (MC + 5, 7, 40, 1),
            (1, 1, 1, 3),
        ] {
            let a = values(m * k, 1);
            let w = values(k * n, 2);
            let packed = PackedBf16::pack(&w, k, n);
            assert_eq!(packed.dims(), (k, n));
            let a16 = rows_to_bf16(&a, k, packed.row_width() / 2);
            let mut c = vec![0.25f32; m * n];
            gemm_bf16(&mut c, &a16, &packed, threads);
            for i in 0..m {
                for j in 0..n {
                    let mut want = 0.25f64;
                    for t in 0..k {
                        want += f64::from(from_bf16(to_bf16(a[i * k + t])))
                            * f64::from(from_bf16(to_bf16(w[t * n + j])));
                    }
                    let got = f64::from(c[i * n + j]);
                    assert!(
                        (got - want).abs() < 1e-5,
                        "({i}, {j}) of {m}x{k}x{n}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
