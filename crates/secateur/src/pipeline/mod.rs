//! Pipelines that chain the library crates: pruning recipes (structured, weights, fine-tuning,
//! quantization), the hooks that run pruning schedules during training, and sentence encoders
//! run and scored on text sets.

pub mod finetune;
pub mod hooks;
pub mod optimize;
pub mod prune;
pub mod text;
