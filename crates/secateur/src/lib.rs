//! The secateur application layer: resolving models, the pipelines that chain training,
//! pruning, measurement and search, and the command-line subcommands. The binary (`main.rs`)
//! only parses arguments and reports errors.

pub mod cli;
pub mod commands;
pub mod data_args;
pub mod model_ref;
pub mod pipeline;
pub mod progress;
pub mod python;
pub mod recipe;
pub mod recipe_structured;
pub mod train_args;

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
