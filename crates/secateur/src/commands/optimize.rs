//! `secateur optimize [MODEL]`: the main job. Searches pruned / int8 / bf16 / ensembled variants of a
//! model for the best trade-offs between accuracy, latency, energy, size and memory, and writes
//! a report directory (front.json, report.html, every front member as ONNX). With no
//! arguments it trains the built-in `lenet5-bn` on the embedded `fashion-mnist-mini` and
//! searches in a few minutes. With a text set (`--data FILE.jsonl|.txt`) the model is a
//! sentence encoder (an ONNX file or a Hugging Face checkpoint directory): heads and FFN
//! neurons per layer are searched, scored by agreement with the dense model. Settings: built-in defaults < `--config FILE` < flags. Runs
//! resume from their directory after a kill.

use crate::data_args::DataArgs;
use crate::pipeline::optimize::config::{OptimizeFile, TextScore, ValSource};
use crate::pipeline::optimize::request::OptimizeRequest;
use crate::pipeline::optimize::{OptimizeOutcome, run as run_optimize};
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct OptimizeArgs {
    /// Model: .onnx file (trained), built-in name (trained first), or with a text set a
    /// sentence encoder (.onnx or a Hugging Face checkpoint directory).
    #[arg(default_value = "lenet5-bn")]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// The model's tokenizer.json when the data is a text set (default: next to the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// With a text set: what scores candidates, agreement with the dense model (mean cosine
    /// of the embeddings) or the set's task score (retrieval top-1 / Spearman).
    #[arg(long, value_enum)]
    pub text_score: Option<TextScore>,
    /// Settings file (TOML); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Objectives: any of accuracy, latency, energy, bytes, memory.
    #[arg(long, value_delimiter = ',')]
    pub objectives: Option<Vec<String>>,
    /// Constraint such as latency<=2ms, bytes<=256KiB, accuracy>=0.88 (repeatable).
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Hardware for latency: host (measured here) or a profile (embedded, mobile, cloud, .toml).
    #[arg(long)]
    pub hardware: Option<String>,
    /// Hardware profile for energy per inference.
    #[arg(long)]
    pub energy_hardware: Option<String>,
    /// Batch size of latency, energy and memory.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Search budget in evaluations (sets the generations for the population).
    #[arg(long)]
    pub budget: Option<usize>,
    #[arg(long)]
    pub population: Option<usize>,
    #[arg(long)]
    pub generations: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training images of each candidate's short fine-tune.
    #[arg(long)]
    pub search_samples: Option<usize>,
    #[arg(long)]
    pub search_epochs: Option<usize>,
    /// Images held out to estimate accuracy during the search.
    #[arg(long)]
    pub val_samples: Option<usize>,
    /// Split the validation images come from: auto (train for built-in models, test for
    /// models given as trained), train, or test (final accuracies then use the rest of it).
    #[arg(long, value_enum)]
    pub val_from: Option<ValSource>,
    /// Epochs of the final fine-tune of front members.
    #[arg(long)]
    pub final_epochs: Option<usize>,
    /// Epochs to train the model before searching (default: 8 for built-in models, 0 for ONNX).
    #[arg(long)]
    pub dense_epochs: Option<usize>,
    /// Fine-tuning learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Distil fine-tunes from the dense model.
    #[arg(long)]
    pub distill: bool,
    /// Leave int8 out of the search space.
    #[arg(long)]
    pub no_int8: bool,
    /// Leave bf16 execution out of the search space (it is in only where latency is measured
    /// on this machine and the CPU has AVX-512 BF16).
    #[arg(long)]
    pub no_bf16: bool,
    /// Largest ensemble (2 or 3; 0 disables ensembles).
    #[arg(long)]
    pub ensemble_size: Option<usize>,
    /// Skip the uniform-ratio baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Re-train at most this many front members.
    #[arg(long)]
    pub max_final: Option<usize>,
    /// Accuracy drop (before fine-tuning) beyond which a layer's ratio is out of the space.
    #[arg(long)]
    pub sensitivity_drop: Option<f64>,
    /// Candidates losing more accuracy than this against the dense model are infeasible
    /// (default 0.1; 1 disables).
    #[arg(long)]
    pub max_accuracy_drop: Option<f64>,
    /// Children bred per generation as a multiple of the population, screened by their cheap
    /// objectives and a surrogate of accuracy before any is trained (default 4; 1 = plain
    /// NSGA-II).
    #[arg(long)]
    pub screen_pool: Option<usize>,
    /// Output directory (resumed when it holds an unfinished run with the same settings).
    #[arg(long, default_value = "secateur-out")]
    pub out: PathBuf,
    /// Start over, removing an earlier run's files from the output directory.
    #[arg(long)]
    pub fresh: bool,
    /// Candidates evaluated in parallel (default: the available cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where candidates are evaluated: threads of this process, or tasks on a Ray cluster
    /// (through the Python package's entry point).
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// Address of the Ray cluster (`ray.init(address=...)`; default: start a local one).
    #[arg(long)]
    pub ray_address: Option<String>,
}

