//! `secateur eval MODEL --data DATA`: accuracy, per-class accuracy, loss, and top-1 agreement
//! with a reference model.

use crate::data_args::{DataArgs, zoo_config_for};
use crate::model_ref::load_model;
use anyhow::Result;
use secateur_train::{cpu, evaluate};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model (.onnx file or built-in name).
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// A second model: report the fraction of test images on which both predict the same class.
    #[arg(long)]
    pub reference: Option<String>,
    /// Evaluate on the training split instead of the test split.
    #[arg(long)]
    pub train_split: bool,
    #[arg(long = "batch", default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct EvalOutput {
    model: String,
    data: String,
    #[serde(flatten)]
    report: secateur_train::EvalReport,
    agreement: Option<f64>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let split = args.data.load()?;
    let data = if args.train_split {
        &split.train
    } else {
        &split.test
    };
    let graph = load_model(&args.model, &zoo_config_for(&split, 0))?;
    let norm = args.data.normalization(&split, Some(&graph))?;
    let device = cpu();
    let report = evaluate(&graph, data, &norm, args.batch_size, &device, None)?;
    let agreement = match &args.reference {
        Some(r) => {
            let rg = load_model(r, &zoo_config_for(&split, 0))?;
            let rnorm = args.data.normalization(&split, Some(&rg))?;
            let rr = evaluate(&rg, data, &rnorm, args.batch_size, &device, None)?;
            report.agreement(&rr)
        }
        None => None,
    };
    if args.json {
        let out = EvalOutput {
            model: args.model.clone(),
            data: data.name.clone(),
            report,
            agreement,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} images): accuracy {:.4}, loss {:.4}",
        args.model, data.name, report.samples, report.accuracy, report.loss
    );
    for (name, acc) in report.class_names.iter().zip(&report.per_class_accuracy) {
        println!("  {name:<14} {acc:.4}");
    }
    if let Some(a) = agreement {
        println!(
            "top-1 agreement with {}: {a:.4}",
            args.reference.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
