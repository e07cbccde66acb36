//! DistilBERT sequence classification with candle: loading a model (local
//! Hugging Face directory, hub cache or download, or seeded random weights),
//! tokenising, and the forward pass of either engine.
//!
//! Every error is one line that says what to fix, because it ends up in CLI
//! output and in reports where a stack of causes would be noise.

mod attention;
mod bf16;
mod config;
mod cpu_f32;
mod dense;
pub mod engine;
mod gelu;
mod hub;
mod matmul;
mod softmax;
mod stock;
mod tokenizer;
mod weights;

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

pub use config::{Activation, DistilBertConfig, LAYER_NORM_EPS, distilbert_base_config};
pub use fleetbench_common::{Engine, ModelInfo, Precision, WeightsChoice, WeightsSource};

use engine::FleetbenchModel;
use hub::TokenizerFile;
use stock::StockModel;
use tokenizer::TextEncoder;
use weights::Checkpoint;

/// Seed of the synthetic weights unless the user picks another.
pub const DEFAULT_SEED: u64 = 42;

/// What to load and how to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRequest {
    /// A Hugging Face hub id (`org/name`) or a local model directory.
    pub model: String,
    pub weights: WeightsChoice,
    pub engine: Engine,
    pub dtype: Precision,
    /// Seed of synthetic weights (ignored for real ones).
    pub seed: u64,
    /// The hub cache directory (the one holding `models--org--name`). `None`:
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    /// A field rather than an environment variable so callers and tests can
    /// choose it without touching process-global state.
    pub cache_dir: Option<PathBuf>,
    /// The hub endpoint. `None`: `HF_ENDPOINT`, else `https://huggingface.co`.
    pub hub_endpoint: Option<String>,
}

impl ModelRequest {
    /// Auto weights, the fleetbench engine, f32, seed 42, cache and endpoint from the environment.
    pub fn new(model: impl Into<String>) -> Self {
        ModelRequest {
            model: model.into(),
            weights: WeightsChoice::Auto,
            engine: Engine::Fleetbench,
            dtype: Precision::F32,
            seed: DEFAULT_SEED,
            cache_dir: None,
            hub_endpoint: None,
        }
    }
}

/// Why a model could not be loaded or run. Each message is a single line
/// naming the file or value at fault and what to do about it.
#[derive(thiserror::Error, Debug)]
pub enum ModelError {
    #[error(
        "the model name is empty: give a hub id such as distilbert-base-uncased-finetuned-sst-2-english or a local directory"
    )]
    EmptyModel,
    #[error(
        "model directory {path} does not exist: pass --model with a directory holding config.json, model.safetensors and tokenizer.json, or a Hugging Face hub id"
    )]
    DirectoryNotFound { path: String },
    #[error(
        "{path} is a file, not a model directory: pass --model with the directory that holds config.json, model.safetensors and tokenizer.json"
    )]
    NotADirectory { path: String },
    #[error(
        "{path} is {size_mib} MiB, more than the {cap_mib} MiB this agent reads for a {what}: is it the right file?"
    )]
    TooLarge {
        path: String,
        what: &'static str,
        size_mib: u64,
        cap_mib: u64,
    },
    #[error("{file} not found in {dir}: {hint}")]
    MissingFile {
        file: String,
        dir: String,
        hint: String,
    },
    #[error("cannot read {path} ({reason}): check that it exists and is readable")]
    Io { path: String, reason: String },
    #[error(
        "{file} in {dir} is not a valid DistilBERT config ({reason}): fix it or re-download it"
    )]
    InvalidConfig {
        file: String,
        dir: String,
        reason: String,
    },
    #[error("{file} in {dir} is not a valid safetensors file ({reason}): re-download it")]
    InvalidSafetensors {
        file: String,
        dir: String,
        reason: String,
    },
    #[error(
        "tensor {name} is missing from {file}: it is not a DistilBertForSequenceClassification checkpoint for this config.json; re-download the model"
    )]
    MissingTensor { name: String, file: String },
    #[error(
        "tensor {name} has shape {actual:?}, expected {expected:?} for this config.json: the weights do not belong to this config; re-download the model"
    )]
    TensorShape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "tensor {name} in {file} has dtype {dtype}, not a float type: export the checkpoint with float32 weights"
    )]
    TensorDtype {
        name: String,
        file: String,
        dtype: String,
    },
    #[error("{file} in {dir} is not a valid tokenizer ({reason}): re-download it")]
    InvalidTokenizer {
        file: String,
        dir: String,
        reason: String,
    },
    #[error(
        "{file} has {tokens} tokens but config.json says vocab_size {vocab_size}: the tokenizer does not belong to this model"
    )]
    VocabMismatch {
        file: String,
        tokens: usize,
        vocab_size: usize,
    },
    #[error(
        "sequence length {seq_len} is not allowed: use 1 to {max} (this model's max_position_embeddings)"
    )]
    SeqLen { seq_len: usize, max: usize },
    #[error("no texts given: pass at least one text")]
    NoTexts,
    #[error(
        "the candle-transformers engine runs only in f32: use --engine fleetbench for f16/bf16"
    )]
    EngineDtype { dtype: Precision },
    #[error(
        "bf16 on the CPU needs the avx512_bf16 instructions (Intel Cooper Lake or Sapphire Rapids and later, AMD Zen 4 and later), which this CPU lacks: use --dtype f32"
    )]
    CpuWithoutBf16,
    #[error(
        "cannot fetch {repo} from the Hugging Face hub ({reason}): pass --model DIR with config.json, model.safetensors and tokenizer.json, or --weights random for synthetic weights"
    )]
    HubUnavailable { repo: String, reason: String },
    #[error("the input batch does not fit this model: {reason}")]
    BadBatch { reason: String },
    #[error("tokenizing failed: {reason}")]
    Tokenize { reason: String },
    #[error("{context} failed: {reason}")]
    Compute { context: String, reason: String },
}

