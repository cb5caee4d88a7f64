//! Calibration statistics of linear layers: for every prunable weight matrix read by a layer
//! whose data input has its features along the last axis (MatMul by a constant, Gemm), the
//! Gram matrix `H = Σ x xᵀ` of the input rows seen on a calibration set (one row per token or
//! sample; rows a mask marks as padding are skipped). SparseGPT reconstructs with `H`; Wanda's
//! feature norms are `√H_jj`. The statistics come from the reference evaluation of the dense
//! graph (all layers see the dense model's activations).

use super::allocate::prunable_weights;
use crate::error::{PruneError, Result};
use rayon::prelude::*;
use secateur_graph::{Graph, MatrixView, Tensor, evaluate_all};
use std::collections::HashMap;

/// `Σ x xᵀ` and `Σ x` over the rows seen, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Gram {
    pub dim: usize,
    /// Row-major `dim × dim` (only the upper triangle is accumulated until [`Gram::full`]).
    pub h: Vec<f64>,
    /// The sum of the rows.
    pub sum: Vec<f64>,
    pub rows: usize,
}

impl Gram {
    pub fn new(dim: usize) -> Self {
        Gram {
            dim,
            h: vec![0.0; dim * dim],
            sum: vec![0.0; dim],
            rows: 0,
        }
    }

    /// Adds one input row.
    pub fn add_row(&mut self, x: &[f32]) {
        let d = self.dim;
        for (i, &xi) in x.iter().enumerate().take(d) {
            if xi == 0.0 {
                continue;
            }
            let xi = xi as f64;
            self.sum[i] += xi;
            let row = &mut self.h[i * d + i..(i + 1) * d];
            for (h, &xj) in row.iter_mut().zip(&x[i..d]) {
                *h += xi * xj as f64;
            }
        }
        self.rows += 1;
    }

    /// The symmetric matrix (upper triangle mirrored).
    pub fn full(&self) -> Vec<f64> {
        let d = self.dim;
        let mut h = self.h.clone();
        for i in 0..d {
            for j in 0..i {
                h[i * d + j] = h[j * d + i];
            }
        }
        h
    }

    /// The mean row (zeros before any row).
    pub fn mean(&self) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// `‖x_j‖₂` over the rows, per feature.
    pub fn norms(&self) -> Vec<f32> {
        (0..self.dim)
            .map(|j| self.h[j * self.dim + j].sqrt() as f32)
            .collect()
    }
}

/// A weight matrix and the value its layer reads.
struct LinearInput {
    weight: String,
    input: String,
    features: usize,
}

fn linear_inputs(graph: &Graph) -> Result<Vec<LinearInput>> {
    let mut out = Vec::new();
    for l in prunable_weights(graph)? {
        if l.shape.len() != 2 {
            continue;
        }
        let view = MatrixView::new(&l.shape, l.out_axis)?;
        let Some(node) = graph.nodes.iter().find(|n| n.name == l.node) else {
            continue;
        };
        // the data input whose last axis is the weight's input features
        if node
            .inputs
            .first()
            .is_some_and(|v| !graph.initializers.contains_key(v))
        {
            out.push(LinearInput {
                weight: l.weight.clone(),
                input: node.inputs[0].clone(),
                features: view.cols,
            });
        }
    }
    Ok(out)
}

/// Gram matrices of every linear layer's input over calibration batches. `row_keep[b]`, when
/// given, marks the rows of batch `b` to use (e.g. the attention mask of a text batch: tokens,
/// not padding), for inputs with one row per mask entry.
pub fn collect_grams(
    graph: &Graph,
    batches: &[Vec<(&str, Tensor)>],
    row_keep: Option<&[Vec<bool>]>,
) -> Result<HashMap<String, Gram>> {
    let layers = linear_inputs(graph)?;
    let mut grams: HashMap<String, Gram> = layers
        .iter()
        .map(|l| (l.weight.clone(), Gram::new(l.features)))
        .collect();
    for_each_evaluated(graph, batches, row_keep, |values, keep| {
        for l in &layers {
            let x = values.get(&l.input).ok_or_else(|| {
                PruneError::Invalid(format!("calibration: value '{}' was not computed", l.input))
            })?;
            if x.shape().last() != Some(&l.features) {
                continue; // features not along the last axis: not a row-wise linear layer
            }
            let gram = grams.get_mut(&l.weight).expect("one Gram per layer");
            let rows = x.len() / l.features;
            for (r, row) in x.data().chunks_exact(l.features).enumerate() {
                if keep.is_some_and(|k| k.len() == rows && !k[r]) {
                    continue;
                }
                gram.add_row(row);
            }
        }
        Ok(())
    })?;
    grams.retain(|_, g| g.rows > 0);
    Ok(grams)
}

/// Evaluates `graph` on every calibration batch and hands each batch's values, with its
/// `row_keep` entry, to `visit`, in batch order. Batches are evaluated in parallel, as many at a
/// time as there are threads (each holds all of its values until visited).
pub(crate) fn for_each_evaluated(
    graph: &Graph,
    batches: &[Vec<(&str, Tensor)>],
    row_keep: Option<&[Vec<bool>]>,
    mut visit: impl FnMut(&HashMap<String, Tensor>, Option<&Vec<bool>>) -> Result<()>,
) -> Result<()> {
    let width = rayon::current_num_threads().max(1);
    for (c, chunk) in batches.chunks(width).enumerate() {
        let evaluated = chunk
            .par_iter()
            .map(|feeds| evaluate_all(graph, feeds))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (j, values) in evaluated.iter().enumerate() {
            visit(values, row_keep.and_then(|k| k.get(c * width + j)))?;
        }
    }
    Ok(())
}

/// For every value read by a node of `graph`, the index of the last node reading it (passes
/// that evaluate node by node drop a value after it).
pub(crate) fn last_readers(graph: &Graph) -> HashMap<String, usize> {
    let mut last = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in &n.inputs {
            last.insert(v.clone(), i);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_accumulates_outer_products() {
        let mut g = Gram::new(3);
        g.add_row(&[1.0, 2.0, 0.0]);
        g.add_row(&[0.0, 1.0, 3.0]);
        assert_eq!(g.full(), vec![1.0, 2.0, 0.0, 2.0, 5.0, 3.0, 0.0, 3.0, 9.0]);
        assert_eq!(g.norms(), vec![1.0, 5f32.sqrt(), 3.0]);
        assert_eq!(g.rows, 2);
        assert_eq!(g.mean(), vec![0.5, 1.5, 1.5]);
    }
}
