//! The pruning pipeline a recipe describes: evaluate the dense model, prune structurally
//! (channels by dependency groups, or depth), prune weights (one-shot, iterative, AGP or
//! RigL), fine-tune with optional distillation and int8 quantization-aware training, then
//! evaluate again (float and int8) and report per-layer sparsity, shapes, parameters and MACs.

use super::finetune::{Finetune, TrainData};
use super::hooks::{AgpHook, RiglHook};
use super::text::{DISTILL_EXTRA_VIEWS, Feeds, SetEmbeddings, TextData, TextScores, score};
use crate::recipe::{Recipe, ScheduleKind};
use crate::recipe_structured::{BlockCriterion, Reconstruction, StructuredKind, StructuredRecipe};
use crate::{Context, Result, bail};
use secateur_data::{Normalization, Split};
use secateur_graph::{Graph, summarize};
use secateur_prune::structured::{
    Allocation, ChannelPruneConfig, DependencyGraph, GroupCriterion, Plan, StructuredTarget,
    activation_importance, apply_plan, fisher_gradients, fisher_importance, plan_channels,
    prunable_groups, rearrange_plan, reconstruct_consumers, reconstruct_sequential, remove_blocks,
};
use secateur_prune::weights::{
    Agp, Criterion, CriterionData, Granularity, LayerSparsity, OneShotConfig, OneShotMethod,
    WeightPruneConfig, apply_masks, compute_masks, iterative_target, prune_sequentially,
    sparsity_report,
};
use secateur_train::calibrate::{input_channel_norms, taylor_scores};
use secateur_train::evaluate::predict_logits;
use secateur_train::sensitivity::slice_sensitivities;
use secateur_train::{Device, NoHook, evaluate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Where the data comes from (absent for data-free pruning).
pub struct PruneContext<'a> {
    pub split: Option<&'a Split>,
    /// A text set, for sentence encoders (instead of `split`).
    pub text: Option<&'a TextData>,
    pub norm: Normalization,
    pub device: Device,
}

/// Accuracy and loss of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    pub accuracy: f64,
    pub loss: f64,
}

/// How a layer's output shape changed.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeChange {
    pub node: String,
    pub before: String,
    pub after: String,
}

/// Everything a pruning run produced.
#[derive(Clone, Debug, Serialize)]
pub struct PruneOutcome {
    #[serde(skip)]
    pub graph: Graph,
    pub before: Option<EvalSummary>,
    pub after: Option<EvalSummary>,
    /// Accuracy of the int8 (fake-quantized) model, when quantized.
    pub after_int8: Option<EvalSummary>,
    pub params_before: u64,
    pub params_after: u64,
    pub nonzero_params_after: u64,
    pub macs_before: u64,
    pub macs_after: u64,
    /// MACs per sample when the runtime skips zero weights.
    pub macs_executed_after: u64,
    pub layers: Vec<LayerSparsity>,
    pub shape_changes: Vec<ShapeChange>,
    pub plan: Option<Plan>,
    pub removed_blocks: Vec<(String, f64)>,
    /// Text sets: the dense model's task score on the held-out texts, and the pruned model's
    /// agreement with the dense model and task score.
    pub text_before: Option<TextScores>,
    pub text_after: Option<TextScores>,
    pub notes: Vec<String>,
}

/// Sparsity above which a layer is reported as (nearly) collapsed.
const COLLAPSE_SPARSITY: f64 = 0.98;

/// A warning naming every layer left above 98 % sparsity: its output barely depends on its
/// input any more (by default the global ranking's density floor prevents this; per-layer
/// targets, `--min-density 0` or a structured plan can still ask for it).
fn collapse_warning(layers: &[LayerSparsity]) -> Option<String> {
    let collapsed: Vec<String> = layers
        .iter()
        .filter(|l| l.sparsity > COLLAPSE_SPARSITY)
        .map(|l| {
            format!(
                "{} ({:.1} %, {} of {} weights)",
                l.layer,
                100.0 * l.sparsity,
                l.nonzero,
                l.params
            )
        })
        .collect();
    (!collapsed.is_empty()).then(|| {
        format!(
            "warning: {} layer(s) left above {:.0} % sparsity, whose outputs barely depend on their inputs: {}",
            collapsed.len(),
            100.0 * COLLAPSE_SPARSITY,
            collapsed.join(", ")
        )
    })
}

