//! `secateur convert IN OUT`: ONNX (or a zoo model) → IR → ONNX at opset 17, checked.
//! `--precision bf16` marks the model to run in bf16 wherever secateur loads it (its weights
//! stay f32 in the file; other runtimes run it in f32).

use crate::model_ref::load_model;
use anyhow::{Result, bail};
use secateur_graph::zoo::ZooConfig;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input .onnx file or built-in model name.
    pub input: String,
    /// Output .onnx file (written atomically; must differ from the input).
    pub output: PathBuf,
    /// Mark the output to run in this precision in secateur's runtime: f32 or bf16 (default:
    /// the input's).
    #[arg(long)]
    pub precision: Option<String>,
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    crate::guard_output(&args.output, &[args.input.as_str()])?;
    let mut g = load_model(&args.input, &ZooConfig::default())?;
    if g.nodes.is_empty() {
        bail!("the model has no nodes");
    }
    if let Some(p) = &args.precision {
        g.precision = p.parse().map_err(|e| anyhow::anyhow!("--precision: {e}"))?;
    }
    secateur_onnx::save_model(&g, &args.output)?;
    println!(
        "wrote {} ({} nodes, {} weights, runs in {} in secateur)",
        args.output.display(),
        g.nodes.len(),
        g.initializers.len(),
        g.precision
    );
    Ok(())
}
