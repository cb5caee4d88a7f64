//! secateur's sparse-aware CPU inference runtime. A graph is compiled into an execution plan
//! with preallocated buffers, Conv/Gemm layers fused with their bias, batch norm and
//! activation, and for every layer the weight format (dense, CSR, block, N:M) and thread count
//! that measured fastest on this machine. Kernels are checked against a naive reference.

pub mod error;
pub mod fold;
pub mod harness;
pub mod kernel_bench;
pub mod kernels;
pub mod ops;
pub mod plan;
pub mod team;

pub use error::{Result, RuntimeError};
pub use harness::{Budget, Stats};
pub use plan::{
    BatchMode, ExecPlan, FormatPolicy, LayerChoice, LayoutPolicy, MemoryReport, PlanConfig,
    Precision,
};
