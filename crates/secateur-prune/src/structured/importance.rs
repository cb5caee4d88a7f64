//! Group importance: one score per channel of a dependency group, from the group's parameter
//! members. Criteria: L1 / L2 norm of each member's slice, batch-norm scale |γ| (network
//! slimming), FPGM (distance of a filter to the others, Filter Pruning via Geometric Median),
//! first-order Taylor (Σ |w·∂L/∂w| over the slices, from data), and random. Member scores are
//! reduced over the group (mean, sum or max) and optionally normalised so groups can be
//! ranked against each other.

use super::groups::Group;
use crate::error::{PruneError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::{AxisRole, Graph, InputRole, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A channel-importance criterion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupCriterion {
    L1,
    L2,
    BnScale,
    Fpgm,
    Taylor,
    Random,
    /// Output energy `Σ H_jj·w²` of the features a channel feeds into linear layers, from
    /// calibration activations (per-element data, like Taylor's).
    Activation,
    /// Fisher information of the channel masks (Kwon et al. 2022) from per-sample gradients on
    /// calibration data, spread over the consumer slices (see `structured::fisher`).
    Fisher,
}

impl GroupCriterion {
    pub fn needs_data(self) -> bool {
        matches!(
            self,
            GroupCriterion::Taylor | GroupCriterion::Activation | GroupCriterion::Fisher
        )
    }
}

impl fmt::Display for GroupCriterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupCriterion::L1 => "l1",
            GroupCriterion::L2 => "l2",
            GroupCriterion::BnScale => "bn-scale",
            GroupCriterion::Fpgm => "fpgm",
            GroupCriterion::Taylor => "taylor",
            GroupCriterion::Random => "random",
            GroupCriterion::Activation => "activation",
            GroupCriterion::Fisher => "fisher",
        })
    }
}

impl FromStr for GroupCriterion {
    type Err = PruneError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "l1" | "magnitude" => GroupCriterion::L1,
            "l2" => GroupCriterion::L2,
            "bn-scale" | "bn_scale" | "slimming" => GroupCriterion::BnScale,
            "fpgm" => GroupCriterion::Fpgm,
            "taylor" => GroupCriterion::Taylor,
            "random" => GroupCriterion::Random,
            "activation" => GroupCriterion::Activation,
            "fisher" => GroupCriterion::Fisher,
            o => {
                return Err(PruneError::Invalid(format!(
                    "structured criterion '{o}' is not one of l1, l2, bn-scale, fpgm, taylor, random, activation, fisher"
                )));
            }
        })
    }
}

/// How member scores are combined into a channel score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    #[default]
    Mean,
    Sum,
    Max,
}

/// How a group's scores are scaled before groups are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Normalizer {
    None,
    /// Divide by the group's mean score (Torch-Pruning's default).
    #[default]
    Mean,
    /// Divide by the group's largest score.
    Max,
}

impl FromStr for Reduction {
    type Err = PruneError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "mean" => Reduction::Mean,
            "sum" => Reduction::Sum,
            "max" => Reduction::Max,
            o => {
                return Err(PruneError::Invalid(format!(
                    "reduction '{o}' is not one of mean, sum, max"
                )));
            }
        })
    }
}

impl FromStr for Normalizer {
    type Err = PruneError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Normalizer::None,
            "mean" => Normalizer::Mean,
            "max" => Normalizer::Max,
            o => {
                return Err(PruneError::Invalid(format!(
                    "normaliser '{o}' is not one of none, mean, max"
                )));
            }
        })
    }
}

/// Sum of |x|^p over the slice of `t` at `indices` along `axis`.
fn slice_norm(t: &Tensor, axis: usize, indices: &[usize], p: u32) -> f64 {
    let shape = t.shape();
    let dim = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut s = 0.0f64;
    for o in 0..outer {
        for &k in indices {
            let base = (o * dim + k) * inner;
            for v in &t.data()[base..base + inner] {
                s += if p == 1 {
                    v.abs() as f64
                } else {
                    (*v as f64) * (*v as f64)
                };
            }
        }
    }
    s
}

/// The filter (all elements at `indices` along `axis`) flattened, for FPGM distances.
fn slice_values(t: &Tensor, axis: usize, indices: &[usize]) -> Vec<f32> {
    let shape = t.shape();
    let dim = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut v = Vec::new();
    for o in 0..outer {
        for &k in indices {
            let base = (o * dim + k) * inner;
            v.extend_from_slice(&t.data()[base..base + inner]);
        }
    }
    v
}

fn reduce(values: &[f64], r: Reduction) -> f64 {
    match r {
        Reduction::Mean => values.iter().sum::<f64>() / values.len().max(1) as f64,
        Reduction::Sum => values.iter().sum(),
        Reduction::Max => values.iter().copied().fold(0.0, f64::max),
    }
}

