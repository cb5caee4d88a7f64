//! Sequential least-squares reconstruction of structured pruning. [`super::reconstruct_consumers`]
//! refits each layer reading pruned channels from the statistics of the *dense* model's inputs,
//! so every refitted layer is fitted to inputs it never receives once the layers before it are
//! pruned too, and the errors add up down the network. Here the pruned graph is evaluated on
//! the calibration batches node by node, and each such layer is refitted when the evaluation
//! reaches it, on the inputs it actually receives (from the pruned and already refitted layers
//! before it), against what the dense model computes there: the layer's output `X Wᵀ + b`,
//! and where that output is added to a residual stream, the dense residual sum (the pruned
//! residual is subtracted from the target, so the fit also absorbs the error the stream carries
//! from earlier layers). With `λ` 1 % of the mean input energy,
//! `W' = argmin ‖X̃_S W'ᵀ + b' + r̃ − (X Wᵀ + b + r)‖² + λ‖W'‖²`; when the layer adds a constant
//! bias, the bias is refitted with it (a centred fit: the intercept absorbs the shift in its
//! inputs' mean that pruning causes). Batches are evaluated side by side (in parallel) and
//! every value is dropped after its last reader, so memory holds the live values only.
//! On all-MiniLM-L6-v2 with half of its heads and FFN neurons removed and 512 calibration
//! texts, held-out agreement with the dense model is 0.916 against 0.906 for the dense-statistics
//! refit; with 128 texts the sequential fit over-fits (0.846 against 0.866): it needs more rows
//! than the features it refits.

use super::groups::DependencyGraph;
use super::plan::{Plan, kept_indices};
use super::reconstruct::solve_damped;
use crate::error::{PruneError, Result};
use crate::weights::calibration::{for_each_evaluated, last_readers};
use crate::weights::prunable_weights;
use gemm::{Parallelism, gemm};
use rayon::prelude::*;
use secateur_graph::{Graph, MatrixView, Tensor, evaluate_node, feed_values};
use std::collections::HashMap;

/// One layer to refit: a linear layer whose input features the plan removed.
struct Refit {
    weight: String,
    /// The value holding its data input (features along the last axis).
    input: String,
    out_axis: usize,
    /// The dense weight's input features kept.
    keep_in: Vec<usize>,
    /// The dense weight's output rows kept (all of them unless the plan pruned its outputs).
    keep_out: Vec<usize>,
    /// The constant bias added to its output, if any (the same name in both graphs).
    bias: Option<String>,
    /// The residual value added after it, if any: the refit then matches the dense sum.
    residual: Option<String>,
}

