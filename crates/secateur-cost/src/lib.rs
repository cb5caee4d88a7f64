//! The cost side of secateur: every objective as a number with a unit and a method.
//! Analytic counts (parameters, MACs, bytes per storage format), activation memory from the
//! runtime's buffer liveness, hardware profiles as data, an explicit energy model of compute
//! and data movement, energy measurement with RAPL (and NVML behind a feature) that says how it
//! measured or why it could not, and latency prediction from per-layer lookup tables.

pub mod counts;
pub mod energy;
pub mod error;
pub mod latency;
#[cfg(feature = "nvml")]
pub mod nvml;
pub mod profile;
pub mod rapl;

pub use counts::{CountTotals, LayerCount, StorageBytes, layer_counts, totals};
pub use energy::{EnergyModel, Execution, LayerEnergy, fits, model};
pub use error::{CostError, Result};
pub use latency::{LatencyTable, LayerSig, signatures};
pub use profile::HardwareProfile;
