//! `secateur prune`: structured (channels, layers) and weight (unstructured, N:M, block)
//! pruning with schedules, fine-tuning, distillation and int8 quantization, from flags or a
//! TOML recipe (flags override the recipe). Prints a per-layer table and accuracy before and
//! after; `--json` for scripts.

use crate::data_args::{DataArgs, zoo_config_for};
use crate::model_ref::load_model;
use crate::pipeline::prune::{PruneContext, PruneOutcome, run};
use crate::pipeline::text::{TEXT_CALIBRATION_BATCHES, TextData};
use crate::recipe::{QuantizeRecipe, Recipe, ScheduleKind, ScopeKind, WeightsRecipe};
use crate::recipe_structured::{BlockCriterion, Reconstruction, StructuredKind, StructuredRecipe};
use anyhow::{Context, Result, bail};
use secateur_data::{DataSource, NORMALIZATION_KEY};
use secateur_graph::zoo::ZooConfig;
use secateur_prune::structured::Allocation;
use std::path::Path;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Model: .onnx file or built-in name (a built-in name is an untrained model).
    pub model: String,
    /// Data set (needed for fine-tuning, evaluation and data-dependent criteria); for a sentence
    /// encoder, a text file: .txt (one sentence per line) or .jsonl ("text", optional "pair",
    /// "score"), calibration texts and held-out texts for evaluation.
    #[arg(long)]
    pub data: Option<String>,
    /// The model's tokenizer.json for text data (default: next to the model).
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub mean: Option<Vec<f32>>,
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub std: Option<Vec<f32>>,
    /// A TOML recipe; flags given here override it.
    #[arg(long)]
    pub recipe: Option<PathBuf>,

    /// Weight-pruning criterion: magnitude, l2, threshold:T, random, taylor, lamp, wanda,
    /// sparsegpt.
    #[arg(long)]
    pub method: Option<String>,
    /// unstructured, N:M (e.g. 2:4), block:RxC (e.g. block:4x1).
    #[arg(long)]
    pub granularity: Option<String>,
    /// Fraction of weights to remove.
    #[arg(long)]
    pub sparsity: Option<f64>,
    #[arg(long, value_enum)]
    pub scope: Option<ScopeKind>,
    /// Per-layer sparsity, e.g. --target conv2=0.8 (repeatable).
    #[arg(long = "target", value_parser = parse_target)]
    pub targets: Vec<(String, f64)>,
    /// Layers never pruned (node or weight names).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Fraction of each layer's weights the global ranking must leave (default 0.02, so no
    /// layer ends above 98 % sparsity; 0 allows a layer to collapse to one weight).
    #[arg(long)]
    pub min_density: Option<f64>,
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Iterative: rounds of prune + fine-tune.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// AGP: fraction of fine-tuning after which pruning starts.
    #[arg(long)]
    pub start_fraction: Option<f64>,
    /// AGP / RigL: fraction of fine-tuning after which masks stop changing.
    #[arg(long)]
    pub end_fraction: Option<f64>,
    /// AGP / RigL: steps between mask updates.
    #[arg(long)]
    pub frequency: Option<usize>,
    /// RigL: initial drop/grow fraction.
    #[arg(long)]
    pub rigl_alpha: Option<f64>,
    /// Batches for data-dependent criteria and calibration.
    #[arg(long)]
    pub calibration_batches: Option<usize>,
    /// Wanda / SparseGPT: leave each pruned layer's bias as it is (by default it absorbs the
    /// shift of the layer's mean output on the calibration set).
    #[arg(long)]
    pub no_bias_correction: bool,

    /// Wanda / SparseGPT: keep the method's own weights (by default each pruned layer's kept
    /// weights are refitted by least squares to its dense outputs on the calibration set).
    #[arg(long)]
    pub no_refit: bool,

    /// Structured pruning: channels (every group), heads, neurons (both: heads,neurons) or layers.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub structured: Vec<StructuredKind>,
    /// Structured criterion: l1, l2, bn-scale, fpgm, taylor, random, activation (the default
    /// with a text set).
    #[arg(long)]
    pub criterion: Option<String>,
    /// Reduction over group members: mean, sum, max.
    #[arg(long)]
    pub reduction: Option<String>,
    /// Score normaliser per group: none, mean, max.
    #[arg(long)]
    pub normalizer: Option<String>,
    #[arg(long, value_enum)]
    pub allocation: Option<AllocationArg>,
    /// Fraction of channels to remove.
    #[arg(long)]
    pub ratio: Option<f64>,
    /// Fraction of the original MACs to keep (0.25 = 4x fewer MACs).
    #[arg(long)]
    pub target_macs: Option<f64>,
    /// Fraction of the original parameters to keep.
    #[arg(long)]
    pub target_params: Option<f64>,
    /// Keep channel counts multiples of this.
    #[arg(long)]
    pub round_to: Option<usize>,
    /// Minimum fraction of channels every group keeps.
    #[arg(long)]
    pub min_keep: Option<f64>,
    /// Replay a saved structured plan (JSON).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Depth pruning: blocks or layers to remove.
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Depth pruning: also remove shape-preserving Conv/Gemm layers.
    #[arg(long)]
    pub include_layers: bool,
    #[arg(long, value_enum)]
    pub block_criterion: Option<BlockCriterion>,
    /// With a text set: how the layers reading pruned heads or neurons are refitted by least
    /// squares (sequential: layer by layer on the pruned model's own inputs; dense: from the
    /// dense model's input statistics; off).
    #[arg(long, value_enum)]
    pub reconstruction: Option<Reconstruction>,
    /// With `--criterion fisher`: keep the channels the Fisher diagonal ranks, without Kwon et
    /// al.'s rearrangement within each layer by its Fisher block.
    #[arg(long)]
    pub no_rearrange: bool,

    /// Fine-tuning epochs after (or during) pruning (with a text set: distillation from the
    /// dense model's embeddings of the calibration texts).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Learning rate of fine-tuning (default 2e-3; with a text set 3e-4; a recipe's own).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fine-tuning batch size (default 128; with a text set 16).
    #[arg(long = "batch")]
    pub batch_size: Option<usize>,
    /// sgd, adam, adamw
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// constant, cosine (default cosine; a recipe's own)
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Distil from the unpruned model while fine-tuning (with a text set: also match the
    /// hidden states both models share, not only the pooled embeddings).
    #[arg(long)]
    pub distill: bool,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Quantization: int8 (quantization-aware fine-tuning, exported as an ONNX QDQ model).
    #[arg(long)]
    pub quantize: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,

    #[arg(long)]
    pub out: PathBuf,
    /// Write the structured plan (JSON) here.
    #[arg(long)]
    pub save_plan: Option<PathBuf>,
    /// Write the effective recipe (TOML) here.
    #[arg(long)]
    pub save_recipe: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AllocationArg {
    /// The same ratio in every group.
    Uniform,
    /// One ranking of normalised scores across groups (per kind).
    Global,
    /// Per-group ratios from each group's measured damage (needs --data).
    Sensitivity,
}

fn parse_target(s: &str) -> Result<(String, f64), String> {
    let (l, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected LAYER=SPARSITY, got '{s}'"))?;
    Ok((
        l.to_string(),
        v.parse().map_err(|_| format!("bad sparsity in '{s}'"))?,
    ))
}

macro_rules! set {
    ($dst:expr, $src:expr) => {
        if let Some(v) = $src.clone() {
            $dst = v;
        }
    };
}

/// Fine-tuning learning rate with a text set when none is given.
const TEXT_DISTILL_LR: f64 = 3e-4;
/// Default learning rate of recovery fine-tuning on image data (with a cosine decay).
const IMAGE_RECOVERY_LR: f64 = 2e-3;
/// Fine-tuning batch with a text set when none is given.
const TEXT_DISTILL_BATCH: usize = 16;

/// The recipe file merged with the flags.
pub fn effective_recipe(a: &PruneArgs) -> Result<Recipe> {
    let mut r = match &a.recipe {
        Some(p) => Recipe::from_toml(
            &std::fs::read_to_string(p)
                .with_context(|| format!("reading recipe '{}'", p.display()))?,
            &p.display().to_string(),
        )?,
        None => Recipe::default(),
    };
    set!(r.seed, a.seed);
    let weight_flags = a.method.is_some()
        || a.granularity.is_some()
        || a.sparsity.is_some()
        || !a.targets.is_empty()
        || a.schedule.is_some();
    if weight_flags && r.weights.is_none() {
        r.weights = Some(WeightsRecipe {
            method: "magnitude".into(),
            granularity: "unstructured".into(),
            sparsity: None,
            scope: ScopeKind::Global,
            targets: Default::default(),
            exclude: Vec::new(),
            min_density: None,
            schedule: ScheduleKind::Oneshot,
            rounds: 3,
            start_fraction: 0.0,
            end_fraction: 0.75,
            frequency: 50,
            rigl_alpha: 0.3,
            calibration_batches: 8,
            bias_correction: true,
            refit: true,
        });
    }
    if let Some(w) = &mut r.weights {
        set!(w.method, a.method);
        set!(w.granularity, a.granularity);
        if a.sparsity.is_some() {
            w.sparsity = a.sparsity;
        }
        set!(w.scope, a.scope);
        if a.min_density.is_some() {
            w.min_density = a.min_density;
        }
        if !a.targets.is_empty() {
            w.targets = a.targets.iter().cloned().collect();
        }
        if !a.exclude.is_empty() {
            w.exclude = a.exclude.clone();
        }
        set!(w.schedule, a.schedule);
        set!(w.rounds, a.rounds);
        set!(w.start_fraction, a.start_fraction);
        set!(w.end_fraction, a.end_fraction);
        set!(w.frequency, a.frequency);
        set!(w.rigl_alpha, a.rigl_alpha);
        set!(w.calibration_batches, a.calibration_batches);
        if a.no_bias_correction {
            w.bias_correction = false;
        }
        if a.no_refit {
            w.refit = false;
        }
    }
    if !a.structured.is_empty() {
        let s = r.structured.get_or_insert_with(StructuredRecipe::channels);
        s.set_kinds(&a.structured)?;
    }
    if let Some(s) = &mut r.structured {
        set!(s.criterion, a.criterion);
        set!(s.reduction, a.reduction);
        set!(s.normalizer, a.normalizer);
        if let Some(al) = a.allocation {
            s.allocation = match al {
                AllocationArg::Uniform => Allocation::Uniform,
                AllocationArg::Global => Allocation::Global,
                AllocationArg::Sensitivity => Allocation::Sensitivity,
            };
        }
        if a.ratio.is_some() || a.target_macs.is_some() || a.target_params.is_some() {
            s.ratio = a.ratio;
            s.target_macs = a.target_macs;
            s.target_params = a.target_params;
        }
        set!(s.round_to, a.round_to);
        set!(s.min_keep, a.min_keep);
        if a.plan.is_some() {
            s.plan = a.plan.clone();
        }
        if a.blocks.is_some() {
            s.blocks = a.blocks;
        }
        if a.include_layers {
            s.include_layers = true;
        }
        set!(s.block_criterion, a.block_criterion);
        set!(s.calibration_batches, a.calibration_batches);
        set!(s.reconstruction, a.reconstruction);
        if a.no_rearrange {
            s.rearrange = false;
        }
        if !a.exclude.is_empty() && r.weights.is_none() {
            s.exclude = a.exclude.clone();
        }
    } else if a.ratio.is_some() || a.target_macs.is_some() || a.blocks.is_some() {
        bail!(
            "--ratio, --target-macs and --blocks need --structured channels|heads|neurons|layers"
        );
    }
    let f = &mut r.finetune;
    set!(f.epochs, a.finetune_epochs);
    set!(f.lr, a.lr);
    set!(f.batch, a.batch_size);
    set!(f.optimizer, a.optimizer);
    set!(f.weight_decay, a.weight_decay);
    set!(f.lr_schedule, a.lr_schedule);
    if a.distill {
        f.distill = true;
    }
    set!(f.temperature, a.temperature);
    set!(f.alpha, a.alpha);
    if let Some(q) = &a.quantize {
        r.quantize = Some(QuantizeRecipe {
            format: q.clone(),
            calibration_batches: a.calibration_batches.unwrap_or(8),
        });
    }
    r.validate()?;
    Ok(r)
}

pub fn run_cmd(a: &PruneArgs) -> Result<()> {
    crate::guard_output(&a.out, &[a.model.as_str()])?;
    let mut recipe = effective_recipe(a)?;
    let text_data = a.data.as_deref().is_some_and(secateur_data::is_text_path);
    if a.reconstruction.is_some() && !text_data {
        bail!(
            "--reconstruction refits layers from calibration text: give a text set (--data FILE.txt|.jsonl)"
        );
    }
    if let Some(s) = recipe
        .structured
        .as_mut()
        .filter(|_| text_data && a.criterion.is_none())
        && !s.is_depth()
        && s.criterion == "l1"
    {
        // with calibration text, channels are ranked by the output energy they feed (the
        // L1 norm of weights ignores the activations: 0.32 vs 0.78 agreement on MiniLM)
        s.criterion = "activation".into();
        if a.recipe.is_none() && a.allocation.is_none() && a.normalizer.is_none() {
            // output energies compare across layers: one ranking per kind (heads, neurons)
            // keeps more of the layers that matter (MiniLM, 50 % heads and neurons: agreement
            // 0.866 against 0.782 for the same ratio in every layer)
            s.allocation = Allocation::Global;
            s.normalizer = "none".into();
        }
    }
    if let Some(s) = recipe.structured.as_mut().filter(|_| text_data)
        && a.recipe.is_none()
        && a.calibration_batches.is_none()
        && !s.is_depth()
    {
        // the ranking statistics and the least-squares refit both gain from more text
        // (MiniLM, 50 % heads and neurons: agreement 0.866 with 128 texts, 0.916 with 512)
        s.calibration_batches = TEXT_CALIBRATION_BATCHES;
    }
    if let Some(s) = recipe
        .structured
        .as_mut()
        .filter(|_| a.data.is_some() && !text_data && a.recipe.is_none() && a.allocation.is_none())
        && !s.is_depth()
        && s.plan.is_none()
        && (s.target_macs.is_some() || s.target_params.is_some())
    {
        // with data and a MACs or parameter budget, each group's measured damage decides its
        // share (BENCHMARKS.md, "Sensitivity allocation"): 4x fewer MACs on two PyTorch-trained
        // LeNet-5-BN 0.9129 / 0.9119 against 0.9115 / 0.9106 uniform, MLP 0.8845 vs 0.8820
        s.allocation = Allocation::Sensitivity;
    }
    if text_data && a.recipe.is_none() {
        // distilling a pretrained encoder wants small steps and small batches (measured on
        // all-MiniLM-L6-v2, BENCHMARKS.md)
        let f = &mut recipe.finetune;
        f.lr = a.lr.unwrap_or(TEXT_DISTILL_LR);
        f.batch = a.batch_size.unwrap_or(TEXT_DISTILL_BATCH);
        f.lr_schedule = a.lr_schedule.clone().unwrap_or_else(|| "cosine".into());
    } else if a.recipe.is_none() {
        // recovery after one-shot pruning wants larger steps that decay: on a PyTorch-trained
        // LeNet-5-BN (BENCHMARKS.md, "Recovery defaults") lr 2e-3 with a cosine decay beat
        // 1e-3 constant at 90 % (0.9012 vs 0.8964), 95 % (0.8796 vs 0.8770) and 4x fewer
        // MACs by channels (0.9115 vs 0.9020)
        let f = &mut recipe.finetune;
        f.lr = a.lr.unwrap_or(IMAGE_RECOVERY_LR);
        f.lr_schedule = a.lr_schedule.clone().unwrap_or_else(|| "cosine".into());
    }
    let needs = recipe.needs_data()?;
    if needs && a.data.is_none() {
        bail!(
            "this recipe fine-tunes, quantizes or uses a data-dependent criterion: pass --data (e.g. --data fashion-mnist-mini)"
        );
    }
    let text = match &a.data {
        Some(d) if secateur_data::is_text_path(d) => Some(
            TextData::load(Path::new(d), &a.model, a.tokenizer.as_deref())
                .with_context(|| format!("loading text set '{d}'"))?,
        ),
        _ => None,
    };
    let split = match &a.data {
        Some(d) if text.is_none() => Some(
            d.parse::<DataSource>()?
                .load()
                .with_context(|| format!("loading data set '{d}'"))?,
        ),
        _ => None,
    };
    let zoo_cfg = match &split {
        Some(s) => zoo_config_for(s, recipe.seed),
        None => ZooConfig {
            seed: recipe.seed,
            ..Default::default()
        },
    };
    let mut model = load_model(&a.model, &zoo_cfg)?;
    let norm = match &split {
        Some(s) => DataArgs {
            data: String::new(),
            mean: a.mean.clone(),
            std: a.std.clone(),
        }
        .normalization(s, Some(&model))?,
        None => secateur_data::Normalization::identity(1),
    };
    if split.is_some() {
        model
            .metadata
            .insert(NORMALIZATION_KEY.into(), norm.to_metadata());
    }
    let ctx = PruneContext {
        split: split.as_ref(),
        text: text.as_ref(),
        norm,
        device: secateur_train::cpu(),
    };
    let quiet = a.json;
    let mut log = |m: &str| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    let outcome = run(model, &recipe, &ctx, &mut log)?;
    secateur_onnx::save_model(&outcome.graph, &a.out)?;
    if let (Some(p), Some(plan)) = (&a.save_plan, &outcome.plan) {
        secateur_graph::io::write_atomic(p, serde_json::to_string_pretty(plan)?.as_bytes())
            .with_context(|| format!("writing plan '{}'", p.display()))?;
    }
    if let Some(p) = &a.save_recipe {
        secateur_graph::io::write_atomic(p, recipe.to_toml()?.as_bytes())
            .with_context(|| format!("writing recipe '{}'", p.display()))?;
    }
    let bytes = FileBytes {
        input: std::fs::metadata(&a.model)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()),
        output: std::fs::metadata(&a.out)
            .with_context(|| format!("reading back '{}'", a.out.display()))?
            .len(),
    };
    if a.json {
        let v = serde_json::json!({
            "model": a.model,
            "out": a.out,
            "recipe": recipe,
            "result": outcome,
            "file_bytes": bytes.output,
            "input_file_bytes": bytes.input,
        });
        super::emit_json(&v)?;
    } else {
        print_outcome(&outcome, a, &bytes);
    }
    Ok(())
}

/// Sizes of the model file read (when the model was a file) and of the file written.
struct FileBytes {
    input: Option<u64>,
    output: u64,
}

fn print_outcome(o: &PruneOutcome, a: &PruneArgs, bytes: &FileBytes) {
    if !o.shape_changes.is_empty() {
        println!(
            "{:<28} {:<20} {:<20}",
            "node", "shape before", "shape after"
        );
        for c in &o.shape_changes {
            println!("{:<28} {:<20} {:<20}", c.node, c.before, c.after);
        }
        println!();
    }
    println!(
        "{:<24} {:<18} {:>10} {:>10} {:>9} {:<14}",
        "layer", "weight shape", "params", "kept", "sparsity", "pattern"
    );
    for l in &o.layers {
        let shape = format!("{:?}", l.shape);
        println!(
            "{:<24} {:<18} {:>10} {:>10} {:>8.1}% {:<14}",
            l.layer,
            shape,
            l.params,
            l.nonzero,
            l.sparsity * 100.0,
            l.pattern
        );
    }
    println!();
    let fewer = |after: u64| o.macs_before as f64 / after.max(1) as f64;
    println!(
        "parameters {} -> {} ({} non-zero); MACs per sample {} -> {} dense ({:.2}x fewer), {} executed with zero weights skipped ({:.2}x fewer)",
        o.params_before,
        o.params_after,
        o.nonzero_params_after,
        o.macs_before,
        o.macs_after,
        fewer(o.macs_after),
        o.macs_executed_after,
        fewer(o.macs_executed_after)
    );
    match (&o.before, &o.after, &o.text_after) {
        (Some(b), Some(af), _) => println!("accuracy {:.4} -> {:.4}", b.accuracy, af.accuracy),
        (_, _, Some(t)) => {
            if let Some(ag) = t.agreement {
                println!(
                    "agreement with the dense model (mean cosine, {} held-out texts): {ag:.4}",
                    t.texts
                );
            }
            let before = o.text_before.as_ref().and_then(|b| b.task.as_ref());
            if let (Some((name, b)), Some((_, af))) = (before, &t.task) {
                println!("{name} {b:.4} -> {af:.4}");
            }
        }
        _ => println!("accuracy not evaluated (no --data)"),
    }
    if let Some(q) = &o.after_int8 {
        println!(
            "int8 accuracy {:.4} (float {:.4})",
            q.accuracy,
            o.after.as_ref().map_or(f64::NAN, |x| x.accuracy)
        );
    }
    for n in &o.notes {
        println!("{n}");
    }
    match bytes.input {
        Some(input) => println!(
            "wrote {} ({} bytes; the input file has {input})",
            a.out.display(),
            bytes.output
        ),
        None => println!("wrote {} ({} bytes)", a.out.display(), bytes.output),
    }
}
