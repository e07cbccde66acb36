//! The sweep specification: what to benchmark and how, with the validation
//! both the standalone bench and the coordinator apply before any work starts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The model the seed report (testdata/seed/distilbert-benchmark-report.md)
/// measured, and the default everywhere.
pub const DEFAULT_MODEL: &str = "distilbert-base-uncased-finetuned-sst-2-english";
/// DistilBERT's `max_position_embeddings`: longer sequences have no position vector.
pub const MAX_SEQ_LEN: usize = 512;
/// Far beyond what fits on any current accelerator at sequence 128; a larger
/// number is a typo, not an experiment.
pub const MAX_BATCH_SIZE: usize = 65_536;
/// Upper bound on timed iterations per point, so a typo cannot run for days.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Why a sweep specification was refused. Every message says what to change.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SpecError {
    #[error("the batch size list is empty: give at least one, e.g. --batch-sizes 8,16,32")]
    EmptyBatchSizes,
    #[error(
        "batch size '{0}' is not a whole number: use positive integers, e.g. --batch-sizes 8,16,32"
    )]
    BatchSizeNotANumber(String),
    #[error("batch size {0} is not allowed: batch sizes must be at least 1")]
    BatchSizeNotPositive(i64),
    #[error("batch size {0} is too large: the limit is {MAX_BATCH_SIZE}")]
    BatchSizeTooLarge(i64),
    #[error("batch size {0} is listed twice: list each batch size once")]
    DuplicateBatchSize(usize),
    #[error("sequence length {0} is not allowed: use 1 to {max}", max = MAX_SEQ_LEN)]
    SeqLenOutOfRange(usize),
    #[error("--iterations must be between 1 and {MAX_ITERATIONS}, got {0}")]
    IterationsOutOfRange(u32),
    #[error("--warmup must be at most {MAX_ITERATIONS}, got {0}")]
    WarmupOutOfRange(u32),
    #[error("--min-seconds must be a finite number of seconds between 0 and 86400, got {0}")]
    MinSecondsOutOfRange(f64),
    #[error("--gpu-min-seconds must be a finite number of seconds between 0 and 86400, got {0}")]
    GpuMinSecondsOutOfRange(f64),
    #[error("unknown {what} '{value}': expected one of {expected}")]
    UnknownValue {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the model name is empty: give a hub id such as {DEFAULT_MODEL} or a local directory")]
    EmptyModel,
}

/// Numeric precision the model runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Bytes per element, for memory estimates.
    pub fn size_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::Bf16 => 2,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(SpecError::UnknownValue {
                what: "dtype",
                value: one_line(s),
                expected: "f32, f16, bf16",
            }),
        }
    }
}

/// Where the weights come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsChoice {
    /// The hub's weights when cached or reachable, else synthetic weights with a warning.
    #[default]
    Auto,
    /// The hub's (or a local directory's) weights, or an error.
    Hub,
    /// Seeded random weights of the same architecture: true timings, meaningless labels.
    Random,
}

impl WeightsChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsChoice::Auto => "auto",
            WeightsChoice::Hub => "hub",
            WeightsChoice::Random => "random",
        }
    }
}

impl fmt::Display for WeightsChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WeightsChoice {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(WeightsChoice::Auto),
            "hub" => Ok(WeightsChoice::Hub),
            "random" | "synthetic" => Ok(WeightsChoice::Random),
            _ => Err(SpecError::UnknownValue {
                what: "weights",
                value: one_line(s),
                expected: "auto, hub, random",
            }),
        }
    }
}

/// Which DistilBERT implementation runs the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Engine {
    /// The agent's own forward: additive mask, fused softmax, erf GELU, any dtype.
    #[default]
    #[serde(rename = "fleetbench")]
    Fleetbench,
    /// candle-transformers' stock module (f32 only), the baseline we measure against.
    #[serde(rename = "candle-transformers")]
    CandleTransformers,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Fleetbench => "fleetbench",
            Engine::CandleTransformers => "candle-transformers",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Engine {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fleetbench" | "native" => Ok(Engine::Fleetbench),
            "candle-transformers" | "stock" => Ok(Engine::CandleTransformers),
            _ => Err(SpecError::UnknownValue {
                what: "engine",
                value: one_line(s),
                expected: "fleetbench, candle-transformers",
            }),
        }
    }
}

/// Which devices of a host a sweep runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "index")]
pub enum DeviceSelector {
    /// Every GPU when there is one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `None`: every GPU; `Some(n)`: GPU n only.
    Cuda(Option<u32>),
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelector::Auto => f.write_str("auto"),
            DeviceSelector::Cpu => f.write_str("cpu"),
            DeviceSelector::Cuda(None) => f.write_str("cuda"),
            DeviceSelector::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSelector {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let unknown = || SpecError::UnknownValue {
            what: "device",
            value: one_line(s),
            expected: "auto, cpu, cuda, cuda:N",
        };
        match t.as_str() {
            "auto" => Ok(DeviceSelector::Auto),
            "cpu" => Ok(DeviceSelector::Cpu),
            "cuda" | "gpu" => Ok(DeviceSelector::Cuda(None)),
            _ => match t.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<u32>()
                    .map(|n| DeviceSelector::Cuda(Some(n)))
                    .map_err(|_| unknown()),
                None => Err(unknown()),
            },
        }
    }
}

