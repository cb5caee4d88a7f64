//! Resolving the MODEL argument of the command line: an ONNX file path, or the name of a
//! built-in zoo model (built for the data set's input geometry when one is known).

use secateur_graph::Graph;
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_onnx::ImportOptions;
use std::path::Path;
use std::sync::OnceLock;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelRefError {
    #[error(transparent)]
    Onnx(#[from] secateur_onnx::OnnxError),
    #[error(
        "'{0}' is neither an existing .onnx file, a Hugging Face checkpoint directory (config.json + model.safetensors) nor a built-in model ({1})"
    )]
    Unknown(String, String),
    #[error(transparent)]
    Graph(#[from] secateur_graph::GraphError),
}

/// Sizes of symbolic input dimensions given on the command line (`--dim`), set once.
static IMPORT_OPTIONS: OnceLock<ImportOptions> = OnceLock::new();

/// Records the `--dim` sizes (and the `--seq-len` default for other symbolic dimensions)
/// every ONNX import of this process uses.
pub fn set_dims(dims: &[(String, usize)], other_dims: Option<usize>) {
    let opts = ImportOptions {
        dims: dims.iter().cloned().collect(),
        other_dims,
    };
    let _ = IMPORT_OPTIONS.set(opts);
}

/// Sequence length of a Hugging Face checkpoint's graph without `--seq-len` (that of the
/// sentence-transformers models' training).
pub const DEFAULT_SEQ_LEN: usize = 128;

/// Loads an ONNX file, a Hugging Face checkpoint directory (config.json + model.safetensors)
/// or builds a zoo model.
pub fn load_model(spec: &str, cfg: &ZooConfig) -> Result<Graph, ModelRefError> {
    let path = Path::new(spec);
    if secateur_onnx::hf::is_checkpoint_dir(path) {
        let opts = IMPORT_OPTIONS.get().cloned().unwrap_or_default();
        let seq = opts
            .other_dims
            .or_else(|| opts.dims.get("seq").copied())
            .unwrap_or(DEFAULT_SEQ_LEN);
        return Ok(secateur_onnx::hf::load_checkpoint(path, seq)?);
    }
    if path.exists() || spec.ends_with(".onnx") {
        let opts = IMPORT_OPTIONS.get().cloned().unwrap_or_default();
        return Ok(secateur_onnx::load_model_with(path, &opts)?);
    }
    match spec.parse::<ZooModel>() {
        Ok(m) => Ok(zoo::build(m, cfg)?),
        Err(_) => {
            let names: Vec<_> = ZooModel::ALL.iter().map(|m| m.name()).collect();
            Err(ModelRefError::Unknown(spec.into(), names.join(", ")))
        }
    }
}
