//! What a point will do, decided and checked before it starts: how long it is
//! timed ([`TimingPlan`]) and whether its shapes fit the kernels
//! ([`check_kernel_limits`]). Both are pure, so the rules are unit-tested
//! without a GPU.

use std::time::Duration;

use fleetbench_common::spec::MAX_ITERATIONS;
use fleetbench_common::{DeviceKind, ModelInfo, SweepSpec};
use thiserror::Error;

/// How one point is timed on one kind of device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimingPlan {
    pub warmup: u32,
    /// At least this many timed iterations...
    pub iterations: u32,
    /// ...and at least this much wall time of them.
    pub min_wall: Duration,
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum TimingError {
    /// The first forward pass on a GPU loads (and on a PTX build JIT-compiles)
    /// every kernel, and cuBLAS picks its algorithms: timing it would measure
    /// the driver, not the model.
    #[error(
        "--warmup 0 is not allowed on a GPU: the first pass loads and compiles the kernels; use --warmup 1 or more"
    )]
    NoWarmupOnGpu,
}

impl TimingPlan {
    /// The plan for `spec` on a `kind` device. On a GPU every point lasts at
    /// least `spec.gpu_min_seconds` (and `spec.min_seconds`): a short window
    /// would read NVML's energy counter and power as zero and catch the clocks
    /// before they settle. On a CPU only `spec.min_seconds` applies.
    pub fn for_device(spec: &SweepSpec, kind: DeviceKind) -> Result<TimingPlan, TimingError> {
        let min_seconds = match kind {
            DeviceKind::Cpu => spec.min_seconds,
            DeviceKind::Cuda => {
                if spec.warmup == 0 {
                    return Err(TimingError::NoWarmupOnGpu);
                }
                spec.min_seconds.max(spec.gpu_min_seconds)
            }
        };
        Ok(TimingPlan {
            warmup: spec.warmup,
            iterations: spec.iterations,
            // The spec was validated (finite, 0 to 86,400 s), so this cannot panic.
            min_wall: Duration::from_secs_f64(min_seconds.max(0.0)),
        })
    }

    /// Whether another timed iteration is due after `done` of them took
    /// `elapsed` in all. Both the count and the time must be reached; the
    /// iteration cap keeps a tiny model on a fast device from filling memory
    /// with samples.
    pub fn wants_more(&self, done: usize, elapsed: Duration) -> bool {
        (done < self.iterations as usize || elapsed < self.min_wall)
            && done < MAX_ITERATIONS as usize
    }
}

/// The largest element count candle's CUDA kernels can index: several of them
/// (softmax among them) compute offsets in 32-bit signed integers, so a larger
/// tensor reads out of bounds (an illegal address that poisons the CUDA
/// context for every later point) or silently gives wrong results.
pub const CUDA_MAX_ELEMENTS: u64 = i32::MAX as u64;

/// A point whose tensors are too large for the kernels.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error(
    "batch {batch} at sequence length {seq_len} needs {elements} elements in {tensor}, beyond the {limit} candle's CUDA kernels can index: use batch sizes of at most {max_batch} at this sequence length"
)]
pub struct KernelLimitError {
    pub batch: usize,
    pub seq_len: usize,
    pub tensor: &'static str,
    pub elements: u64,
    pub limit: u64,
    pub max_batch: u64,
}

