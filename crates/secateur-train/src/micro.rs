//! What one training step is made of: a batch split into weighted micro-batches of graph
//! inputs (one tensor per input, rows are samples), each with its target — class labels, or
//! embeddings the model's output should point along — and the embedding loss (cosine
//! distance).

use crate::error::Result;
use burn::tensor::Tensor;
use rand_chacha::ChaCha8Rng;
use secateur_graph::Tensor as GTensor;

/// What a micro-batch is trained towards.
pub(crate) enum Target {
    /// Class labels (cross-entropy, or distillation when a teacher is set).
    Labels(Vec<u32>),
    /// Embeddings `[N, dim]` the model's output should point along (cosine distance), with
    /// optional per-token weights `[N, T]` (0 for padding) for matched sequence features.
    Embeddings {
        targets: GTensor,
        token_weights: Option<GTensor>,
    },
}

/// The graph inputs of some samples and what they are trained towards.
pub(crate) struct MicroBatch {
    pub inputs: Vec<GTensor>,
    pub target: Target,
}

/// Turns a batch of sample indices into weighted micro-batches.
pub(crate) type MakeBatch<'a> =
    dyn FnMut(&[usize], &mut ChaCha8Rng) -> Result<Vec<(MicroBatch, f64)>> + 'a;

/// Splits a batch (one tensor per graph input, and its target) into at most `parts`
/// micro-batches of consecutive rows, each weighted by its share of the batch.
pub(crate) fn split_rows(
    inputs: &[GTensor],
    target: Target,
    parts: usize,
) -> Result<Vec<(MicroBatch, f64)>> {
    let n = inputs.first().map_or(0, |t| t.shape()[0]);
    let parts = parts.min(n / 2).max(1);
    let rows = |t: &GTensor, a: usize, b: usize| -> Result<GTensor> {
        Ok(t.select_axis(0, &(a..b).collect::<Vec<_>>())?)
    };
    (0..parts)
        .map(|i| {
            let (a, b) = (i * n / parts, (i + 1) * n / parts);
            let target = match &target {
                Target::Labels(y) => Target::Labels(y[a..b].to_vec()),
                Target::Embeddings {
                    targets,
                    token_weights,
                } => Target::Embeddings {
                    targets: rows(targets, a, b)?,
                    token_weights: token_weights.as_ref().map(|w| rows(w, a, b)).transpose()?,
                },
            };
            let mb = MicroBatch {
                inputs: inputs
                    .iter()
                    .map(|t| rows(t, a, b))
                    .collect::<Result<_>>()?,
                target,
            };
            Ok((mb, (b - a) as f64 / n as f64))
        })
        .collect()
}

/// Mean cosine distance `1 − cos(s, t)` of corresponding rows (the targets are constants).
pub(crate) fn cosine_distance(s: Tensor<2>, t: Tensor<2>) -> Tensor<1> {
    let dot = (s.clone() * t.clone()).sum_dim(1);
    let ns = (s.clone() * s).sum_dim(1).sqrt();
    let nt = (t.clone() * t).sum_dim(1).sqrt();
    let cos = dot / (ns * nt + 1e-12);
    (cos.neg() + 1.0).mean()
}
