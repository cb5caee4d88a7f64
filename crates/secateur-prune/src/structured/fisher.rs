//! Fisher importance of channel masks (Kwon et al. 2022): a group's channel `k` is scored by
//! `Σ_s (∂L_s/∂m_k)²` where `m_k` scales what the channel feeds into the layers reading it.
//! Its gradient is the sum, over those consumer layers' slices of the channel, of the per-sample
//! slice sensitivities the training engine computes (`w ⊙ ∂L_s/∂w` summed over the other axes).
//! Unlike output energy, this measures the end-to-end effect on the model's output through
//! everything after the layer (normalisations, residual paths, attention).
//!
//! The scores enter the selection as per-element data of the consumer weights (each channel's
//! score spread evenly over its consumer slices), read by [`super::GroupCriterion::Fisher`]
//! like the activation criterion: the sum over a channel's consumer slices.

use super::groups::{DependencyGraph, Group, GroupKind};
use crate::error::Result;
use secateur_graph::{AxisRole, Graph, InputRole};
use std::collections::HashMap;

/// The consumer members of group `g` (layers reading its channels as input features) whose
/// weights have slice sensitivities.
fn consumers(g: &Group, sens: &HashMap<String, Vec<Vec<f32>>>) -> Vec<usize> {
    g.members
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.param
                .as_ref()
                .is_some_and(|p| p.input == InputRole::Weight && p.axis == AxisRole::InChannels)
                && sens.contains_key(&m.at.value)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Per-sample gradients of one group's channel masks: `g[s · channels + k] = ∂(v_s·y_s)/∂m_k`.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskGradients {
    pub samples: usize,
    pub channels: usize,
    pub g: Vec<f64>,
}

impl MaskGradients {
    /// Channel `k`'s gradient over the samples.
    pub fn column(&self, k: usize) -> impl Iterator<Item = f64> + '_ {
        (0..self.samples).map(move |s| self.g[s * self.channels + k])
    }
}

/// The mask gradients of group `g` through its `consumers`.
fn group_gradients(
    g: &Group,
    consumers: &[usize],
    sens: &HashMap<String, Vec<Vec<f32>>>,
    samples: usize,
) -> MaskGradients {
    let channels = g.indices.len();
    let mut out = vec![0.0f64; samples * channels];
    for (k, channel) in g.indices.iter().enumerate() {
        for s in 0..samples {
            let mut grad = 0.0f64;
            for &m in consumers {
                let at = &g.members[m].at;
                let axis = &sens[&at.value][at.axis];
                let dim = axis.len() / samples.max(1);
                grad += channel[m]
                    .iter()
                    .map(|&i| axis[s * dim + i] as f64)
                    .sum::<f64>();
            }
            out[s * channels + k] = grad;
        }
    }
    MaskGradients {
        samples,
        channels,
        g: out,
    }
}

/// The mask gradients of every group of `kinds` (all when empty) that has consumers with
/// sensitivities, by group name, from `sens[weight][axis]` = `samples × dim` per-sample slice
/// sensitivities.
pub fn fisher_gradients(
    deps: &DependencyGraph,
    sens: &HashMap<String, Vec<Vec<f32>>>,
    samples: usize,
    kinds: &[GroupKind],
) -> HashMap<String, MaskGradients> {
    deps.groups
        .iter()
        .filter(|g| kinds.is_empty() || kinds.contains(&g.kind))
        .filter_map(|g| {
            let c = consumers(g, sens);
            (!c.is_empty()).then(|| (g.name.clone(), group_gradients(g, &c, sens, samples)))
        })
        .collect()
}

/// Per-element Fisher data for the consumer weights of the groups of `kinds` (all when
/// empty), from `sens[weight][axis]` = `samples × dim` per-sample slice sensitivities.
pub fn fisher_importance(
    graph: &Graph,
    deps: &DependencyGraph,
    sens: &HashMap<String, Vec<Vec<f32>>>,
    samples: usize,
    kinds: &[GroupKind],
) -> Result<HashMap<String, Vec<f32>>> {
    let mut out: HashMap<String, Vec<f32>> = HashMap::new();
    for g in deps
        .groups
        .iter()
        .filter(|g| kinds.is_empty() || kinds.contains(&g.kind))
    {
        let consumers = consumers(g, sens);
        if consumers.is_empty() {
            continue;
        }
        let grads = group_gradients(g, &consumers, sens, samples);
        for (k, channel) in g.indices.iter().enumerate() {
            let fisher: f64 = grads.column(k).map(|v| v * v).sum();
            let share = fisher / consumers.len() as f64;
            for &m in &consumers {
                let at = &g.members[m].at;
                let Some(w) = graph.initializers.get(&at.value) else {
                    continue;
                };
                spread(
                    out.entry(at.value.clone())
                        .or_insert_with(|| vec![0.0; w.len()]),
                    w.shape(),
                    at.axis,
                    &channel[m],
                    share,
                );
            }
        }
    }
    Ok(out)
}

/// Adds `total`, spread evenly, to the elements at `indices` along `axis`.
fn spread(data: &mut [f32], shape: &[usize], axis: usize, indices: &[usize], total: f64) {
    let dim = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let each = (total / (outer * inner * indices.len()).max(1) as f64) as f32;
    for o in 0..outer {
        for &k in indices {
            let base = (o * dim + k) * inner;
            data[base..base + inner].iter_mut().for_each(|v| *v += each);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_preserves_the_total_of_a_slice() {
        let mut d = vec![0.0f32; 12];
        spread(&mut d, &[3, 4], 0, &[1, 2], 8.0);
        assert_eq!(&d[..4], &[0.0; 4]);
        assert!((d.iter().sum::<f32>() - 8.0).abs() < 1e-6);
        let mut c = vec![0.0f32; 12];
        spread(&mut c, &[3, 4], 1, &[3], 6.0);
        assert_eq!(c[3] + c[7] + c[11], 6.0);
    }
}
