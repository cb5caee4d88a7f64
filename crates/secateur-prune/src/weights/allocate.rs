//! Turning scores into masks: which weights can be pruned, how a sparsity target is spread
//! over layers (one global ranking, a uniform per-layer ratio, or per-layer targets), and how
//! units of the chosen granularity are selected. Masks accumulate: a weight pruned before stays
//! pruned. A layer always keeps at least one unit.

use super::criteria::{Criterion, CriterionData, element_scores, lamp};
use super::granularity::Granularity;
use crate::error::{PruneError, Result};
use secateur_graph::{AxisRole, Graph, InputRole, Mask, MaskPattern, MatrixView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A weight that weight pruning may mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrunableWeight {
    pub weight: String,
    pub node: String,
    pub shape: Vec<usize>,
    pub out_axis: usize,
}

/// How a sparsity target is allocated over layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One ranking across all layers, of scores normalised per layer the LAMP way for
    /// magnitude criteria (`w²` over the sum of the layer's larger `w²`): robust to layers of
    /// very different size and scale (a batch norm folded into a convolution rescales its
    /// weights, which moves a raw ranking).
    Global,
    /// One ranking across all layers of the raw scores (PyTorch's `global_unstructured`).
    GlobalRaw,
    /// The same sparsity in every layer.
    PerLayer,
    /// Explicit sparsity per layer (node or weight name); other layers are left alone.
    Targets(BTreeMap<String, f64>),
}

/// A weight-pruning request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightPruneConfig {
    pub criterion: Criterion,
    pub granularity: Granularity,
    /// Fraction of weights to remove (ignored by `threshold`; fixed by N:M).
    pub sparsity: Option<f64>,
    pub scope: Scope,
    /// Layers (node or weight names) never pruned.
    pub exclude: Vec<String>,
    pub seed: u64,
    /// Fraction of each layer's weights a global ranking must leave (`None`: the default
    /// [`DEFAULT_MIN_DENSITY`], so that no layer collapses). Per-layer and explicit targets
    /// are what the user asked for and are not raised.
    #[serde(default)]
    pub min_density: Option<f64>,
}

/// The density floor of a global ranking unless one is given: no layer is left above 98 %
/// sparsity. Small layers (a classifier, a first convolution) otherwise lose nearly all their
/// weights under one magnitude ranking, and the output stops depending on the input.
pub const DEFAULT_MIN_DENSITY: f64 = 0.02;

