//! secateur's application layer as a library, shared by the command line and the Python
//! package: resolving a model argument, pruning recipes and their pipeline (structured,
//! weights, fine-tuning, quantization), sentence encoders on text sets, and the `optimize`
//! search as stages a driver chains (open → ask → evaluate → record → tell → finish), so that
//! candidates can be evaluated locally or on other machines. Errors are [`PipelineError`].

pub mod data;
pub mod error;
pub mod finetune;
pub mod hooks;
pub mod model_ref;
pub mod optimize;
pub mod ort_python;
pub mod progress;
pub mod prune;
pub mod recipe;
pub mod recipe_structured;
pub mod runtime_eval;
pub mod text;

pub use error::{Context, PipelineError, Result};