fn eval_summary(graph: &Graph, ctx: &PruneContext) -> Result<Option<EvalSummary>> {
    let Some(split) = ctx.split else {
        return Ok(None);
    };
    let r = evaluate(graph, &split.test, &ctx.norm, 256, &ctx.device, None)?;
    Ok(Some(EvalSummary {
        accuracy: r.accuracy,
        loss: r.loss,
    }))
}

fn need_split<'a>(ctx: &PruneContext<'a>, why: &str) -> Result<&'a Split> {
    if ctx.text.is_some() {
        bail!("{why} needs a labelled image set; on a text set use --schedule oneshot");
    }
    ctx.split
        .with_context(|| format!("{why} needs data: pass --data"))
}

/// Runs a recipe on a model.
pub fn run(
    model: Graph,
    recipe: &Recipe,
    ctx: &PruneContext,
    log: &mut dyn FnMut(&str),
) -> Result<PruneOutcome> {
    recipe.validate()?;
    let dense = model.clone();
    let before = eval_summary(&model, ctx)?;
    let dense_text = match ctx.text {
        Some(t) => Some(t.embed_held_out(&model)?),
        None => None,
    };
    // sentence encoders recover by distillation from the dense model's embeddings of the
    // calibration texts (no labels needed); quantization calibrates on those texts too
    let distill_set = match ctx.text {
        Some(t) if recipe.finetune.epochs > 0 || recipe.quantize.is_some() => {
            Some(t.distillation_set(&model, DISTILL_EXTRA_VIEWS, recipe.seed)?)
        }
        _ => None,
    };
    let s0 = summarize(&model)?;
    let mut notes = Vec::new();
    let mut g = model;
    let mut plan = None;
    let mut removed = Vec::new();
    if let Some(s) = &recipe.structured {
        match s.kind {
            StructuredKind::Channels | StructuredKind::Heads | StructuredKind::Neurons => {
                let (pg, p) = structured_channels(&g, s, recipe.seed, ctx, log)?;
                log(&format!(
                    "structured: {}",
                    if p.describe().is_empty() {
                        "nothing pruned".to_string()
                    } else {
                        p.describe().replace('\n', "; ")
                    }
                ));
                g = pg;
                plan = Some(p);
            }
            StructuredKind::Layers => {
                let (pg, r) = structured_layers(&g, s, ctx)?;
                for (b, d) in &r {
                    log(&format!("removed block {b} (damage {d:.5})"));
                }
                g = pg;
                removed = r;
            }
        }
    }
    let split = ctx.split;
    let quantize = recipe.quantize.as_ref().map(|q| q.calibration_batches);
    let ft = |label: &'static str| -> Result<Finetune> {
        let data = match &distill_set {
            Some(set) => TrainData::Embeddings(set),
            None => TrainData::Images {
                split: need_split(ctx, "fine-tuning")?,
                norm: &ctx.norm,
            },
        };
        Ok(Finetune {
            data,
            device: &ctx.device,
            recipe: &recipe.finetune,
            teacher: Some(&dense),
            quantize,
            seed: recipe.seed,
            label,
            quiet: false,
        })
    };
    let epochs = recipe.finetune.epochs;
    if let Some(w) = &recipe.weights {
        let mut cfg = WeightPruneConfig {
            criterion: w.criterion()?,
            granularity: w.granularity()?,
            sparsity: w.sparsity,
            scope: w.scope(),
            exclude: w.exclude.clone(),
            seed: recipe.seed,
            min_density: w.min_density,
        };
        // SparseGPT, and Wanda on text, prune linear layers one after the other on the
        // activations of the already-pruned model (see secateur_prune::weights::oneshot)
        let sequential = w.schedule == ScheduleKind::Oneshot
            && (cfg.criterion == Criterion::SparseGpt
                || (cfg.criterion == Criterion::Wanda && ctx.text.is_some()));
        let data = criterion_data(
            &g,
            w.criterion()?.needs_data() && !sequential,
            w.calibration_batches,
            recipe.finetune.batch,
            ctx,
        )?;
        if cfg.criterion == Criterion::SparseGpt && w.schedule != ScheduleKind::Oneshot {
            bail!("sparsegpt prunes one-shot: use --schedule oneshot");
        }
        match w.schedule {
            ScheduleKind::Oneshot if sequential => {
                let (owned, rows) = {
                    let (f, r) = calibration_feeds(&g, ctx, w.calibration_batches)?;
                    let f: Vec<Vec<(String, secateur_graph::Tensor)>> = f
                        .into_iter()
                        .map(|b| b.into_iter().map(|(n, t)| (n.to_string(), t)).collect())
                        .collect();
                    (f, r)
                };
                let feeds: Vec<Vec<(&str, secateur_graph::Tensor)>> = owned
                    .iter()
                    .map(|b| b.iter().map(|(n, t)| (n.as_str(), t.clone())).collect())
                    .collect();
                let oc = OneShotConfig {
                    method: if cfg.criterion == Criterion::SparseGpt {
                        OneShotMethod::SparseGpt
                    } else {
                        OneShotMethod::Wanda
                    },
                    sparsity: cfg.sparsity.unwrap_or(0.5),
                    nm: match cfg.granularity {
                        Granularity::NM { n, m } => Some((n, m)),
                        Granularity::Unstructured => None,
                        other => bail!("{} prunes unstructured or N:M, not {other}", cfg.criterion),
                    },
                    exclude: cfg.exclude.clone(),
                    targets: match &cfg.scope {
                        secateur_prune::weights::Scope::Targets(t) => t.clone(),
                        _ => Default::default(),
                    },
                    bias_correction: w.bias_correction,
                    refit: w.refit,
                };
                let layers = prune_sequentially(&mut g, &feeds, rows.as_deref(), &oc)?;
                log(&format!(
                    "weights: {} {} one-shot, layer by layer on {} calibration batches, {} linear layers",
                    cfg.criterion,
                    cfg.granularity,
                    feeds.len(),
                    layers.len()
                ));
                if epochs > 0 || quantize.is_some() {
                    g = ft("fine-tune")?.run(g, epochs, &mut NoHook)?;
                }
            }
            ScheduleKind::Oneshot => {
                let masks = compute_masks(&g, &cfg, &data)?;
                apply_masks(&mut g, masks)?;
                log(&format!(
                    "weights: {} {} one-shot",
                    cfg.criterion, cfg.granularity
                ));
                if epochs > 0 || quantize.is_some() {
                    g = ft("fine-tune")?.run(g, epochs, &mut NoHook)?;
                }
            }
            ScheduleKind::Iterative => {
                let target = cfg
                    .sparsity
                    .context("iterative pruning needs a sparsity target")?;
                let per_round = epochs / w.rounds;
                for r in 1..=w.rounds {
                    cfg.sparsity = Some(iterative_target(target, r, w.rounds));
                    let data = criterion_data(
                        &g,
                        cfg.criterion.needs_data(),
                        w.calibration_batches,
                        recipe.finetune.batch,
                        ctx,
                    )?;
                    let masks = compute_masks(&g, &cfg, &data)?;
                    apply_masks(&mut g, masks)?;
                    let e = if r == w.rounds {
                        epochs - per_round * (w.rounds - 1)
                    } else {
                        per_round
                    };
                    let q = if r == w.rounds { quantize } else { None };
                    let mut f = ft("fine-tune")?;
                    f.quantize = q;
                    g = f.run(g, e, &mut NoHook)?;
                    log(&format!(
                        "round {r}/{}: sparsity {:.3}, {e} epochs",
                        w.rounds,
                        cfg.sparsity.unwrap_or(0.0)
                    ));
                }
            }
            ScheduleKind::Agp => {
                let split = need_split(ctx, "AGP")?;
                let per_epoch = split.train.len().div_ceil(recipe.finetune.batch);
                let total = per_epoch * epochs;
                let end = ((total as f64) * w.end_fraction) as usize;
                let start = ((total as f64) * w.start_fraction) as usize;
                let mut hook = AgpHook {
                    schedule: Agp {
                        initial: 0.0,
                        final_: cfg.sparsity.unwrap_or(0.0),
                        start,
                        end,
                        frequency: w.frequency,
                    },
                    config: cfg.clone(),
                    data,
                    template: g.clone(),
                    log: Vec::new(),
                };
                g = ft("agp")?.run(g, epochs, &mut hook)?;
                notes.push(format!(
                    "AGP: {} mask updates, final sparsity {:.3} at step {end}",
                    hook.log.len(),
                    hook.log.last().map_or(0.0, |l| l.1)
                ));
            }
            ScheduleKind::Rigl => {
                let split = need_split(ctx, "RigL")?;
                let masks = compute_masks(&g, &cfg, &data)?;
                let names: Vec<String> = masks.keys().cloned().collect();
                apply_masks(&mut g, masks)?;
                let per_epoch = split.train.len().div_ceil(recipe.finetune.batch);
                let end_step = ((per_epoch * epochs) as f64 * w.end_fraction) as usize;
                let store = secateur_train::params::ParamStore::from_graph(
                    &g,
                    &ctx.device,
                    &Default::default(),
                )?;
                let params = names.iter().filter_map(|n| store.index_of(n)).collect();
                let mut hook = RiglHook {
                    params,
                    alpha: w.rigl_alpha,
                    interval: w.frequency,
                    end_step,
                    updates: 0,
                };
                g = ft("rigl")?.run(g, epochs, &mut hook)?;
                notes.push(format!(
                    "RigL: {} drop/grow updates until step {end_step}",
                    hook.updates
                ));
            }
        }
    } else if epochs > 0 || quantize.is_some() {
        g = ft("fine-tune")?.run(g, epochs, &mut NoHook)?;
    }
    let _ = split;
    let (after, after_int8) = if g.quantization.is_some() {
        let mut float = g.clone();
        float.quantization = None;
        (eval_summary(&float, ctx)?, eval_summary(&g, ctx)?)
    } else {
        (eval_summary(&g, ctx)?, None)
    };
    let text_scores = |e: Option<&SetEmbeddings>, reference: Option<&SetEmbeddings>| {
        ctx.text
            .zip(e)
            .map(|(t, e)| score(&t.held_out, e, reference))
    };
    let text_before = text_scores(dense_text.as_ref(), None);
    let pruned_text = match ctx.text {
        Some(t) => Some(t.embed_held_out(&g)?),
        None => None,
    };
    let text_after = text_scores(pruned_text.as_ref(), dense_text.as_ref());
    let s1 = summarize(&g)?;
    let mut shape_changes = Vec::new();
    for l in &s0.layers {
        if let Some(n) = s1.layers.iter().find(|x| x.node == l.node) {
            if n.output_shape != l.output_shape {
                shape_changes.push(ShapeChange {
                    node: l.node.clone(),
                    before: l.output_shape.clone(),
                    after: n.output_shape.clone(),
                });
            }
        } else {
            shape_changes.push(ShapeChange {
                node: l.node.clone(),
                before: l.output_shape.clone(),
                after: "removed".into(),
            });
        }
    }
    let layers = sparsity_report(&g)?;
    notes.extend(collapse_warning(&layers));
    let macs_executed_after =
        secateur_cost::counts::totals(&secateur_cost::counts::layer_counts(&g)?).sparse_macs;
    Ok(PruneOutcome {
        layers,
        macs_executed_after,
        graph: g,
        before,
        after,
        after_int8,
        params_before: s0.total_params,
        params_after: s1.total_params,
        nonzero_params_after: s1.total_nonzero_params,
        macs_before: s0.total_macs,
        macs_after: s1.total_macs,
        shape_changes,
        plan,
        removed_blocks: removed,
        text_before,
        text_after,
        notes,
    })
}

