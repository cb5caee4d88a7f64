//! `secateur convert IN OUT`: ONNX (or a zoo model) → IR → ONNX at opset 17, checked.

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
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    crate::guard_output(&args.output, &[args.input.as_str()])?;
    let g = load_model(&args.input, &ZooConfig::default())?;
    if g.nodes.is_empty() {
        bail!("the model has no nodes");
    }
    secateur_onnx::save_model(&g, &args.output)?;
    println!(
        "wrote {} ({} nodes, {} weights)",
        args.output.display(),
        g.nodes.len(),
        g.initializers.len()
    );
    Ok(())
}
