//! From scores to a plan: which channels each group keeps, to meet a target — a pruning ratio,
//! or a fraction of the original MACs or parameters to keep — either uniformly (the same ratio
//! in every group) or globally (one threshold on normalised scores across groups), with
//! `round_to` (kept counts are multiples of 4/8/16 for SIMD-friendly shapes) and per-group
//! minimum keep / maximum prune ratios. MAC and parameter targets are met exactly by searching
//! over the ratio or threshold and measuring the pruned graph.

use super::groups::{DependencyGraph, Group, GroupKind};
use super::importance::{GroupCriterion, Normalizer, Reduction, group_scores};
use super::plan::{Plan, apply_plan};
use crate::error::{PruneError, Result};
use secateur_graph::{Graph, summarize};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What structured pruning aims for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StructuredTarget {
    /// Remove this fraction of the channels.
    Ratio(f64),
    /// Keep this fraction of the original MACs.
    Macs(f64),
    /// Keep this fraction of the original parameters.
    Params(f64),
}

/// Uniform ratio per group, or one global ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    #[default]
    Uniform,
    Global,
}

/// A channel-pruning request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelPruneConfig {
    pub criterion: GroupCriterion,
    pub reduction: Reduction,
    pub normalizer: Normalizer,
    pub target: StructuredTarget,
    pub allocation: Allocation,
    /// Kept channel counts are rounded up to a multiple of this (1: no rounding).
    pub round_to: usize,
    /// Every group keeps at least this fraction of its channels.
    pub min_keep: f64,
    /// Groups (or nodes inside them) never pruned.
    pub exclude: Vec<String>,
    /// Kinds of groups pruned (attention heads, FFN neurons, convolution channels); empty: all.
    #[serde(default)]
    pub kinds: Vec<GroupKind>,
    pub seed: u64,
}

impl Default for ChannelPruneConfig {
    fn default() -> Self {
        ChannelPruneConfig {
            criterion: GroupCriterion::L1,
            reduction: Reduction::Mean,
            normalizer: Normalizer::Mean,
            target: StructuredTarget::Ratio(0.5),
            allocation: Allocation::Uniform,
            round_to: 1,
            min_keep: 0.05,
            exclude: Vec::new(),
            kinds: Vec::new(),
            seed: 0,
        }
    }
}

impl ChannelPruneConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PruneError::Invalid(m));
        match self.target {
            StructuredTarget::Ratio(r) if !(0.0..1.0).contains(&r) => {
                return bad(format!("pruning ratio must be in [0, 1), got {r}"));
            }
            StructuredTarget::Macs(f) | StructuredTarget::Params(f) if !(f > 0.0 && f <= 1.0) => {
                return bad(format!(
                    "the fraction of MACs or parameters to keep must be in (0, 1], got {f}"
                ));
            }
            _ => {}
        }
        if self.round_to == 0 {
            return bad("round_to must be at least 1".into());
        }
        if !(self.min_keep > 0.0 && self.min_keep <= 1.0) {
            return bad(format!("min_keep must be in (0, 1], got {}", self.min_keep));
        }
        Ok(())
    }
}

/// Channels kept by a group of `n` when `k` are wanted, with bounds and rounding.
fn bounded_keep(n: usize, k: usize, cfg: &ChannelPruneConfig) -> usize {
    let min = ((cfg.min_keep * n as f64).ceil() as usize).max(1);
    let k = k.clamp(min, n);
    let r = cfg.round_to.max(1);
    (k.div_ceil(r) * r).min(n)
}

fn excluded(g: &Group, names: &[String]) -> bool {
    names.iter().any(|e| {
        g.name == *e
            || g.members
                .iter()
                .any(|m| m.param.as_ref().is_some_and(|p| p.node == *e))
    })
}

