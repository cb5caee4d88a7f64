//! `secateur eval MODEL --data DATA`: accuracy, per-class accuracy, loss, and top-1 agreement
//! with a reference model; for sentence encoders on a text set (.txt / .jsonl), the task score
//! (retrieval top-1 or Spearman) on the held-out texts and the agreement (mean cosine of the
//! embeddings) with a reference model. `--precision bf16` (or a model whose file says bf16)
//! evaluates it in secateur's runtime in bf16 and also reports its agreement with the same
//! model in f32.

use crate::data_args::{DataArgs, zoo_config_for};
use crate::model_ref::load_model;
use crate::pipeline::runtime_eval::evaluate_in_runtime;
use anyhow::Result;
use secateur_graph::Precision;
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
    /// Arithmetic to evaluate in: f32 (the training engine) or bf16 (secateur's runtime, with
    /// the agreement against f32). A model whose file says bf16 is evaluated in bf16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

/// The precision to evaluate `g` in: bf16 when asked or when the graph says so.
fn precision_of(args: &EvalArgs, g: &secateur_graph::Graph) -> Result<Precision> {
    let asked: Precision = args
        .precision
        .parse()
        .map_err(|e| anyhow::anyhow!("--precision: {e}"))?;
    Ok(if g.precision == Precision::Bf16 {
        Precision::Bf16
    } else {
        asked
    })
}

#[derive(Serialize)]
struct EvalOutput {
    model: String,
    precision: &'static str,
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
    let embed = |g: &secateur_graph::Graph, precision: Precision| -> Result<_> {
        let threads = rayon::current_num_threads();
        let batch = args.batch_size.clamp(1, 16);
        let mut m = crate::pipeline::text::Embedder::with_precision(g, batch, threads, precision)?;
        Ok(crate::pipeline::text::embed_set(
            &mut m,
            &data.encoder,
            part,
        )?)
    };
    let g = load_model(&args.model, &cfg)?;
    let precision = precision_of(args, &g)?;
    let ours = embed(&g, precision)?;
    let reference = match (&args.reference, precision) {
        (Some(r), _) => Some(embed(&load_model(r, &cfg)?, Precision::F32)?),
        // bf16: agreement with the same model in f32
        (None, Precision::Bf16) => Some(embed(&as_f32(&g), Precision::F32)?),
        (None, Precision::F32) => None,
    };
    let scores = score(part, &ours, reference.as_ref());
    if args.json {
        let v = serde_json::json!({ "model": args.model, "data": part.name, "precision": precision.name(), "scores": scores });
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
    if let Some(a) = scores.agreement {
        let other = args.reference.as_deref().unwrap_or("the same model in f32");
        println!("  agreement with {other} (mean cosine of embeddings): {a:.4}");
    }
    Ok(())
}

/// `g` marked to run in f32.
fn as_f32(g: &secateur_graph::Graph) -> secateur_graph::Graph {
    let mut g = g.clone();
    g.precision = Precision::F32;
    g
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
    let precision = precision_of(args, &graph)?;
    let report = match precision {
        Precision::F32 => evaluate(&graph, data, &norm, args.batch_size, &device, None)?,
        Precision::Bf16 => evaluate_in_runtime(&graph, data, &norm, args.batch_size, precision)?,
    };
    let agreement = match &args.reference {
        None if precision == Precision::Bf16 => {
            // the same model in f32, in the same runtime
            let f32_report = evaluate_in_runtime(
                &as_f32(&graph),
                data,
                &norm,
                args.batch_size,
                Precision::F32,
            )?;
            report.agreement(&f32_report)
        }
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
            precision: precision.name(),
            data: data.name.clone(),
            report,
            agreement,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let engine = match precision {
        Precision::F32 => String::new(),
        p => format!(" ({p}, secateur runtime)"),
    };
    println!(
        "{} on {} ({} images){engine}: accuracy {:.4}, loss {:.4}",
        args.model, data.name, report.samples, report.accuracy, report.loss
    );
    for (name, acc) in report.class_names.iter().zip(&report.per_class_accuracy) {
        println!("  {name:<14} {acc:.4}");
    }
    if let Some(a) = agreement {
        let other = args.reference.as_deref().unwrap_or("the same model in f32");
        println!("top-1 agreement with {other}: {a:.4}");
    }
    Ok(())
}