fn criterion_data(
    g: &Graph,
    needed: bool,
    batches: usize,
    batch: usize,
    ctx: &PruneContext,
) -> Result<CriterionData> {
    if !needed {
        return Ok(CriterionData::default());
    }
    if let Some(text) = ctx.text {
        // calibration statistics of linear layers (Wanda, SparseGPT); no gradients on text
        return text.criterion_data(g, batches);
    }
    let split = need_split(ctx, "this criterion")?;
    Ok(CriterionData {
        taylor: taylor_scores(g, &split.train, &ctx.norm, batch, batches, &ctx.device)?,
        input_norms: input_channel_norms(g, &split.train, &ctx.norm, batch, batches, &ctx.device)?,
        grams: Default::default(),
    })
}

/// Per calibration batch, the rows that are real tokens (not padding).
type RowMasks = Vec<Vec<bool>>;

/// Calibration batches as graph feeds, with the real (non-padding) rows of text batches.
fn calibration_feeds<'g>(
    g: &'g Graph,
    ctx: &PruneContext,
    batches: usize,
) -> Result<(Vec<Feeds<'g>>, Option<RowMasks>)> {
    if let Some(text) = ctx.text {
        let (feeds, rows) = text.calibration_feeds(g, batches)?;
        return Ok((feeds, Some(rows)));
    }
    let split = need_split(ctx, "calibration")?;
    let input = g
        .inputs
        .first()
        .map(|i| i.name.as_str())
        .context("the model has no input")?;
    let n = split.train.len();
    let per = 64usize;
    let feeds = (0..batches.max(1))
        .map(|b| (b * per..((b + 1) * per).min(n)).collect::<Vec<usize>>())
        .filter(|idx| !idx.is_empty())
        .map(|idx| vec![(input, split.train.batch(&idx, &ctx.norm).0)])
        .collect();
    Ok((feeds, None))
}

