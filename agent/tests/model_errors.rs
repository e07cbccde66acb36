//! Every way a model input can be wrong gives one line that names the file
//! and what to do, and the hub paths work without a network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use fleetbench_agent::model::{
    Engine, LoadedModel, ModelError, ModelRequest, Precision, WeightsChoice, WeightsSource,
};

fn fixture() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/tiny-distilbert-sst2"
    ))
    .to_path_buf()
}

/// A writable copy of the fixture model (without golden.json).
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).expect("copy fixture file");
    }
    dir
}

fn request(dir: &Path) -> ModelRequest {
    ModelRequest::new(dir.display().to_string())
}

fn load_err(req: &ModelRequest) -> ModelError {
    match LoadedModel::load(req, &Device::Cpu) {
        Ok(m) => panic!("expected an error, loaded {:?}", m.info()),
        Err(e) => e,
    }
}

/// The message is one line and mentions every fragment.
fn assert_message(e: &ModelError, fragments: &[&str]) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "more than one line: {msg:?}");
    for f in fragments {
        assert!(msg.contains(f), "{msg:?} does not mention {f:?}");
    }
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&path, &Device::Cpu).expect("load fixture weights");
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).expect("save modified weights");
}

#[test]
fn missing_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let gone = tmp.path().join("no-such-model");
    let e = load_err(&request(&gone));
    assert!(matches!(e, ModelError::DirectoryNotFound { .. }), "{e:?}");
    assert_message(
        &e,
        &[&gone.display().to_string(), "does not exist", "--model"],
    );
}

#[test]
fn a_file_is_not_a_model_directory() {
    let e = load_err(&request(&fixture().join("config.json")));
    assert!(matches!(e, ModelError::NotADirectory { .. }), "{e:?}");
    assert_message(&e, &["config.json", "not a model directory"]);
}

#[test]
fn directory_without_config_json() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("config.json")).expect("remove");
    let e = load_err(&request(dir.path()));
    assert_message(
        &e,
        &[
            "config.json not found in",
            &dir.path().display().to_string(),
        ],
    );
}

#[test]
fn invalid_config_json() {
    let dir = fixture_copy();
    std::fs::write(dir.path().join("config.json"), "{\"dim\": 32,").expect("write");
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::InvalidConfig { .. }), "{e:?}");
    assert_message(&e, &["config.json in", "not a valid DistilBERT config"]);

    std::fs::write(
        dir.path().join("config.json"),
        r#"{"dim": 30, "n_heads": 4}"#,
    )
    .expect("write");
    assert_message(
        &load_err(&request(dir.path())),
        &["not a multiple of n_heads"],
    );
}

#[test]
fn missing_model_safetensors() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("remove");
    let e = load_err(&request(dir.path()));
    assert_message(&e, &["model.safetensors not found in", "--weights random"]);
}

#[test]
fn empty_model_safetensors() {
    let dir = fixture_copy();
    std::fs::write(dir.path().join("model.safetensors"), b"").expect("truncate");
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::InvalidSafetensors { .. }), "{e:?}");
    assert_message(
        &e,
        &[
            "model.safetensors in",
            "not a valid safetensors file",
            "empty",
            "re-download",
        ],
    );
}

#[test]
fn truncated_model_safetensors() {
    let dir = fixture_copy();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write half");
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::InvalidSafetensors { .. }), "{e:?}");
    assert_message(
        &e,
        &[
            "model.safetensors in",
            "not a valid safetensors file",
            "re-download",
        ],
    );
}

#[test]
fn tensor_with_the_wrong_shape() {
    let dir = fixture_copy();
    let name = "distilbert.transformer.layer.1.ffn.lin1.weight";
    rewrite_weights(dir.path(), |t| {
        let wrong = Tensor::zeros((60, 32), DType::F32, &Device::Cpu).expect("zeros");
        t.insert(name.to_string(), wrong);
    });
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::TensorShape { .. }), "{e:?}");
    assert_message(
        &e,
        &[&format!(
            "tensor {name} has shape [60, 32], expected [64, 32] for this config.json"
        )],
    );
}

#[test]
fn missing_tensor() {
    let dir = fixture_copy();
    rewrite_weights(dir.path(), |t| {
        t.remove("classifier.bias");
    });
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e:?}");
    assert_message(
        &e,
        &[
            "tensor classifier.bias is missing from",
            "model.safetensors",
        ],
    );
}

#[test]
fn integer_tensor() {
    let dir = fixture_copy();
    rewrite_weights(dir.path(), |t| {
        let ints = Tensor::zeros(2, DType::U32, &Device::Cpu).expect("zeros");
        t.insert("classifier.bias".to_string(), ints);
    });
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::TensorDtype { .. }), "{e:?}");
    assert_message(&e, &["classifier.bias", "u32", "not a float type"]);
}

/// A WordPiece tokenizer.json with ten tokens, the fixture's settings otherwise.
fn ten_token_tokenizer() -> String {
    let mut tok: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("tokenizer.json")).expect("read tokenizer.json"),
    )
    .expect("parse tokenizer.json");
    let tokens = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "movie", "good", "bad",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    tok["model"]["vocab"] = vocab.into();
    let added: Vec<serde_json::Value> = tokens[..5]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    tok["added_tokens"] = added.into();
    tok["post_processor"]["special_tokens"]["[CLS]"]["ids"] = serde_json::json!([2]);
    tok["post_processor"]["special_tokens"]["[SEP]"]["ids"] = serde_json::json!([3]);
    tok.to_string()
}

