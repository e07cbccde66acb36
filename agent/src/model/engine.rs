//! fleetbench's own DistilBERT forward pass: Hugging Face semantics, in the
//! model's dtype throughout, with the layout work done once at load time.

use candle_core::{DType, Device, Result, Tensor};

use super::config::{Activation, DistilBertConfig, LAYER_NORM_EPS};
use super::weights::Checkpoint;

/// A linear layer kept as W^T (contiguous [in, out]) so the forward is one
/// plain row-major matmul with no per-call transpose.
#[derive(Debug)]
pub(crate) struct Linear {
    wt: Tensor,
    b: Tensor,
}

impl Linear {
    /// From Hugging Face `weight` [out, in] and `bias` [out] (any float dtype on the CPU).
    fn from_parts(w: &Tensor, b: &Tensor, dtype: DType, device: &Device) -> Result<Self> {
        let wt = w.to_dtype(DType::F32)?.t()?.contiguous()?;
        Ok(Linear {
            wt: wt.to_dtype(dtype)?.to_device(device)?,
            b: b.to_dtype(dtype)?.to_device(device)?,
        })
    }

    pub(crate) fn load(
        ck: &Checkpoint,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::from_parts(
            get(ck, &format!("{prefix}.weight"))?,
            get(ck, &format!("{prefix}.bias"))?,
            dtype,
            device,
        )
    }

    /// `x` is (rows, in).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.wt)?.broadcast_add(&self.b)
    }
}

#[derive(Debug)]
struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

impl LayerNorm {
    fn load(ck: &Checkpoint, prefix: &str, dtype: DType, device: &Device) -> Result<Self> {
        Ok(LayerNorm {
            w: to(get(ck, &format!("{prefix}.weight"))?, dtype, device)?,
            b: to(get(ck, &format!("{prefix}.bias"))?, dtype, device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.w, &self.b, LAYER_NORM_EPS)
    }
}

/// `pre_classifier` → ReLU → `classifier` on the [CLS] vector (dropout is
/// the identity in eval mode). Shared by both engines.
#[derive(Debug)]
pub(crate) struct ClassifierHead {
    pre: Linear,
    out: Linear,
}

impl ClassifierHead {
    pub(crate) fn load(ck: &Checkpoint, dtype: DType, device: &Device) -> Result<Self> {
        Ok(ClassifierHead {
            pre: Linear::load(ck, "pre_classifier", dtype, device)?,
            out: Linear::load(ck, "classifier", dtype, device)?,
        })
    }

    /// `hidden` is (b, s, d); returns (cls (b, d), logits (b, labels)).
    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<(Tensor, Tensor)> {
        // The strided [CLS] slice must be made contiguous: cuBLAS and the CPU
        // gemm refuse a row stride of s*d.
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
        let logits = self.out.forward(&self.pre.forward(&cls)?.relu()?)?;
        Ok((cls, logits))
    }
}

#[derive(Debug)]
struct Block {
    /// q, k and v in one [d, 3d] matmul; q's columns pre-scaled by 1/sqrt(d_head).
    qkv: Linear,
    out: Linear,
    sa_norm: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    out_norm: LayerNorm,
}

#[derive(Debug)]
pub(crate) struct FleetbenchModel {
    word: Tensor,
    pos: Tensor,
    emb_norm: LayerNorm,
    blocks: Vec<Block>,
    head: ClassifierHead,
    dim: usize,
    heads: usize,
    activation: Activation,
    dtype: DType,
}

impl FleetbenchModel {
    pub(crate) fn load(
        ck: &Checkpoint,
        cfg: &DistilBertConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let d = cfg.dim;
        // HF divides q by sqrt(d_head) after q_lin; folding that into q_lin's
        // weight and bias removes one elementwise pass per layer. For
        // d_head = 64 the factor is 1/8, a power of two, so it is exact.
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("distilbert.transformer.layer.{i}");
            let part = |lin: &str, what: &str| -> Result<Tensor> {
                get(ck, &format!("{p}.attention.{lin}.{what}"))?.to_dtype(DType::F32)
            };
            let qw = (part("q_lin", "weight")? * scale)?;
            let qb = (part("q_lin", "bias")? * scale)?;
            let w = Tensor::cat(&[qw, part("k_lin", "weight")?, part("v_lin", "weight")?], 0)?;
            let b = Tensor::cat(&[qb, part("k_lin", "bias")?, part("v_lin", "bias")?], 0)?;
            debug_assert_eq!(w.dims(), &[3 * d, d]);
            blocks.push(Block {
                qkv: Linear::from_parts(&w, &b, dtype, device)?,
                out: Linear::load(ck, &format!("{p}.attention.out_lin"), dtype, device)?,
                sa_norm: LayerNorm::load(ck, &format!("{p}.sa_layer_norm"), dtype, device)?,
                lin1: Linear::load(ck, &format!("{p}.ffn.lin1"), dtype, device)?,
                lin2: Linear::load(ck, &format!("{p}.ffn.lin2"), dtype, device)?,
                out_norm: LayerNorm::load(ck, &format!("{p}.output_layer_norm"), dtype, device)?,
            });
        }
        Ok(FleetbenchModel {
            word: to(
                get(ck, "distilbert.embeddings.word_embeddings.weight")?,
                dtype,
                device,
            )?,
            pos: to(
                get(ck, "distilbert.embeddings.position_embeddings.weight")?,
                dtype,
                device,
            )?,
            emb_norm: LayerNorm::load(ck, "distilbert.embeddings.LayerNorm", dtype, device)?,
            blocks,
            head: ClassifierHead::load(ck, dtype, device)?,
            dim: d,
            heads: cfg.n_heads,
            activation: cfg.activation,
            dtype,
        })
    }

    /// `ids` and `mask` are (b, s) u32 with mask 1 for real tokens; returns
    /// ([CLS] hidden (b, d), logits (b, labels)), both f32.
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s) = ids.dims2()?;
        let (d, h) = (self.dim, self.heads);
        let dh = d / h;
        let rows = b * s;

