//! `secateur eval MODEL --data DATA`: accuracy, per-class accuracy, loss, and top-1 agreement
//! with a reference model; for sentence encoders on a text set (.txt / .jsonl), the task score
//! (retrieval top-1 or Spearman) on the held-out texts and the agreement (mean cosine of the
//! embeddings) with a reference model.

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
    /// The model's tokenizer.json for text data (default: next to the model).
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct EvalOutput {
    model: String,
    data: String,
    #[serde(flatten)]
    report: secateur_train::EvalReport,
    agreement: Option<f64>,
}

/// Scores a sentence encoder (and its agreement with the reference) on a text set.
fn run_text(args: &EvalArgs) -> Result<()> {
    use crate::pipeline::text::{TextData, score};
    let data = TextData::load(
        std::path::Path::new(&args.data.data),
        &args.model,
        args.tokenizer.as_deref(),
    )?;
    let part = if args.train_split {
        &data.calibration
    } else {
        &data.held_out
    };
    let cfg = secateur_graph::zoo::ZooConfig::default();
    let embed = |spec: &str| -> Result<_> {
        let g = load_model(spec, &cfg)?;
        let threads = rayon::current_num_threads();
        let mut m =
            crate::pipeline::text::Embedder::new(&g, args.batch_size.clamp(1, 16), threads)?;
        Ok(crate::pipeline::text::embed_set(
            &mut m,
            &data.encoder,
            part,
        )?)
    };
    let ours = embed(&args.model)?;
    let reference = match &args.reference {
        Some(r) => Some(embed(r)?),
        None => None,
    };
    let scores = score(part, &ours, reference.as_ref());
    if args.json {
        let v = serde_json::json!({ "model": args.model, "data": part.name, "scores": scores });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} examples, {} texts)",
        args.model,
        part.name,
        part.examples.len(),
        scores.texts
    );
    if let Some((name, v)) = &scores.task {
        println!("  {name}: {v:.4}");
    }
    if let (Some(a), Some(r)) = (scores.agreement, &args.reference) {
        println!("  agreement with {r} (mean cosine of embeddings): {a:.4}");
    }
    Ok(())
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if secateur_data::is_text_path(&args.data.data) {
        return run_text(args);
    }
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
