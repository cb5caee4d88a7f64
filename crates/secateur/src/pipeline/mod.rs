//! Pipelines that chain the library crates: pruning recipes (structured, weights, fine-tuning,
//! quantization) and the hooks that run pruning schedules during training.

pub mod finetune;
pub mod hooks;
pub mod optimize;
pub mod prune;
