//! Errors of the cost crate: malformed or invalid hardware profiles (naming the file and the
//! field), energy counters that cannot be read (saying why), models the runtime cannot run.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CostError {
    #[error("hardware profile '{origin}': {message}")]
    Profile { origin: String, message: String },
    #[error("energy counter: {0}")]
    Counter(String),
    #[error("latency table '{path}': {message}")]
    Table { path: String, message: String },
    #[error(transparent)]
    Graph(#[from] secateur_graph::GraphError),
    #[error(transparent)]
    Runtime(#[from] secateur_runtime::RuntimeError),
}

pub type Result<T, E = CostError> = std::result::Result<T, E>;