impl WeightPruneConfig {
    pub fn validate(&self) -> Result<()> {
        self.granularity.validate()?;
        let check = |s: f64, what: &str| {
            if !(0.0..1.0).contains(&s) {
                return Err(PruneError::Invalid(format!(
                    "{what} sparsity must be in [0, 1), got {s}"
                )));
            }
            Ok(())
        };
        if let Some(s) = self.sparsity {
            check(s, "the")?;
        }
        if let Some(d) = self.min_density
            && !(0.0..=1.0).contains(&d)
        {
            return Err(PruneError::Invalid(format!(
                "min-density must be in [0, 1], got {d}"
            )));
        }
        if let Scope::Targets(t) = &self.scope {
            for (layer, s) in t {
                check(*s, &format!("layer '{layer}'"))?;
            }
        }
        match (self.criterion, self.granularity, self.sparsity, &self.scope) {
            (Criterion::Threshold { .. }, _, _, _) => Ok(()),
            (_, Granularity::NM { n, m }, Some(s), _)
                if (s - (1.0 - n as f64 / m as f64)).abs() > 1e-9 && s != 0.0 =>
            {
                Err(PruneError::Invalid(format!(
                    "{n}:{m} sparsity is fixed at {:.3}; drop --sparsity or set it to that value",
                    1.0 - n as f64 / m as f64
                )))
            }
            (_, Granularity::NM { .. }, _, _) => Ok(()),
            (_, _, None, Scope::Global | Scope::GlobalRaw | Scope::PerLayer) => {
                Err(PruneError::Invalid("a sparsity target is required".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Every weight read as a `Weight` input whose output axis is the first or last axis.
pub fn prunable_weights(graph: &Graph) -> Result<Vec<PrunableWeight>> {
    let shapes = graph.infer_shapes()?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for node in &graph.nodes {
        let ins: Vec<_> = node.inputs.iter().map(|v| shapes[v].clone()).collect();
        let roles = node.op.sem().input_roles(node.inputs.len());
        for (idx, axes) in node.op.sem().param_axes(&ins) {
            let w = &node.inputs[idx];
            if roles[idx] != InputRole::Weight
                || !graph.initializers.contains_key(w)
                || !seen.insert(w.clone())
            {
                continue;
            }
            let Some(out_axis) = axes.iter().position(|a| *a == AxisRole::OutChannels) else {
                continue;
            };
            let shape = graph.initializers[w].shape().to_vec();
            if out_axis != 0 && out_axis != shape.len() - 1 {
                continue;
            }
            out.push(PrunableWeight {
                weight: w.clone(),
                node: node.name.clone(),
                shape,
                out_axis,
            });
        }
    }
    Ok(out)
}

/// Finds a layer by node or weight name.
fn resolve<'a>(layers: &'a [PrunableWeight], name: &str) -> Result<&'a PrunableWeight> {
    layers
        .iter()
        .find(|l| l.node == name || l.weight == name)
        .ok_or_else(|| {
            let names: Vec<&str> = layers.iter().map(|l| l.node.as_str()).collect();
            PruneError::Invalid(format!(
                "no prunable layer '{name}'; layers: {}",
                names.join(", ")
            ))
        })
}

/// Units of one layer: scores and the unit of every element.
struct LayerUnits {
    weight: String,
    scores: Vec<f32>,
    unit_size: usize,
    unit_of: Vec<usize>,
}

fn units(
    layer: &PrunableWeight,
    g: Granularity,
    elem: &[f32],
    old: Option<&Mask>,
) -> Result<LayerUnits> {
    let view = MatrixView::new(&layer.shape, layer.out_axis)?;
    let n = elem.len();
    let mut unit_of = vec![0usize; n];
    let (count, unit_size) = match g {
        Granularity::Block { rows, cols } => {
            if view.rows % rows != 0 || view.cols % cols != 0 {
                return Err(PruneError::Layer {
                    layer: layer.node.clone(),
                    message: format!(
                        "block {rows}x{cols} does not divide its {}x{} weight matrix (output channels x inputs); exclude the layer or pick another block",
                        view.rows, view.cols
                    ),
                });
            }
            let per_row = view.cols / cols;
            for r in 0..view.rows {
                for c in 0..view.cols {
                    unit_of[view.index(r, c)] = (r / rows) * per_row + c / cols;
                }
            }
            ((view.rows / rows) * per_row, rows * cols)
        }
        _ => {
            for (i, u) in unit_of.iter_mut().enumerate() {
                *u = i;
            }
            (n, 1)
        }
    };
    let mut scores = vec![0.0f32; count];
    let mut alive = vec![false; count];
    for i in 0..n {
        scores[unit_of[i]] += elem[i];
        if old.is_none_or(|m| m.keep[i]) {
            alive[unit_of[i]] = true;
        }
    }
    for (s, a) in scores.iter_mut().zip(&alive) {
        if !a {
            *s = f32::NEG_INFINITY;
        }
    }
    Ok(LayerUnits {
        weight: layer.weight.clone(),
        scores,
        unit_size,
        unit_of,
    })
}

/// Indices (into `scores`) of the units to prune so that at least `target` elements are pruned,
/// keeping at least one unit.
fn lowest_units(scores: &[f32], unit_size: usize, target: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut pruned = vec![false; scores.len()];
    let mut count = 0;
    for &u in order.iter().take(scores.len().saturating_sub(1)) {
        if count >= target && scores[u] != f32::NEG_INFINITY {
            break;
        }
        pruned[u] = true;
        count += unit_size;
    }
    pruned
}

/// Computes the masks of a weight-pruning request (not yet applied to the graph).
pub fn compute_masks(
    graph: &Graph,
    cfg: &WeightPruneConfig,
    data: &CriterionData,
) -> Result<BTreeMap<String, Mask>> {
    cfg.validate()?;
    let all = prunable_weights(graph)?;
    let mut excluded = BTreeSet::new();
    for e in &cfg.exclude {
        excluded.insert(resolve(&all, e)?.weight.clone());
    }
    let mut targets: BTreeMap<String, f64> = BTreeMap::new();
    if let Scope::Targets(t) = &cfg.scope {
        for (name, s) in t {
            targets.insert(resolve(&all, name)?.weight.clone(), *s);
        }
    }
    let layers: Vec<&PrunableWeight> = all
        .iter()
        .filter(|l| {
            !excluded.contains(&l.weight)
                && (!matches!(cfg.scope, Scope::Targets(_)) || targets.contains_key(&l.weight))
        })
        .collect();
    if layers.is_empty() {
        return Err(PruneError::Invalid(
            "no layer is left to prune after exclusions".into(),
        ));
    }
    let mut out = BTreeMap::new();
    let mut unit_sets = Vec::new();
    for l in &layers {
        let w = &graph.initializers[&l.weight];
        let view = MatrixView::new(&l.shape, l.out_axis)?;
        let col_of = |i: usize| {
            if l.out_axis == 0 {
                i % view.cols
            } else {
                i / view.rows
            }
        };
        let mut elem = element_scores(
            cfg.criterion,
            &l.weight,
            w.data(),
            &col_of,
            view.cols,
            data,
            cfg.seed,
        )?;
        let old = graph.masks.get(&l.weight);
        if let Some(m) = old {
            let compatible = m.pattern == MaskPattern::Unstructured
                || m.pattern == cfg.granularity.pattern()
                || cfg.granularity == Granularity::Unstructured;
            if !compatible {
                return Err(PruneError::Layer {
                    layer: l.node.clone(),
                    message: format!(
                        "already has a {} mask; cannot add a {} mask on top",
                        m.pattern, cfg.granularity
                    ),
                });
            }
            // previously pruned weights rank lowest
            for (s, &k) in elem.iter_mut().zip(&m.keep) {
                if !k {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if let Granularity::NM { n, m } = cfg.granularity {
            out.insert(l.weight.clone(), nm_mask(l, &view, &elem, n, m, old)?);
            continue;
        }
        let u = units(l, cfg.granularity, &elem, old)?;
        unit_sets.push((*l, u));
    }
    if matches!(cfg.granularity, Granularity::NM { .. }) {
        return Ok(out);
    }
    let mut pruned_units: Vec<Vec<bool>> = Vec::with_capacity(unit_sets.len());
    match (&cfg.criterion, &cfg.scope) {
        (Criterion::Threshold { t }, _) => {
            for (_, u) in &unit_sets {
                let p: Vec<bool> = u
                    .scores
                    .iter()
                    .map(|&s| s <= *t * u.unit_size as f32)
                    .collect();
                pruned_units.push(p);
            }
        }
        (_, Scope::Global | Scope::GlobalRaw) => {
            let normalised = cfg.scope == Scope::Global;
            let total: usize = unit_sets
                .iter()
                .map(|(_, u)| u.scores.len() * u.unit_size)
                .sum();
            let target = (cfg.sparsity.unwrap_or(0.0) * total as f64).round() as usize;
            // LAMP scores (and magnitudes under `Global`) are normalised per layer; everything
            // else is compared raw
            let mut all_units: Vec<(f32, usize, usize)> = Vec::new();
            for (li, (_, u)) in unit_sets.iter().enumerate() {
                let s = match cfg.criterion {
                    Criterion::Lamp => lamp_units(&u.scores),
                    Criterion::Magnitude { l2: true } if normalised => lamp_units(&u.scores),
                    Criterion::Magnitude { l2: false } if normalised => {
                        lamp_units(&u.scores.iter().map(|s| s * s).collect::<Vec<_>>())
                    }
                    _ => u.scores.clone(),
                };
                all_units.extend(s.into_iter().enumerate().map(|(k, v)| (v, li, k)));
                pruned_units.push(vec![false; u.scores.len()]);
            }
            all_units.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut alive: Vec<usize> = unit_sets.iter().map(|(_, u)| u.scores.len()).collect();
            let density = cfg.min_density.unwrap_or(DEFAULT_MIN_DENSITY);
            let floor: Vec<usize> = alive
                .iter()
                .map(|&n| ((density * n as f64).ceil() as usize).max(1))
                .collect();
            let mut count = 0;
            for (score, li, k) in all_units {
                if count >= target && score != f32::NEG_INFINITY {
                    break;
                }
                if alive[li] <= floor[li] {
                    continue;
                }
                pruned_units[li][k] = true;
                alive[li] -= 1;
                count += unit_sets[li].1.unit_size;
            }
        }
        (_, scope) => {
            for (l, u) in &unit_sets {
                let s = match scope {
                    Scope::Targets(_) => targets[&l.weight],
                    _ => cfg.sparsity.unwrap_or(0.0),
                };
                let target = (s * (u.scores.len() * u.unit_size) as f64).round() as usize;
                pruned_units.push(lowest_units(&u.scores, u.unit_size, target));
            }
        }
    }
    for ((l, u), pruned) in unit_sets.iter().zip(pruned_units) {
        let old = graph.masks.get(&l.weight);
        let keep: Vec<bool> = u
            .unit_of
            .iter()
            .enumerate()
            .map(|(i, &unit)| !pruned[unit] && old.is_none_or(|m| m.keep[i]))
            .collect();
        let pattern = match (cfg.granularity, old.map(|m| m.pattern)) {
            (Granularity::Unstructured, _) => MaskPattern::Unstructured,
            (g, _) => g.pattern(),
        };
        let mask = Mask {
            keep,
            pattern,
            out_axis: l.out_axis,
        };
        mask.check_pattern(&u.weight, &l.shape)?;
        out.insert(u.weight.clone(), mask);
    }
    Ok(out)
}

/// LAMP applied to unit scores (the unit scores are already |w| sums or squares).
fn lamp_units(scores: &[f32]) -> Vec<f32> {
    let finite: Vec<f32> = scores
        .iter()
        .map(|&s| if s.is_finite() { s.sqrt() } else { 0.0 })
        .collect();
    let mut l = lamp(&finite);
    for (v, s) in l.iter_mut().zip(scores) {
        if !s.is_finite() {
            *v = f32::NEG_INFINITY;
        }
    }
    l
}

fn nm_mask(
    l: &PrunableWeight,
    view: &MatrixView,
    elem: &[f32],
    n: usize,
    m: usize,
    old: Option<&Mask>,
) -> Result<Mask> {
    if !view.cols.is_multiple_of(m) {
        return Err(PruneError::Layer {
            layer: l.node.clone(),
            message: format!(
                "rows of {} inputs are not a multiple of M={m}; exclude this layer (e.g. --exclude {})",
                view.cols, l.node
            ),
        });
    }
    if let Some(o) = old
        && o.keep.iter().filter(|k| !**k).count() > 0
        && o.pattern != (MaskPattern::NM { n, m })
    {
        return Err(PruneError::Layer {
            layer: l.node.clone(),
            message: format!(
                "already pruned with a {} mask; {n}:{m} needs a dense layer",
                o.pattern
            ),
        });
    }
    let mut keep = vec![false; elem.len()];
    for r in 0..view.rows {
        for g in 0..view.cols / m {
            let mut idx: Vec<usize> = (0..m).map(|j| view.index(r, g * m + j)).collect();
            idx.sort_by(|&a, &b| elem[b].total_cmp(&elem[a]));
            for &i in idx.iter().take(n) {
                keep[i] = true;
            }
        }
    }
    let mask = Mask {
        keep,
        pattern: MaskPattern::NM { n, m },
        out_axis: l.out_axis,
    };
    mask.check_pattern(&l.weight, &l.shape)?;
    Ok(mask)
}

/// Inserts masks into the graph and zeroes the pruned weights.
pub fn apply_masks(graph: &mut Graph, masks: BTreeMap<String, Mask>) -> Result<()> {
    for (w, m) in masks {
        graph.masks.insert(w, m);
    }
    graph.apply_masks()?;
    Ok(())
}

/// One layer's line in a sparsity report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSparsity {
    pub layer: String,
    pub weight: String,
    pub shape: Vec<usize>,
    pub params: usize,
    pub nonzero: usize,
    pub sparsity: f64,
    pub pattern: String,
}

/// Sparsity of every prunable weight.
pub fn sparsity_report(graph: &Graph) -> Result<Vec<LayerSparsity>> {
    Ok(prunable_weights(graph)?
        .into_iter()
        .map(|l| {
            let t = &graph.initializers[&l.weight];
            let nz = t.len() - t.count_zeros();
            LayerSparsity {
                layer: l.node,
                pattern: graph
                    .masks
                    .get(&l.weight)
                    .map_or("dense".into(), |m| m.pattern.to_string()),
                weight: l.weight,
                shape: l.shape,
                params: t.len(),
                nonzero: nz,
                sparsity: 1.0 - nz as f64 / t.len().max(1) as f64,
            }
        })
        .collect())
}