/// Per-channel scores of a group.
pub fn group_scores(
    graph: &Graph,
    group: &Group,
    criterion: GroupCriterion,
    reduction: Reduction,
    normalizer: Normalizer,
    taylor: &HashMap<String, Vec<f32>>,
    seed: u64,
) -> Result<Vec<f64>> {
    let n = group.channels();
    let params: Vec<(usize, &Tensor, InputRole, AxisRole)> = group
        .members
        .iter()
        .enumerate()
        .filter_map(|(m, mem)| {
            let p = mem.param.as_ref()?;
            let t = graph.initializers.get(&mem.at.value)?;
            matches!(
                p.input,
                InputRole::Weight | InputRole::Bias | InputRole::BnScale | InputRole::BnShift
            )
            .then_some((m, t, p.input, p.axis))
        })
        .collect();
    let mut scores = vec![0.0f64; n];
    // criteria that find nothing to read in this group (no batch norm, no linear consumer)
    let l1_instead = || {
        group_scores(
            graph,
            group,
            GroupCriterion::L1,
            reduction,
            normalizer,
            taylor,
            seed,
        )
    };
    match criterion {
        GroupCriterion::Random => {
            let mut h = seed;
            for b in group.name.bytes() {
                h = h.wrapping_mul(1_000_003).wrapping_add(b as u64);
            }
            let mut rng = ChaCha8Rng::seed_from_u64(h);
            scores.iter_mut().for_each(|s| *s = rng.random::<f64>());
        }
        GroupCriterion::BnScale => {
            let bn: Vec<_> = params
                .iter()
                .filter(|p| p.2 == InputRole::BnScale)
                .collect();
            if bn.is_empty() {
                return l1_instead();
            }
            for (k, s) in scores.iter_mut().enumerate() {
                let v: Vec<f64> = bn
                    .iter()
                    .map(|(m, t, ..)| {
                        slice_norm(t, group.members[*m].at.axis, &group.indices[k][*m], 1)
                    })
                    .collect();
                *s = reduce(&v, reduction);
            }
        }
        GroupCriterion::L1 | GroupCriterion::L2 | GroupCriterion::Taylor => {
            let weights: Vec<_> = params.iter().filter(|p| p.2 == InputRole::Weight).collect();
            for (k, s) in scores.iter_mut().enumerate() {
                let mut v = Vec::with_capacity(weights.len());
                for (m, t, ..) in &weights {
                    let at = &group.members[*m].at;
                    let val = match criterion {
                        GroupCriterion::L1 => slice_norm(t, at.axis, &group.indices[k][*m], 1),
                        GroupCriterion::L2 => {
                            slice_norm(t, at.axis, &group.indices[k][*m], 2).sqrt()
                        }
                        _ => {
                            let ts = taylor.get(&at.value).ok_or_else(|| PruneError::Group {
                                group: group.name.clone(),
                                message: "Taylor importance needs gradients; run with --data"
                                    .into(),
                            })?;
                            let tt = Tensor::new(t.shape().to_vec(), ts.clone())
                                .map_err(PruneError::Graph)?;
                            slice_norm(&tt, at.axis, &group.indices[k][*m], 1)
                        }
                    };
                    v.push(val);
                }
                *s = reduce(&v, reduction);
            }
        }
        GroupCriterion::Activation | GroupCriterion::Fisher => {
            let consumers: Vec<_> = params
                .iter()
                .filter(|p| {
                    p.2 == InputRole::Weight
                        && p.3 == AxisRole::InChannels
                        && taylor.contains_key(&group.members[p.0].at.value)
                })
                .collect();
            if consumers.is_empty() {
                // no linear layer reads these channels: fall back to their weights' L1 norms
                return l1_instead();
            }
            for (k, s) in scores.iter_mut().enumerate() {
                *s = 0.0;
                for (m, t, ..) in &consumers {
                    let at = &group.members[*m].at;
                    let tt = Tensor::new(t.shape().to_vec(), taylor[&at.value].clone())
                        .map_err(PruneError::Graph)?;
                    *s += slice_norm(&tt, at.axis, &group.indices[k][*m], 1);
                }
            }
        }
        GroupCriterion::Fpgm => {
            let producers: Vec<_> = params
                .iter()
                .filter(|p| p.2 == InputRole::Weight && p.3 == AxisRole::OutChannels)
                .collect();
            let members: Vec<_> = if producers.is_empty() {
                params.iter().filter(|p| p.2 == InputRole::Weight).collect()
            } else {
                producers
            };
            let mut per_member: Vec<Vec<f64>> = Vec::new();
            for (m, t, ..) in &members {
                let at = &group.members[*m].at;
                let filters: Vec<Vec<f32>> = (0..n)
                    .map(|k| slice_values(t, at.axis, &group.indices[k][*m]))
                    .collect();
                let d: Vec<f64> = (0..n)
                    .map(|i| {
                        (0..n)
                            .map(|j| {
                                filters[i]
                                    .iter()
                                    .zip(&filters[j])
                                    .map(|(a, b)| ((a - b) as f64).powi(2))
                                    .sum::<f64>()
                                    .sqrt()
                            })
                            .sum()
                    })
                    .collect();
                per_member.push(d);
            }
            for (k, s) in scores.iter_mut().enumerate() {
                let v: Vec<f64> = per_member.iter().map(|d| d[k]).collect();
                *s = reduce(&v, reduction);
            }
        }
    }
    let scale = match normalizer {
        Normalizer::None => 1.0,
        Normalizer::Mean => scores.iter().sum::<f64>() / n.max(1) as f64,
        Normalizer::Max => scores.iter().copied().fold(0.0, f64::max),
    };
    if scale > 0.0 && scale.is_finite() {
        scores.iter_mut().for_each(|s| *s /= scale);
    }
    Ok(scores)
}
