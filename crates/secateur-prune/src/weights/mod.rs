//! Weight pruning: masks of a granularity (unstructured, N:M, blocks) chosen by a criterion
//! (magnitude, threshold, random, Taylor, LAMP, Wanda) under a scope (global, per layer,
//! per-layer targets), and the schedules that drive them during training.

pub mod allocate;
pub mod criteria;
pub mod granularity;
pub mod schedule;

pub use allocate::{
    LayerSparsity, PrunableWeight, Scope, WeightPruneConfig, apply_masks, compute_masks,
    prunable_weights, sparsity_report,
};
pub use criteria::{Criterion, CriterionData};
pub use granularity::Granularity;
pub use schedule::{Agp, iterative_target, rigl_fraction, rigl_update};
