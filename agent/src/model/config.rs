//! The DistilBERT configuration as Hugging Face writes it in `config.json`,
//! and the checkpoint layout it implies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// LayerNorm epsilon of every DistilBERT LayerNorm (hard-coded in transformers).
pub const LAYER_NORM_EPS: f32 = 1e-12;

/// Feed-forward activation of the transformer blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Exact (erf) GELU, as `transformers` computes `"gelu"`.
    Gelu,
    Relu,
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        }
    }
}

/// A DistilBERT sequence classifier's shape, parsed from a Hugging Face `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    pub pad_token_id: u32,
    /// Label names in class-index order (`id2label`).
    pub labels: Vec<String>,
}

/// The fields of `config.json` we read. Defaults are those of
/// `transformers.DistilBertConfig`, so a config that omits a field means what
/// it means to the reference implementation.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_dim")]
    dim: usize,
    #[serde(default = "d_layers")]
    n_layers: usize,
    #[serde(default = "d_heads")]
    n_heads: usize,
    #[serde(default = "d_hidden")]
    hidden_dim: usize,
    #[serde(default = "d_positions")]
    max_position_embeddings: usize,
    #[serde(default = "d_activation")]
    activation: String,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    model_type: Option<String>,
}

fn d_vocab() -> usize {
    30522
}
fn d_dim() -> usize {
    768
}
fn d_layers() -> usize {
    6
}
fn d_heads() -> usize {
    12
}
fn d_hidden() -> usize {
    3072
}
fn d_positions() -> usize {
    512
}
fn d_activation() -> String {
    "gelu".to_string()
}

fn default_labels() -> Vec<String> {
    vec!["NEGATIVE".to_string(), "POSITIVE".to_string()]
}

/// The built-in configuration of `distilbert-base-uncased(-finetuned-sst-2-english)`,
/// used for synthetic weights when no `config.json` is available.
pub fn distilbert_base_config() -> DistilBertConfig {
    DistilBertConfig {
        vocab_size: 30522,
        dim: 768,
        n_layers: 6,
        n_heads: 12,
        hidden_dim: 3072,
        max_position_embeddings: 512,
        activation: Activation::Gelu,
        pad_token_id: 0,
        labels: default_labels(),
    }
}

