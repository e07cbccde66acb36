//! Floating-point operations of one DistilBERT forward pass.
//!
//! Counting one multiply-add as two FLOPs, for hidden size d, feed-forward
//! size h, sequence length s and L layers, per sample:
//!
//! - Q, K, V and output projections: 4 matmuls of (s x d)·(d x d) = 4 · 2·s·d²
//! - attention scores Q·Kᵀ over all heads: (s x d)·(d x s) = 2·s²·d
//! - attention-weighted values A·V: (s x s)·(s x d) = 2·s²·d
//! - feed-forward: (s x d)·(d x h) and (s x h)·(h x d) = 2 · 2·s·d·h
//!
//! so a layer costs 8·s·d² + 4·s·d·h + 4·s²·d, and the classification head on
//! the [CLS] vector 2·d² + 2·d·labels. Embedding look-ups, layer norms,
//! softmax, GELU and bias additions are O(s·d) and left out, as is usual
//! (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1).
//! For distilbert-base (d = 768, h = 3072, L = 6) at s = 128 this is
//! 11.17 GFLOP per sample.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDims {
    pub hidden: usize,
    pub layers: usize,
    pub intermediate: usize,
}

impl ModelDims {
    /// distilbert-base-uncased.
    pub const DISTILBERT_BASE: ModelDims = ModelDims {
        hidden: 768,
        layers: 6,
        intermediate: 3072,
    };
}

/// The SST-2 head has two labels.
const LABELS: f64 = 2.0;

/// FLOPs of one sample's forward pass at sequence length `seq_len`.
pub fn flops_per_sample(dims: ModelDims, seq_len: usize) -> f64 {
    let (d, h, s, l) = (
        dims.hidden as f64,
        dims.intermediate as f64,
        seq_len as f64,
        dims.layers as f64,
    );
    let per_layer = 8.0 * s * d * d + 4.0 * s * d * h + 4.0 * s * s * d;
    l * per_layer + 2.0 * d * d + 2.0 * d * LABELS
}

/// Achieved GFLOP/s at a throughput of `samples_per_second`.
pub fn achieved_gflops(dims: ModelDims, seq_len: usize, samples_per_second: f64) -> f64 {
    flops_per_sample(dims, seq_len) * samples_per_second / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distilbert_base_at_128_is_about_11_2_gflop() {
        // 6 · (8·128·768² + 4·128·768·3072 + 4·128²·768) + 2·768² + 2·768·2
        let expected =
            6.0 * (603_979_776.0 + 1_207_959_552.0 + 50_331_648.0) + 1_179_648.0 + 3_072.0;
        let got = flops_per_sample(ModelDims::DISTILBERT_BASE, 128);
        assert_eq!(got, expected);
        assert!((got / 1e9 - 11.17).abs() < 0.01, "{got}");
    }

    #[test]
    fn gflops_scale_with_throughput() {
        let one = achieved_gflops(ModelDims::DISTILBERT_BASE, 128, 1.0);
        assert!(
            (achieved_gflops(ModelDims::DISTILBERT_BASE, 128, 100.0) - 100.0 * one).abs() < 1e-9
        );
    }
}
