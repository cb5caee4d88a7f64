//! Command-line definitions (clap).

use crate::commands::{
    bench::BenchArgs, bench_kernels::BenchKernelsArgs, bench_predict::BenchPredictArgs,
    bench_train::BenchTrainArgs, convert::ConvertArgs, eval::EvalArgs, inspect::InspectArgs,
    optimize::OptimizeArgs, profile::ProfileArgs, prune::PruneArgs, train::TrainArgs,
};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "secateur",
    version,
    about = "Multi-objective neural-network pruning: accuracy vs latency, energy and size, measured."
)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The main job: a Pareto front of pruned / int8 / ensembled models, exported and reported.
    Optimize(Box<OptimizeArgs>),
    /// Show ops, shapes, parameters and MACs per layer.
    Inspect(InspectArgs),
    /// Round-trip an ONNX model through secateur's IR.
    Convert(ConvertArgs),
    /// Train a model (zoo name or ONNX) and export it.
    Train(TrainArgs),
    /// Evaluate a model: accuracy, per-class accuracy, loss, agreement.
    Eval(EvalArgs),
    /// Prune a model: structured (channels, layers) and/or weights (unstructured, N:M, blocks).
    Prune(Box<PruneArgs>),
    /// Costs, energy and latency of a model on a hardware profile.
    Profile(ProfileArgs),
    /// Latency of models in secateur's runtime (and ONNX Runtime with --compare-ort).
    Bench(BenchArgs),
    /// Latency lookup table: build on this machine and check predictions on held-out variants.
    BenchPredict(BenchPredictArgs),
    /// Sparse kernel speed-ups against the dense path.
    BenchKernels(BenchKernelsArgs),
    /// Measure training and evaluation throughput.
    BenchTrain(BenchTrainArgs),
}
