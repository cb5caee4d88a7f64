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
    let mut a = vec![0.0f64; s * s];
    for (p, &i) in keep.iter().enumerate() {
        for (q, &j) in keep.iter().enumerate() {
            a[p * s + q] = h[i * d + j];
        }
    }
    // right-hand sides B = H[S, :] · Wᵀ (s × rows), each row a vectorised update
    let rows = view.rows;
    let mut wt = vec![0.0f64; d * rows];
    for r in 0..rows {
        for c in 0..d {
            wt[c * rows + r] = w.data()[view.index(r, c)] as f64;
        }
    }
    let mut b = vec![0.0f64; s * rows];
    for (p, &i) in keep.iter().enumerate() {
        let bp = &mut b[p * rows..(p + 1) * rows];
        for c in 0..d {
            axpy(bp, h[i * d + c], &wt[c * rows..(c + 1) * rows]);
        }
    }
    let x = solve_damped(&a, b, s, rows)?;
    // out[r][p] = X[p][r]
    let mut out = vec![0.0f64; rows * s];
    for p in 0..s {
        for r in 0..rows {
            out[r * s + p] = x[p * rows + r];
        }
    }
    Ok(out)
}

/// `X = (A + λI)⁻¹ B` for a symmetric positive semi-definite `A` (`s × s`) and `m` right-hand
/// sides (`B` row-major `s × m`, consumed), with `λ` 1 % of `A`'s mean diagonal, raised tenfold
/// until the factorisation succeeds.
pub(crate) fn solve_damped(a: &[f64], mut x: Vec<f64>, s: usize, m: usize) -> Result<Vec<f64>> {
    let mean = (0..s).map(|p| a[p * s + p]).sum::<f64>() / s.max(1) as f64;
    let mut lambda = 1e-2 * mean.max(1e-12);
    let l = loop {
        let mut damped = a.to_vec();
        for p in 0..s {
            damped[p * s + p] += lambda;
        }
        if let Some(l) = cholesky(&damped, s) {
            break l;
        }
        lambda *= 10.0;
        if lambda > 1e6 * mean.max(1e-12) {
            return Err(PruneError::Invalid(
                "reconstruction: the calibration Gram matrix is singular".into(),
            ));
        }
    };
    // L Y = B, then Lᵀ X = Y, for every right-hand side at once: each step an update of a
    // contiguous row of `m` values (vectorised)
    for p in 0..s {
        let (done, rest) = x.split_at_mut(p * m);
        let xp = &mut rest[..m];
        for q in 0..p {
            axpy(xp, -l[p * s + q], &done[q * m..(q + 1) * m]);
        }
        xp.iter_mut().for_each(|v| *v /= l[p * s + p]);
    }
    for p in (0..s).rev() {
        let (head, done) = x.split_at_mut((p + 1) * m);
        let xp = &mut head[p * m..];
        for q in p + 1..s {
            let k = q - p - 1;
            axpy(xp, -l[q * s + p], &done[k * m..(k + 1) * m]);
        }
        xp.iter_mut().for_each(|v| *v /= l[p * s + p]);
    }
    Ok(x)
}

/// `y += a · x`.
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (v, &u) in y.iter_mut().zip(x) {
        *v += a * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secateur_graph::Tensor;

    /// The refit solves `H_SS W'_r = H_S: W_r` for every output row `r` (with the same damping
    /// as `refit_rows`): checked row by row against a plain elimination.
    #[test]
    fn refit_rows_solve_every_rows_normal_equations() {
        let (d, rows) = (9, 5);
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 1000) as f32 / 500.0 - 1.0
        };
        let mut gram = Gram::new(d);
        for _ in 0..40 {
            let x: Vec<f32> = (0..d).map(|_| next()).collect();
            gram.add_row(&x);
        }
        let w = Tensor::new(vec![rows, d], (0..rows * d).map(|_| next()).collect()).unwrap();
        let view = MatrixView::new(&[rows, d], 0).unwrap();
        let keep = [0, 2, 3, 5, 8];
        let got = refit_rows(&w, &view, &gram, &keep).unwrap();
        let h = gram.full();
        let s = keep.len();
        let mean = keep.iter().map(|&j| h[j * d + j]).sum::<f64>() / s as f64;
        for r in 0..rows {
            // augmented system [H_SS + λI | H_S: W_r], Gaussian elimination
            let mut a = vec![0.0f64; s * (s + 1)];
            for (p, &i) in keep.iter().enumerate() {
                for (q, &j) in keep.iter().enumerate() {
                    a[p * (s + 1) + q] = h[i * d + j] + if p == q { 1e-2 * mean } else { 0.0 };
                }
                a[p * (s + 1) + s] = (0..d)
                    .map(|c| h[i * d + c] * w.data()[r * d + c] as f64)
                    .sum();
            }
            for p in 0..s {
                for q in p + 1..s {
                    let f = a[q * (s + 1) + p] / a[p * (s + 1) + p];
                    for k in p..=s {
                        a[q * (s + 1) + k] -= f * a[p * (s + 1) + k];
                    }
                }
            }
            let mut x = vec![0.0f64; s];
            for p in (0..s).rev() {
                let acc: f64 = (p + 1..s).map(|q| a[p * (s + 1) + q] * x[q]).sum();
                x[p] = (a[p * (s + 1) + s] - acc) / a[p * (s + 1) + p];
            }
            for p in 0..s {
                let (g, want) = (got[r * s + p], x[p]);
                assert!(
                    (g - want).abs() < 1e-9 * want.abs().max(1.0),
                    "row {r}, {p}: {g} vs {want}"
                );
            }
        }
    }
}
