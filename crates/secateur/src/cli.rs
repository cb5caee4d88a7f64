//! Command-line definitions (clap).

use crate::commands::{convert::ConvertArgs, inspect::InspectArgs};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "secateur", version, about = "Multi-objective neural-network pruning: accuracy vs latency, energy and size, measured.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show ops, shapes, parameters and MACs per layer.
    Inspect(InspectArgs),
    /// Round-trip an ONNX model through secateur's IR.
    Convert(ConvertArgs),
}