/// The calibration batches split into single samples (one tensor per graph input each).
fn calibration_samples(
    g: &Graph,
    ctx: &PruneContext,
    batches: usize,
) -> Result<Vec<Vec<secateur_graph::Tensor>>> {
    let (feeds, _) = calibration_feeds(g, ctx, batches)?;
    let mut samples = Vec::new();
    for batch in feeds {
        let n = batch.first().map_or(0, |(_, t)| t.shape()[0]);
        for r in 0..n {
            let sample = batch
                .iter()
                .map(|(_, t)| t.select_axis(0, &[r]))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            samples.push(sample);
        }
    }
    Ok(samples)
}

fn structured_channels(
    g: &Graph,
    s: &StructuredRecipe,
    seed: u64,
    ctx: &PruneContext,
    log: &mut dyn FnMut(&str),
) -> Result<(Graph, Plan)> {
    let deps = DependencyGraph::build(g)?;
    // with a text set: calibration statistics of the linear layers, for the activation
    // criterion and the least-squares refit of the layers reading pruned channels
    let grams = match ctx.text {
        Some(t) => t.criterion_data(g, s.calibration_batches)?.grams,
        None => HashMap::new(),
    };
    let plan = match &s.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading plan '{}'", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("plan '{}' is not a valid plan", path.display()))?
        }
        None => {
            let mut cfg = s.channel_config(seed)?;
            let mut mask_gradients = HashMap::new();
            let data = match cfg.criterion {
                GroupCriterion::Activation if grams.is_empty() => {
                    bail!("the activation criterion needs a text set (--data FILE.txt|.jsonl)")
                }
                GroupCriterion::Activation => activation_importance(g, &grams)?,
                GroupCriterion::Fisher => {
                    let samples = calibration_samples(g, ctx, s.calibration_batches)?;
                    let sens = slice_sensitivities(g, &samples, seed, &ctx.device)?;
                    log(&format!(
                        "structured: Fisher information of channel masks from {} calibration samples",
                        samples.len()
                    ));
                    if s.rearrange {
                        mask_gradients = fisher_gradients(&deps, &sens, samples.len(), &cfg.kinds);
                    }
                    fisher_importance(g, &deps, &sens, samples.len(), &cfg.kinds)?
                }
                c if c.needs_data() => {
                    let split = need_split(ctx, "Taylor importance")?;
                    taylor_scores(
                        g,
                        &split.train,
                        &ctx.norm,
                        128,
                        s.calibration_batches,
                        &ctx.device,
                    )?
                }
                _ => HashMap::new(),
            };
            if cfg.allocation == Allocation::Sensitivity {
                cfg.drop_curves =
                    damage_curves(g, &deps, &cfg, &data, ctx, s.calibration_batches, log)?;
            }
            let mut plan = plan_channels(g, &deps, &cfg, &data)?;
            let moved = rearrange_plan(&mut plan, &mask_gradients);
            if !moved.is_empty() {
                let (before, after) = moved
                    .iter()
                    .fold((0.0, 0.0), |(b, a), r| (b + r.before, a + r.after));
                log(&format!(
                    "structured: masks rearranged by each group's Fisher block (Kwon et al.): {} swaps in {} groups, estimated loss {before:.4e} -> {after:.4e}",
                    moved.iter().map(|r| r.swaps).sum::<usize>(),
                    moved.len()
                ));
            }
            plan
        }
    };
    let mut pruned = apply_plan(g, &deps, &plan)?;
    if let Some(text) = ctx.text {
        let refit = match s.reconstruction {
            Reconstruction::Sequential => {
                let (feeds, rows) = text.calibration_feeds(g, s.calibration_batches)?;
                reconstruct_sequential(g, &mut pruned, &deps, &plan, &feeds, Some(&rows))?
            }
            Reconstruction::Dense => reconstruct_consumers(g, &mut pruned, &deps, &plan, &grams)?,
            Reconstruction::Off => Vec::new(),
        };
        if !refit.is_empty() {
            log(&format!(
                "structured: {} layers reading pruned channels refitted by least squares ({}) on {} calibration texts",
                refit.len(),
                match s.reconstruction {
                    Reconstruction::Sequential => "sequentially, on the pruned model's inputs",
                    _ => "from the dense model's inputs",
                },
                text.calibration_texts(s.calibration_batches),
            ));
        }
    }
    Ok((pruned, plan))
}