/// Refits every linear layer of `pruned` (made from `dense` by `plan`) whose input features
/// the plan removed, in execution order, on the calibration `batches` (graph feeds; with
/// `row_keep[b]` the rows of batch `b` to use, e.g. tokens but not padding). Returns the
/// weights refitted.
pub fn reconstruct_sequential(
    dense: &Graph,
    pruned: &mut Graph,
    deps: &DependencyGraph,
    plan: &Plan,
    batches: &[Vec<(&str, Tensor)>],
    row_keep: Option<&[Vec<bool>]>,
) -> Result<Vec<String>> {
    let refits = layers_to_refit(dense, pruned, deps, plan)?;
    if refits.is_empty() || batches.is_empty() {
        return Ok(Vec::new());
    }
    let targets = dense_targets(dense, &refits, batches, row_keep)?;
    let by_node: HashMap<String, usize> = refits
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let node = pruned
                .nodes
                .iter()
                .find(|n| n.inputs.get(1) == Some(&r.weight))?;
            Some((node.name.clone(), i))
        })
        .collect();
    let last_read = last_readers(pruned);
    let mut states = batches
        .iter()
        .map(|feeds| feed_values(pruned, feeds))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut done = Vec::new();
    for ni in 0..pruned.nodes.len() {
        let node = pruned.nodes[ni].clone();
        if let Some(&i) = by_node.get(&node.name) {
            let inputs: Vec<&Tensor> = states
                .iter()
                .map(|st| {
                    st.get(&refits[i].input).ok_or_else(|| {
                        PruneError::Invalid(format!(
                            "reconstruction: value '{}' was not computed",
                            refits[i].input
                        ))
                    })
                })
                .collect::<Result<_>>()?;
            let residuals: Option<Vec<&Tensor>> = match &refits[i].residual {
                Some(res) => Some(
                    states
                        .iter()
                        .map(|st| {
                            st.get(res).ok_or_else(|| {
                                PruneError::Invalid(format!(
                                    "reconstruction: residual '{res}' is not a computed value"
                                ))
                            })
                        })
                        .collect::<Result<_>>()?,
                ),
                None => None,
            };
            let ok = refit_layer(
                pruned,
                &refits[i],
                &inputs,
                residuals.as_deref(),
                &targets[i],
                row_keep,
            )?;
            if ok {
                done.push(refits[i].weight.clone());
            }
        }
        let outputs = states
            .par_iter()
            .map(|st| evaluate_node(pruned, &node, st))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (st, outs) in states.iter_mut().zip(outputs) {
            for (name, t) in node.outputs.iter().zip(outs) {
                st.insert(name.clone(), t);
            }
            for v in &node.inputs {
                if last_read.get(v) == Some(&ni) && !pruned.outputs.contains(v) {
                    st.remove(v);
                }
            }
        }
    }
    Ok(done)
}

/// The linear layers (two-dimensional weights read by a node whose first input is computed)
/// whose input features `plan` removes, with what their refit needs.
fn layers_to_refit(
    dense: &Graph,
    pruned: &Graph,
    deps: &DependencyGraph,
    plan: &Plan,
) -> Result<Vec<Refit>> {
    let shapes = dense.infer_shapes()?;
    let kept = kept_indices(deps, plan, &shapes)?;
    let mut out = Vec::new();
    for l in prunable_weights(dense)? {
        if l.shape.len() != 2 {
            continue;
        }
        let view = MatrixView::new(&l.shape, l.out_axis)?;
        let Some(keep_in) = kept.get(&(l.weight.clone(), 1 - l.out_axis)) else {
            continue;
        };
        if keep_in.len() == view.cols || keep_in.is_empty() {
            continue;
        }
        let Some(ni) = dense.nodes.iter().position(|n| n.name == l.node) else {
            continue;
        };
        let node = &dense.nodes[ni];
        let input = &node.inputs[0];
        if dense.initializers.contains_key(input)
            || shapes
                .get(input)
                .and_then(|s| s.dim(s.rank().checked_sub(1)?))
                != Some(view.cols)
            || !pruned.initializers.contains_key(&l.weight)
        {
            continue;
        }
        let keep_out = kept
            .get(&(l.weight.clone(), l.out_axis))
            .cloned()
            .unwrap_or_else(|| (0..view.rows).collect());
        let chain = dense.fused_chain(ni, &shapes);
        let bias = chain.bias.map(|(_, b)| b).filter(|b| {
            pruned
                .initializers
                .get(b)
                .is_some_and(|t| t.len() == keep_out.len())
        });
        let residual = chain
            .residual
            .filter(|_| chain.activation.is_none())
            .map(|(_, v)| v);
        out.push(Refit {
            weight: l.weight,
            input: input.clone(),
            out_axis: l.out_axis,
            keep_in: keep_in.clone(),
            keep_out,
            bias,
            residual,
        });
    }
    Ok(out)
}

