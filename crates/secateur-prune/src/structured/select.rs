//! From scores to a plan: which channels each group keeps, to meet a target — a pruning ratio,
//! or a fraction of the original MACs or parameters to keep — either uniformly (the same ratio
//! in every group) or globally (one threshold on normalised scores across groups), with
//! `round_to` (kept counts are multiples of 4/8/16 for SIMD-friendly shapes) and per-group
//! minimum keep / maximum prune ratios, or by sensitivity (each group's measured damage curve
//! traded against what its channels cost, greedily). MAC and parameter targets are met exactly
//! by searching over the ratio or threshold, or stepping, and measuring the pruned graph.

use super::groups::{DependencyGraph, Group, GroupKind};
use super::importance::{GroupCriterion, Normalizer, Reduction, group_scores};
use super::plan::{Plan, apply_plan};
use crate::error::{PruneError, Result};
use secateur_graph::{Graph, summarize};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

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

/// Uniform ratio per group, one global ranking, or ratios from sensitivity curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    #[default]
    Uniform,
    Global,
    /// Per-group ratios from the groups' damage curves ([`ChannelPruneConfig::drop_curves`]):
    /// channels are removed step by step from the group whose next step adds the least damage
    /// per MAC (parameter, channel) saved, until the target is met.
    Sensitivity,
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
    /// For [`Allocation::Sensitivity`]: per group, (fraction of channels removed, damage)
    /// points measured with that group alone pruned (damage: e.g. the rise of the loss).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drop_curves: BTreeMap<String, Vec<(f64, f64)>>,
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
            drop_curves: BTreeMap::new(),
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
        for (group, points) in &self.drop_curves {
            if let Some((r, d)) = points
                .iter()
                .find(|(r, d)| !(0.0..=1.0).contains(r) || !d.is_finite())
            {
                return bad(format!(
                    "damage curve of '{group}': point ({r}, {d}) is not a ratio in [0, 1] with a finite damage"
                ));
            }
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

/// The groups a request prunes: of the requested kinds, not excluded.
pub fn prunable_groups<'a>(deps: &'a DependencyGraph, cfg: &ChannelPruneConfig) -> Vec<&'a Group> {
    deps.groups
        .iter()
        .filter(|g| cfg.kinds.is_empty() || cfg.kinds.contains(&g.kind))
        .filter(|g| !excluded(g, &cfg.exclude))
        .collect()
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
        (StructuredTarget::Ratio(r), Allocation::Sensitivity) => {
            let costs: Vec<f64> = scored.iter().map(|s| s.group.channels() as f64).collect();
            let total: f64 = costs.iter().sum();
            let curves = DamageCurves::new(&scored, cfg, costs)?;
            let removed = |counts: &[usize]| -> f64 {
                scored
                    .iter()
                    .zip(counts)
                    .map(|(s, &k)| (s.group.channels() - k) as f64)
                    .sum::<f64>()
                    / total
            };
            curves.allocate(|counts| Ok(removed(counts) >= r - 1e-9))?
        }
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
                Allocation::Sensitivity => {
                    // what each group's channels cost: the MACs (parameters) its removal saves
                    let mut costs = Vec::with_capacity(scored.len());
                    for (i, s) in scored.iter().enumerate() {
                        let mut counts: Vec<usize> =
                            scored.iter().map(|o| o.group.channels()).collect();
                        let n = s.group.channels();
                        counts[i] = bounded_keep(n, n / 2, cfg);
                        let removed = (n - counts[i]).max(1) as f64 / n as f64;
                        let after =
                            measure(graph, deps, &plan_from_counts(&scored, &counts), cfg.target)?;
                        costs.push(((base - after) / removed).max(0.0) / base);
                    }
                    let curves = DamageCurves::new(&scored, cfg, costs)?;
                    curves.allocate(|counts| {
                        Ok(
                            measure(graph, deps, &plan_from_counts(&scored, counts), cfg.target)?
                                <= goal,
                        )
                    })?
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

/// The damage curves of the scored groups, for [`Allocation::Sensitivity`].
struct DamageCurves<'a> {
    cfg: &'a ChannelPruneConfig,
    /// Per group: its channel count and its curve, (ratio, damage) ascending from (0, 0),
    /// damage non-decreasing.
    curves: Vec<(usize, Vec<(f64, f64)>)>,
    /// Per group: what removing all of its channels costs (MACs, parameters or channels,
    /// in any unit common to all groups).
    costs: Vec<f64>,
}

