//! One-shot pruning of linear layers from calibration activations, layer after layer: the
//! calibration batches run through the graph node by node in lockstep, and when a linear
//! layer is reached, the Gram matrix of its input — computed by the layers before it, already
//! pruned — decides its mask (Wanda: `|w|·‖x_j‖`, the lowest fraction of each output's
//! weights, or N of every M; SparseGPT: OBS-style reconstruction). Each later layer thus
//! corrects for the error of the earlier ones, at the cost of a single evaluation of the
//! calibration set. Layers reading the same value (Q, K and V) share one Gram matrix.
//! With bias correction, a pruned layer's bias absorbs the shift of its mean output,
//! `(W − Ŵ)·E[x]` (the least-squares intercept for the pruned weights; neither Wanda's masks
//! nor SparseGPT's updates, which see `XXᵀ` without a constant input, account for it). With
//! refit (the default), the kept weights are then the least-squares fit of the dense layer's
//! outputs for the chosen mask ([`super::refit`]): Wanda changes no kept weight, and
//! SparseGPT's column-by-column updates are not the optimum for its final mask.

use super::allocate::prunable_weights;
use super::calibration::{Gram, last_readers};
use super::refit::RefitSystem;
use super::sparsegpt::{SparseGptConfig, sparsegpt_matrix};
use crate::error::{PruneError, Result};
use secateur_graph::{
    Graph, Mask, MaskPattern, MatrixView, Shape, Tensor, evaluate_node, feed_values,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How each linear layer is pruned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OneShotMethod {
    /// Wanda (Sun et al., 2023): scores `|w_ij|·‖x_j‖₂`, compared within each output.
    Wanda,
    SparseGpt,
}

/// A one-shot request.
#[derive(Clone, Debug, PartialEq)]
pub struct OneShotConfig {
    pub method: OneShotMethod,
    /// Fraction of each layer's weights removed (ignored with `nm`).
    pub sparsity: f64,
    /// Keep `n` of every `m` consecutive inputs of each output.
    pub nm: Option<(usize, usize)>,
    /// Layers (node or weight names) left dense.
    pub exclude: Vec<String>,
    /// Explicit sparsity per layer (node or weight name): when not empty, only these layers
    /// are pruned, each to its own fraction (ignored with `nm`).
    pub targets: BTreeMap<String, f64>,
    /// Whether each pruned layer's bias (its Gemm bias or the constant added to its output)
    /// absorbs the shift of its mean output on the calibration inputs.
    pub bias_correction: bool,
    /// Whether the kept weights of each pruned layer are refitted by least squares to its
    /// dense outputs on the calibration inputs ([`super::refit`]).
    pub refit: bool,
}

impl OneShotConfig {
    /// Every layer pruned to `sparsity` by `method`, unstructured, with bias correction and
    /// the least-squares refit (the command line's defaults).
    pub fn new(method: OneShotMethod, sparsity: f64) -> OneShotConfig {
        OneShotConfig {
            method,
            sparsity,
            nm: None,
            exclude: Vec::new(),
            targets: BTreeMap::new(),
            bias_correction: true,
            refit: true,
        }
    }
}

/// Wanda's mask of a `rows × cols` matrix: per output row, the lowest-scoring weights.
fn wanda_keep(
    w: &[f32],
    rows: usize,
    cols: usize,
    norms: &[f32],
    cfg: &OneShotConfig,
) -> Vec<bool> {
    let mut keep = vec![true; rows * cols];
    let score = |r: usize, c: usize| w[r * cols + c].abs() * norms[c];
    for r in 0..rows {
        let mut prune_lowest = |range: std::ops::Range<usize>, k: usize| {
            let mut idx: Vec<usize> = range.collect();
            idx.sort_by(|&a, &b| score(r, a).total_cmp(&score(r, b)));
            for &c in &idx[..k.min(idx.len())] {
                keep[r * cols + c] = false;
            }
        };
        match cfg.nm {
            Some((n, m)) => (0..cols / m).for_each(|g| prune_lowest(g * m..(g + 1) * m, m - n)),
            None => prune_lowest(0..cols, (cols as f64 * cfg.sparsity).floor() as usize),
        }
    }
    keep
}

/// Prunes one weight in place from its Gram matrix and records its mask; returns the shift
/// of each output's mean on the calibration inputs, `(W − Ŵ)·E[x]`. `centred`: the layer's
/// bias will absorb that shift, so a refit fits the outputs about their mean.
fn prune_weight(
    graph: &mut Graph,
    weight: &str,
    out_axis: usize,
    gram: &Gram,
    cfg: &OneShotConfig,
    centred: bool,
) -> Result<Vec<f64>> {
    let t = graph
        .initializers
        .get_mut(weight)
        .ok_or_else(|| PruneError::Invalid(format!("weight '{weight}' is missing")))?;
    let view = MatrixView::new(t.shape(), out_axis)?;
    let (rows, cols) = (view.rows, view.cols);
    if let Some((_, nm_m)) = cfg.nm
        && !cols.is_multiple_of(nm_m)
    {
        return Err(PruneError::Invalid(format!(
            "'{weight}' has {cols} inputs per output, not a multiple of M = {nm_m}; exclude it or pick another N:M"
        )));
    }
    let mut m = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            m[r * cols + c] = t.data()[view.index(r, c)];
        }
    }
    let before = m.clone();
    let keep_rc = match cfg.method {
        OneShotMethod::Wanda => {
            let keep = wanda_keep(&m, rows, cols, &gram.norms(), cfg);
            m.iter_mut()
                .zip(&keep)
                .for_each(|(v, k)| *v = if *k { *v } else { 0.0 });
            keep
        }
        OneShotMethod::SparseGpt => {
            let sg = SparseGptConfig {
                sparsity: cfg.sparsity,
                nm: cfg.nm,
                ..SparseGptConfig::default()
            };
            sparsegpt_matrix(&mut m, rows, cols, gram, &sg)?
        }
    };
    if cfg.refit {
        RefitSystem::new(gram, centred, SparseGptConfig::default().damp)
            .refit(&before, &keep_rc, &mut m);
    }
    let mean = gram.mean();
    let shift: Vec<f64> = (0..rows)
        .map(|r| {
            let (b, a) = (
                &before[r * cols..(r + 1) * cols],
                &m[r * cols..(r + 1) * cols],
            );
            b.iter()
                .zip(a)
                .zip(&mean)
                .map(|((&b, &a), &mu)| (b - a) as f64 * mu)
                .sum()
        })
        .collect();
    let mut keep = vec![true; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let i = view.index(r, c);
            t.data_mut()[i] = m[r * cols + c];
            keep[i] = keep_rc[r * cols + c];
        }
    }
    let pattern = cfg
        .nm
        .map_or(MaskPattern::Unstructured, |(n, m)| MaskPattern::NM { n, m });
    graph.masks.insert(
        weight.to_string(),
        Mask {
            keep,
            pattern,
            out_axis,
        },
    );
    Ok(shift)
}

