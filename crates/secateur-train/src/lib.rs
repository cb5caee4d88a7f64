//! Training, fine-tuning and evaluation of any secateur graph on burn's `flex` CPU backend.
//! The graph IR stays the model: parameters are copied into burn tensors, an interpreter runs
//! the IR's ops on them (autodiff gives the backward pass), and trained values are written back.
//! burn does not leak out of this crate except through the hook types of the training loop.

pub mod batch;
pub mod calibrate;
pub mod checkpoint;
pub mod embedding;
pub mod error;
pub mod evaluate;
mod features;
pub mod forward;
pub mod layout;
pub mod loss;
pub mod lower;
mod micro;
pub mod optim;
pub mod params;
pub mod pointwise;
pub mod program;
pub mod quant;
pub mod schedule;
pub mod sensitivity;
pub mod trainer;
pub mod value;

pub use burn::tensor::Device;
pub use embedding::EmbeddingSet;
pub use error::{Result, TrainError};
pub use evaluate::{EvalReport, Tally, evaluate};
pub use loss::DistillConfig;
pub use optim::{OptimizerConfig, OptimizerKind};
pub use quant::{ActQuant, FakeQuant, RangeObserver};
pub use schedule::{LrDecay, LrSchedule};
pub use trainer::{NoHook, Progress, StepInfo, TrainConfig, TrainHook, Trainer};

/// The CPU device training runs on.
pub fn cpu() -> Device {
    Device::flex()
}