impl ModelError {
    pub(crate) fn compute(context: &str, e: &candle_core::Error) -> Self {
        ModelError::Compute {
            context: context.to_string(),
            reason: one_line(&e.to_string()),
        }
    }
}

/// Folds a possibly multi-line message (candle's context chains, backtraces)
/// into one line of bounded length.
pub(crate) fn one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        let frame = line
            .split_once(':')
            .is_some_and(|(n, _)| n.trim().parse::<u32>().is_ok());
        if frame || lower.starts_with("stack backtrace") || lower.contains("disabled backtrace") {
            break;
        }
        parts.push(line);
    }
    let joined = parts.join(": ");
    const MAX: usize = 400;
    if joined.chars().count() > MAX {
        let cut: String = joined.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        joined
    }
}

/// Token ids of a batch, on the model's device and on the host.
#[derive(Clone, Debug)]
pub struct EncodedBatch {
    /// (b, s) u32.
    pub input_ids: Tensor,
    /// (b, s) u32, 1 for real tokens and 0 for padding.
    pub attention_mask: Tensor,
    pub ids: Vec<Vec<u32>>,
    pub mask: Vec<Vec<u32>>,
}

/// What one forward pass returns.
#[derive(Clone, Debug)]
pub struct ModelOutput {
    /// (b, labels), f32.
    pub logits: Tensor,
    /// (b, hidden), f32: the last hidden state of [CLS], before the classifier head.
    pub cls_hidden: Tensor,
}

/// One text's prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    pub text: String,
    pub label: String,
    pub probabilities: Vec<f32>,
    pub logits: Vec<f32>,
}

#[derive(Debug)]
enum Backend {
    Fleetbench(FleetbenchModel),
    Stock(StockModel),
}

/// A model ready to run on one device.
pub struct LoadedModel {
    info: ModelInfo,
    notes: Vec<String>,
    config: DistilBertConfig,
    device: Device,
    encoder: TextEncoder,
    backend: Backend,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .field("notes", &self.notes)
            .field("device", &self.device)
            .field("tokenizer", &self.encoder)
            .finish_non_exhaustive()
    }
}

/// Everything gathered before the engine is built.
struct Prepared {
    config: DistilBertConfig,
    encoder: TextEncoder,
    checkpoint: Checkpoint,
    /// Where the checkpoint came from, for messages.
    checkpoint_label: PathBuf,
    source: WeightsSource,
}

