//! Errors of pruning: impossible requests (sparsity ≥ 1, N ≥ M, blocks that do not divide a
//! weight, unknown layers, targets below what protected layers need) name the offending layer,
//! group or value and what was expected.

use secateur_graph::GraphError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PruneError {
    #[error("invalid pruning request: {0}")]
    Invalid(String),
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
    #[error("group '{group}': {message}")]
    Group { group: String, message: String },
    #[error("target cannot be met: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

pub type Result<T, E = PruneError> = std::result::Result<T, E>;
