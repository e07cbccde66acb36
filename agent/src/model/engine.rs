//! fleetbench's own DistilBERT forward pass: Hugging Face semantics, in the
//! model's dtype throughout (bf16 on the CPU: see [`Numerics`]), with the
//! layout work done once at load time.

use candle_core::{DType, Device, Result, Tensor};

use super::bf16::PackedBf16;
use super::config::{Activation, DistilBertConfig, LAYER_NORM_EPS};
use super::dense::{DenseWeight, Epilogue};
use super::weights::Checkpoint;

/// A linear layer kept as W^T (contiguous [in, out]) so the forward is one
/// plain row-major product with no per-call transpose.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: LinearWeight,
    b: Tensor,
    /// The bias as a (1, out) row, for [`BiasAdd::ExpandByMatmul`].
    b_row: Tensor,
}

/// How a linear layer holds W^T.
#[derive(Debug)]
enum LinearWeight {
    /// A tensor in the model's dtype.
    Tensor(Tensor),
    /// bf16 panels for the CPU's avx512_bf16 products (`bf16.rs`).
    PackedBf16(PackedBf16),
}

/// The precision the model's tensors are kept and computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Numerics {
    /// Every tensor in one dtype.
    Uniform(DType),
    /// bf16 on the CPU: the linear layers' weights in bf16 panels and their
    /// products on avx512_bf16 (inputs rounded to bf16, f32 accumulation);
    /// every activation, the attention, softmax, GELU and the layer norms
    /// in f32. candle has no bf16 product on the CPU (it widens to f32 and
    /// narrows back, slower than f32), so a uniform bf16 model there would
    /// measure candle's conversions, not the hardware.
    CpuBf16Products,
}

impl Numerics {
    pub(crate) fn for_request(dtype: DType, device: &Device) -> Numerics {
        if device.is_cpu() && dtype == DType::BF16 {
            Numerics::CpuBf16Products
        } else {
            Numerics::Uniform(dtype)
        }
    }

    /// The dtype of every tensor other than packed weights.
    fn tensor_dtype(self) -> DType {
        match self {
            Numerics::Uniform(dtype) => dtype,
            Numerics::CpuBf16Products => DType::F32,
        }
    }
}

/// How a broadcast operand (a bias row, the attention mask) is added.
///
/// candle's CUDA kernel for an addition with a broadcast operand computes
/// every element's source index with a division and a remainder per
/// dimension, read from global memory (candle-kernels 0.11,
/// `binary_op_macros.cuh`). On an H200 the bias and mask additions took 55%
/// of a bf16 batch-128 pass (`fleetbench-agent profile`, bench/RESULTS.md).
/// On CUDA the operand is therefore expanded first by a matrix product with
/// K = 1 (ones x row: exact, at memory speed in cuBLAS) and the addition takes
/// the kernel's contiguous path; the result is bit for bit the same. On the
/// CPU candle's broadcast loop is already fast and an extra pass would cost.
/// For f32 on the CPU (`Fused`) no addition is a pass of its own: each
/// linear layer's output starts as its bias (and residual) and the product
/// accumulates into it (`dense.rs`), and the mask is added inside the fused
/// attention (`attention.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BiasAdd {
    Broadcast,
    ExpandByMatmul,
    Fused,
}

impl BiasAdd {
    pub(crate) fn for_device(device: &Device, dtype: DType) -> BiasAdd {
        if device.is_cuda() {
            BiasAdd::ExpandByMatmul
        } else if device.is_cpu() && dtype == DType::F32 {
            BiasAdd::Fused
        } else {
            BiasAdd::Broadcast
        }
    }
}

impl Linear {
    /// From Hugging Face `weight` [out, in] and `bias` [out] (any float dtype on the CPU).
    fn from_parts(w: &Tensor, b: &Tensor, numerics: Numerics, device: &Device) -> Result<Self> {
        let wt = w.to_dtype(DType::F32)?.t()?.contiguous()?;
        let weight = match numerics {
            Numerics::Uniform(dtype) => {
                LinearWeight::Tensor(wt.to_dtype(dtype)?.to_device(device)?)
            }
            Numerics::CpuBf16Products => {
                let (k, n) = wt.dims2()?;
                LinearWeight::PackedBf16(PackedBf16::pack(
                    &wt.flatten_all()?.to_vec1::<f32>()?,
                    k,
                    n,
                ))
            }
        };
        let b = b.to_dtype(numerics.tensor_dtype())?.to_device(device)?;
        Ok(Linear {
            weight,
            b_row: b.unsqueeze(0)?,
            b,
        })
    }

