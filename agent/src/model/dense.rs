//! The linear layers' forward for f32 on the CPU, `addmm`'s way: the output
//! starts as the bias row (plus the residual, where the layer has one) and
//! the product accumulates into it, so no separate bias or residual pass
//! reads and writes the whole activation again (those passes were 12% of a
//! batch-8 forward on two cores, bench/RESULTS.md, "CPU: where the time
//! goes"). The feed-forward GELU then runs in place on the same buffer.

use candle_core::{Result, Tensor};

use super::bf16::{PackedBf16, gemm_bf16, rows_to_bf16};
use super::cpu_f32::with_f32;
use super::gelu::gelu_in_place;
use super::matmul::{MatMut, MatRef, Output, gemm};

const OP: &str = "linear (f32 CPU)";

/// W^T as the product takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DenseWeight<'a> {
    /// An f32 tensor, (in, out): the gemm crate's f32 product.
    F32(&'a Tensor),
    /// bf16 panels: the input rounded to bf16, avx512_bf16 products with
    /// f32 accumulation (`bf16.rs`).
    Bf16(&'a PackedBf16),
}

/// What follows the product inside the same buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    None,
    Gelu,
    Relu,
}

/// `x·wt + bias (+ residual)`, then the epilogue, for x (rows, in), wt
/// (in, out), bias (out) and residual (rows, out), all contiguous f32 on
/// the CPU (anything else is an error naming this kernel).
pub(crate) fn linear(
    x: &Tensor,
    wt: DenseWeight<'_>,
    bias: &Tensor,
    residual: Option<&Tensor>,
    epilogue: Epilogue,
) -> Result<Tensor> {
    let (rows, inner) = x.dims2()?;
    let (wt_in, out) = match wt {
        DenseWeight::F32(wt) => wt.dims2()?,
        DenseWeight::Bf16(packed) => packed.dims(),
    };
    let residual_ok = residual.is_none_or(|r| r.dims() == [rows, out]);
    if wt_in != inner || bias.dims() != [out] || !residual_ok {
        candle_core::bail!(
            "{OP}: x {:?} . wt {:?} + bias {:?} + residual {:?} do not fit",
            x.dims(),
            [wt_in, out],
            bias.dims(),
            residual.map(Tensor::dims)
        )
    }
    let mut y = with_f32(bias, OP, |bias| match residual {
        None => Ok(bias.repeat(rows)),
        Some(residual) => with_f32(residual, OP, |residual| {
            let mut y = Vec::with_capacity(rows * out);
            for row in residual.chunks(out) {
                y.extend(row.iter().zip(bias).map(|(r, b)| r + b));
            }
            Ok(y)
        }),
    })?;
    with_f32(x, OP, |x| match wt {
        DenseWeight::F32(wt) => with_f32(wt, OP, |wt| {
            gemm(
                MatMut::rows(&mut y, rows, out),
                MatRef::rows(x, rows, inner),
                MatRef::rows(wt, inner, out),
                Output::Accumulate,
                rayon::current_num_threads(),
            );
            Ok(())
        }),
        DenseWeight::Bf16(packed) => {
            let x16 = rows_to_bf16(x, inner, packed.row_width() / 2);
            gemm_bf16(&mut y, &x16, packed, rayon::current_num_threads());
            Ok(())
        }
    })?;
    match epilogue {
        Epilogue::None => {}
        Epilogue::Gelu => gelu_in_place(&mut y),
        Epilogue::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
    Tensor::from_vec(y, (rows, out), x.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu_f32::max_diff;
    use candle_core::Device;

    #[test]
    fn bias_residual_and_gelu_match_candles_steps() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (37, 24), &dev).expect("x");
        let wt = Tensor::randn(0f32, 0.3, (24, 40), &dev).expect("wt");
        let bias = Tensor::randn(0f32, 1.0, 40, &dev).expect("bias");
        let residual = Tensor::randn(0f32, 1.0, (37, 40), &dev).expect("residual");
        let product = x.matmul(&wt).expect("matmul");
        let with_bias = product.broadcast_add(&bias).expect("bias");

        let plain = linear(&x, DenseWeight::F32(&wt), &bias, None, Epilogue::None).expect("linear");
        assert!(max_diff(&plain, &with_bias) < 1e-5);

        let summed = linear(
            &x,
            DenseWeight::F32(&wt),
            &bias,
            Some(&residual),
            Epilogue::None,
        )
        .expect("linear");
        assert!(max_diff(&summed, &(&with_bias + &residual).expect("add")) < 1e-5);

        let activated =
            linear(&x, DenseWeight::F32(&wt), &bias, None, Epilogue::Gelu).expect("linear");
        assert!(max_diff(&activated, &with_bias.gelu_erf().expect("gelu")) < 1e-5);
    }

    #[test]
    fn mismatched_shapes_and_other_dtypes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 4), candle_core::DType::F32, &dev).expect("x");
        let wt = Tensor::zeros((5, 2), candle_core::DType::F32, &dev).expect("wt");
        let bias = Tensor::zeros(2, candle_core::DType::F32, &dev).expect("bias");
        let err =
            linear(&x, DenseWeight::F32(&wt), &bias, None, Epilogue::None).expect_err("4 != 5");
        assert!(err.to_string().contains("do not fit"), "{err}");
        let half = x.to_dtype(candle_core::DType::BF16).expect("bf16");
        let wt = Tensor::zeros((4, 2), candle_core::DType::F32, &dev).expect("wt");
        let err =
            linear(&half, DenseWeight::F32(&wt), &bias, None, Epilogue::None).expect_err("bf16");
        assert!(err.to_string().contains("takes f32"), "{err}");
    }
}