/// Per layer to refit and per batch, the dense layer's outputs on the batch's kept rows
/// (`X Wᵀ + b` restricted to the kept output rows, row-major `n × |kept rows|`).
fn dense_targets(
    dense: &Graph,
    refits: &[Refit],
    batches: &[Vec<(&str, Tensor)>],
    row_keep: Option<&[Vec<bool>]>,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut targets = vec![Vec::with_capacity(batches.len()); refits.len()];
    // each weight as a dense `d × |kept rows|` matrix (Wᵀ)
    let wts: Vec<Vec<f64>> = refits
        .iter()
        .map(|r| {
            let t = &dense.initializers[&r.weight];
            let view = MatrixView::new(t.shape(), r.out_axis)?;
            let m = r.keep_out.len();
            let mut wt = vec![0.0f64; view.cols * m];
            for (k, &row) in r.keep_out.iter().enumerate() {
                for c in 0..view.cols {
                    wt[c * m + k] = t.data()[view.index(row, c)] as f64;
                }
            }
            Ok(wt)
        })
        .collect::<Result<_>>()?;
    for_each_evaluated(dense, batches, row_keep, |values, keep| {
        for (i, r) in refits.iter().enumerate() {
            targets[i].push(dense_target(dense, r, &wts[i], values, keep)?);
        }
        Ok(())
    })?;
    Ok(targets)
}

/// One layer's dense target on one batch: `X Wᵀ + b` (plus the residual added after it) on the
/// kept rows, `wt` the weight as `d × |kept rows|`.
fn dense_target(
    dense: &Graph,
    r: &Refit,
    wt: &[f64],
    values: &HashMap<String, Tensor>,
    keep: Option<&Vec<bool>>,
) -> Result<Vec<f64>> {
    let value = |name: &str| {
        values.get(name).ok_or_else(|| {
            PruneError::Invalid(format!("reconstruction: value '{name}' was not computed"))
        })
    };
    let m = r.keep_out.len();
    let d = wt.len() / m;
    let all: Vec<usize> = (0..d).collect();
    let (xs, n) = kept_rows(value(&r.input)?, &all, keep);
    let mut y = vec![0.0f64; n * m];
    matmul_acc(&mut y, &xs, wt, (n, d, m), Transpose::No);
    if let Some(bias) = &r.bias {
        let bt = &dense.initializers[bias];
        for row in y.chunks_exact_mut(m) {
            for (v, &k) in row.iter_mut().zip(&r.keep_out) {
                *v += bt.data()[k] as f64;
            }
        }
    }
    if let Some(res) = &r.residual {
        let (rs, _) = kept_rows(value(res)?, &r.keep_out, keep);
        y.iter_mut().zip(rs).for_each(|(a, b)| *a += b);
    }
    Ok(y)
}