    pub(crate) fn load(
        ck: &Checkpoint,
        prefix: &str,
        numerics: Numerics,
        device: &Device,
    ) -> Result<Self> {
        Self::from_parts(
            get(ck, &format!("{prefix}.weight"))?,
            get(ck, &format!("{prefix}.bias"))?,
            numerics,
            device,
        )
    }

    /// The weight as the CPU kernels take it.
    fn dense_weight(&self) -> DenseWeight<'_> {
        match &self.weight {
            LinearWeight::Tensor(wt) => DenseWeight::F32(wt),
            LinearWeight::PackedBf16(packed) => DenseWeight::Bf16(packed),
        }
    }

    /// `x` is (rows, in).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Tensor(_) => self.forward_laps(x, None, &mut NoLaps, "linear"),
            LinearWeight::PackedBf16(_) => {
                super::dense::linear(x, self.dense_weight(), &self.b, None, Epilogue::None)
            }
        }
    }

    /// candle's product, then the bias added the `ones` way when given (a
    /// (rows, 1) column of ones: [`BiasAdd::ExpandByMatmul`]), with a lap
    /// after each.
    fn forward_laps(
        &self,
        x: &Tensor,
        ones: Option<&Tensor>,
        laps: &mut dyn Laps,
        name: &'static str,
    ) -> Result<Tensor> {
        let LinearWeight::Tensor(wt) = &self.weight else {
            candle_core::bail!("{name}: packed bf16 weights run on the CPU kernels only")
        };
        let y = x.matmul(wt)?;
        laps.lap(name, "matmul")?;
        let y = match ones {
            Some(ones) => (y + ones.matmul(&self.b_row)?)?,
            None => y.broadcast_add(&self.b)?,
        };
        laps.lap(name, "bias")?;
        Ok(y)
    }
}

/// Where a forward pass spends its time (`fleetbench-agent profile`): each
/// step of the pass calls `lap`, which a profiler answers by synchronising
/// the device and charging the time since the previous lap to that step.
pub trait Laps {
    fn lap(&mut self, part: &'static str, step: &'static str) -> Result<()>;
}

/// No profiling: the timed sweep's forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLaps;

