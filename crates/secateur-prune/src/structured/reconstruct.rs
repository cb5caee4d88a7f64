//! Retraining-free recovery of structured pruning (the layer-wise reconstruction of Kwon et
//! al., 2022): when channels feeding a linear layer are removed (attention heads before the
//! output projection, FFN neurons before the second FFN layer), that layer's remaining input
//! weights are refitted by least squares so that its outputs on calibration inputs change as
//! little as possible: with `H` the Gram matrix of the layer's dense inputs and `S` the kept
//! features, `W'_S = (H_SS + λI)⁻¹ H_S· W`. The same statistics give a data-aware channel
//! importance, the output energy `Σ_j H_jj ‖W_j‖²` of the features a channel feeds.

use super::groups::DependencyGraph;
use super::plan::{Plan, kept_indices};
use crate::error::{PruneError, Result};
use crate::weights::calibration::Gram;
use crate::weights::prunable_weights;
use crate::weights::sparsegpt::cholesky;
use secateur_graph::{Graph, MatrixView};
use std::collections::HashMap;

/// Per-element importance data for [`super::GroupCriterion::Activation`]: for each linear
/// weight with calibration statistics, `H_jj · w²` of each element (its input feature's energy
/// times its squared weight).
pub fn activation_importance(
    graph: &Graph,
    grams: &HashMap<String, Gram>,
) -> Result<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
    for l in prunable_weights(graph)? {
        let (Some(gram), Some(t)) = (grams.get(&l.weight), graph.initializers.get(&l.weight))
        else {
            continue;
        };
        let view = MatrixView::new(&l.shape, l.out_axis)?;
        if view.cols != gram.dim {
            continue;
        }
        let mut e = vec![0.0f32; t.len()];
        for r in 0..view.rows {
            for c in 0..view.cols {
                let i = view.index(r, c);
                e[i] = (gram.h[c * gram.dim + c] * (t.data()[i] as f64).powi(2)) as f32;
            }
        }
        out.insert(l.weight, e);
    }
    Ok(out)
}

/// Refits the input weights of every linear layer whose input features `plan` removed (in the
/// pruned graph `pruned`, made from `dense` by the plan), from the Gram matrices of the dense
/// layers' inputs. Returns the weights refitted.
pub fn reconstruct_consumers(
    dense: &Graph,
    pruned: &mut Graph,
    deps: &DependencyGraph,
    plan: &Plan,
    grams: &HashMap<String, Gram>,
) -> Result<Vec<String>> {
    let shapes = dense.infer_shapes()?;
    let kept = kept_indices(deps, plan, &shapes)?;
    let mut done = Vec::new();
    for l in prunable_weights(dense)? {
        if l.shape.len() != 2 {
            continue;
        }
        let in_axis = 1 - l.out_axis;
        let (Some(keep), Some(gram)) =
            (kept.get(&(l.weight.clone(), in_axis)), grams.get(&l.weight))
        else {
            continue;
        };
        let view = MatrixView::new(&l.shape, l.out_axis)?;
        if gram.dim != view.cols || keep.len() == view.cols || keep.is_empty() {
            continue;
        }
        let refit = refit_rows(&dense.initializers[&l.weight], &view, gram, keep)?;
        let t = pruned
            .initializers
            .get_mut(&l.weight)
            .ok_or_else(|| PruneError::Invalid(format!("pruned graph lacks '{}'", l.weight)))?;
        let pv = MatrixView::new(t.shape(), l.out_axis)?;
        if pv.cols != keep.len() || pv.rows != view.rows {
            // its outputs were pruned too: rows no longer match one to one
            let kept_rows = kept.get(&(l.weight.clone(), l.out_axis));
            let Some(rows) = kept_rows.filter(|r| r.len() == pv.rows) else {
                continue;
            };
            for (pr, &r) in rows.iter().enumerate() {
                for c in 0..pv.cols {
                    t.data_mut()[pv.index(pr, c)] = refit[r * keep.len() + c] as f32;
                }
            }
        } else {
            for r in 0..pv.rows {
                for c in 0..pv.cols {
                    t.data_mut()[pv.index(r, c)] = refit[r * keep.len() + c] as f32;
                }
            }
        }
        if let Some(m) = pruned.masks.get(&l.weight) {
            // keep pruned weights at zero
            let keep_mask = m.keep.clone();
            for (v, k) in t.data_mut().iter_mut().zip(keep_mask) {
                if !k {
                    *v = 0.0;
                }
            }
        }
        done.push(l.weight);
    }
    Ok(done)
}

/// `W'_S` for every output row of the dense weight (row-major `rows × |S|`).
fn refit_rows(
    w: &secateur_graph::Tensor,
    view: &MatrixView,
    gram: &Gram,
    keep: &[usize],
) -> Result<Vec<f64>> {
    let (d, s) = (gram.dim, keep.len());
    let h = gram.full();
    let mean = keep.iter().map(|&j| h[j * d + j]).sum::<f64>() / s as f64;
    let mut lambda = 1e-2 * mean.max(1e-12);
    let l = loop {
        let mut a = vec![0.0f64; s * s];
        for (p, &i) in keep.iter().enumerate() {
            for (q, &j) in keep.iter().enumerate() {
                a[p * s + q] = h[i * d + j];
            }
            a[p * s + p] += lambda;
        }
        if let Some(l) = cholesky(&a, s) {
            break l;
        }
        lambda *= 10.0;
        if lambda > 1e6 * mean.max(1e-12) {
            return Err(PruneError::Invalid(
                "reconstruction: the calibration Gram matrix is singular".into(),
            ));
        }
    };
    let mut out = vec![0.0f64; view.rows * s];
    let mut rhs = vec![0.0f64; s];
    for r in 0..view.rows {
        let wr: Vec<f64> = (0..d).map(|c| w.data()[view.index(r, c)] as f64).collect();
        for (p, &i) in keep.iter().enumerate() {
            rhs[p] = (0..d).map(|c| h[i * d + c] * wr[c]).sum();
        }
        // L y = rhs, Lᵀ x = y
        for p in 0..s {
            let acc: f64 = (0..p).map(|q| l[p * s + q] * rhs[q]).sum();
            rhs[p] = (rhs[p] - acc) / l[p * s + p];
        }
        for p in (0..s).rev() {
            let acc: f64 = (p + 1..s).map(|q| l[q * s + p] * rhs[q]).sum();
            rhs[p] = (rhs[p] - acc) / l[p * s + p];
        }
        out[r * s..(r + 1) * s].copy_from_slice(&rhs);
    }
    Ok(out)
}
