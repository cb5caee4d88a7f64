//! Multi-objective search, independent of neural networks: a gene space, NSGA-II with
//! constraint domination as a checkpointable ask/tell loop, and Pareto utilities (fronts,
//! crowding, hypervolume, knee point). All objectives are minimised.

pub mod error;
pub mod nsga2;
pub mod pareto;
pub mod space;

pub use error::{Result, SearchError};
pub use nsga2::{Individual, Nsga2, Nsga2Config, Truncation};
pub use pareto::{dominates, hypervolume, knee, non_dominated_sort, pareto_front};
pub use space::{Gene, Space};
