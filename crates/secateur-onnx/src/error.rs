//! Errors of ONNX import and export. Each names the file, node, op type or tensor involved and
//! what was expected; none of them is a panic.

use secateur_graph::GraphError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OnnxError {
    // (the causes are part of the messages and not `source`s: printed with their causes, as
    // the command line does, they came out twice)
    #[error("cannot read '{path}': {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write '{path}': {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
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
    #[error(
        "the model uses {} unsupported op type(s): {}; supported ops: {supported}",
        ops.len(),
        ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
    )]
    UnsupportedOps {
        ops: Vec<UnsupportedOpType>,
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
    /// Any of the above met while importing a file, with the file's path.
    #[error("'{}': {cause}", path.display())]
    InFile {
        path: PathBuf,
        cause: Box<OnnxError>,
    },
}

impl OnnxError {
    /// The error without the file it was met in.
    pub fn root(&self) -> &OnnxError {
        match self {
            OnnxError::InFile { cause, .. } => cause.root(),
            other => other,
        }
    }
}

/// One op type a model uses that import does not support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOpType {
    /// The op type, prefixed by its domain when that is not the default one.
    pub op_type: String,
    /// How many nodes use it.
    pub count: usize,
    /// The first node using it.
    pub first_node: String,
}

impl std::fmt::Display for UnsupportedOpType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} node{}, first '{}')",
            self.op_type,
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.first_node
        )
    }
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use secateur_testkit::with_causes;

    #[test]
    fn a_missing_file_and_an_error_in_a_file_are_said_once() {
        let missing = crate::load_model("/nonexistent/model.onnx").unwrap_err();
        let shown = with_causes(&missing);
        assert!(
            shown.starts_with("cannot read '/nonexistent/model.onnx': "),
            "{shown}"
        );
        assert_eq!(shown.matches(':').count(), 1, "{shown}");
        let inner = OnnxError::Model("a size is needed".into());
        let in_file = OnnxError::InFile {
            path: "m.onnx".into(),
            cause: Box::new(inner),
        };
        assert_eq!(with_causes(&in_file), "'m.onnx': a size is needed");
    }
}