impl DistilBertConfig {
    /// Parses and checks a `config.json` text; the error is a one-line reason.
    pub fn from_json_str(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("JSON error: {e}"))?;
        if let Some(mt) = raw.model_type.as_deref()
            && mt != "distilbert"
        {
            return Err(format!(
                "model_type is \"{mt}\", only \"distilbert\" models are supported"
            ));
        }
        let activation = match raw.activation.as_str() {
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => {
                return Err(format!(
                    "activation \"{other}\" is not supported (DistilBERT uses \"gelu\" or \"relu\")"
                ));
            }
        };
        let labels = match raw.id2label {
            None => default_labels(),
            Some(map) => labels_from_id2label(map)?,
        };
        let cfg = DistilBertConfig {
            vocab_size: raw.vocab_size,
            dim: raw.dim,
            n_layers: raw.n_layers,
            n_heads: raw.n_heads,
            hidden_dim: raw.hidden_dim,
            max_position_embeddings: raw.max_position_embeddings,
            activation,
            pad_token_id: raw.pad_token_id.unwrap_or(0),
            labels,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the dimensions make a model; the error is a one-line reason.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("hidden_dim", self.hidden_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        // Upper bounds far above any BERT-family model (DistilBERT: 30522,
        // 768, 6, 12, 3072, 512), so a config cannot make the agent allocate
        // what no host has.
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, 1_000_000),
            ("dim", self.dim, 16_384),
            ("n_layers", self.n_layers, 256),
            ("n_heads", self.n_heads, 256),
            ("hidden_dim", self.hidden_dim, 65_536),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                16_384,
            ),
        ] {
            if v > max {
                return Err(format!("{name} is {v}, above the {max} this agent accepts"));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(format!(
                "dim {} is not a multiple of n_heads {}",
                self.dim, self.n_heads
            ));
        }
        if self.labels.is_empty() {
            return Err("id2label is empty".to_string());
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(format!(
                "pad_token_id {} is outside the vocabulary (vocab_size {})",
                self.pad_token_id, self.vocab_size
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// Every tensor of a `DistilBertForSequenceClassification` checkpoint with
    /// its shape, in a stable order (the order random weights are drawn in).
    pub fn checkpoint_layout(&self) -> Vec<(String, Vec<usize>)> {
        let (d, h, v, p, l) = (
            self.dim,
            self.hidden_dim,
            self.vocab_size,
            self.max_position_embeddings,
            self.num_labels(),
        );
        let mut out = vec![
            (
                "distilbert.embeddings.word_embeddings.weight".to_string(),
                vec![v, d],
            ),
            (
                "distilbert.embeddings.position_embeddings.weight".to_string(),
                vec![p, d],
            ),
            (
                "distilbert.embeddings.LayerNorm.weight".to_string(),
                vec![d],
            ),
            ("distilbert.embeddings.LayerNorm.bias".to_string(), vec![d]),
        ];
        for i in 0..self.n_layers {
            let pre = format!("distilbert.transformer.layer.{i}");
            for lin in ["q_lin", "k_lin", "v_lin", "out_lin"] {
                out.push((format!("{pre}.attention.{lin}.weight"), vec![d, d]));
                out.push((format!("{pre}.attention.{lin}.bias"), vec![d]));
            }
            out.push((format!("{pre}.sa_layer_norm.weight"), vec![d]));
            out.push((format!("{pre}.sa_layer_norm.bias"), vec![d]));
            out.push((format!("{pre}.ffn.lin1.weight"), vec![h, d]));
            out.push((format!("{pre}.ffn.lin1.bias"), vec![h]));
            out.push((format!("{pre}.ffn.lin2.weight"), vec![d, h]));
            out.push((format!("{pre}.ffn.lin2.bias"), vec![d]));
            out.push((format!("{pre}.output_layer_norm.weight"), vec![d]));
            out.push((format!("{pre}.output_layer_norm.bias"), vec![d]));
        }
        out.push(("pre_classifier.weight".to_string(), vec![d, d]));
        out.push(("pre_classifier.bias".to_string(), vec![d]));
        out.push(("classifier.weight".to_string(), vec![l, d]));
        out.push(("classifier.bias".to_string(), vec![l]));
        out
    }

    /// Number of parameters in the checkpoint layout.
    pub fn parameter_count(&self) -> u64 {
        self.checkpoint_layout()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// The config as candle-transformers' `distilbert::Config` deserialises it
    /// (its fields are private, so JSON is the only way in).
    pub(crate) fn to_candle_transformers_json(&self) -> serde_json::Value {
        serde_json::json!({
            "vocab_size": self.vocab_size,
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "hidden_dim": self.hidden_dim,
            "activation": self.activation.as_str(),
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": 0.02,
            "pad_token_id": self.pad_token_id,
            "model_type": "distilbert",
        })
    }
}

/// `id2label` keys are decimal strings; the class index is the key, so they
/// must be exactly 0..n.
fn labels_from_id2label(map: BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut indexed = Vec::with_capacity(map.len());
    for (k, v) in map {
        let i: usize = k
            .trim()
            .parse()
            .map_err(|_| format!("id2label key \"{k}\" is not a class index"))?;
        indexed.push((i, v));
    }
    indexed.sort_by_key(|(i, _)| *i);
    for (want, (got, _)) in indexed.iter().enumerate() {
        if *got != want {
            return Err(format!(
                "id2label has no entry for class {want}: keys must be 0..{}",
                indexed.len()
            ));
        }
    }
    Ok(indexed.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_config_has_the_published_parameter_count() {
        assert_eq!(distilbert_base_config().parameter_count(), 66_955_010);
    }

    #[test]
    fn id2label_is_ordered_by_index_and_gaps_are_refused() {
        let cfg = DistilBertConfig::from_json_str(
            r#"{"id2label": {"1": "POS", "0": "NEG", "2": "MID"}}"#,
        )
        .expect("parse");
        assert_eq!(cfg.labels, ["NEG", "POS", "MID"]);
        assert!(DistilBertConfig::from_json_str(r#"{"id2label": {"0": "A", "2": "B"}}"#).is_err());
        assert!(DistilBertConfig::from_json_str(r#"{"dim": 10, "n_heads": 3}"#).is_err());
        assert!(DistilBertConfig::from_json_str("{").is_err());
    }

    #[test]
    fn dimensions_beyond_any_bert_are_refused() {
        let mut cfg = distilbert_base_config();
        assert_eq!(cfg.validate(), Ok(()));
        cfg.dim = 1 << 30;
        let e = cfg.validate().expect_err("huge dim");
        assert!(e.contains("dim is 1073741824, above the 16384"), "{e}");
    }
}