/// The constant bias of layer `ni` with one value per output: a Gemm's third input, else
/// the constant its fused chain adds to its output.
fn bias_of(
    graph: &Graph,
    ni: usize,
    shapes: &HashMap<String, Shape>,
    rows: usize,
) -> Option<String> {
    let node = &graph.nodes[ni];
    let own = node
        .inputs
        .get(2)
        .filter(|_| matches!(node.op, secateur_graph::Op::Gemm(_)));
    own.cloned()
        .or_else(|| graph.fused_chain(ni, shapes).bias.map(|(_, b)| b))
        .filter(|b| graph.initializers.get(b).is_some_and(|t| t.len() == rows))
}

/// Adds `shift` to layer `ni`'s bias, where it has one.
fn correct_bias(graph: &mut Graph, ni: usize, shapes: &HashMap<String, Shape>, shift: &[f64]) {
    if let Some(b) = bias_of(graph, ni, shapes, shift.len())
        && let Some(t) = graph.initializers.get_mut(&b)
    {
        t.data_mut()
            .iter_mut()
            .zip(shift)
            .for_each(|(v, s)| *v += *s as f32);
    }
}

/// A linear layer the pass prunes: its weight, the value it reads and the weight's layout.
struct Target {
    weight: String,
    input: String,
    out_axis: usize,
    features: usize,
    /// Outputs of the layer (rows of the weight matrix).
    outputs: usize,
}