/// Everything that defines one sweep. Defaults are the seed report's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub model: String,
    pub weights: WeightsChoice,
    pub engine: Engine,
    pub device: DeviceSelector,
    pub dtype: Precision,
    pub batch_sizes: Vec<usize>,
    pub seq_len: usize,
    pub warmup: u32,
    pub iterations: u32,
    /// Keep iterating until both `iterations` and this many timed seconds are reached.
    pub min_seconds: f64,
    /// On a GPU, every point lasts at least this long (and at least
    /// `min_seconds`): a few milliseconds of work are too short for NVML's
    /// energy counter and power readings, and for the clocks to settle.
    #[serde(default = "default_gpu_min_seconds")]
    pub gpu_min_seconds: f64,
}

/// Two seconds: NVML's power readings average over about a second and its
/// energy counter advances in steps of tens of milliseconds, so a point of a
/// few milliseconds (small batches on an H100) would read 0 J.
pub const DEFAULT_GPU_MIN_SECONDS: f64 = 2.0;

fn default_gpu_min_seconds() -> f64 {
    DEFAULT_GPU_MIN_SECONDS
}

impl Default for SweepSpec {
    fn default() -> Self {
        SweepSpec {
            model: DEFAULT_MODEL.to_string(),
            weights: WeightsChoice::Auto,
            engine: Engine::Fleetbench,
            device: DeviceSelector::Auto,
            dtype: Precision::F32,
            batch_sizes: vec![8, 16, 32, 64, 128],
            seq_len: 128,
            warmup: 5,
            iterations: 20,
            min_seconds: 0.0,
            gpu_min_seconds: DEFAULT_GPU_MIN_SECONDS,
        }
    }
}

impl SweepSpec {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.model.trim().is_empty() {
            return Err(SpecError::EmptyModel);
        }
        validate_batch_sizes(&self.batch_sizes)?;
        if self.seq_len == 0 || self.seq_len > MAX_SEQ_LEN {
            return Err(SpecError::SeqLenOutOfRange(self.seq_len));
        }
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(SpecError::IterationsOutOfRange(self.iterations));
        }
        if self.warmup > MAX_ITERATIONS {
            return Err(SpecError::WarmupOutOfRange(self.warmup));
        }
        if !self.min_seconds.is_finite() || !(0.0..=86_400.0).contains(&self.min_seconds) {
            return Err(SpecError::MinSecondsOutOfRange(self.min_seconds));
        }
        if !self.gpu_min_seconds.is_finite() || !(0.0..=86_400.0).contains(&self.gpu_min_seconds) {
            return Err(SpecError::GpuMinSecondsOutOfRange(self.gpu_min_seconds));
        }
        Ok(())
    }

    /// A one-line summary for logs and tables.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} weights, {} engine, {}) on {}: batch sizes {}, seq {}, {} warm-up + {} timed{}{}",
            self.model,
            self.weights,
            self.engine,
            self.dtype,
            self.device,
            join_batch_sizes(&self.batch_sizes),
            self.seq_len,
            self.warmup,
            self.iterations,
            if self.min_seconds > 0.0 {
                format!(" (at least {} s)", self.min_seconds)
            } else {
                String::new()
            },
            if self.gpu_min_seconds > self.min_seconds {
                format!(", at least {} s per point on a GPU", self.gpu_min_seconds)
            } else {
                String::new()
            }
        )
    }
}

/// `text` as an error message quotes it: control characters and line
/// separators escaped (`\n`), so that a message about a bad value stays on one
/// line of a log, an `Ack.reason` or a gRPC status whatever the value held.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `8,16,32` for `[8, 16, 32]`.
pub fn join_batch_sizes(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn validate_batch_sizes(sizes: &[usize]) -> Result<(), SpecError> {
    if sizes.is_empty() {
        return Err(SpecError::EmptyBatchSizes);
    }
    let mut seen = std::collections::BTreeSet::new();
    for &b in sizes {
        if b == 0 {
            return Err(SpecError::BatchSizeNotPositive(0));
        }
        if b > MAX_BATCH_SIZE {
            return Err(SpecError::BatchSizeTooLarge(b as i64));
        }
        if !seen.insert(b) {
            return Err(SpecError::DuplicateBatchSize(b));
        }
    }
    Ok(())
}

/// A parsed `--batch-sizes` value: one argument holding the whole list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSizeList(pub Vec<usize>);

impl FromStr for BatchSizeList {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_batch_sizes(s).map(BatchSizeList)
    }
}

