//! One layer's self-attention fused into one pass per head, for f32 on the
//! CPU: q·kᵀ, the mask and softmax, and p·v, with q, k and v read in place
//! from the fused projection's rows and each head's context written straight
//! into its columns.
//!
//! candle's way costs four extra passes and a poor split (bench/RESULTS.md,
//! "CPU: where the time goes"): a permute copy of q/k/v into heads, a
//! (b, h, s, s) score tensor, a transpose copy of the context back, and 96
//! small products at batch 8 each split over every thread (61-77 GFLOP/s on
//! two cores where one thread alone reaches 116-135). Here every head is one
//! task on one thread: its scores (s x s, 64 KiB at s = 128) stay in that
//! thread's cache between the two products, and the heads, not the products,
//! are spread over the threads.
//!
//! The work is the same as the unfused form's (every query and key position,
//! padded or not): only its order and memory traffic change.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::cpu_f32::with_f32;
use super::matmul::{MatMut, MatRef, Output, gemm};
use super::softmax::masked_softmax_in_place;

const OP: &str = "fused attention (f32 CPU)";

/// The shapes of one call.
#[derive(Clone, Copy, Debug)]
struct Dims {
    seq: usize,
    dim: usize,
    head_dim: usize,
}

/// softmax(q·kᵀ + mask)·v for every head. `qkv` is (b·s, 3·d): each row
/// holds q (pre-scaled by 1/√d_head), k and v, each as h heads of d/h
/// columns; `mask` is (b, s), additive (0 where attended, very negative
/// where padded). Returns the context, (b·s, d), heads side by side as
/// Hugging Face's `unshape` lays them out. Both inputs contiguous f32 on
/// the CPU (anything else is an error naming this kernel).
pub(crate) fn fused_attention(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, seq) = mask.dims2()?;
    let (rows, width) = qkv.dims2()?;
    if heads == 0 || width % (3 * heads) != 0 || rows != batch * seq || seq == 0 {
        candle_core::bail!(
            "{OP}: qkv ({rows}, {width}) does not hold {heads} heads of q, k and v for a ({batch}, {seq}) mask"
        )
    }
    let dim = width / 3;
    let dims = Dims {
        seq,
        dim,
        head_dim: dim / heads,
    };
    let mut context = vec![0.0f32; rows * dim];
    with_f32(qkv, OP, |qkv| {
        with_f32(mask, OP, |mask| {
            attend(qkv, mask, &mut context, heads, dims);
            Ok(())
        })
    })?;
    Tensor::from_vec(context, (rows, dim), qkv.device())
}

fn attend(qkv: &[f32], mask: &[f32], context: &mut [f32], heads: usize, dims: Dims) {
    let Dims { seq, dim, head_dim } = dims;
    let batch = mask.len() / seq;
    if batch >= rayon::current_num_threads() {
        // Enough sequences to keep every thread busy: one sequence per task,
        // its heads in turn, writing into its own rows of the context.
        context.par_chunks_mut(seq * dim).enumerate().for_each_init(
            || vec![0.0f32; seq * seq],
            |scores, (b, ctx)| {
                for h in 0..heads {
                    let out = MatMut::new(&mut ctx[h * head_dim..], seq, head_dim, dim);
                    one_head(qkv, mask, b, h, dims, scores, out);
                }
            },
        );
    } else {
        // Fewer sequences than threads (batch 1 on a many-core host): the
        // heads of a sequence over the threads, each into a block of its
        // own, then copied into its columns.
        for (b, ctx) in context.chunks_mut(seq * dim).enumerate() {
            let blocks: Vec<Vec<f32>> = (0..heads)
                .into_par_iter()
                .map_init(
                    || vec![0.0f32; seq * seq],
                    |scores, h| {
                        let mut block = vec![0.0f32; seq * head_dim];
                        one_head(
                            qkv,
                            mask,
                            b,
                            h,
                            dims,
                            scores,
                            MatMut::rows(&mut block, seq, head_dim),
                        );
                        block
                    },
                )
                .collect();
            for (h, block) in blocks.iter().enumerate() {
                for (row, src) in ctx.chunks_mut(dim).zip(block.chunks(head_dim)) {
                    row[h * head_dim..(h + 1) * head_dim].copy_from_slice(src);
                }
            }
        }
    }
}