/// Refuses a point whose largest tensor exceeds what the device's kernels can
/// index. CPU kernels index with `usize` and have no such limit.
pub fn check_kernel_limits(
    model: &ModelInfo,
    batch: usize,
    seq_len: usize,
    kind: DeviceKind,
) -> Result<(), KernelLimitError> {
    if kind == DeviceKind::Cpu {
        return Ok(());
    }
    let (b, s) = (batch as u64, seq_len as u64);
    // Per sample, the largest tensors of one layer's forward pass.
    let per_sample: [(&'static str, u64); 3] = [
        (
            "the attention scores (batch x heads x seq x seq)",
            model.heads as u64 * s * s,
        ),
        (
            "the feed-forward activations (batch x seq x intermediate)",
            s * model.intermediate_size as u64,
        ),
        (
            "the fused query/key/value projection (batch x seq x 3 x hidden)",
            s * 3 * model.hidden_size as u64,
        ),
    ];
    let (tensor, elements_per_sample) = per_sample
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap_or(("the inputs", s));
    let elements = b.saturating_mul(elements_per_sample);
    if elements <= CUDA_MAX_ELEMENTS {
        return Ok(());
    }
    Err(KernelLimitError {
        batch,
        seq_len,
        tensor,
        elements,
        limit: CUDA_MAX_ELEMENTS,
        max_batch: CUDA_MAX_ELEMENTS / elements_per_sample.max(1),
    })
}

/// An upper estimate of the memory one forward pass of `batch` x `seq_len`
/// needs beyond the weights, in bytes of `dtype_bytes`-sized elements: the
/// live activations of one layer at its widest point (the attention scores
/// and their softmax, the fused q/k/v, the feed-forward's two halves, the
/// residual stream), twice over for the allocator's slack.
pub fn activation_bytes(model: &ModelInfo, batch: usize, seq_len: usize, dtype_bytes: u64) -> u64 {
    let (b, s) = (batch as u64, seq_len as u64);
    let (h, heads, ff) = (
        model.hidden_size as u64,
        model.heads as u64,
        model.intermediate_size as u64,
    );
    let per_sample = 2 * heads * s * s + s * (3 * h + 2 * ff + 4 * h);
    b.saturating_mul(per_sample)
        .saturating_mul(dtype_bytes)
        .saturating_mul(2)
}

/// A point that cannot fit in the memory the device has free.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "batch {batch} x seq {seq_len} needs about {needed_mib} MiB for activations but only {free_mib} MiB is free on this device: use a batch size of at most {max_batch}"
)]
pub struct MemoryLimitError {
    pub batch: usize,
    pub seq_len: usize,
    pub needed_mib: u64,
    pub free_mib: u64,
    pub max_batch: u64,
}

