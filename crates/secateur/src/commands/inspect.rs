//! `secateur inspect MODEL [--json]`: ops, output shapes, parameters and MACs per layer and in
//! total.

use crate::model_ref::load_model;
use anyhow::Result;
use secateur_graph::summarize;
use secateur_graph::zoo::ZooConfig;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// An .onnx file or a built-in model name (mlp, lenet5-bn, resnet8, resnet20, mobilenet-v2).
    pub model: String,
    /// Print JSON (schema: see README, "inspect --json").
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let g = load_model(&args.model, &ZooConfig::default())?;
    let s = summarize(&g)?;
    if args.json {
        super::emit_json(&s)?;
        return Ok(());
    }
    println!(
        "model {}  inputs {}  outputs {}",
        s.name,
        fmt_pairs(&s.inputs),
        fmt_pairs(&s.outputs)
    );
    println!(
        "{:<28} {:<20} {:<18} {:>10} {:>10} {:>12}",
        "node", "op", "output", "params", "nonzero", "MACs"
    );
    for l in &s.layers {
        println!(
            "{:<28} {:<20} {:<18} {:>10} {:>10} {:>12}",
            l.node, l.op, l.output_shape, l.params, l.nonzero_params, l.macs
        );
    }
    println!(
        "{:<68} {:>10} {:>10} {:>12}",
        "total", s.total_params, s.total_nonzero_params, s.total_macs
    );
    if !g.masks.is_empty() {
        println!("{} masked weight tensors", g.masks.len());
    }
    Ok(())
}

fn fmt_pairs(v: &[(String, String)]) -> String {
    v.iter()
        .map(|(n, s)| format!("{n}{s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
