//! The sweep settings as command-line arguments, shared by
//! `fleetbench-agent bench` and `fleetbench sweep` so both take the same flags.

use crate::spec::{BatchSizeList, DEFAULT_MODEL};
use crate::{DeviceSelector, Engine, Precision, SweepSpec, WeightsChoice};
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Hugging Face hub id or a local directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// auto (hub if cached or reachable, else synthetic), hub, or random.
    #[arg(long, default_value = "auto")]
    pub weights: WeightsChoice,
    /// fleetbench (default) or candle-transformers (the stock module, f32 only).
    #[arg(long, default_value = "fleetbench")]
    pub engine: Engine,
    /// auto, cpu, cuda (every GPU) or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSelector,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Comma-separated, e.g. 8,16,32,64,128.
    #[arg(long, default_value = "8,16,32,64,128", allow_hyphen_values = true)]
    pub batch_sizes: BatchSizeList,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Untimed iterations before each batch size.
    #[arg(long, default_value_t = 5)]
    pub warmup: u32,
    /// Timed iterations per batch size.
    #[arg(long, default_value_t = 20)]
    pub iterations: u32,
    /// Keep iterating until both --iterations and this many timed seconds are reached.
    #[arg(long, default_value_t = 0.0)]
    pub min_seconds: f64,
    /// On a GPU, every batch size is timed for at least this many seconds
    /// (NVML's power and energy readings need it; a warm-up of 1 or more is
    /// also required there).
    #[arg(long, default_value_t = crate::spec::DEFAULT_GPU_MIN_SECONDS)]
    pub gpu_min_seconds: f64,
}

impl SweepArgs {
    /// The spec these arguments describe (not yet validated).
    pub fn spec(&self) -> SweepSpec {
        SweepSpec {
            model: self.model.clone(),
            weights: self.weights,
            engine: self.engine,
            device: self.device,
            dtype: self.dtype,
            batch_sizes: self.batch_sizes.0.clone(),
            seq_len: self.seq_len,
            warmup: self.warmup,
            iterations: self.iterations,
            min_seconds: self.min_seconds,
            gpu_min_seconds: self.gpu_min_seconds,
        }
    }
}