/// Fractions of a group's channels at which its damage is measured for the sensitivity
/// allocation.
const SENSITIVITY_RATIOS: [f64; 4] = [0.25, 0.5, 0.75, 0.9];

/// Per prunable group, the rise of the loss on calibration images with that group alone
/// pruned at each of [`SENSITIVITY_RATIOS`] (no fine-tuning), for the sensitivity allocation.
fn damage_curves(
    g: &Graph,
    deps: &DependencyGraph,
    cfg: &ChannelPruneConfig,
    scores: &HashMap<String, Vec<f32>>,
    ctx: &PruneContext,
    batches: usize,
    log: &mut dyn FnMut(&str),
) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let split = need_split(ctx, "the sensitivity allocation")?;
    let calib = split.train.take(256 * batches.max(1));
    let base = evaluate(g, &calib, &ctx.norm, 256, &ctx.device, None)?.loss;
    let mut curves: BTreeMap<String, Vec<(f64, f64)>> = prunable_groups(deps, cfg)
        .iter()
        .map(|group| (group.name.clone(), Vec::new()))
        .collect();
    for r in SENSITIVITY_RATIOS
        .into_iter()
        .filter(|r| 1.0 - r >= cfg.min_keep)
    {
        // every group at ratio r, then each group's part of that plan alone
        let uniform = ChannelPruneConfig {
            target: StructuredTarget::Ratio(r),
            allocation: Allocation::Uniform,
            drop_curves: BTreeMap::new(),
            ..cfg.clone()
        };
        let plan = plan_channels(g, deps, &uniform, scores)?;
        for (name, points) in curves.iter_mut() {
            let alone = Plan {
                entries: plan
                    .entries
                    .iter()
                    .filter(|e| e.group == *name)
                    .cloned()
                    .collect(),
            };
            let damage = if alone.entries.is_empty() {
                0.0
            } else {
                let pruned = apply_plan(g, deps, &alone)?;
                evaluate(&pruned, &calib, &ctx.norm, 256, &ctx.device, None)?.loss - base
            };
            points.push((r, damage));
        }
    }
    log(&format!(
        "structured: damage curves of {} groups measured on {} calibration images ({} pruned models)",
        curves.len(),
        calib.len(),
        curves.values().map(Vec::len).sum::<usize>()
    ));
    Ok(curves)
}

