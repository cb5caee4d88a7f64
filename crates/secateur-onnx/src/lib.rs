//! ONNX as secateur's door in and out: [`load_model`] / [`import_model`] turn an ONNX file
//! into the graph IR, [`save_model`] / [`export_model`] write one back, through a registry with
//! one converter per op type ([`ops::registry`]). The protobuf messages are declared in
//! [`proto`] with `prost`; nothing is generated and no system `protoc` is needed. [`hf`] reads
//! Hugging Face BERT-family checkpoints (config.json + model.safetensors) into the same IR.

pub mod attrs;
pub mod error;
pub mod export;
pub mod external;
pub mod fold;
pub mod grid;
pub mod hf;
pub mod import;
pub mod mask_codec;
pub mod ops;
pub mod proto;
pub mod qdq;
pub mod sparse_init;
pub mod tensor_proto;

pub use error::{OnnxError, Result};
pub use export::{EXPORT_OPSET, export_model, write_atomic};
pub use import::{ImportOptions, OPSETS, import_model, import_model_with};
pub use ops::supported_ops;

use prost::Message;
use secateur_graph::Graph;
use std::path::Path;

/// Decodes ONNX bytes; `origin` names the source in errors.
pub fn decode_model(bytes: &[u8], origin: &Path) -> Result<proto::ModelProto> {
    proto::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })
}

/// Imports ONNX bytes into a graph.
pub fn import_bytes(bytes: &[u8], origin: &Path) -> Result<Graph> {
    import_bytes_with(bytes, origin, &ImportOptions::default())
}

/// [`import_bytes`] with sizes for the file's open dimensions.
pub fn import_bytes_with(bytes: &[u8], origin: &Path, opts: &ImportOptions) -> Result<Graph> {
    let model = decode_model(bytes, origin)?;
    import_model_with(&model, opts).map_err(|e| in_file(origin, e))
}

/// Reads and imports an ONNX file.
pub fn load_model(path: impl AsRef<Path>) -> Result<Graph> {
    load_model_with(path, &ImportOptions::default())
}

/// [`load_model`] with sizes for the file's open dimensions. Tensors stored as external data
/// are read from their files next to `path`.
pub fn load_model_with(path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|cause| OnnxError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut model = decode_model(&bytes, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    external::embed_external_data(&mut model, dir).map_err(|e| in_file(path, e))?;
    import_model_with(&model, opts).map_err(|e| in_file(path, e))
}

/// An import error with the file it came from, unless it already names one.
fn in_file(path: &Path, e: OnnxError) -> OnnxError {
    match e {
        named @ (OnnxError::Read { .. } | OnnxError::Decode { .. } | OnnxError::InFile { .. }) => {
            named
        }
        other => OnnxError::InFile {
            path: path.to_path_buf(),
            cause: Box::new(other),
        },
    }
}

/// Serialises a graph to ONNX bytes.
pub fn to_bytes(graph: &Graph) -> Result<Vec<u8>> {
    Ok(export_model(graph)?.encode_to_vec())
}

/// Exports a graph and writes it atomically to `path`.
pub fn save_model(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path.as_ref(), &to_bytes(graph)?)
}
