//! Training errors: unsupported constructs, data that does not fit the model, diverging
//! losses, checkpoint problems; each names the node, tensor, file or setting involved.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error("node '{node}' ({op}): {message}")]
    Unsupported {
        node: String,
        op: String,
        message: String,
    },
    #[error("the data does not fit the model: {0}")]
    DataMismatch(String),
    #[error("training diverged: {0}")]
    Diverged(String),
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("checkpoint '{path}': {message}")]
    Checkpoint { path: String, message: String },
    #[error(transparent)]
    Graph(#[from] secateur_graph::GraphError),
    #[error(transparent)]
    Data(#[from] secateur_data::DataError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