fn targets(graph: &Graph, exclude: &[String]) -> Result<HashMap<String, Vec<Target>>> {
    let mut by_node: HashMap<String, Vec<Target>> = HashMap::new();
    for l in prunable_weights(graph)? {
        if l.shape.len() != 2 || exclude.iter().any(|e| *e == l.node || *e == l.weight) {
            continue;
        }
        let Some(node) = graph.nodes.iter().find(|n| n.name == l.node) else {
            continue;
        };
        let Some(input) = node
            .inputs
            .first()
            .filter(|v| !graph.initializers.contains_key(*v))
        else {
            continue;
        };
        let view = MatrixView::new(&l.shape, l.out_axis)?;
        by_node.entry(l.node.clone()).or_default().push(Target {
            weight: l.weight.clone(),
            input: input.clone(),
            out_axis: l.out_axis,
            features: view.cols,
            outputs: view.rows,
        });
    }
    Ok(by_node)
}

/// Prunes the linear layers of `graph` one after the other on calibration `batches`
/// (`row_keep[b]`: the rows of batch `b` that are real tokens). Returns the weights pruned.
pub fn prune_sequentially(
    graph: &mut Graph,
    batches: &[Vec<(&str, Tensor)>],
    row_keep: Option<&[Vec<bool>]>,
    cfg: &OneShotConfig,
) -> Result<Vec<String>> {
    if cfg.nm.is_none() && !(cfg.sparsity > 0.0 && cfg.sparsity < 1.0) {
        return Err(PruneError::Invalid(format!(
            "sparsity must be in (0, 1), got {}",
            cfg.sparsity
        )));
    }
    if let Some((n, m)) = cfg.nm
        && (n == 0 || n >= m)
    {
        return Err(PruneError::Invalid(format!("{n}:{m} needs 0 < n < m")));
    }
    if let Some((layer, s)) = cfg.targets.iter().find(|(_, s)| !(**s > 0.0 && **s < 1.0)) {
        return Err(PruneError::Invalid(format!(
            "target sparsity of '{layer}' must be in (0, 1), got {s}"
        )));
    }
    let targets = targets(graph, &cfg.exclude)?;
    let shapes = graph.infer_shapes()?;
    // the last node reading each value, so that values are dropped once consumed
    let last_use = last_readers(graph);
    let outputs: HashSet<String> = graph.outputs.iter().cloned().collect();
    let mut values: Vec<HashMap<String, Tensor>> = batches
        .iter()
        .map(|f| feed_values(graph, f))
        .collect::<std::result::Result<_, _>>()?;
    let mut grams: HashMap<String, Gram> = HashMap::new();
    let mut pruned = Vec::new();
    for i in 0..graph.nodes.len() {
        let name = graph.nodes[i].name.clone();
        for t in targets.get(&name).into_iter().flatten() {
            if !grams.contains_key(&t.input) {
                grams.insert(
                    t.input.clone(),
                    gram_of(&values, &t.input, t.features, row_keep)?,
                );
            }
            let gram = &grams[&t.input];
            if gram.rows == 0 || gram.dim != t.features {
                continue;
            }
            let layer_cfg = match cfg.targets.get(&name).or(cfg.targets.get(&t.weight)) {
                _ if cfg.targets.is_empty() || cfg.nm.is_some() => cfg.clone(),
                Some(&sparsity) => OneShotConfig {
                    sparsity,
                    ..cfg.clone()
                },
                None => continue,
            };
            let centred = cfg.bias_correction && bias_of(graph, i, &shapes, t.outputs).is_some();
            let shift = prune_weight(graph, &t.weight, t.out_axis, gram, &layer_cfg, centred)
                .map_err(|e| PruneError::Layer {
                    layer: name.clone(),
                    message: e.to_string(),
                })?;
            if cfg.bias_correction {
                correct_bias(graph, i, &shapes, &shift);
            }
            pruned.push(t.weight.clone());
        }
        let node = graph.nodes[i].clone();
        for vals in values.iter_mut() {
            let outs = evaluate_node(graph, &node, vals)?;
            for (o, t) in node.outputs.iter().zip(outs) {
                vals.insert(o.clone(), t);
            }
            vals.retain(|k, _| outputs.contains(k) || last_use.get(k).is_some_and(|&u| u > i));
        }
        grams.retain(|v, _| last_use.get(v).is_some_and(|&u| u > i));
    }
    graph.apply_masks()?;
    Ok(pruned)
}

