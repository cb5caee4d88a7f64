//! One module per subcommand; each turns parsed arguments into calls of the library crates
//! and prints the result (a readable table, or JSON with `--json`).

pub mod bench;
pub mod bench_kernels;
pub mod bench_predict;
pub mod bench_train;
pub mod convert;
pub mod eval;
pub mod inspect;
pub mod optimize;
pub mod profile;
pub mod prune;
pub mod train;