fn structured_layers(
    g: &Graph,
    s: &StructuredRecipe,
    ctx: &PruneContext,
) -> Result<(Graph, Vec<(String, f64)>)> {
    let split = need_split(ctx, "depth pruning")?;
    let calib = split.train.take(128 * s.calibration_batches.max(1));
    let base_logits = predict_logits(g, &calib, &ctx.norm, 256, &ctx.device)?;
    let base_acc = evaluate(g, &calib, &ctx.norm, 256, &ctx.device, None)?.accuracy;
    let mut damage = |cand: &Graph| -> secateur_prune::Result<f64> {
        let r = match s.block_criterion {
            BlockCriterion::OutputChange => {
                predict_logits(cand, &calib, &ctx.norm, 256, &ctx.device).map(|l| {
                    l.iter()
                        .zip(&base_logits)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                        / l.len().max(1) as f64
                })
            }
            BlockCriterion::Accuracy => evaluate(cand, &calib, &ctx.norm, 256, &ctx.device, None)
                .map(|r| base_acc - r.accuracy),
        };
        r.map_err(|e| secateur_prune::PruneError::Invalid(e.to_string()))
    };
    if let Some(n) = s.blocks {
        return Ok(remove_blocks(g, n, s.include_layers, &mut damage)?);
    }
    let goal = s.target_macs.unwrap_or(1.0) * summarize(g)?.total_macs as f64;
    let mut cur = g.clone();
    let mut removed = Vec::new();
    while (summarize(&cur)?.total_macs as f64) > goal {
        let (next, r) = remove_blocks(&cur, 1, s.include_layers, &mut damage).map_err(|e| {
            crate::invalid!(
                "{e} (while aiming for {:.1}% of the MACs)",
                s.target_macs.unwrap_or(1.0) * 100.0
            )
        })?;
        cur = next;
        removed.extend(r);
    }
    if removed.is_empty() {
        bail!("the model already meets the MACs target; nothing removed");
    }
    Ok((cur, removed))
}