/// The Gram matrix of a value's rows over all batches.
fn gram_of(
    values: &[HashMap<String, Tensor>],
    input: &str,
    features: usize,
    row_keep: Option<&[Vec<bool>]>,
) -> Result<Gram> {
    let mut gram = Gram::new(features);
    for (b, vals) in values.iter().enumerate() {
        let x = vals.get(input).ok_or_else(|| {
            PruneError::Invalid(format!("calibration: value '{input}' is not available"))
        })?;
        // a layer without input features has nothing to calibrate (and no rows to cut)
        if features == 0 || x.shape().last() != Some(&features) {
            return Ok(Gram::new(0));
        }
        let rows = x.len() / features;
        let keep = row_keep.and_then(|k| k.get(b)).filter(|k| k.len() == rows);
        for (r, row) in x.data().chunks_exact(features).enumerate() {
            if keep.is_none_or(|k| k[r]) {
                gram.add_row(row);
            }
        }
    }
    Ok(gram)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least-squares refit lowers the pruned layer's output error against the dense
    /// layer on the calibration rows, for both methods, with the same mask and sparsity.
    #[test]
    fn refit_lowers_the_output_error_of_both_methods() {
        use secateur_graph::{GraphBuilder, evaluate};
        let (mut b, x) = GraphBuilder::new("linear", &[16], 3);
        let y = b.linear("fc", &x, 6).unwrap();
        let dense = b.finish(&y).unwrap();
        // correlated features: pairs of inputs that move together
        let rows = Tensor::from_fn(vec![64, 16], |i| {
            let (r, c) = (i / 16, i % 16);
            ((r * 7 + c / 2 * 13) % 29) as f32 / 29.0 + 0.1 * ((i * 17) % 5) as f32
        });
        let feeds = vec![vec![("input", rows.clone())]];
        let out = |g: &Graph| evaluate(g, &[("input", rows.clone())]).unwrap().remove(0);
        let want = out(&dense);
        let error = |g: &Graph| -> f64 {
            let got = out(g);
            got.data()
                .iter()
                .zip(want.data())
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum()
        };
        for method in [OneShotMethod::Wanda, OneShotMethod::SparseGpt] {
            let run = |refit: bool| {
                let mut g = dense.clone();
                let cfg = OneShotConfig {
                    refit,
                    ..OneShotConfig::new(method, 0.5)
                };
                prune_sequentially(&mut g, &feeds, None, &cfg).unwrap();
                g
            };
            let (plain, refitted) = (run(false), run(true));
            let mask = |g: &Graph| g.masks["fc.weight"].keep.clone();
            assert_eq!(
                mask(&plain),
                mask(&refitted),
                "{method:?}: the refit keeps the mask"
            );
            assert_eq!(refitted.initializers["fc.weight"].count_zeros(), 48);
            let (e_plain, e_refit) = (error(&plain), error(&refitted));
            assert!(
                e_refit < 0.9 * e_plain,
                "{method:?}: refit {e_refit} against {e_plain}"
            );
        }
    }

    /// With bias correction the pruned layer's mean output on the calibration rows is the
    /// dense layer's; without it, it is not (the inputs have a non-zero mean).
    #[test]
    fn bias_correction_keeps_each_output_mean() {
        use secateur_graph::{GraphBuilder, evaluate};
        let (mut b, x) = GraphBuilder::new("linear", &[12], 3);
        let y = b.linear("fc", &x, 5).unwrap();
        let dense = b.finish(&y).unwrap();
        let rows = Tensor::from_fn(vec![40, 12], |i| 0.5 + ((i * 37) % 23) as f32 / 23.0);
        let feeds = vec![vec![("input", rows.clone())]];
        let mean_out = |g: &Graph| {
            let out = evaluate(g, &[("input", rows.clone())]).unwrap().remove(0);
            (0..5)
                .map(|o| (0..40).map(|r| out.data()[r * 5 + o]).sum::<f32>() / 40.0)
                .collect::<Vec<f32>>()
        };
        let want = mean_out(&dense);
        for method in [OneShotMethod::Wanda, OneShotMethod::SparseGpt] {
            for bias_correction in [true, false] {
                let mut g = dense.clone();
                let cfg = OneShotConfig {
                    bias_correction,
                    refit: bias_correction,
                    ..OneShotConfig::new(method, 0.5)
                };
                prune_sequentially(&mut g, &feeds, None, &cfg).unwrap();
                let worst = mean_out(&g)
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert_eq!(worst <= 1e-4, bias_correction, "{method:?}: {worst}");
            }
        }
    }

    /// Explicit per-layer targets prune the layers named, each to its own fraction, and leave
    /// the others dense; a target outside (0, 1) is an error naming the layer.
    #[test]
    fn per_layer_targets_prune_only_the_layers_named() {
        use secateur_graph::GraphBuilder;
        let (mut b, x) = GraphBuilder::new("two", &[12], 5);
        let h = b.linear("fc1", &x, 8).unwrap();
        let y = b.linear("fc2", &h, 5).unwrap();
        let dense = b.finish(&y).unwrap();
        let rows = Tensor::from_fn(vec![30, 12], |i| ((i * 29) % 17) as f32 / 17.0 - 0.3);
        let feeds = vec![vec![("input", rows)]];
        for method in [OneShotMethod::Wanda, OneShotMethod::SparseGpt] {
            let mut g = dense.clone();
            let cfg = OneShotConfig {
                targets: BTreeMap::from([("fc1".to_string(), 0.25)]),
                ..OneShotConfig::new(method, 0.5)
            };
            let pruned = prune_sequentially(&mut g, &feeds, None, &cfg).unwrap();
            assert_eq!(pruned, ["fc1.weight"], "{method:?}");
            assert_eq!(g.initializers["fc1.weight"].count_zeros(), 24, "{method:?}");
            assert_eq!(
                g.initializers["fc2.weight"],
                dense.initializers["fc2.weight"]
            );
            let bad = OneShotConfig {
                targets: BTreeMap::from([("fc2".to_string(), 1.0)]),
                ..cfg
            };
            let err = prune_sequentially(&mut dense.clone(), &feeds, None, &bad).unwrap_err();
            assert!(err.to_string().contains("'fc2'"), "{err}");
        }
    }

    #[test]
    fn wanda_prunes_each_output_by_score() {
        // 2 outputs x 4 inputs; input norms favour inputs 0 and 3
        let w = [1.0, 1.0, 1.0, 0.1, 0.2, 2.0, 0.1, 1.0];
        let norms = [4.0, 1.0, 1.0, 10.0];
        let cfg = OneShotConfig::new(OneShotMethod::Wanda, 0.5);
        // row 0 scores 4, 1, 1, 1: two of the 1s go (lowest indices first among ties)
        // row 1 scores 0.8, 2, 0.1, 10: inputs 2 and 0 go
        let keep = wanda_keep(&w, 2, 4, &norms, &cfg);
        assert_eq!(keep.iter().filter(|k| !**k).count(), 4);
        assert!(keep[0] && keep[4 + 1] && keep[4 + 3] && !keep[4] && !keep[4 + 2]);
        let nm = OneShotConfig {
            nm: Some((1, 2)),
            ..cfg
        };
        let keep = wanda_keep(&w, 2, 4, &norms, &nm);
        assert_eq!(
            keep,
            vec![true, false, false, true, false, true, false, true]
        );
    }
}