/// Head `h` of sequence `b`, on the calling thread: `scores` is scratch of
/// s x s, `out` receives the head's (s, d_head) context.
fn one_head(
    qkv: &[f32],
    mask: &[f32],
    b: usize,
    h: usize,
    dims: Dims,
    scores: &mut [f32],
    out: MatMut<'_>,
) {
    let Dims { seq, dim, head_dim } = dims;
    let stride = 3 * dim;
    let base = b * seq * stride + h * head_dim;
    let q = MatRef::new(&qkv[base..], seq, head_dim, stride, 1);
    let k = MatRef::new(&qkv[base + dim..], seq, head_dim, stride, 1);
    let v = MatRef::new(&qkv[base + 2 * dim..], seq, head_dim, stride, 1);
    gemm(
        MatMut::rows(scores, seq, seq),
        q,
        k.t(),
        Output::Overwrite,
        1,
    );
    let mask = &mask[b * seq..(b + 1) * seq];
    for row in scores.chunks_mut(seq) {
        masked_softmax_in_place(row, mask);
    }
    gemm(out, MatRef::rows(scores, seq, seq), v, Output::Overwrite, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu_f32::max_diff;
    use candle_core::{D, Device};

    /// The unfused form, in candle's ops (what the GPU path runs).
    fn reference(qkv: &Tensor, mask: &Tensor, heads: usize) -> Tensor {
        let (b, s) = mask.dims2().expect("mask");
        let d = qkv.dim(1).expect("width") / 3;
        let split = qkv
            .reshape((b, s, 3, heads, d / heads))
            .and_then(|t| t.permute((2, 0, 3, 1, 4)))
            .and_then(|t| t.contiguous())
            .expect("split");
        let (q, k, v) = (
            split.get(0).expect("q"),
            split.get(1).expect("k"),
            split.get(2).expect("v"),
        );
        let scores = q
            .matmul(&k.t().expect("kt"))
            .and_then(|t| t.broadcast_add(&mask.reshape((b, 1, 1, s))?))
            .expect("scores");
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).expect("softmax");
        probs
            .matmul(&v)
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.reshape((b * s, d)))
            .expect("context")
    }

    #[test]
    fn matches_the_unfused_attention_with_padding() {
        let dev = Device::Cpu;
        // Three sequences (more than the test pool's threads, and fewer:
        // both schedules run), the last two padded.
        for (batch, threads) in [(3, 2), (3, 8)] {
            let (seq, heads, head_dim) = (19, 4, 8);
            let dim = heads * head_dim;
            let qkv = Tensor::randn(0f32, 1.0, (batch * seq, 3 * dim), &dev).expect("qkv");
            let mut mask = vec![0.0f32; batch * seq];
            for m in &mut mask[seq + 11..2 * seq] {
                *m = f32::MIN;
            }
            for m in &mut mask[2 * seq + 3..] {
                *m = f32::MIN;
            }
            let mask = Tensor::from_vec(mask, (batch, seq), &dev).expect("mask");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let fused = pool
                .install(|| fused_attention(&qkv, &mask, heads))
                .expect("fused");
            let diff = max_diff(&fused, &reference(&qkv, &mask, heads));
            assert!(
                diff < 1e-5,
                "{threads} threads: largest difference {diff:e}"
            );
        }
    }

    #[test]
    fn other_dtypes_and_shapes_are_errors() {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((4, 12), candle_core::DType::BF16, &dev).expect("qkv");
        let mask = Tensor::zeros((1, 4), candle_core::DType::F32, &dev).expect("mask");
        let err = fused_attention(&qkv, &mask, 2).expect_err("bf16");
        assert!(err.to_string().contains("takes f32"), "{err}");
        let qkv = qkv.to_dtype(candle_core::DType::F32).expect("f32");
        let err = fused_attention(&qkv, &mask, 3).expect_err("12 is not 3 x 3 heads' worth");
        assert!(err.to_string().contains("does not hold"), "{err}");
    }
}
