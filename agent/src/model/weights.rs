//! Checkpoint tensors: read from `model.safetensors` and checked against the
//! config, or drawn from a seeded generator in the same layout.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::ModelError;
use super::config::DistilBertConfig;
use super::one_line;

/// Hugging Face tensor name to tensor, on the CPU.
pub(crate) type Checkpoint = HashMap<String, Tensor>;

/// Reads a safetensors file onto the CPU. The bytes are read rather than
/// memory-mapped because mapping needs `unsafe`, which this workspace denies.
pub(crate) fn load_safetensors(path: &Path) -> Result<Checkpoint, ModelError> {
    let data = super::read_capped(path, super::MAX_WEIGHTS_BYTES, "weights file")?;
    let invalid = |reason: String| ModelError::InvalidSafetensors {
        file: file_name(path),
        dir: parent_dir(path),
        reason,
    };
    if data.is_empty() {
        return Err(invalid("the file is empty".to_string()));
    }
    candle_core::safetensors::load_buffer(&data, &Device::Cpu)
        .map_err(|e| invalid(one_line(&e.to_string())))
}

/// Checks that every tensor the config needs is there, floating point and of
/// the right shape; returns the parameter count of the layout.
pub(crate) fn validate(
    checkpoint: &Checkpoint,
    cfg: &DistilBertConfig,
    path: &Path,
) -> Result<u64, ModelError> {
    let mut params = 0u64;
    for (name, shape) in cfg.checkpoint_layout() {
        let t = checkpoint
            .get(&name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.clone(),
                file: path.display().to_string(),
            })?;
        if !matches!(
            t.dtype(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            return Err(ModelError::TensorDtype {
                name,
                file: path.display().to_string(),
                dtype: t.dtype().as_str().to_string(),
            });
        }
        if t.dims() != shape.as_slice() {
            return Err(ModelError::TensorShape {
                name,
                actual: t.dims().to_vec(),
                expected: shape,
            });
        }
        params += t.elem_count() as u64;
    }
    Ok(params)
}

/// Standard deviation of `transformers`' DistilBERT initialiser (`initializer_range`).
const INIT_STD: f32 = 0.02;
/// Values per independently seeded stream: fixed so that the weights do not
/// depend on how many threads draw them.
const CHUNK: usize = 1 << 16;

/// Seeded random weights in the checkpoint layout, initialised like
/// `transformers` does for a fresh model: normal(0, 0.02) matrices and
/// embeddings, zero biases, unit LayerNorms.
pub(crate) fn random_checkpoint(
    cfg: &DistilBertConfig,
    seed: u64,
) -> Result<Checkpoint, ModelError> {
    let mut out = Checkpoint::new();
    for (name, shape) in cfg.checkpoint_layout() {
        let n: usize = shape.iter().product();
        let values = if name.contains("LayerNorm") || name.contains("layer_norm") {
            if name.ends_with(".weight") {
                vec![1f32; n]
            } else {
                vec![0f32; n]
            }
        } else if name.ends_with(".bias") {
            vec![0f32; n]
        } else {
            normal_values(n, seed ^ fnv1a(name.as_bytes()))
        };
        let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)
            .map_err(|e| ModelError::compute("creating random weights", &e))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// `n` values from normal(0, INIT_STD), drawn in parallel chunks, each chunk
/// from its own stream so the result is the same on any machine.
fn normal_values(n: usize, stream_seed: u64) -> Vec<f32> {
    let mut values = vec![0f32; n];
    let chunks: Vec<(usize, &mut [f32])> = values.chunks_mut(CHUNK).enumerate().collect();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(chunks.len().max(1));
    if threads <= 1 {
        for (i, chunk) in chunks {
            fill_normal(chunk, stream_seed, i as u64);
        }
        return values;
    }
    let mut per_thread: Vec<Vec<(usize, &mut [f32])>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, c) in chunks.into_iter().enumerate() {
        per_thread[k % threads].push(c);
    }
    std::thread::scope(|scope| {
        for work in per_thread {
            scope.spawn(move || {
                for (i, chunk) in work {
                    fill_normal(chunk, stream_seed, i as u64);
                }
            });
        }
    });
    values
}

/// Box-Muller on a splitmix64 stream: small, dependency-free and fast enough
/// (two normals per logarithm).
fn fill_normal(out: &mut [f32], stream_seed: u64, chunk: u64) {
    // Mixing the chunk index through splitmix decorrelates neighbouring streams.
    let mut seed = stream_seed ^ chunk.wrapping_mul(0xA24B_AED4_963E_E407);
    let mut state = splitmix64(&mut seed);
    let two_pi = std::f32::consts::TAU;
    for pair in out.chunks_mut(2) {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = ((splitmix64(&mut state) >> 40) + 1) as f32 * (1.0 / (1u64 << 24) as f32);
        let u2 = (splitmix64(&mut state) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
        let r = (-2.0 * u1.ln()).sqrt() * INIT_STD;
        let (s, c) = (two_pi * u2).sin_cos();
        pair[0] = r * c;
        if let Some(second) = pair.get_mut(1) {
            *second = r * s;
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub(crate) fn parent_dir(path: &Path) -> String {
    path.parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values_have_the_initialiser_spread_and_repeat_per_seed() {
        let a = normal_values(200_001, 7);
        let b = normal_values(200_001, 7);
        let c = normal_values(200_001, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = a
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 5e-4, "std {}", var.sqrt());
    }
}