        let x = self.word.index_select(&ids.flatten_all()?, 0)?;
        let x = x
            .reshape((b, s, d))?
            .broadcast_add(&self.pos.narrow(0, 0, s)?)?;
        let mut x = self.emb_norm.forward(&x.reshape((rows, d))?)?;

        // Additive mask, built once: 0 where attended, the dtype's most
        // negative finite value where padded. HF masked_fills with
        // finfo(dtype).min; anything like -1e4 leaves a trace of the padding
        // in f32. In f16 the sum may round to -inf, which softmax maps to 0;
        // [CLS] is never masked so no row is all -inf.
        let neg = dtype_min(self.dtype);
        let bias = mask
            .to_dtype(DType::F32)?
            .affine(-neg, neg)?
            .reshape((b, 1, 1, s))?
            .to_dtype(self.dtype)?;

        for blk in &self.blocks {
            let qkv = blk.qkv.forward(&x)?;
            // (b, s, 3, h, dh) → (3, b, h, s, dh): one copy gives contiguous q, k and v.
            let qkv = qkv
                .reshape((b, s, 3, h, dh))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let q = qkv.get(0)?;
            let k = qkv.get(1)?;
            let v = qkv.get(2)?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, d))?;
            let attn = blk.out.forward(&ctx)?;
            x = blk.sa_norm.forward(&(attn + &x)?)?;

            let f = blk.lin1.forward(&x)?;
            let f = match self.activation {
                Activation::Gelu => f.gelu_erf()?,
                Activation::Relu => f.relu()?,
            };
            let f = blk.lin2.forward(&f)?;
            x = blk.out_norm.forward(&(f + &x)?)?;
        }

        let hidden = x.reshape((b, s, d))?;
        let (cls, logits) = self.head.forward(&hidden)?;
        Ok((cls.to_dtype(DType::F32)?, logits.to_dtype(DType::F32)?))
    }
}

/// The most negative finite value of a float dtype (torch.finfo(dtype).min).
fn dtype_min(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        // bf16::MIN: exactly representable in f32.
        DType::BF16 => -3.389_531_4e38,
        _ => f64::from(f32::MIN),
    }
}

pub(crate) fn get<'a>(ck: &'a Checkpoint, name: &str) -> Result<&'a Tensor> {
    ck.get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} is missing")))
}

fn to(t: &Tensor, dtype: DType, device: &Device) -> Result<Tensor> {
    t.to_dtype(dtype)?.to_device(device)
}