/// Refits one layer of `pruned` from its inputs in every batch and the dense targets.
/// Returns false when no row was usable.
fn refit_layer(
    pruned: &mut Graph,
    r: &Refit,
    inputs: &[&Tensor],
    residuals: Option<&[&Tensor]>,
    targets: &[Vec<f64>],
    row_keep: Option<&[Vec<bool>]>,
) -> Result<bool> {
    let (s, m) = (r.keep_in.len(), r.keep_out.len());
    let mut a = vec![0.0f64; s * s];
    let mut rhs = vec![0.0f64; s * m];
    let (mut x_sum, mut y_sum) = (vec![0.0f64; s], vec![0.0f64; m]);
    let mut rows = 0usize;
    let all: Vec<usize> = (0..s).collect();
    for (b, (x, y)) in inputs.iter().zip(targets).enumerate() {
        if x.shape().last() != Some(&s) {
            return Err(PruneError::Invalid(format!(
                "reconstruction: '{}' has shape {:?}, expected {s} features",
                r.input,
                x.shape()
            )));
        }
        let (xs, n) = kept_rows(x, &all, row_keep.and_then(|k| k.get(b)));
        let mut y = y.clone();
        if let Some(res) = residuals {
            let out_all: Vec<usize> = (0..m).collect();
            let (rs, _) = kept_rows(res[b], &out_all, row_keep.and_then(|k| k.get(b)));
            y.iter_mut().zip(rs).for_each(|(a, b)| *a -= b);
        }
        let y = &y;
        if y.len() != n * m {
            return Err(PruneError::Invalid(format!(
                "reconstruction: '{}' kept {n} rows, the dense model {}",
                r.input,
                y.len() / m.max(1)
            )));
        }
        matmul_acc(&mut a, &xs, &xs, (s, n, s), Transpose::Lhs);
        matmul_acc(&mut rhs, &xs, y, (s, n, m), Transpose::Lhs);
        for row in xs.chunks_exact(s) {
            x_sum.iter_mut().zip(row).for_each(|(t, v)| *t += v);
        }
        for row in y.chunks_exact(m) {
            y_sum.iter_mut().zip(row).for_each(|(t, v)| *t += v);
        }
        rows += n;
    }
    if rows == 0 {
        return Ok(false);
    }
    let n = rows as f64;
    if r.bias.is_some() {
        // centred fit: the intercept is refitted into the bias
        for p in 0..s {
            for q in 0..s {
                a[p * s + q] -= x_sum[p] * x_sum[q] / n;
            }
            for k in 0..m {
                rhs[p * m + k] -= x_sum[p] * y_sum[k] / n;
            }
        }
    }
    let w = solve_damped(&a, rhs, s, m)?; // s × m: W'ᵀ
    let t = pruned
        .initializers
        .get_mut(&r.weight)
        .ok_or_else(|| PruneError::Invalid(format!("pruned graph lacks '{}'", r.weight)))?;
    let view = MatrixView::new(t.shape(), r.out_axis)?;
    if view.cols != s || view.rows != m {
        return Err(PruneError::Invalid(format!(
            "reconstruction: pruned '{}' is {}×{}, the plan keeps {m}×{s}",
            r.weight, view.rows, view.cols
        )));
    }
    for k in 0..m {
        for p in 0..s {
            t.data_mut()[view.index(k, p)] = w[p * m + k] as f32;
        }
    }
    if let Some(bias) = &r.bias {
        let bt = pruned
            .initializers
            .get_mut(bias)
            .expect("checked when listed");
        for (k, v) in bt.data_mut().iter_mut().enumerate() {
            let fitted: f64 = (0..s).map(|p| x_sum[p] * w[p * m + k]).sum();
            *v = ((y_sum[k] - fitted) / n) as f32;
        }
    }
    Ok(true)
}

/// The rows of `x` (features along its last axis) that `keep` marks (all when `keep` is absent
/// or does not match), columns `cols`, as row-major f64, and their count.
fn kept_rows(x: &Tensor, cols: &[usize], keep: Option<&Vec<bool>>) -> (Vec<f64>, usize) {
    let d = x.shape().last().copied().unwrap_or(1).max(1);
    let total = x.len() / d;
    let keep = keep.filter(|k| k.len() == total);
    let mut out = Vec::with_capacity(total * cols.len());
    let mut n = 0;
    for (i, row) in x.data().chunks_exact(d).enumerate() {
        if keep.is_some_and(|k| !k[i]) {
            continue;
        }
        out.extend(cols.iter().map(|&c| row[c] as f64));
        n += 1;
    }
    (out, n)
}

/// Whether the left operand of [`matmul_acc`] is read transposed.
#[derive(Clone, Copy, PartialEq)]
enum Transpose {
    No,
    Lhs,
}

/// `dst (rows × cols) += lhs · rhs` with the inner size `k`: `lhs` is row-major `rows × k`, or
/// `k × rows` read transposed; `rhs` row-major `k × cols`.
fn matmul_acc(
    dst: &mut [f64],
    lhs: &[f64],
    rhs: &[f64],
    (rows, k, cols): (usize, usize, usize),
    lhs_layout: Transpose,
) {
    assert!(dst.len() == rows * cols && lhs.len() == rows * k && rhs.len() == k * cols);
    if rows == 0 || cols == 0 || k == 0 {
        return;
    }
    let (lhs_cs, lhs_rs) = match lhs_layout {
        Transpose::No => (1, k as isize),
        Transpose::Lhs => (rows as isize, 1),
    };
    // SAFETY: the sizes and strides address exactly the three slices checked above, and `dst`
    // is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm(
            rows,
            cols,
            k,
            dst.as_mut_ptr(),
            1,
            cols as isize,
            true,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            1,
            cols as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
}
