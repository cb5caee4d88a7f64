//! The search space `optimize` derives from a model. A genome holds a global level of channel
//! pruning and one of weight sparsity, a scale per channel group and per prunable weight that
//! moves that layer's ratio away from the global level, a granularity (unstructured, 4×1
//! blocks, 2:4), optionally the arithmetic (f32, int8, bf16 execution), and optionally the
//! removal of each residual block. A layer's
//! ratio is `min(level · scale, bound)`, with the bound from the sensitivity analysis: with
//! every scale at 1 a genome is exactly a uniform-ratio model, so the search space contains the
//! baseline and the search learns how to deviate from it. Decoding prunes channels in the
//! order of the task's ranking (L2 importance of the weights for image classifiers, output
//! energy for sentence encoders, whose space holds heads and FFN neurons only), refits the
//! layers reading pruned channels when the task has calibration statistics, removes blocks and
//! masks weights by magnitude.

use super::task::GroupRanking;
use crate::{Context, Result};
use secateur_graph::Graph;
use secateur_prune::structured::{
    BlockCandidate, DependencyGraph, GroupKind, Normalizer, Plan, Reduction, apply_plan,
    group_scores, reconstruct_consumers, remove_block, residual_blocks,
};
use secateur_prune::weights::{
    Criterion, CriterionData, Gram, Granularity, Scope, WeightPruneConfig, apply_masks,
    compute_masks, prunable_weights,
};
use secateur_search::{Gene, Space};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Granularities the search chooses from.
pub const GRANULARITIES: [&str; 3] = ["unstructured", "block:4x1", "2:4"];
/// Range of the per-layer scales (unless the task's ranking widens it).
pub const SCALE_RANGE: (f64, f64) = (0.4, 1.6);
/// Default bounds when no sensitivity analysis limits a layer.
const DEFAULT_MAX_REMOVED: f64 = 0.9;
const DEFAULT_MAX_SPARSITY: f64 = 0.95;

/// What a space may use besides channels: int8, bf16, block removal, the rounding of channel
/// counts.
#[derive(Clone, Copy, Debug)]
pub struct SpaceShape {
    pub int8: bool,
    pub bf16: bool,
    pub blocks: bool,
    pub round_to: usize,
}

/// The arithmetic a decoded model runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arithmetic {
    #[default]
    F32,
    /// Quantized: int8 weights and layer inputs, fine-tuned quantization-aware.
    Int8,
    /// bf16 execution ([`secateur_graph::Precision::Bf16`]): f32 weights rounded by the
    /// runtime, no fine-tuning of its own.
    Bf16,
}

impl Arithmetic {
    /// Its name in genomes, descriptions and reports.
    pub fn name(self) -> &'static str {
        match self {
            Arithmetic::F32 => "f32",
            Arithmetic::Int8 => "int8",
            Arithmetic::Bf16 => "bf16",
        }
    }
}

/// A channel group of the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// Convolution channels, linear neurons or attention heads.
    #[serde(default)]
    pub kind: GroupKind,
    pub channels: usize,
    /// Channels by decreasing importance (the task's ranking).
    pub order: Vec<usize>,
    /// Largest fraction of channels that may be removed.
    pub max_removed: f64,
}

/// A prunable weight of the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerInfo {
    pub node: String,
    pub weight: String,
    pub max_sparsity: f64,
}

/// Ratios a model is pruned with (what a genome means).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ratios {
    /// Fraction of channels removed, per group.
    pub removed: HashMap<String, f64>,
    /// Sparsity per weight (node name).
    pub sparsity: HashMap<String, f64>,
    /// Index into [`GRANULARITIES`].
    pub granularity: usize,
    pub arithmetic: Arithmetic,
    /// Names of residual blocks to remove.
    pub remove_blocks: Vec<String>,
}