/// Where the candidates of a search are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    Local,
    Ray,
}

/// What the flags ask for.
pub fn request(args: &OptimizeArgs) -> OptimizeRequest {
    OptimizeRequest {
        model: args.model.clone(),
        data: args.data.data.clone(),
        mean: args.data.mean.clone(),
        std: args.data.std.clone(),
        tokenizer: args.tokenizer.clone(),
        config: args.config.clone(),
        settings: OptimizeFile {
            objectives: args.objectives.clone(),
            constraints: (!args.constraints.is_empty()).then(|| args.constraints.clone()),
            hardware: args.hardware.clone(),
            energy_hardware: args.energy_hardware.clone(),
            batch: args.batch,
            population: args.population,
            generations: args.generations,
            budget: args.budget,
            seed: args.seed,
            search_samples: args.search_samples,
            search_epochs: args.search_epochs,
            val_samples: args.val_samples,
            val_from: args.val_from,
            final_epochs: args.final_epochs,
            dense_epochs: args.dense_epochs,
            lr: args.lr,
            distill: args.distill.then_some(true),
            int8: args.no_int8.then_some(false),
            bf16: args.no_bf16.then_some(false),
            ensemble_size: args.ensemble_size,
            baseline: args.no_baseline.then_some(false),
            max_final: args.max_final,
            sensitivity_drop: args.sensitivity_drop,
            max_accuracy_drop: args.max_accuracy_drop,
            screen_pool: args.screen_pool,
            text_score: args.text_score,
            ..Default::default()
        },
        out: args.out.clone(),
        fresh: args.fresh,
        workers: args.workers,
    }
}

fn summary(o: &OptimizeOutcome) {
    let r = &o.report;
    let mut front: Vec<_> = r.front().collect();
    front.sort_by(|a, b| {
        b.values
            .get("accuracy")
            .unwrap_or(&0.0)
            .total_cmp(a.values.get("accuracy").unwrap_or(&0.0))
    });
    println!(
        "Pareto front of {} on {}: {} models (hypervolume {:.4}, uniform-ratio baseline {:.4})",
        r.model,
        r.data,
        front.len(),
        r.front_hypervolume,
        r.baseline_hypervolume
    );
    // one column per objective, headed by its key (the key carries the unit: latency_ms, ...)
    let widths: Vec<usize> = r.objectives.iter().map(|ob| ob.key.len().max(10)).collect();
    print!("{:<12}", "id");
    for (ob, w) in r.objectives.iter().zip(&widths) {
        print!(" {:>w$}", ob.key);
    }
    println!("  {:<10} configuration", "verified");
    if let Some(d) = &r.dense {
        print!("{:<12}", "dense");
        for (ob, w) in r.objectives.iter().zip(&widths) {
            print!(" {:>w$.4}", d.get(&ob.key).copied().unwrap_or(f64::NAN));
        }
        println!("  {:<10} the model the run started from (reference)", "-");
    }
    for p in &front {
        print!(
            "{:<12}",
            format!("{}{}", p.id, if p.knee { "*" } else { "" })
        );
        for (ob, w) in r.objectives.iter().zip(&widths) {
            print!(
                " {:>w$.4}",
                p.values.get(&ob.key).copied().unwrap_or(f64::NAN)
            );
        }
        let v = p
            .verification
            .as_ref()
            .and_then(|v| v.checked_accuracy)
            .map_or("-".to_string(), |a| format!("{a:.4}"));
        println!("  {v:<10} {}", p.label);
    }
    println!(
        "(* knee point; verified: accuracy of the exported ONNX file, re-evaluated in ONNX Runtime when available)\nreport: {}",
        o.dir.join("report.html").display()
    );
}

pub fn run(args: &OptimizeArgs) -> Result<()> {
    if args.executor == Executor::Ray {
        bail!(
            "the Ray executor is driven from Python: install the package (`pip install .` in this repository) and run its `secateur optimize ... --executor ray` entry point, or call secateur.optimize(..., executor=\"ray\")"
        );
    }
    let (cfg, inputs) = request(args).prepare()?;
    let outcome = run_optimize(&cfg, inputs, &mut |m| eprintln!("{m}"))?;
    if let Some(msg) = &outcome.unmet {
        bail!(
            "{msg}\n(the report with every evaluated candidate is in {})",
            outcome.dir.display()
        );
    }
    summary(&outcome);
    Ok(())
}
