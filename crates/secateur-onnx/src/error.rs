//! Errors of ONNX import and export. Each names the file, node, op type or tensor involved and
//! what was expected; none of them is a panic.

use secateur_graph::GraphError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OnnxError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "'{path}' is not a valid ONNX model (protobuf decoding failed: {message}); is the file truncated or not an .onnx file?"
    )]
    Decode { path: PathBuf, message: String },
    #[error(
        "node '{node}': op type '{op_type}' (domain '{domain}') is not supported; supported ops: {supported}"
    )]
    UnsupportedOp {
        node: String,
        op_type: String,
        domain: String,
        supported: String,
    },
    #[error("node '{node}' ({op_type}): {message}")]
    Node {
        node: String,
        op_type: String,
        message: String,
    },
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
