//! Structured pruning: dependency groups derived from axis links, channel importance, plans of
//! kept channels and their application, Kwon et al.'s Fisher mask rearrangement, least-squares reconstruction of the layers that read
//! pruned channels, and depth pruning (block and layer removal).

pub mod depth;
pub mod fisher;
pub mod groups;
pub mod importance;
pub mod plan;
pub mod rearrange;
pub mod reconstruct;
pub mod select;
pub mod sequential;

pub use depth::{
    BlockCandidate, identity_layers, rank_blocks, remove_block, remove_blocks, residual_blocks,
};
pub use fisher::{MaskGradients, fisher_gradients, fisher_importance};
pub use groups::{AxisRef, DependencyGraph, Group, GroupKind, Member, ParamRole};
pub use importance::{GroupCriterion, Normalizer, Reduction, group_scores};
pub use plan::{Plan, PlanEntry, apply_plan, zero_channels};
pub use rearrange::{Rearranged, rearrange, rearrange_plan};
pub use reconstruct::{activation_importance, reconstruct_consumers};
pub use select::{
    Allocation, ChannelPruneConfig, StructuredTarget, plan_channels, prunable_groups,
};
pub use sequential::reconstruct_sequential;
