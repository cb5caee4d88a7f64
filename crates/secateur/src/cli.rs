//! Command-line definitions (clap) and the dispatch of a parsed command line, shared by the
//! `secateur` binary and the Python package's entry point.

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
    /// Size of a symbolic dimension of an ONNX model's inputs other than the batch, e.g.
    /// `--dim seq=128` (repeatable).
    #[arg(long = "dim", global = true, value_name = "NAME=SIZE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Size of every symbolic input dimension after the batch that `--dim` does not name (the
    /// sequence length of a text model's token inputs).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub seq_len: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=SIZE"))?;
    let size: usize = size
        .trim()
        .parse()
        .map_err(|_| format!("the size in '{s}' is not a positive integer"))?;
    if name.trim().is_empty() || size == 0 {
        return Err(format!("'{s}' needs a name and a positive size"));
    }
    Ok((name.trim().to_string(), size))
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

/// Runs a parsed command line: global settings (threads, symbolic dimensions), then the
/// subcommand.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    use crate::commands;
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot set {n} threads: {e}"))?;
    }
    crate::model_ref::set_dims(&cli.dims, cli.seq_len.map(|n| n as usize));
    match &cli.command {
        Command::Optimize(a) => commands::optimize::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Prune(a) => commands::prune::run_cmd(a),
        Command::BenchTrain(a) => commands::bench_train::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::BenchPredict(a) => commands::bench_predict::run(a),
        Command::Profile(a) => commands::profile::run(a),
        Command::BenchKernels(a) => commands::bench_kernels::run(a),
    }
}

/// The whole command line from its arguments (the program name first): parses, runs, prints
/// an error with its causes; returns the exit status.
pub fn main_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
