//! The `secateur` binary: parse the command line, run the subcommand, print errors with their
//! causes and exit non-zero.

use clap::Parser;
use secateur::cli::{Cli, Command};
use secateur::commands;

/// Output to a closed pipe (`secateur profile M | head`) ends the run quietly with success, as
/// in other command-line tools; every other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

fn main() {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
    {
        eprintln!("error: cannot set {n} threads: {e}");
        std::process::exit(1);
    }
    secateur::model_ref::set_dims(&cli.dims, cli.seq_len.map(|n| n as usize));
    let result = match &cli.command {
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
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
