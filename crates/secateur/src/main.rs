//! The `secateur` binary: parse the command line, run the subcommand, print errors with their
//! causes and exit non-zero.

use clap::Parser;
use secateur::cli::{Cli, Command};
use secateur::commands;

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Convert(a) => commands::convert::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
