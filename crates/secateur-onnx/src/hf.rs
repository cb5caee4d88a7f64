//! Hugging Face checkpoints as a second door in: a directory with `config.json` and
//! `model.safetensors` of a BERT-family encoder (`model_type` `bert`, as the
//! sentence-transformers models such as all-MiniLM-L6-v2; `roberta`, `xlm-roberta`,
//! `camembert`; `distilbert`, its weight names mapped to BERT's) becomes an IR graph through
//! [`secateur_graph::bert::build_bert`], with the pooling of the directory's
//! sentence-transformers `1_Pooling/config.json` (mean over the masked tokens when absent).
//! Weights may be f32, f16 or bf16 and may carry their family's prefix (`bert.`, `roberta.`,
//! `distilbert.`).

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

/// The checkpoint families read: BERT's layout, RoBERTa's (positions after the padding
/// index, one token type) and DistilBERT's (its own weight names, no token types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
    DistilBert,
}

impl Family {
    fn of(model_type: &str) -> Option<Family> {
        match model_type {
            "bert" => Some(Family::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Family::Roberta),
            "distilbert" => Some(Family::DistilBert),
            _ => None,
        }
    }

    /// Prefixes a base-model checkpoint may carry before its weight names.
    fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
            Family::DistilBert => "distilbert.",
        }
    }
}