impl Laps for NoLaps {
    fn lap(&mut self, _: &'static str, _: &'static str) -> Result<()> {
        Ok(())
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
    pub(crate) fn load(ck: &Checkpoint, numerics: Numerics, device: &Device) -> Result<Self> {
        Ok(ClassifierHead {
            pre: Linear::load(ck, "pre_classifier", numerics, device)?,
            out: Linear::load(ck, "classifier", numerics, device)?,
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
    activation: Activation,
}

impl Block {
    /// f32 on the CPU: five kernels of this crate's own per layer
    /// (`dense.rs`, `attention.rs`) and candle's two layer norms. `mask` is
    /// the (b, s) additive mask.
    fn forward_fused_cpu(
        &self,
        x: &Tensor,
        mask: &Tensor,
        heads: usize,
        laps: &mut dyn Laps,
    ) -> Result<Tensor> {
        use super::dense::linear;
        let qkv = linear(
            x,
            self.qkv.dense_weight(),
            &self.qkv.b,
            None,
            Epilogue::None,
        )?;
        laps.lap("qkv", "matmul + bias")?;
        let ctx = super::attention::fused_attention(&qkv, mask, heads)?;
        laps.lap("attention", "q.kT, mask, softmax, p.v (fused)")?;
        let sum = linear(
            &ctx,
            self.out.dense_weight(),
            &self.out.b,
            Some(x),
            Epilogue::None,
        )?;
        laps.lap("attention out", "matmul + bias + residual")?;
        let x = self.sa_norm.forward(&sum)?;
        laps.lap("attention out", "layer norm")?;
        let epilogue = match self.activation {
            Activation::Gelu => Epilogue::Gelu,
            Activation::Relu => Epilogue::Relu,
        };
        let f = linear(&x, self.lin1.dense_weight(), &self.lin1.b, None, epilogue)?;
        laps.lap("ffn lin1", "matmul + bias + activation")?;
        let sum = linear(
            &f,
            self.lin2.dense_weight(),
            &self.lin2.b,
            Some(&x),
            Epilogue::None,
        )?;
        laps.lap("ffn lin2", "matmul + bias + residual")?;
        let x = self.out_norm.forward(&sum)?;
        laps.lap("ffn lin2", "layer norm")?;
        Ok(x)
    }

    /// Any device and dtype, in candle's ops. `bias` is the additive mask,
    /// (b, 1, 1, s) or expanded to (b, h, s, s); `ones` the (rows, 1) column
    /// for [`BiasAdd::ExpandByMatmul`].
    #[allow(clippy::too_many_arguments)]
    fn forward_general(
        &self,
        x: &Tensor,
        bias: &Tensor,
        ones: Option<&Tensor>,
        (b, s, h): (usize, usize, usize),
        bias_add: BiasAdd,
        laps: &mut dyn Laps,
    ) -> Result<Tensor> {
        let d = x.dim(1)?;
        let (dh, rows) = (d / h, b * s);
        let qkv = self.qkv.forward_laps(x, ones, laps, "qkv")?;
        // (b, s, 3, h, dh) → (3, b, h, s, dh): one copy gives contiguous q, k and v.
        let qkv = qkv
            .reshape((b, s, 3, h, dh))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        laps.lap("qkv", "split heads (copy)")?;
        let q = qkv.get(0)?;
        let k = qkv.get(1)?;
        let v = qkv.get(2)?;
        let scores = q.matmul(&k.t()?)?;
        laps.lap("attention", "q.kT matmul")?;
        let scores = match bias_add {
            BiasAdd::ExpandByMatmul => (scores + bias)?,
            BiasAdd::Broadcast | BiasAdd::Fused => scores.broadcast_add(bias)?,
        };
        laps.lap("attention", "mask add")?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        laps.lap("attention", "softmax")?;
        let ctx = probs.matmul(&v)?;
        laps.lap("attention", "probs.v matmul")?;
        let ctx = ctx.transpose(1, 2)?.reshape((rows, d))?;
        laps.lap("attention", "merge heads (copy)")?;
        let attn = self.out.forward_laps(&ctx, ones, laps, "attention out")?;
        let sum = (attn + x)?;
        laps.lap("attention out", "residual add")?;
        let x = self.sa_norm.forward(&sum)?;
        laps.lap("attention out", "layer norm")?;
        let f = self.lin1.forward_laps(&x, ones, laps, "ffn lin1")?;
        let f = match self.activation {
            Activation::Gelu => super::gelu::gelu_erf(&f)?,
            Activation::Relu => f.relu()?,
        };
        laps.lap("ffn lin1", "activation")?;
        let f = self.lin2.forward_laps(&f, ones, laps, "ffn lin2")?;
        let sum = (f + &x)?;
        laps.lap("ffn lin2", "residual add")?;
        let x = self.out_norm.forward(&sum)?;
        laps.lap("ffn lin2", "layer norm")?;
        Ok(x)
    }
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
    /// The activations' dtype ([`Numerics::tensor_dtype`]).
    dtype: DType,
}

impl FleetbenchModel {
    pub(crate) fn load(
        ck: &Checkpoint,
        cfg: &DistilBertConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let numerics = Numerics::for_request(dtype, device);
        if numerics == Numerics::CpuBf16Products && !super::bf16::available() {
            // LoadedModel::load refuses this first, with the CPU named.
            candle_core::bail!("bf16 on the CPU needs the avx512_bf16 instructions")
        }
        let dtype = numerics.tensor_dtype();
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
                qkv: Linear::from_parts(&w, &b, numerics, device)?,
                out: Linear::load(ck, &format!("{p}.attention.out_lin"), numerics, device)?,
                sa_norm: LayerNorm::load(ck, &format!("{p}.sa_layer_norm"), dtype, device)?,
                lin1: Linear::load(ck, &format!("{p}.ffn.lin1"), numerics, device)?,
                lin2: Linear::load(ck, &format!("{p}.ffn.lin2"), numerics, device)?,
                out_norm: LayerNorm::load(ck, &format!("{p}.output_layer_norm"), dtype, device)?,
                activation: cfg.activation,
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
            head: ClassifierHead::load(ck, numerics, device)?,
            dim: d,
            heads: cfg.n_heads,
            dtype,
        })
    }

    /// `ids` and `mask` are (b, s) u32 with mask 1 for real tokens; returns
    /// ([CLS] hidden (b, d), logits (b, labels)), both f32.
    /// `laps` hears of each step (`NoLaps` in a sweep).
    pub(crate) fn forward_laps(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        laps: &mut dyn Laps,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_with(
            ids,
            mask,
            laps,
            BiasAdd::for_device(ids.device(), self.dtype),
        )
    }

    pub(crate) fn forward_with(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        laps: &mut dyn Laps,
        bias_add: BiasAdd,
    ) -> Result<(Tensor, Tensor)> {
        let (b, s) = ids.dims2()?;
        let (d, h) = (self.dim, self.heads);
        let rows = b * s;

        let x = self.word.index_select(&ids.flatten_all()?, 0)?;
        let x = x
            .reshape((b, s, d))?
            .broadcast_add(&self.pos.narrow(0, 0, s)?)?;
        let mut x = self.emb_norm.forward(&x.reshape((rows, d))?)?;
        laps.lap("embeddings", "lookup+norm")?;

        // Additive mask, built once: 0 where attended, the dtype's most
        // negative finite value where padded. HF masked_fills with
        // finfo(dtype).min; anything like -1e4 leaves a trace of the padding
        // in f32. In f16 the sum may round to -inf, which softmax maps to 0;
        // [CLS] is never masked so no row is all -inf.
        let neg = dtype_min(self.dtype);
        let bias = mask
            .to_dtype(DType::F32)?
            .affine(-neg, neg)?
            .to_dtype(self.dtype)?;
        let device = ids.device();
        let (bias, ones) = match bias_add {
            BiasAdd::Fused => (bias, None),
            BiasAdd::Broadcast => (bias.reshape((b, 1, 1, s))?, None),
            // (b, h·s, 1) x (b, 1, s) = (b, h, s, s): the mask of every head
            // and query row, built once and used by all layers.
            BiasAdd::ExpandByMatmul => (
                Tensor::ones((b, h * s, 1), self.dtype, device)?
                    .matmul(&bias.reshape((b, 1, s))?)?
                    .reshape((b, h, s, s))?,
                Some(Tensor::ones((rows, 1), self.dtype, device)?),
            ),
        };
        let ones = ones.as_ref();
        laps.lap("embeddings", "mask")?;

        for blk in &self.blocks {
            x = match bias_add {
                BiasAdd::Fused => blk.forward_fused_cpu(&x, &bias, h, laps)?,
                BiasAdd::Broadcast | BiasAdd::ExpandByMatmul => {
                    blk.forward_general(&x, &bias, ones, (b, s, h), bias_add, laps)?
                }
            };
        }

        let hidden = x.reshape((b, s, d))?;
        let (cls, logits) = self.head.forward(&hidden)?;
        laps.lap("classifier", "head")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, LoadedModel, ModelRequest};
    use fleetbench_common::{Precision, WeightsChoice};

    /// The CUDA way of adding biases and the mask (expanded by a K = 1
    /// product, then a plain addition) must give the very same numbers as
    /// candle's broadcast addition: checked here on the CPU, where both run.
    #[test]
    fn expanding_bias_and_mask_by_matmul_is_bit_identical_to_broadcasting() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/tiny-distilbert-sst2");
        // bf16 on the CPU has packed weights, which only the CPU kernels
        // take; f16 runs candle's general path there.
        for dtype in [Precision::F32, Precision::F16] {
            let request = ModelRequest {
                weights: WeightsChoice::Hub,
                dtype,
                ..ModelRequest::new(dir.display().to_string())
            };
            let model = LoadedModel::load(&request, &Device::Cpu).expect("fixture loads");
            let Backend::Fleetbench(engine) = &model.backend else {
                panic!("the default engine is fleetbench's");
            };
            // Padded rows, so the mask matters.
            let batch = model
                .encode(&["a fine film", "a dull, long and tiresome one"], 16)
                .expect("encode");
            let ids = batch.input_ids.to_dtype(DType::U32).expect("ids");
            let mask = batch.attention_mask.to_dtype(DType::U32).expect("mask");
            let run = |how| {
                let (cls, logits) = engine
                    .forward_with(&ids, &mask, &mut NoLaps, how)
                    .expect("forward");
                (
                    cls.flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .expect("cls"),
                    logits
                        .flatten_all()
                        .and_then(|t| t.to_vec1::<f32>())
                        .expect("logits"),
                )
            };
            let broadcast = run(BiasAdd::Broadcast);
            let expanded = run(BiasAdd::ExpandByMatmul);
            assert_eq!(broadcast, expanded, "{dtype}");
            assert!(broadcast.1.iter().all(|v| v.is_finite()));
        }
    }
}
