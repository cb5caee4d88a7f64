//! Weight pruning: masks of a granularity (unstructured, N:M, blocks) chosen by a criterion
//! (magnitude, threshold, random, Taylor, LAMP, Wanda) under a scope (global, per layer,
//! per-layer targets), and the schedules that drive them during training; SparseGPT's
//! reconstructing one-shot pruning from calibration Gram matrices, and the least-squares
//! refit of a one-shot mask's kept weights.

pub mod allocate;
pub mod calibration;
pub mod criteria;
pub mod granularity;
pub mod oneshot;
pub mod refit;
pub mod schedule;
pub mod sparsegpt;

/// A deterministic generator of values in [−0.5, 0.5) for the unit tests of this module.
#[cfg(test)]
pub(crate) fn test_lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

pub use allocate::{
    DEFAULT_MIN_DENSITY, LayerSparsity, PrunableWeight, Scope, WeightPruneConfig, apply_masks,
    compute_masks, prunable_weights, sparsity_report,
};
pub use calibration::{Gram, collect_grams};
pub use criteria::{Criterion, CriterionData};
pub use granularity::Granularity;
pub use oneshot::{OneShotConfig, OneShotMethod, prune_sequentially};
pub use refit::RefitSystem;
pub use schedule::{Agp, iterative_target, rigl_fraction, rigl_update};
pub use sparsegpt::{SparseGptConfig, sparsegpt_matrix};