/// Parses `8,16,32` as the CLI and config files write batch sizes.
///
/// Negative numbers are read as numbers (not as flags) so that the error can
/// say what is wrong with them.
pub fn parse_batch_sizes(text: &str) -> Result<Vec<usize>, SpecError> {
    let mut sizes = Vec::new();
    for token in text.split(',') {
        let token = token.trim();
        if token.is_empty() {
            if text.trim().is_empty() {
                return Err(SpecError::EmptyBatchSizes);
            }
            return Err(SpecError::BatchSizeNotANumber(String::new()));
        }
        let value: i64 = token.parse().map_err(|_| match token.parse::<f64>() {
            Ok(v) if v.is_finite() && v > MAX_BATCH_SIZE as f64 => {
                SpecError::BatchSizeTooLarge(i64::MAX)
            }
            _ => SpecError::BatchSizeNotANumber(one_line(token)),
        })?;
        if value <= 0 {
            return Err(SpecError::BatchSizeNotPositive(value));
        }
        if value > MAX_BATCH_SIZE as i64 {
            return Err(SpecError::BatchSizeTooLarge(value));
        }
        sizes.push(value as usize);
    }
    validate_batch_sizes(&sizes)?;
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_settings_and_valid() {
        let spec = SweepSpec::default();
        assert_eq!(spec.batch_sizes, vec![8, 16, 32, 64, 128]);
        assert_eq!((spec.seq_len, spec.warmup, spec.iterations), (128, 5, 20));
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn batch_size_lists_parse_and_bad_ones_say_why() {
        assert_eq!(parse_batch_sizes("8, 16,32"), Ok(vec![8, 16, 32]));
        assert_eq!(parse_batch_sizes(""), Err(SpecError::EmptyBatchSizes));
        assert_eq!(
            parse_batch_sizes("0"),
            Err(SpecError::BatchSizeNotPositive(0))
        );
        assert_eq!(
            parse_batch_sizes("8,-4"),
            Err(SpecError::BatchSizeNotPositive(-4))
        );
        assert_eq!(
            parse_batch_sizes("eight"),
            Err(SpecError::BatchSizeNotANumber("eight".into()))
        );
        assert_eq!(
            parse_batch_sizes("8,8"),
            Err(SpecError::DuplicateBatchSize(8))
        );
        assert!(matches!(
            parse_batch_sizes("99999999999999999999999"),
            Err(SpecError::BatchSizeTooLarge(_))
        ));
        assert_eq!(
            parse_batch_sizes("8,,16"),
            Err(SpecError::BatchSizeNotANumber(String::new()))
        );
    }

    #[test]
    fn sequence_length_is_bounded_by_the_position_table() {
        let mut spec = SweepSpec {
            seq_len: 513,
            ..SweepSpec::default()
        };
        assert_eq!(spec.validate(), Err(SpecError::SeqLenOutOfRange(513)));
        spec.seq_len = 0;
        assert_eq!(spec.validate(), Err(SpecError::SeqLenOutOfRange(0)));
        spec.seq_len = 512;
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn enumerations_parse_from_their_names() {
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!(
            "cuda:1".parse::<DeviceSelector>(),
            Ok(DeviceSelector::Cuda(Some(1)))
        );
        assert_eq!(
            "cuda".parse::<DeviceSelector>(),
            Ok(DeviceSelector::Cuda(None))
        );
        assert!("tpu".parse::<DeviceSelector>().is_err());
        assert!("int8".parse::<Precision>().is_err());
        assert_eq!(
            "candle-transformers".parse::<Engine>(),
            Ok(Engine::CandleTransformers)
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = SweepSpec {
            device: DeviceSelector::Cuda(Some(2)),
            ..SweepSpec::default()
        };
        let json = serde_json::to_string(&spec).expect("serialise");
        assert_eq!(
            serde_json::from_str::<SweepSpec>(&json).expect("parse"),
            spec
        );
    }

    /// Fuzz finding F1 (fuzz/RESULTS.md, target sweep_spec, minimal input
    /// "\n"): a refused value was quoted verbatim, so a line break in it
    /// split the error over several lines of a log or an `Ack.reason`.
    #[test]
    fn errors_quoting_a_bad_value_stay_on_one_line() {
        let breaks = [
            '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
        ];
        for text in ["\n", "x\ny", "\u{85}", "bf\u{0b}16", "cuda:\u{2028}1"] {
            let errors = [
                text.parse::<Precision>().err(),
                text.parse::<DeviceSelector>().err(),
                text.parse::<Engine>().err(),
                text.parse::<WeightsChoice>().err(),
            ];
            for e in errors {
                let message = e.expect("refused").to_string();
                assert!(!message.contains(breaks), "{message:?}");
            }
        }
        assert_eq!(
            parse_batch_sizes("8,1\n6"),
            Err(SpecError::BatchSizeNotANumber("1\\n6".into()))
        );
        assert_eq!(one_line("a\tb\u{2029}c"), "a\\tb\\u{2029}c");
        assert_eq!(one_line("H100 ü 'x'"), "H100 ü 'x'");
    }
}