impl<'a> DamageCurves<'a> {
    fn new(scored: &[Scored], cfg: &'a ChannelPruneConfig, costs: Vec<f64>) -> Result<Self> {
        let mut curves = Vec::with_capacity(scored.len());
        for s in scored {
            let points = cfg.drop_curves.get(&s.group.name).ok_or_else(|| {
                PruneError::Invalid(format!(
                    "the sensitivity allocation has no damage curve for group '{}'",
                    s.group.name
                ))
            })?;
            let mut pts: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
                .chain(points.iter().map(|&(r, d)| (r, d.max(0.0))))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            // measured damage is noisy: removing more never hurts less
            let mut worst = 0.0f64;
            for p in &mut pts {
                worst = worst.max(p.1);
                p.1 = worst;
            }
            curves.push((s.group.channels(), pts));
        }
        Ok(DamageCurves { cfg, curves, costs })
    }

    /// The damage of removing fraction `r` of a group, interpolated linearly (extrapolated
    /// with the last slope past the last point).
    fn damage(points: &[(f64, f64)], r: f64) -> f64 {
        let i = points.partition_point(|p| p.0 < r);
        let (a, b) = match i {
            0 => return 0.0,
            i if i >= points.len() => {
                if points.len() < 2 {
                    return points[0].1;
                }
                (points[points.len() - 2], points[points.len() - 1])
            }
            i => (points[i - 1], points[i]),
        };
        if b.0 <= a.0 {
            return b.1;
        }
        a.1 + (b.1 - a.1) * (r - a.0) / (b.0 - a.0)
    }

    /// Steps overshoot: channels are given back, one at a time to the group they hurt most,
    /// while the target is still met.
    fn give_back(
        &self,
        mut counts: Vec<usize>,
        meets: &mut impl FnMut(&[usize]) -> Result<bool>,
    ) -> Result<Vec<usize>> {
        let r = self.cfg.round_to.max(1);
        let mut order: Vec<usize> = (0..counts.len()).collect();
        let slope = |i: usize, k: usize| {
            let (n, points) = &self.curves[i];
            let r1 = 1.0 - k as f64 / *n as f64;
            let r0 = (r1 - 1.0 / *n as f64).max(0.0);
            (Self::damage(points, r1) - Self::damage(points, r0)) / self.costs[i].max(1e-12)
        };
        order.sort_by(|&a, &b| slope(b, counts[b]).total_cmp(&slope(a, counts[a])));
        for i in order {
            let n = self.curves[i].0;
            while counts[i] + r <= n {
                counts[i] += r;
                if !meets(&counts)? {
                    counts[i] -= r;
                    break;
                }
            }
        }
        Ok(counts)
    }

    /// Removes channels step by step (1/32 of a group, or `round_to`), each time from the
    /// group whose next step adds the least damage per cost saved, until the counts `meet`
    /// the target.
    fn allocate(&self, mut meets: impl FnMut(&[usize]) -> Result<bool>) -> Result<Vec<usize>> {
        let mut counts: Vec<usize> = self.curves.iter().map(|(n, _)| *n).collect();
        loop {
            if meets(&counts)? {
                return self.give_back(counts, &mut meets);
            }
            let mut best: Option<(f64, f64, usize, usize)> = None;
            for (i, ((n, points), cost)) in self.curves.iter().zip(&self.costs).enumerate() {
                let n = *n;
                let step = (n / 32).max(self.cfg.round_to).max(1);
                let next = bounded_keep(n, counts[i].saturating_sub(step), self.cfg);
                if next >= counts[i] {
                    continue;
                }
                let (r0, r1) = (
                    1.0 - counts[i] as f64 / n as f64,
                    1.0 - next as f64 / n as f64,
                );
                let damage = Self::damage(points, r1) - Self::damage(points, r0);
                let saved = cost * (r1 - r0);
                let rate = damage / saved.max(1e-12);
                let better = best.is_none_or(|(b_rate, b_saved, _, _)| {
                    rate < b_rate - 1e-12 || (rate <= b_rate + 1e-12 && saved > b_saved)
                });
                if better {
                    best = Some((rate, saved, i, next));
                }
            }
            let Some((_, _, i, next)) = best else {
                return Err(PruneError::Unreachable(
                    "the target cannot be met even with every group at its minimum".into(),
                ));
            };
            counts[i] = next;
        }
    }
}
