//! The secateur command line: argument parsing and the subcommands, over the pipelines of
//! `secateur_pipeline` (re-exported here under their old paths). The binary (`main.rs`) only
//! parses arguments and reports errors.

pub mod cli;
pub mod commands;
pub mod data_args;
pub mod train_args;

pub use secateur_pipeline::ort_python as python;
pub use secateur_pipeline::{model_ref, progress, recipe, recipe_structured};

/// The pipelines of `secateur_pipeline`, under the paths the subcommands use.
pub mod pipeline {
    pub use secateur_pipeline::{finetune, hooks, optimize, prune, runtime_eval, text};
}

use anyhow::{Result, bail};
use std::path::Path;

/// Refuses an output path that would overwrite one of the inputs.
pub fn guard_output(output: &Path, inputs: &[&str]) -> Result<()> {
    let out = std::fs::canonicalize(output).ok();
    for i in inputs {
        let p = Path::new(i);
        if p.exists() && (out.is_some() && std::fs::canonicalize(p).ok() == out) {
            bail!(
                "refusing to overwrite the input '{}' with the output; choose another --out",
                p.display()
            );
        }
    }
    Ok(())
}
