//! Structured pruning: dependency groups derived from axis links, plans of kept channels, and
//! their application to the graph.

pub mod groups;
pub mod plan;

pub use groups::{AxisRef, DependencyGraph, Group, Member, ParamRole};
pub use plan::{Plan, PlanEntry, apply_plan, zero_channels};
