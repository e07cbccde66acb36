//! f32 CPU tensors as plain slices, for the CPU forward's own kernels
//! (`attention`, `dense`, `gelu`): candle's storage is read in place, never
//! copied, and anything but contiguous f32 on the CPU is an error that names
//! the kernel.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

/// The f32 elements of a contiguous CPU storage.
pub(super) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes f32 storage")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous tensors")
    };
    Ok(&data[start..end])
}

/// Runs `f` on the tensor's elements, borrowed from its storage for the
/// call (candle keeps storage behind a lock, so the slice cannot outlive it).
pub(super) fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{op} runs on the CPU only")
    };
    f(contiguous_f32(cpu, layout, op)?)
}

/// The largest absolute difference between two tensors of one shape, for
/// the kernels' tests.
#[cfg(test)]
pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|t| t.abs())
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_scalar::<f32>())
        .expect("diff")
}