/// Refuses a point whose activations would not fit in `free_bytes` (when
/// known): better a clear refusal than an out-of-memory kill that takes the
/// agent, and every other point, with it.
pub fn check_memory(
    model: &ModelInfo,
    batch: usize,
    seq_len: usize,
    dtype_bytes: u64,
    free_bytes: Option<u64>,
) -> Result<(), MemoryLimitError> {
    let Some(free) = free_bytes else {
        return Ok(());
    };
    let needed = activation_bytes(model, batch, seq_len, dtype_bytes);
    if needed <= free {
        return Ok(());
    }
    let per_sample = activation_bytes(model, 1, seq_len, dtype_bytes).max(1);
    Err(MemoryLimitError {
        batch,
        seq_len,
        needed_mib: needed >> 20,
        free_mib: free >> 20,
        max_batch: free / per_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_common::{Engine, Precision, WeightsSource};

    fn distilbert() -> ModelInfo {
        ModelInfo::distilbert_base(
            "distilbert",
            WeightsSource::Random { seed: 1 },
            Precision::F32,
            Engine::Fleetbench,
        )
    }

    #[test]
    fn a_gpu_point_lasts_at_least_the_gpu_minimum_and_a_cpu_point_does_not() {
        let spec = SweepSpec::default();
        let gpu = TimingPlan::for_device(&spec, DeviceKind::Cuda).expect("gpu plan");
        assert_eq!(gpu.min_wall, Duration::from_secs(2));
        // 20 iterations done in 40 ms: a GPU point goes on, a CPU point stops.
        assert!(gpu.wants_more(20, Duration::from_millis(40)));
        assert!(!gpu.wants_more(20, Duration::from_millis(2_001)));
        assert!(gpu.wants_more(19, Duration::from_secs(3)));
        let cpu = TimingPlan::for_device(&spec, DeviceKind::Cpu).expect("cpu plan");
        assert_eq!(cpu.min_wall, Duration::ZERO);
        assert!(!cpu.wants_more(20, Duration::from_millis(40)));
    }

    #[test]
    fn the_larger_of_the_two_minimums_applies_on_a_gpu_and_both_are_settable() {
        let spec = SweepSpec {
            min_seconds: 5.0,
            gpu_min_seconds: 0.5,
            ..SweepSpec::default()
        };
        let plan = TimingPlan::for_device(&spec, DeviceKind::Cuda).expect("plan");
        assert_eq!(plan.min_wall, Duration::from_secs(5));
        let spec = SweepSpec {
            gpu_min_seconds: 0.25,
            ..SweepSpec::default()
        };
        let plan = TimingPlan::for_device(&spec, DeviceKind::Cuda).expect("plan");
        assert_eq!(plan.min_wall, Duration::from_millis(250));
        assert_eq!(
            TimingPlan::for_device(&spec, DeviceKind::Cpu)
                .expect("plan")
                .min_wall,
            Duration::ZERO
        );
    }

    #[test]
    fn a_gpu_needs_a_warm_up_and_a_cpu_does_not() {
        let spec = SweepSpec {
            warmup: 0,
            ..SweepSpec::default()
        };
        assert_eq!(
            TimingPlan::for_device(&spec, DeviceKind::Cuda),
            Err(TimingError::NoWarmupOnGpu)
        );
        assert!(TimingPlan::for_device(&spec, DeviceKind::Cpu).is_ok());
    }

    #[test]
    fn the_iteration_cap_ends_a_point_whatever_the_minimum_time() {
        let spec = SweepSpec {
            gpu_min_seconds: 86_400.0,
            ..SweepSpec::default()
        };
        let plan = TimingPlan::for_device(&spec, DeviceKind::Cuda).expect("plan");
        assert!(plan.wants_more(MAX_ITERATIONS as usize - 1, Duration::ZERO));
        assert!(!plan.wants_more(MAX_ITERATIONS as usize, Duration::ZERO));
    }

    #[test]
    fn shapes_beyond_32_bit_indexing_are_refused_on_cuda_with_the_largest_batch_that_fits() {
        let model = distilbert();
        // 12 heads x 512 x 512 = 3,145,728 scores per sample: 682 samples fit
        // in 2^31 - 1 elements, 683 do not.
        assert!(check_kernel_limits(&model, 682, 512, DeviceKind::Cuda).is_ok());
        let err = check_kernel_limits(&model, 683, 512, DeviceKind::Cuda).expect_err("too big");
        assert_eq!(err.elements, 683 * 12 * 512 * 512);
        assert_eq!(err.max_batch, 682);
        assert!(err.tensor.contains("attention scores"));
        let text = err.to_string();
        assert!(text.contains("at most 682"), "{text}");
        assert!(!text.contains('\n'));
        // The seed sweep is far inside the limit; the CPU has no such limit.
        assert!(check_kernel_limits(&model, 128, 128, DeviceKind::Cuda).is_ok());
        assert!(check_kernel_limits(&model, 65_536, 512, DeviceKind::Cpu).is_ok());
    }

    #[test]
    fn at_short_sequences_the_feed_forward_is_the_largest_tensor() {
        let model = distilbert();
        // seq 8: scores 12 x 64 = 768, feed-forward 8 x 3072 = 24,576 per sample.
        let err = check_kernel_limits(&model, 65_536, 8, DeviceKind::Cuda);
        assert!(err.is_ok(), "65,536 x 24,576 = 1.6e9 fits");
        let model = ModelInfo {
            intermediate_size: 3072 * 4,
            ..distilbert()
        };
        let err = check_kernel_limits(&model, 65_536, 8, DeviceKind::Cuda).expect_err("too big");
        assert!(err.tensor.contains("feed-forward"), "{}", err.tensor);
        assert_eq!(err.max_batch, CUDA_MAX_ELEMENTS / (8 * 3072 * 4));
    }

    #[test]
    fn a_point_that_cannot_fit_is_refused_with_the_batch_that_would() {
        let model = distilbert();
        // DistilBERT base, seq 128, f32: 2 x (2 x 12 x 128² + 128 x 11 x 768)
        // x 4 bytes = 14.9 MB per sample.
        let one = activation_bytes(&model, 1, 128, 4);
        assert_eq!(one, 14_942_208);
        assert!(check_memory(&model, 128, 128, 4, Some(16 << 30)).is_ok());
        assert!(
            check_memory(&model, 65_536, 512, 4, None).is_ok(),
            "unknown: not refused"
        );
        let e = check_memory(&model, 65_536, 512, 4, Some(16 << 30)).expect_err("too big");
        assert!(e.max_batch > 0 && e.max_batch < 65_536, "{e:?}");
        assert!(e.to_string().contains("use a batch size of at most"), "{e}");
    }
}