impl LoadedModel {
    /// Loads `req.model` (see `ModelRequest`) onto `device`.
    pub fn load(req: &ModelRequest, device: &Device) -> Result<LoadedModel, ModelError> {
        let model = req.model.trim();
        if model.is_empty() {
            return Err(ModelError::EmptyModel);
        }
        if req.engine == Engine::CandleTransformers && req.dtype != Precision::F32 {
            return Err(ModelError::EngineDtype { dtype: req.dtype });
        }
        let mut notes = Vec::new();
        if device.is_cpu() {
            notes.extend(cpu_precision_note(req.dtype, bf16::available())?);
        }
        let path = Path::new(model);
        let prepared = if path.is_dir() {
            prepare_directory(path, req)?
        } else if path.exists() {
            return Err(ModelError::NotADirectory {
                path: model.to_string(),
            });
        } else if looks_like_path(model) {
            return Err(ModelError::DirectoryNotFound {
                path: model.to_string(),
            });
        } else {
            prepare_hub(model, req, &mut notes)?
        };

        let Prepared {
            config,
            encoder,
            checkpoint,
            checkpoint_label,
            source,
        } = prepared;
        let parameters = weights::validate(&checkpoint, &config, &checkpoint_label)?;
        let dtype = candle_dtype(req.dtype);
        let context = format!("loading the weights onto {}", device_name(device));
        let backend = match req.engine {
            Engine::Fleetbench => {
                FleetbenchModel::load(&checkpoint, &config, dtype, device).map(Backend::Fleetbench)
            }
            Engine::CandleTransformers => {
                StockModel::load(&checkpoint, &config, device).map(Backend::Stock)
            }
        }
        .map_err(|e| ModelError::compute(&context, &e))?;
        drop(checkpoint);

        let info = ModelInfo {
            name: model.to_string(),
            weights: source,
            hidden_size: config.dim,
            layers: config.n_layers,
            heads: config.n_heads,
            intermediate_size: config.hidden_dim,
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            parameters,
            dtype: req.dtype,
            engine: req.engine,
        };
        Ok(LoadedModel {
            info,
            notes,
            config,
            device: device.clone(),
            encoder,
            backend,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Warnings a report must carry, e.g. that synthetic weights replaced the hub's.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Class names in logit order.
    pub fn labels(&self) -> &[String] {
        &self.config.labels
    }

    pub fn config(&self) -> &DistilBertConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Where the tokenizer's vocabulary came from.
    pub fn tokenizer_source(&self) -> &str {
        self.encoder.source()
    }

    fn check_seq_len(&self, seq_len: usize) -> Result<(), ModelError> {
        let max = self.config.max_position_embeddings;
        if seq_len == 0 || seq_len > max {
            return Err(ModelError::SeqLen { seq_len, max });
        }
        Ok(())
    }

    /// Tokenises `texts`, truncating and padding each to exactly `seq_len`.
    pub fn encode(&self, texts: &[&str], seq_len: usize) -> Result<EncodedBatch, ModelError> {
        self.check_seq_len(seq_len)?;
        if texts.is_empty() {
            return Err(ModelError::NoTexts);
        }
        let pad = self.encoder.pad_id();
        let mut ids = Vec::with_capacity(texts.len());
        let mut mask = Vec::with_capacity(texts.len());
        for text in texts {
            let mut row = self.encoder.encode(text, seq_len)?;
            let mut m = vec![1u32; row.len()];
            row.resize(seq_len, pad);
            m.resize(seq_len, 0);
            ids.push(row);
            mask.push(m);
        }
        self.batch(ids, mask)
    }

    /// Tokenises one text, truncated to `max_len`, without padding.
    pub fn encode_unpadded(&self, text: &str, max_len: usize) -> Result<EncodedBatch, ModelError> {
        self.check_seq_len(max_len)?;
        let row = self.encoder.encode(text, max_len)?;
        let m = vec![1u32; row.len()];
        self.batch(vec![row], vec![m])
    }

    fn batch(&self, ids: Vec<Vec<u32>>, mask: Vec<Vec<u32>>) -> Result<EncodedBatch, ModelError> {
        let b = ids.len();
        let s = ids.first().map_or(0, Vec::len);
        let tensor = |rows: &[Vec<u32>]| {
            let flat: Vec<u32> = rows.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (b, s), &self.device)
                .map_err(|e| ModelError::compute("copying token ids to the device", &e))
        };
        Ok(EncodedBatch {
            input_ids: tensor(&ids)?,
            attention_mask: tensor(&mask)?,
            ids,
            mask,
        })
    }

    /// Runs the model on an encoded batch.
    pub fn forward(&self, batch: &EncodedBatch) -> Result<ModelOutput, ModelError> {
        self.forward_laps(batch, &mut engine::NoLaps)
    }

    /// [`forward`](Self::forward), reporting each step to `laps`
    /// (`fleetbench-agent profile`).
    pub fn forward_laps(
        &self,
        batch: &EncodedBatch,
        laps: &mut dyn engine::Laps,
    ) -> Result<ModelOutput, ModelError> {
        let bad = |reason: String| ModelError::BadBatch { reason };
        let (b, s) = batch.input_ids.dims2().map_err(|_| {
            bad(format!(
                "input_ids has shape {:?}, expected (batch, seq)",
                batch.input_ids.dims()
            ))
        })?;
        if batch.attention_mask.dims() != [b, s] {
            return Err(bad(format!(
                "attention_mask has shape {:?}, input_ids {:?}: they must match",
                batch.attention_mask.dims(),
                [b, s]
            )));
        }
        if b == 0 {
            return Err(ModelError::NoTexts);
        }
        self.check_seq_len(s)?;
        let prep = |t: &Tensor| t.to_device(&self.device)?.to_dtype(DType::U32);
        let mut run = || -> candle_core::Result<(Tensor, Tensor)> {
            let ids = prep(&batch.input_ids)?;
            let mask = prep(&batch.attention_mask)?;
            laps.lap("inputs", "copy to device")?;
            match &self.backend {
                Backend::Fleetbench(m) => m.forward_laps(&ids, &mask, laps),
                Backend::Stock(m) => {
                    let out = m.forward(&ids, &mask)?;
                    laps.lap("candle-transformers", "whole forward")?;
                    Ok(out)
                }
            }
        };
        let (cls_hidden, logits) = run().map_err(|e| {
            ModelError::compute(
                &format!("the forward pass on {}", device_name(&self.device)),
                &e,
            )
        })?;
        Ok(ModelOutput { logits, cls_hidden })
    }

    /// Encodes, runs and turns the logits into labels and probabilities.
    pub fn classify(
        &self,
        texts: &[&str],
        seq_len: usize,
    ) -> Result<Vec<Classification>, ModelError> {
        let batch = self.encode(texts, seq_len)?;
        let out = self.forward(&batch)?;
        let logits = out
            .logits
            .to_vec2::<f32>()
            .map_err(|e| ModelError::compute("reading the logits", &e))?;
        let labels = self.labels();
        Ok(texts
            .iter()
            .zip(logits)
            .map(|(text, row)| {
                let probabilities = softmax(&row);
                let best = argmax(&row);
                Classification {
                    text: (*text).to_string(),
                    label: labels
                        .get(best)
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{best}")),
                    probabilities,
                    logits: row,
                }
            })
            .collect())
    }
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

fn candle_dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    }
}

/// What a half precision means on the CPU, as a note for the report, or
/// the refusal where the CPU cannot run it (`has_bf16`: the CPU has
/// avx512_bf16; a parameter so that both answers are tested on any CPU).
fn cpu_precision_note(dtype: Precision, has_bf16: bool) -> Result<Option<String>, ModelError> {
    match dtype {
        Precision::F32 => Ok(None),
        Precision::Bf16 if has_bf16 => Ok(Some(
            "bf16 on the CPU: the linear layers' weights and inputs rounded to bf16, their products on avx512_bf16 with f32 accumulation; attention, softmax, GELU and layer norms in f32".to_string(),
        )),
        Precision::Bf16 => Err(ModelError::CpuWithoutBf16),
        Precision::F16 => Ok(Some(
            "f16 on the CPU is emulated: candle widens f16 to f32 for every product and narrows the result back (no f16 arithmetic), so it measures conversions, not the hardware; expect it slower than f32".to_string(),
        )),
    }
}

fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// A hub id is `name` or `org/name`; anything else that names no existing
/// directory is taken for a mistyped path rather than sent to the hub.
fn looks_like_path(model: &str) -> bool {
    model.starts_with(['/', '.', '~'])
        || model.contains('\\')
        || model.ends_with('/')
        || model.matches('/').count() > 1
}

/// Largest files a model may bring: a DistilBERT config is ~1 KB, its
/// tokenizer.json ~0.7 MB, its weights 268 MB; these leave room for every
/// BERT-sized model and none for a file meant to exhaust the host's memory.
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;
pub(crate) const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
pub(crate) const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// Reads a whole file of at most `cap` bytes; a larger one is refused
/// before it is read (and if it grows while being read, after `cap`).
pub(crate) fn read_capped(
    path: &Path,
    cap: u64,
    what: &'static str,
) -> Result<Vec<u8>, ModelError> {
    use std::io::Read as _;
    let io = |e: std::io::Error| ModelError::Io {
        path: path.display().to_string(),
        reason: one_line(&e.to_string()),
    };
    let too_large = |size: u64| ModelError::TooLarge {
        path: path.display().to_string(),
        what,
        size_mib: size.div_ceil(1 << 20),
        cap_mib: cap >> 20,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > cap {
        return Err(too_large(size));
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(cap + 1).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 > cap {
        return Err(too_large(data.len() as u64));
    }
    Ok(data)
}

/// [`read_capped`] for a text file.
pub(crate) fn read_text_capped(
    path: &Path,
    cap: u64,
    what: &'static str,
) -> Result<String, ModelError> {
    String::from_utf8(read_capped(path, cap, what)?).map_err(|_| ModelError::Io {
        path: path.display().to_string(),
        reason: "not UTF-8 text".into(),
    })
}

fn read_config(path: &Path) -> Result<DistilBertConfig, ModelError> {
    let text = read_text_capped(path, MAX_CONFIG_BYTES, "config.json")?;
    DistilBertConfig::from_json_str(&text).map_err(|reason| ModelError::InvalidConfig {
        file: weights::file_name(path),
        dir: weights::parent_dir(path),
        reason: one_line(&reason),
    })
}

fn check_vocab(encoder: &TextEncoder, cfg: &DistilBertConfig) -> Result<(), ModelError> {
    let tokens = encoder.vocab_size();
    if tokens != cfg.vocab_size {
        return Err(ModelError::VocabMismatch {
            file: encoder.source().to_string(),
            tokens,
            vocab_size: cfg.vocab_size,
        });
    }
    Ok(())
}

const DIR_HINT: &str = "a model directory needs config.json, model.safetensors and tokenizer.json (as saved by save_pretrained)";

fn prepare_directory(dir: &Path, req: &ModelRequest) -> Result<Prepared, ModelError> {
    let missing = |file: &str, hint: &str| ModelError::MissingFile {
        file: file.to_string(),
        dir: dir.display().to_string(),
        hint: hint.to_string(),
    };
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(missing("config.json", DIR_HINT));
    }
    let config = read_config(&config_path)?;

    let json = dir.join("tokenizer.json");
    let vocab = dir.join("vocab.txt");
    let encoder = if json.is_file() {
        TextEncoder::from_tokenizer_json(&json, config.pad_token_id)?
    } else if vocab.is_file() {
        TextEncoder::from_vocab_file(&vocab, config.pad_token_id)?
    } else {
        return Err(missing(
            "tokenizer.json",
            "copy the model's tokenizer.json (or its vocab.txt) into the directory",
        ));
    };
    check_vocab(&encoder, &config)?;

    if req.weights == WeightsChoice::Random {
        let checkpoint = weights::random_checkpoint(&config, req.seed)?;
        return Ok(Prepared {
            config,
            encoder,
            checkpoint,
            checkpoint_label: PathBuf::from("seeded random weights"),
            source: WeightsSource::Random { seed: req.seed },
        });
    }
    let weights_path = dir.join("model.safetensors");
    if !weights_path.is_file() {
        return Err(missing(
            "model.safetensors",
            "copy the model's model.safetensors into the directory, or pass --weights random for synthetic weights",
        ));
    }
    let checkpoint = weights::load_safetensors(&weights_path)?;
    Ok(Prepared {
        config,
        encoder,
        checkpoint,
        checkpoint_label: weights_path,
        source: WeightsSource::Directory {
            path: dir.display().to_string(),
        },
    })
}

fn prepare_hub(
    repo: &str,
    req: &ModelRequest,
    notes: &mut Vec<String>,
) -> Result<Prepared, ModelError> {
    if req.weights == WeightsChoice::Random {
        return prepare_builtin(req.seed);
    }
    // `org/name@COMMIT` pins the files to that commit of the repository.
    let (repo, revision) = split_revision(repo);
    match hub::fetch(
        repo,
        revision,
        req.cache_dir.as_deref(),
        req.hub_endpoint.as_deref(),
    ) {
        Ok(files) => {
            let config = read_config(&files.config)?;
            let encoder = match &files.tokenizer {
                TokenizerFile::Json(p) => TextEncoder::from_tokenizer_json(p, config.pad_token_id)?,
                TokenizerFile::Vocab(p) => TextEncoder::from_vocab_file(p, config.pad_token_id)?,
            };
            check_vocab(&encoder, &config)?;
            let checkpoint = weights::load_safetensors(&files.weights)?;
            Ok(Prepared {
                config,
                encoder,
                checkpoint,
                checkpoint_label: files.weights,
                source: WeightsSource::Hub {
                    repo: repo.to_string(),
                    revision: files.revision,
                },
            })
        }
        Err(reason) if req.weights == WeightsChoice::Hub => Err(ModelError::HubUnavailable {
            repo: repo.to_string(),
            reason,
        }),
        Err(reason) => {
            let note = format!(
                "hub weights unavailable ({reason}): synthetic weights used (seed {}), timings are real but predictions are not",
                req.seed
            );
            tracing::warn!("{note}");
            notes.push(note);
            prepare_builtin(req.seed)
        }
    }
}

/// `org/name@COMMIT` -> (`org/name`, the 40-hex-digit commit); anything else
/// is a repository without a pinned revision.
pub fn split_revision(model: &str) -> (&str, Option<&str>) {
    match model.rsplit_once('@') {
        Some((repo, rev)) if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (repo, Some(rev))
        }
        _ => (model, None),
    }
}

/// distilbert-base-uncased's shape and vocabulary with seeded random weights.
fn prepare_builtin(seed: u64) -> Result<Prepared, ModelError> {
    let config = distilbert_base_config();
    let encoder = TextEncoder::builtin()?;
    check_vocab(&encoder, &config)?;
    let checkpoint = weights::random_checkpoint(&config, seed)?;
    Ok(Prepared {
        config,
        encoder,
        checkpoint,
        checkpoint_label: PathBuf::from("seeded random weights"),
        source: WeightsSource::Random { seed },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precisions_on_the_cpu_are_labelled_or_refused() {
        assert!(
            cpu_precision_note(Precision::F32, false)
                .expect("f32")
                .is_none()
        );
        let bf16 = cpu_precision_note(Precision::Bf16, true)
            .expect("bf16 with the instructions")
            .expect("a note");
        assert!(bf16.contains("avx512_bf16 with f32 accumulation"), "{bf16}");
        let refused = cpu_precision_note(Precision::Bf16, false).expect_err("no avx512_bf16");
        assert!(matches!(refused, ModelError::CpuWithoutBf16));
        let line = refused.to_string();
        assert!(
            !line.contains('\n') && line.ends_with("use --dtype f32"),
            "{line}"
        );
        let f16 = cpu_precision_note(Precision::F16, true)
            .expect("f16")
            .expect("a note");
        assert!(f16.starts_with("f16 on the CPU is emulated"), "{f16}");
    }

    #[test]
    fn one_line_joins_context_chains_and_drops_backtraces() {
        assert_eq!(one_line("ctx\ninner error\n"), "ctx: inner error");
        assert_eq!(one_line("boom\n   0: std::backtrace\n   1: main"), "boom");
        assert!(one_line(&"x".repeat(1000)).len() < 410);
    }

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(!looks_like_path("distilbert-base-uncased"));
        assert!(!looks_like_path("org/name"));
        assert!(looks_like_path("/tmp/model"));
        assert!(looks_like_path("./model"));
        assert!(looks_like_path("a/b/c"));
    }

    /// The runner may move a model into a worker thread or share it.
    #[test]
    fn loaded_model_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LoadedModel>();
        assert_send_sync::<ModelError>();
    }

    #[test]
    fn softmax_and_argmax_match_by_hand() {
        let p = softmax(&[0.0, 0.0]);
        assert_eq!(p, [0.5, 0.5]);
        assert_eq!(argmax(&[1.0, 3.0, 2.0]), 1);
    }
}
