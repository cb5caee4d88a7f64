//! Hugging Face checkpoints as a second door in: a directory with `config.json` and
//! `model.safetensors` of a BERT-family encoder (`model_type` `bert`, the sentence-transformers
//! models such as all-MiniLM-L6-v2) becomes an IR graph through
//! [`secateur_graph::bert::build_bert`], with the pooling of the directory's
//! sentence-transformers `1_Pooling/config.json` (mean over the masked tokens when absent).
//! Weights may be f32, f16 or bf16 and may carry a `bert.` prefix.

use crate::error::{OnnxError, Result};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, WeightSource, build_bert};
use secateur_graph::{Graph, GraphError, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Whether `path` is a directory holding a Hugging Face checkpoint.
pub fn is_checkpoint_dir(path: &Path) -> bool {
    path.is_dir() && path.join("config.json").is_file()
}

fn model_err(path: &Path, message: impl std::fmt::Display) -> OnnxError {
    OnnxError::Model(format!("{}: {message}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|cause| OnnxError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&read(path)?).map_err(|e| model_err(path, format!("not JSON: {e}")))
}

/// Parses the encoder geometry of a `config.json`.
pub fn bert_config(path: &Path, json: &Value) -> Result<BertConfig> {
    let model_type = json["model_type"].as_str().unwrap_or("");
    if model_type != "bert" {
        return Err(model_err(
            path,
            format!("model_type '{model_type}' is not supported (BERT-family encoders: 'bert')"),
        ));
    }
    let size = |key: &str| -> Result<usize> {
        json[key].as_u64().map(|v| v as usize).ok_or_else(|| {
            model_err(
                path,
                format!("'{key}' is missing or not a positive integer"),
            )
        })
    };
    let hidden_act = match json["hidden_act"].as_str().unwrap_or("gelu") {
        "gelu" => HiddenAct::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluTanh,
        "relu" => HiddenAct::Relu,
        other => {
            return Err(model_err(
                path,
                format!(
                    "hidden_act '{other}' is not one of gelu, gelu_new, gelu_pytorch_tanh, relu"
                ),
            ));
        }
    };
    if let Some(p) = json["position_embedding_type"].as_str()
        && p != "absolute"
    {
        return Err(model_err(
            path,
            format!("position_embedding_type '{p}' is not supported (absolute only)"),
        ));
    }
    let cfg = BertConfig {
        vocab_size: size("vocab_size")?,
        hidden_size: size("hidden_size")?,
        num_hidden_layers: size("num_hidden_layers")?,
        num_attention_heads: size("num_attention_heads")?,
        intermediate_size: size("intermediate_size")?,
        max_position_embeddings: size("max_position_embeddings")?,
        type_vocab_size: json["type_vocab_size"].as_u64().unwrap_or(2) as usize,
        layer_norm_eps: json["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
        hidden_act,
    };
    cfg.validate().map_err(|m| model_err(path, m))?;
    Ok(cfg)
}

/// The pooling of a sentence-transformers directory.
fn pooling(dir: &Path) -> Result<Pooling> {
    let p = dir.join("1_Pooling").join("config.json");
    if !p.is_file() {
        return Ok(Pooling::Mean);
    }
    let json = read_json(&p)?;
    let on = |k: &str| json[k].as_bool().unwrap_or(false);
    match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        _ => Err(model_err(
            &p,
            "only one of pooling_mode_mean_tokens and pooling_mode_cls_token is supported",
        )),
    }
}

struct SafetensorWeights<'a> {
    file: PathBuf,
    tensors: SafeTensors<'a>,
    prefix: &'static str,
}

impl WeightSource for SafetensorWeights<'_> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> secateur_graph::Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let bad = |m: String| {
            GraphError::Invalid(format!("{}: tensor '{full}': {m}", self.file.display()))
        };
        let view = self
            .tensors
            .tensor(&full)
            .map_err(|_| bad("missing".into()))?;
        if view.shape() != shape {
            return Err(bad(format!(
                "shape {:?}, the configuration needs {shape:?}",
                view.shape()
            )));
        }
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => return Err(bad(format!("dtype {other:?} is not f32, f16 or bf16"))),
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "value {} at index {i} is not finite",
                values[i]
            )));
        }
        Tensor::new(shape.to_vec(), values).map_err(|e| bad(e.to_string()))
    }
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: renormalise
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 - shift + 1) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Loads a checkpoint directory as a graph for sequences of `seq_len` tokens.
pub fn load_checkpoint(dir: &Path, seq_len: usize) -> Result<Graph> {
    let config_path = dir.join("config.json");
    let cfg = bert_config(&config_path, &read_json(&config_path)?)?;
    let weights_path = dir.join("model.safetensors");
    if !weights_path.is_file() {
        return Err(model_err(
            dir,
            "no model.safetensors (PyTorch .bin checkpoints are not read; save with safe_serialization=True)",
        ));
    }
    let bytes = read(&weights_path)?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| model_err(&weights_path, format!("not a safetensors file: {e}")))?;
    let prefix = if tensors
        .tensor("bert.embeddings.word_embeddings.weight")
        .is_ok()
    {
        "bert."
    } else {
        ""
    };
    let mut source = SafetensorWeights {
        file: weights_path,
        tensors,
        prefix,
    };
    let mut g = build_bert(&cfg, seq_len, pooling(dir)?, &mut source)?;
    g.name = dir
        .file_name()
        .map_or_else(|| "bert".into(), |n| n.to_string_lossy().into_owned());
    g.metadata.insert(
        "source".into(),
        format!("Hugging Face checkpoint {}", dir.display()),
    );
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
