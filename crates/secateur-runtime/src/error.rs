//! Runtime errors: graphs or ops the runtime cannot execute (naming the node), bad inputs,
//! bad configurations.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("node '{node}': {message}")]
    Unsupported { node: String, message: String },
    #[error("input: {0}")]
    Input(String),
    #[error("runtime configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Graph(#[from] secateur_graph::GraphError),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