/// The key of a decoded model (its description in one line).
pub fn key_of(description: &BTreeMap<String, String>) -> String {
    description
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The model-derived search space.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchSpace {
    pub groups: Vec<GroupInfo>,
    pub layers: Vec<LayerInfo>,
    pub blocks: Vec<BlockCandidate>,
    pub int8: bool,
    #[serde(default)]
    pub bf16: bool,
    pub space: Space,
    /// Channel counts are rounded up to multiples of this.
    pub round_to: usize,
}

/// What a genome turns into.
pub struct Decoded {
    pub graph: Graph,
    /// Fraction kept per group and per layer (for reports).
    pub layer_keep: Vec<(String, f64)>,
    pub arithmetic: Arithmetic,
    /// Human-readable genome.
    pub description: BTreeMap<String, String>,
}

impl Decoded {
    /// Whether the model is quantized to int8 (fine-tuned quantization-aware).
    pub fn int8(&self) -> bool {
        self.arithmetic == Arithmetic::Int8
    }
}

impl SearchSpace {
    /// Derives the space from `base`: the groups of `ranking`'s kinds, channels in its order,
    /// weights when it allows them; `max_removed` bounds the fraction of channels a group may
    /// lose and `max_sparsity` the sparsity of a weight, per name (from sensitivity).
    pub fn derive(
        base: &Graph,
        shape: &SpaceShape,
        ranking: &GroupRanking,
        max_removed: &HashMap<String, f64>,
        max_sparsity: &HashMap<String, f64>,
    ) -> Result<Self> {
        let deps = DependencyGraph::build(base)?;
        let mut groups = Vec::new();
        let no_data = HashMap::new();
        for g in &deps.groups {
            if !ranking.kinds.is_empty() && !ranking.kinds.contains(&g.kind) {
                continue;
            }
            let scores = group_scores(
                base,
                g,
                ranking.criterion,
                Reduction::Mean,
                Normalizer::None,
                ranking.data.unwrap_or(&no_data),
                0,
            )?;
            let mut order: Vec<usize> = (0..g.channels()).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            groups.push(GroupInfo {
                name: g.name.clone(),
                kind: g.kind,
                channels: g.channels(),
                order,
                max_removed: max_removed
                    .get(&g.name)
                    .copied()
                    .unwrap_or(DEFAULT_MAX_REMOVED)
                    .clamp(0.0, 0.95),
            });
        }
        let weights = if ranking.weights {
            prunable_weights(base)?
        } else {
            Vec::new()
        };
        let layers: Vec<LayerInfo> = weights
            .into_iter()
            .map(|w| LayerInfo {
                max_sparsity: max_sparsity
                    .get(&w.node)
                    .copied()
                    .unwrap_or(DEFAULT_MAX_SPARSITY)
                    .clamp(0.0, 0.99),
                node: w.node,
                weight: w.weight,
            })
            .collect();
        let blocks = if shape.blocks {
            residual_blocks(base)?
        } else {
            Vec::new()
        };
        let mut genes = Vec::new();
        let (lo, hi) = ranking.scale_range;
        let scale = |name: String| Gene::Real { name, lo, hi };
        if !groups.is_empty() {
            let hi = groups.iter().map(|g| g.max_removed).fold(0.0, f64::max);
            genes.push(Gene::Real {
                name: "channels".into(),
                lo: 0.0,
                hi,
            });
            if groups.len() > 1 {
                genes.extend(groups.iter().map(|g| scale(format!("channels:{}", g.name))));
            }
        }
        if !layers.is_empty() {
            let hi = layers.iter().map(|l| l.max_sparsity).fold(0.0, f64::max);
            genes.push(Gene::Real {
                name: "weights".into(),
                lo: 0.0,
                hi,
            });
            if layers.len() > 1 {
                genes.extend(layers.iter().map(|l| scale(format!("weights:{}", l.node))));
            }
            genes.push(Gene::Choice {
                name: "granularity".into(),
                options: GRANULARITIES.iter().map(|s| s.to_string()).collect(),
            });
        }
        let arithmetics = arithmetics(shape.int8, shape.bf16);
        if arithmetics.len() > 1 {
            genes.push(Gene::Choice {
                name: "precision".into(),
                options: arithmetics.iter().map(|a| a.name().to_string()).collect(),
            });
        }
        for b in &blocks {
            genes.push(Gene::Choice {
                name: format!("remove:{}", b.name),
                options: vec!["keep".into(), "remove".into()],
            });
        }
        Ok(SearchSpace {
            groups,
            layers,
            blocks,
            int8: shape.int8,
            bf16: shape.bf16,
            space: Space { genes },
            round_to: shape.round_to.max(1),
        })
    }

    /// The arithmetics of the `precision` gene, in its option order (f32 first).
    pub fn arithmetics(&self) -> Vec<Arithmetic> {
        arithmetics(self.int8, self.bf16)
    }

    /// Index of the gene called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.space.genes.iter().position(|x| x.name() == name)
    }

    fn gene(&self, g: &[f64], name: &str) -> Option<f64> {
        self.index(name).map(|i| g[i])
    }

    /// The genome of the unpruned model.
    pub fn dense_genome(&self) -> Vec<f64> {
        self.space
            .genes
            .iter()
            .map(|g| match g {
                Gene::Real { name, .. } if name.contains(':') => 1.0,
                _ => 0.0,
            })
            .collect()
    }

    /// The ratios a genome stands for.
    pub fn ratios(&self, g: &[f64]) -> Ratios {
        let level_c = self.gene(g, "channels").unwrap_or(0.0);
        let level_w = self.gene(g, "weights").unwrap_or(0.0);
        let mut r = Ratios {
            granularity: self.gene(g, "granularity").unwrap_or(0.0) as usize % GRANULARITIES.len(),
            arithmetic: self
                .arithmetics()
                .get(self.gene(g, "precision").unwrap_or(0.0).round().max(0.0) as usize)
                .copied()
                .unwrap_or_default(),
            ..Default::default()
        };
        for gr in &self.groups {
            let s = self
                .gene(g, &format!("channels:{}", gr.name))
                .unwrap_or(1.0);
            r.removed
                .insert(gr.name.clone(), (level_c * s).clamp(0.0, gr.max_removed));
        }
        for l in &self.layers {
            let s = self.gene(g, &format!("weights:{}", l.node)).unwrap_or(1.0);
            r.sparsity
                .insert(l.node.clone(), (level_w * s).clamp(0.0, l.max_sparsity));
        }
        for b in &self.blocks {
            if self.gene(g, &format!("remove:{}", b.name)).unwrap_or(0.0) >= 0.5 {
                r.remove_blocks.push(b.name.clone());
            }
        }
        r
    }

    /// The identity of the model a genome decodes to: genomes that prune the same way (scales
    /// of a level at zero, granularities where nothing is pruned...) share it, and share one
    /// evaluation.
    pub fn model_key(&self, base: &Graph, g: &[f64]) -> Result<String> {
        Ok(key_of(&self.decode(base, g)?.description))
    }

    /// Applies a genome to `base`.
    pub fn decode(&self, base: &Graph, g: &[f64]) -> Result<Decoded> {
        self.apply(base, &self.ratios(g))
    }

    /// Applies a genome to `base`, refitting the layers that read pruned channels by least
    /// squares on `refit`'s calibration statistics (of `base`) when given.
    pub fn decode_refit(
        &self,
        base: &Graph,
        g: &[f64],
        refit: Option<&HashMap<String, Gram>>,
    ) -> Result<Decoded> {
        self.apply_refit(base, &self.ratios(g), refit)
    }

    /// Prunes `base` with explicit ratios.
    pub fn apply(&self, base: &Graph, r: &Ratios) -> Result<Decoded> {
        self.apply_refit(base, r, None)
    }

    /// Prunes `base` with explicit ratios, refitting as [`SearchSpace::decode_refit`] does.
    pub fn apply_refit(
        &self,
        base: &Graph,
        r: &Ratios,
        refit: Option<&HashMap<String, Gram>>,
    ) -> Result<Decoded> {
        let mut description = BTreeMap::new();
        let mut layer_keep = Vec::new();
        // channels
        let deps = DependencyGraph::build(base)?;
        let mut plan = Plan::default();
        for gr in &self.groups {
            let removed = r.removed.get(&gr.name).copied().unwrap_or(0.0);
            let n = gr.channels;
            let k = ((((1.0 - removed) * n as f64).round() as usize)
                .max(1)
                .div_ceil(self.round_to)
                * self.round_to)
                .min(n);
            let group = deps.group(&gr.name)?;
            let kept = group.best_balanced(&gr.order, k);
            let k = kept.len();
            if k < n {
                plan.keep(group, kept);
            }
            description.insert(format!("keep:{}", gr.name), format!("{k}/{n}"));
            layer_keep.push((format!("{} channels", gr.name), k as f64 / n as f64));
        }
        // a transformer's totals in words (heads and FFN neurons kept over all layers)
        for (kind, word) in [(GroupKind::Heads, "heads"), (GroupKind::Neurons, "neurons")] {
            let of_kind = self.groups.iter().filter(|g| g.kind == kind);
            let total: usize = of_kind.clone().map(|g| g.channels).sum();
            if total > 0 {
                let kept: usize = of_kind
                    .map(|g| description.get(&format!("keep:{}", g.name)))
                    .filter_map(|v| v?.split('/').next()?.parse::<usize>().ok())
                    .sum();
                description.insert(word.into(), format!("{kept}/{total}"));
            }
        }
        let mut graph = apply_plan(base, &deps, &plan).context("applying the channel plan")?;
        if let Some(grams) = refit.filter(|_| !plan.entries.is_empty()) {
            reconstruct_consumers(base, &mut graph, &deps, &plan, grams)
                .context("refitting the layers that read pruned channels")?;
        }
        // blocks
        for b in &self.blocks {
            let remove = r.remove_blocks.contains(&b.name);
            description.insert(
                format!("remove:{}", b.name),
                if remove { "yes".into() } else { "no".into() },
            );
            if remove && graph.node_index(&b.name).is_some() {
                graph = remove_block(&graph, b)?;
            }
        }
        // weights
        let gran = GRANULARITIES[r.granularity % GRANULARITIES.len()];
        let present = prunable_weights(&graph)?;
        let mut by_gran: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
        for l in &self.layers {
            let s = r.sparsity.get(&l.node).copied().unwrap_or(0.0);
            let Some(w) = present.iter().find(|w| w.node == l.node) else {
                // removed with its block: nothing of it is kept
                layer_keep.push((format!("{} weights", l.node), 0.0));
                continue;
            };
            let rows = w.shape[w.out_axis];
            let cols = w.shape.iter().product::<usize>() / rows.max(1);
            let (used, target) = match gran {
                // 2:4 is a fixed 50 %: applied where the level asks for at least a quarter
                "2:4" if cols % 4 == 0 && s >= 0.25 => ("2:4", 0.5),
                "block:4x1" if rows % 4 == 0 && s > 0.0 => ("block:4x1", s),
                _ if s > 0.0 => ("unstructured", s),
                _ => ("", 0.0),
            };
            if target > 0.0 {
                by_gran
                    .entry(used)
                    .or_default()
                    .insert(l.node.clone(), target);
            }
            description.insert(format!("sparsity:{}", l.node), format!("{target:.3}"));
            layer_keep.push((format!("{} weights", l.node), 1.0 - target));
        }
        if !by_gran.is_empty() {
            description.insert("granularity".into(), gran.into());
        }
        for (gname, targets) in by_gran {
            let granularity: Granularity = gname.parse()?;
            let cfg = WeightPruneConfig {
                criterion: Criterion::Magnitude { l2: false },
                granularity,
                sparsity: None,
                scope: if matches!(granularity, Granularity::NM { .. }) {
                    Scope::Global
                } else {
                    Scope::Targets(targets.clone())
                },
                exclude: present
                    .iter()
                    .filter(|w| !targets.contains_key(&w.node))
                    .map(|w| w.node.clone())
                    .collect(),
                seed: 0,
                min_density: None,
            };
            let masks = compute_masks(&graph, &cfg, &CriterionData::default())?;
            apply_masks(&mut graph, masks)?;
        }
        description.insert("precision".into(), r.arithmetic.name().into());
        if r.arithmetic == Arithmetic::Bf16 {
            graph.precision = secateur_graph::Precision::Bf16;
        }
        Ok(Decoded {
            graph,
            layer_keep,
            arithmetic: r.arithmetic,
            description,
        })
    }
}

/// The arithmetics a space with (or without) int8 and bf16 chooses from, f32 first (int8
/// second, as in spaces before bf16, so their genomes keep their meaning).
fn arithmetics(int8: bool, bf16: bool) -> Vec<Arithmetic> {
    let mut v = vec![Arithmetic::F32];
    if int8 {
        v.push(Arithmetic::Int8);
    }
    if bf16 {
        v.push(Arithmetic::Bf16);
    }
    v
}