/// How many groups of each kind a model has, e.g. "6 heads, 6 neurons".
fn describe_kinds(deps: &DependencyGraph) -> String {
    let kinds = [GroupKind::Heads, GroupKind::Neurons, GroupKind::Channels];
    let parts: Vec<String> = kinds
        .iter()
        .map(|k| (k, deps.groups.iter().filter(|g| g.kind == *k).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The scored groups eligible for pruning.
struct Scored<'a> {
    group: &'a Group,
    scores: Vec<f64>,
    /// Channel indices by descending score.
    order: Vec<usize>,
}

fn plan_from_counts(scored: &[Scored], counts: &[usize]) -> Plan {
    let mut p = Plan::default();
    for (s, &k) in scored.iter().zip(counts) {
        if k < s.group.channels() {
            p.keep(s.group, s.group.best_balanced(&s.order, k));
        }
    }
    p
}

fn measure(
    graph: &Graph,
    deps: &DependencyGraph,
    plan: &Plan,
    target: StructuredTarget,
) -> Result<f64> {
    let g = apply_plan(graph, deps, plan)?;
    let s = summarize(&g)?;
    Ok(match target {
        StructuredTarget::Params(_) => s.total_params as f64,
        _ => s.total_macs as f64,
    })
}

/// Builds the plan for a channel-pruning request.
pub fn plan_channels(
    graph: &Graph,
    deps: &DependencyGraph,
    cfg: &ChannelPruneConfig,
    taylor: &HashMap<String, Vec<f32>>,
) -> Result<Plan> {
    cfg.validate()?;
    for e in &cfg.exclude {
        let known = deps
            .groups
            .iter()
            .any(|g| excluded(g, std::slice::from_ref(e)))
            || graph.node_index(e).is_some();
        if !known {
            let names: Vec<&str> = deps.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(PruneError::Invalid(format!(
                "cannot exclude '{e}': no such group or node; groups: {}",
                names.join(", ")
            )));
        }
    }
    let mut scored = Vec::new();
    let selected = |g: &&Group| cfg.kinds.is_empty() || cfg.kinds.contains(&g.kind);
    if !deps.groups.iter().any(|g| selected(&g)) {
        let kinds: Vec<String> = cfg.kinds.iter().map(|k| k.to_string()).collect();
        return Err(PruneError::Invalid(format!(
            "the model has no prunable group of kind {} (its groups: {})",
            kinds.join(", "),
            describe_kinds(deps)
        )));
    }
    for g in deps
        .groups
        .iter()
        .filter(selected)
        .filter(|g| !excluded(g, &cfg.exclude))
    {
        let scores = group_scores(
            graph,
            g,
            cfg.criterion,
            cfg.reduction,
            cfg.normalizer,
            taylor,
            cfg.seed,
        )?;
        let mut order: Vec<usize> = (0..g.channels()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        scored.push(Scored {
            group: g,
            scores,
            order,
        });
    }
    if scored.is_empty() {
        return Err(PruneError::Invalid(
            "no prunable channel group is left after exclusions".into(),
        ));
    }
    let uniform = |r: f64| -> Vec<usize> {
        scored
            .iter()
            .map(|s| {
                bounded_keep(
                    s.group.channels(),
                    ((1.0 - r) * s.group.channels() as f64).round() as usize,
                    cfg,
                )
            })
            .collect()
    };
    let global = |tau: f64| -> Vec<usize> {
        scored
            .iter()
            .map(|s| {
                bounded_keep(
                    s.group.channels(),
                    s.scores.iter().filter(|&&v| v >= tau).count(),
                    cfg,
                )
            })
            .collect()
    };
    // a global ratio removes that fraction of each kind of channel (heads and neurons have
    // scores of different scales), with one threshold per kind across its groups
    let global_ratio = |r: f64| -> Vec<usize> {
        let mut thresholds: HashMap<GroupKind, f64> = HashMap::new();
        for s in &scored {
            let kind = s.group.kind;
            if thresholds.contains_key(&kind) {
                continue;
            }
            let mut all: Vec<f64> = scored
                .iter()
                .filter(|o| o.group.kind == kind)
                .flat_map(|o| o.scores.iter().copied())
                .collect();
            all.sort_by(f64::total_cmp);
            let idx = (r * all.len() as f64).round() as usize;
            thresholds.insert(kind, all.get(idx).copied().unwrap_or(f64::INFINITY));
        }
        scored
            .iter()
            .map(|s| {
                let tau = thresholds[&s.group.kind];
                bounded_keep(
                    s.group.channels(),
                    s.scores.iter().filter(|&&v| v >= tau).count(),
                    cfg,
                )
            })
            .collect()
    };
    // every candidate score threshold, ascending
    let mut taus: Vec<f64> = scored
        .iter()
        .flat_map(|s| s.scores.iter().copied())
        .collect();
    taus.sort_by(f64::total_cmp);
    taus.dedup();
    let counts = match (cfg.target, cfg.allocation) {
        (StructuredTarget::Ratio(r), Allocation::Uniform) => uniform(r),
        (StructuredTarget::Ratio(r), Allocation::Global) => global_ratio(r),
        (StructuredTarget::Macs(f) | StructuredTarget::Params(f), alloc) => {
            let base = measure(graph, deps, &Plan::default(), cfg.target)?;
            let goal = f * base;
            // the most that can be removed: every group at its minimum
            let min_counts: Vec<usize> = scored
                .iter()
                .map(|s| bounded_keep(s.group.channels(), 0, cfg))
                .collect();
            let floor = measure(
                graph,
                deps,
                &plan_from_counts(&scored, &min_counts),
                cfg.target,
            )?;
            if floor > goal {
                let what = if matches!(cfg.target, StructuredTarget::Macs(_)) {
                    "MACs"
                } else {
                    "parameters"
                };
                return Err(PruneError::Unreachable(format!(
                    "keeping {:.1}% of the {what} is impossible: protected layers and the minimum of {:.0}% channels per group already need {:.1}%",
                    f * 100.0,
                    cfg.min_keep * 100.0,
                    floor / base * 100.0
                )));
            }
            match alloc {
                Allocation::Uniform => {
                    let (mut lo, mut hi) = (0.0f64, 1.0f64);
                    for _ in 0..40 {
                        let mid = (lo + hi) / 2.0;
                        if measure(
                            graph,
                            deps,
                            &plan_from_counts(&scored, &uniform(mid)),
                            cfg.target,
                        )? <= goal
                        {
                            hi = mid;
                        } else {
                            lo = mid;
                        }
                    }
                    uniform(hi)
                }
                Allocation::Global => {
                    // smallest threshold whose plan meets the goal
                    let (mut lo, mut hi) = (0usize, taus.len());
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        let tau = taus.get(mid).copied().unwrap_or(f64::INFINITY);
                        if measure(
                            graph,
                            deps,
                            &plan_from_counts(&scored, &global(tau)),
                            cfg.target,
                        )? <= goal
                        {
                            hi = mid;
                        } else {
                            lo = mid + 1;
                        }
                    }
                    global(taus.get(lo).copied().unwrap_or(f64::INFINITY))
                }
            }
        }
    };
    Ok(plan_from_counts(&scored, &counts))
}