#[test]
fn tokenizer_of_another_vocabulary() {
    let dir = fixture_copy();
    std::fs::write(dir.path().join("tokenizer.json"), ten_token_tokenizer()).expect("write");
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::VocabMismatch { .. }), "{e:?}");
    assert_message(
        &e,
        &[
            "tokenizer.json has 10 tokens but config.json says vocab_size 30522: the tokenizer does not belong to this model",
        ],
    );
}

#[test]
fn invalid_or_missing_tokenizer() {
    let dir = fixture_copy();
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").expect("write");
    let e = load_err(&request(dir.path()));
    assert!(matches!(e, ModelError::InvalidTokenizer { .. }), "{e:?}");
    assert_message(
        &e,
        &["tokenizer.json in", "not a valid tokenizer", "re-download"],
    );

    std::fs::remove_file(dir.path().join("tokenizer.json")).expect("remove");
    let e = load_err(&request(dir.path()));
    assert_message(&e, &["tokenizer.json not found in", "vocab.txt"]);
}

#[test]
fn sequence_longer_than_the_position_table() {
    let model = LoadedModel::load(&request(&fixture()), &Device::Cpu).expect("load fixture");
    let e = model
        .encode(&["hello"], 513)
        .expect_err("513 > 512 positions");
    assert!(
        matches!(
            e,
            ModelError::SeqLen {
                seq_len: 513,
                max: 512
            }
        ),
        "{e:?}"
    );
    assert_message(&e, &["sequence length 513", "1 to 512"]);
    assert!(model.encode(&["hello"], 0).is_err());
    assert!(model.encode_unpadded("hello", 600).is_err());
    assert_message(&model.encode(&[], 8).expect_err("no texts"), &["no texts"]);
    // The bound itself is fine.
    assert_eq!(
        model.encode(&["hello"], 512).expect("512").ids[0].len(),
        512
    );
}

#[test]
fn half_precision_with_the_candle_transformers_engine() {
    for dtype in [Precision::F16, Precision::Bf16] {
        let req = ModelRequest {
            engine: Engine::CandleTransformers,
            dtype,
            ..request(&fixture())
        };
        let e = load_err(&req);
        assert!(matches!(e, ModelError::EngineDtype { .. }), "{e:?}");
        assert_message(
            &e,
            &[
                "the candle-transformers engine runs only in f32: use --engine fleetbench for f16/bf16",
            ],
        );
    }
}

const HUB_ID: &str = "distilbert-base-uncased-finetuned-sst-2-english";

/// An empty cache and an endpoint nothing listens on: an offline host.
fn offline_request(cache: &Path, weights: WeightsChoice) -> ModelRequest {
    ModelRequest {
        weights,
        cache_dir: Some(cache.to_path_buf()),
        hub_endpoint: Some("http://127.0.0.1:1".to_string()),
        ..ModelRequest::new(HUB_ID)
    }
}

#[test]
fn hub_weights_offline_fail_fast_with_both_alternatives() {
    let cache = tempfile::tempdir().expect("temp dir");
    let start = Instant::now();
    let e = load_err(&offline_request(cache.path(), WeightsChoice::Hub));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(e, ModelError::HubUnavailable { .. }), "{e:?}");
    assert_message(
        &e,
        &[
            &format!("cannot fetch {HUB_ID} from the Hugging Face hub"),
            &format!("not in the cache at {}", cache.path().display()),
            "unreachable",
            "--model DIR",
            "--weights random",
        ],
    );
}

#[test]
fn auto_weights_offline_fall_back_to_synthetic_with_a_note() {
    let cache = tempfile::tempdir().expect("temp dir");
    let req = ModelRequest {
        seed: 5,
        ..offline_request(cache.path(), WeightsChoice::Auto)
    };
    let model = LoadedModel::load(&req, &Device::Cpu).expect("fallback to random weights");
    assert_eq!(model.info().weights, WeightsSource::Random { seed: 5 });
    assert_eq!(model.info().parameters, 66_955_010);
    assert_eq!(model.info().name, HUB_ID);
    assert_eq!(model.notes().len(), 1);
    let note = &model.notes()[0];
    assert!(note.starts_with("hub weights unavailable ("), "{note}");
    assert!(note.contains("synthetic weights used"), "{note}");
    assert!(!note.contains('\n'));
}

/// A hub cache laid out by hand as hf-hub writes it: found offline, and the
/// snapshot hash is reported as the revision.
#[test]
fn cached_hub_model_loads_offline() {
    let cache = tempfile::tempdir().expect("temp dir");
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--fleetbench--tiny-distilbert");
    let snap = repo.join("snapshots").join(hash);
    std::fs::create_dir_all(&snap).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs").join("main"), hash).expect("write ref");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), snap.join(f)).expect("copy");
    }
    let req = ModelRequest {
        model: "fleetbench/tiny-distilbert".to_string(),
        ..offline_request(cache.path(), WeightsChoice::Hub)
    };
    let model = LoadedModel::load(&req, &Device::Cpu).expect("load from the cache");
    assert_eq!(
        model.info().weights,
        WeightsSource::Hub {
            repo: "fleetbench/tiny-distilbert".into(),
            revision: hash.into()
        }
    );
    assert_eq!(model.info().hidden_size, 32);
    assert!(model.notes().is_empty());
}