/// Parses the encoder geometry of a `config.json` (and its family).
pub fn bert_config(path: &Path, json: &Value) -> Result<(Family, BertConfig)> {
    let model_type = json["model_type"].as_str().unwrap_or("");
    let Some(family) = Family::of(model_type) else {
        return Err(model_err(
            path,
            format!(
                "model_type '{model_type}' is not supported (BERT-family encoders: bert, roberta, xlm-roberta, camembert, distilbert)"
            ),
        ));
    };
    // DistilBERT names the same sizes differently
    let key = |bert: &'static str| -> &'static str {
        match (family, bert) {
            (Family::DistilBert, "hidden_size") => "dim",
            (Family::DistilBert, "num_hidden_layers") => "n_layers",
            (Family::DistilBert, "num_attention_heads") => "n_heads",
            (Family::DistilBert, "intermediate_size") => "hidden_dim",
            (Family::DistilBert, "hidden_act") => "activation",
            _ => bert,
        }
    };
    let size = |bert: &'static str| -> Result<usize> {
        let k = key(bert);
        json[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| model_err(path, format!("'{k}' is missing or not a positive integer")))
    };
    let act_key = key("hidden_act");
    let hidden_act = match json[act_key].as_str().unwrap_or("gelu") {
        "gelu" => HiddenAct::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluTanh,
        "relu" => HiddenAct::Relu,
        other => {
            return Err(model_err(
                path,
                format!(
                    "{act_key} '{other}' is not one of gelu, gelu_new, gelu_pytorch_tanh, relu"
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
    let (type_vocab_size, layer_norm_eps, position_offset) = match family {
        Family::DistilBert => (1, 1e-12, 0),
        Family::Bert | Family::Roberta => (
            json["type_vocab_size"].as_u64().unwrap_or(2) as usize,
            json["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            match family {
                Family::Roberta => {
                    (json["pad_token_id"].as_u64().unwrap_or(1) as usize).saturating_add(1)
                }
                _ => 0,
            },
        ),
    };
    let cfg = BertConfig {
        vocab_size: size("vocab_size")?,
        hidden_size: size("hidden_size")?,
        num_hidden_layers: size("num_hidden_layers")?,
        num_attention_heads: size("num_attention_heads")?,
        intermediate_size: size("intermediate_size")?,
        max_position_embeddings: size("max_position_embeddings")?,
        type_vocab_size,
        layer_norm_eps,
        hidden_act,
        position_offset,
    };
    cfg.validate().map_err(|m| model_err(path, m))?;
    Ok((family, cfg))
}

/// DistilBERT's name for a weight BERT's layout calls `name`; `None` for the token-type table
/// it does not have.
fn distilbert_name(name: &str) -> Option<String> {
    if name.starts_with("embeddings.token_type_embeddings") {
        return None;
    }
    let Some(rest) = name.strip_prefix("encoder.layer.") else {
        return Some(name.to_string());
    };
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let renames = [
        ("attention.self.query.", "attention.q_lin."),
        ("attention.self.key.", "attention.k_lin."),
        ("attention.self.value.", "attention.v_lin."),
        ("attention.output.dense.", "attention.out_lin."),
        ("attention.output.LayerNorm.", "sa_layer_norm."),
        ("intermediate.dense.", "ffn.lin1."),
        ("output.dense.", "ffn.lin2."),
        ("output.LayerNorm.", "output_layer_norm."),
    ];
    let part = renames
        .iter()
        .find_map(|(from, to)| part.strip_prefix(from).map(|tail| format!("{to}{tail}")))
        .unwrap_or_else(|| part.to_string());
    Some(format!("transformer.layer.{layer}.{part}"))
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
    family: Family,
}

impl WeightSource for SafetensorWeights<'_> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> secateur_graph::Result<Tensor> {
        let own = match self.family {
            Family::DistilBert => distilbert_name(name),
            Family::Bert | Family::Roberta => Some(name.to_string()),
        };
        let Some(own) = own else {
            // a table the family does not have adds nothing
            return Ok(Tensor::zeros(shape.to_vec()));
        };
        let full = format!("{}{own}", self.prefix);
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
    let (family, cfg) = bert_config(&config_path, &read_json(&config_path)?)?;
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
        .tensor(&format!(
            "{}embeddings.word_embeddings.weight",
            family.prefix()
        ))
        .is_ok()
    {
        family.prefix()
    } else {
        ""
    };
    let mut source = SafetensorWeights {
        file: weights_path,
        tensors,
        prefix,
        family,
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
    fn families_are_read_from_their_own_config_keys() {
        let path = Path::new("config.json");
        let distil = serde_json::json!({"model_type": "distilbert", "vocab_size": 30, "dim": 8,
            "n_layers": 2, "n_heads": 2, "hidden_dim": 16, "max_position_embeddings": 10});
        let (family, cfg) = bert_config(path, &distil).unwrap();
        assert_eq!(family, Family::DistilBert);
        assert_eq!(
            (cfg.hidden_size, cfg.intermediate_size, cfg.type_vocab_size),
            (8, 16, 1)
        );
        let roberta = serde_json::json!({"model_type": "xlm-roberta", "vocab_size": 30,
            "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 514, "pad_token_id": 1});
        let (family, cfg) = bert_config(path, &roberta).unwrap();
        assert_eq!((family, cfg.position_offset), (Family::Roberta, 2));
        // a hostile padding index saturates (the sequence-length check refuses it later)
        let mut hostile = roberta.clone();
        hostile["pad_token_id"] = serde_json::json!(u64::MAX);
        assert_eq!(
            bert_config(path, &hostile).unwrap().1.position_offset,
            usize::MAX
        );
        let e = bert_config(path, &serde_json::json!({"model_type": "gpt2"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'gpt2'") && e.contains("distilbert"), "{e}");
        let e = bert_config(
            path,
            &serde_json::json!({"model_type": "distilbert", "dim": 8}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'vocab_size'"), "{e}");
    }

    #[test]
    fn distilbert_weights_map_to_bert_names() {
        let cases = [
            (
                "encoder.layer.3.attention.self.query.weight",
                Some("transformer.layer.3.attention.q_lin.weight"),
            ),
            (
                "encoder.layer.0.attention.output.LayerNorm.bias",
                Some("transformer.layer.0.sa_layer_norm.bias"),
            ),
            (
                "encoder.layer.1.intermediate.dense.weight",
                Some("transformer.layer.1.ffn.lin1.weight"),
            ),
            (
                "encoder.layer.1.output.dense.bias",
                Some("transformer.layer.1.ffn.lin2.bias"),
            ),
            (
                "encoder.layer.1.output.LayerNorm.weight",
                Some("transformer.layer.1.output_layer_norm.weight"),
            ),
            (
                "embeddings.LayerNorm.weight",
                Some("embeddings.LayerNorm.weight"),
            ),
            ("embeddings.token_type_embeddings.weight", None),
        ];
        for (bert, distil) in cases {
            assert_eq!(distilbert_name(bert).as_deref(), distil, "{bert}");
        }
    }

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
