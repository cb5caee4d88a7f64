//! Structured pruning plans and their application. A [`Plan`] is data — for each group, the
//! channels kept — that can be saved, printed and replayed. Applying it slices every member
//! of every pruned group (weights, biases, batch-norm vectors, masks, and through the ops'
//! `refit`, attributes such as depthwise group counts and literal reshape sizes) and returns a
//! new, checked graph whose value shapes are exactly the old ones minus the removed channels.

use super::groups::{DependencyGraph, Group};
use crate::error::{PruneError, Result};
use secateur_graph::{Dim, Graph, Mask, Shape, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Channels kept in one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub group: String,
    /// Channel count of the group before pruning (checked on replay).
    pub channels: usize,
    /// Kept channel indices, ascending.
    pub keep: Vec<usize>,
}

/// A structured pruning plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub entries: Vec<PlanEntry>,
}

impl Plan {
    /// Adds an entry keeping `keep` of a group.
    pub fn keep(&mut self, group: &Group, mut keep: Vec<usize>) {
        keep.sort_unstable();
        keep.dedup();
        self.entries.push(PlanEntry {
            group: group.name.clone(),
            channels: group.channels(),
            keep,
        });
    }

    /// Human-readable summary, one line per pruned group.
    pub fn describe(&self) -> String {
        self.entries
            .iter()
            .filter(|e| e.keep.len() < e.channels)
            .map(|e| format!("{}: {} → {} channels", e.group, e.channels, e.keep.len()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Per (value, axis): the indices kept.
pub(crate) fn kept_indices(
    deps: &DependencyGraph,
    plan: &Plan,
    shapes: &HashMap<String, Shape>,
) -> Result<BTreeMap<(String, usize), Vec<usize>>> {
    let mut removed: BTreeMap<(String, usize), BTreeSet<usize>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for e in &plan.entries {
        let g = deps.group(&e.group)?;
        if !seen.insert(&e.group) {
            return Err(PruneError::Group {
                group: e.group.clone(),
                message: "appears twice in the plan".into(),
            });
        }
        if g.channels() != e.channels {
            return Err(PruneError::Group {
                group: e.group.clone(),
                message: format!(
                    "plan was made for {} channels, the model has {}",
                    e.channels,
                    g.channels()
                ),
            });
        }
        if e.keep.is_empty() {
            return Err(PruneError::Group {
                group: e.group.clone(),
                message: "a group cannot be pruned to zero channels".into(),
            });
        }
        if e.keep.windows(2).any(|w| w[0] >= w[1])
            || e.keep.last().is_some_and(|&k| k >= g.channels())
        {
            return Err(PruneError::Group {
                group: e.group.clone(),
                message: format!("kept channels must be ascending and below {}", g.channels()),
            });
        }
        if !g.is_balanced(&e.keep) {
            return Err(PruneError::Group {
                group: e.group.clone(),
                message: format!(
                    "the group spans a grouped convolution: keep the same number of channels in each of its {} groups",
                    g.block_count()
                ),
            });
        }
        let keep: BTreeSet<usize> = e.keep.iter().copied().collect();
        for (k, per_member) in g.indices.iter().enumerate() {
            if keep.contains(&k) {
                continue;
            }
            for (m, idx) in per_member.iter().enumerate() {
                let at = &g.members[m].at;
                removed
                    .entry((at.value.clone(), at.axis))
                    .or_default()
                    .extend(idx.iter().copied());
            }
        }
    }
    let mut out = BTreeMap::new();
    for ((v, ax), rem) in removed {
        let n = shapes[&v].dim(ax).unwrap_or(0);
        out.insert((v, ax), (0..n).filter(|i| !rem.contains(i)).collect());
    }
    Ok(out)
}

fn mask_to_tensor(m: &Mask, shape: &[usize]) -> Tensor {
    Tensor::from_fn(shape.to_vec(), |i| if m.keep[i] { 1.0 } else { 0.0 })
}

/// Applies a plan, returning the pruned graph.
pub fn apply_plan(graph: &Graph, deps: &DependencyGraph, plan: &Plan) -> Result<Graph> {
    let old_shapes = graph.infer_shapes()?;
    let keep = kept_indices(deps, plan, &old_shapes)?;
    let mut g = graph.clone();
    for ((value, axis), idx) in &keep {
        if let Some(t) = g.initializers.get(value) {
            let sliced = t.select_axis(*axis, idx)?;
            if let Some(m) = g.masks.get(value) {
                let mt = mask_to_tensor(m, t.shape()).select_axis(*axis, idx)?;
                let new_mask = Mask {
                    keep: mt.data().iter().map(|v| *v != 0.0).collect(),
                    ..m.clone()
                };
                g.masks.insert(value.clone(), new_mask);
            }
            g.initializers.insert(value.clone(), sliced);
        }
    }
    // refit attributes node by node with the new input shapes
    let mut shapes: HashMap<String, Shape> = HashMap::new();
    for i in &g.inputs {
        shapes.insert(i.name.clone(), i.shape.clone());
    }
    for (n, t) in &g.initializers {
        shapes.insert(n.clone(), Shape::known(t.shape()));
    }
    for ni in 0..g.nodes.len() {
        let (old_in, new_in): (Vec<Shape>, Vec<Shape>) = g.nodes[ni]
            .inputs
            .iter()
            .map(|v| (old_shapes[v].clone(), shapes[v].clone()))
            .unzip();
        let name = g.nodes[ni].name.clone();
        let op_type = g.nodes[ni].op.op_type();
        if old_in != new_in {
            g.nodes[ni]
                .op
                .sem_mut()
                .refit(&old_in, &new_in)
                .map_err(|e| secateur_graph::GraphError::Op {
                    node: name.clone(),
                    op: op_type,
                    message: e.0,
                })?;
        }
        let expected: Vec<Shape> = g.nodes[ni]
            .outputs
            .iter()
            .map(|o| {
                let dims = old_shapes[o].dims().iter().enumerate();
                Shape(
                    dims.map(|(ax, d)| {
                        keep.get(&(o.clone(), ax))
                            .map_or(*d, |k| Dim::Known(k.len()))
                    })
                    .collect(),
                )
            })
            .collect();
        let old_out: Vec<&Shape> = g.nodes[ni].outputs.iter().map(|o| &old_shapes[o]).collect();
        if expected.iter().zip(&old_out).any(|(e, o)| e != *o) {
            g.nodes[ni]
                .op
                .sem_mut()
                .refit_outputs(&expected)
                .map_err(|e| secateur_graph::GraphError::Op {
                    node: name.clone(),
                    op: op_type,
                    message: e.0,
                })?;
        }
        let outs = g.infer_node(&g.nodes[ni], &new_in)?;
        for (o, s) in g.nodes[ni].outputs.clone().into_iter().zip(outs) {
            // the new shape must be the old one minus exactly the removed indices
            let old = &old_shapes[&o];
            for (ax, d) in s.dims().iter().enumerate() {
                let expect = match keep.get(&(o.clone(), ax)) {
                    Some(k) => Dim::Known(k.len()),
                    None => old.dims()[ax],
                };
                if *d != expect {
                    return Err(PruneError::Invalid(format!(
                        "after pruning, '{o}' axis {ax} has size {d}, expected {expect} (node '{name}')"
                    )));
                }
            }
            shapes.insert(o, s);
        }
    }
    g.check()?;
    Ok(g)
}

/// Zeroes the parameter slices of some channels of a group in place (the reference for
/// equivalence: a physically pruned model must compute what this zero-masked model computes).
pub fn zero_channels(graph: &mut Graph, group: &Group, channels: &[usize]) -> Result<()> {
    for &k in channels {
        let per_member = group.indices.get(k).ok_or_else(|| PruneError::Group {
            group: group.name.clone(),
            message: format!("channel {k} out of range"),
        })?;
        for (m, idx) in per_member.iter().enumerate() {
            let member = &group.members[m];
            if member.param.is_none() {
                continue;
            }
            if let Some(t) = graph.initializers.get_mut(&member.at.value) {
                t.zero_axis(member.at.axis, idx)?;
            }
        }
    }
    Ok(())
}
