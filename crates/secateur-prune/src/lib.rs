//! Pruning on the graph IR. Structured pruning derives dependency groups from each op's axis
//! links and applies plans that physically shrink the graph; weight pruning produces masks
//! with a pattern (unstructured, N:M, block). Gradients and activations arrive as data; this
//! crate never runs a model itself.

pub mod error;
pub mod structured;
pub mod weights;

pub use error::{PruneError, Result};
