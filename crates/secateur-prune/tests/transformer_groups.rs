//! Structured pruning of transformers, on a tiny BERT built in the test (2 layers, 4 heads, no
//! download): the heads of each layer form one group through the reshape to
//! `[batch, heads, seq, head_dim]` (Q, K, V output features of a head and the output
//! projection's input features, found by axis links, not names), the FFN's intermediate
//! features another; removing heads or neurons equals zeroing them, and the pruned model runs
//! in ONNX Runtime with the same outputs.

use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, random_bert};
use secateur_graph::{AxisRole, Graph, Op, Tensor, evaluate};
use secateur_prune::structured::*;
use secateur_testkit::{ort_run_inputs, require_python};
use std::collections::HashMap;

fn tiny_bert() -> Graph {
    let cfg = BertConfig {
        vocab_size: 60,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 24,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: HiddenAct::Gelu,
        position_offset: 0,
    };
    random_bert(&cfg, 8, Pooling::Mean, 3).unwrap()
}

fn feeds() -> Vec<(&'static str, Tensor)> {
    let ids = Tensor::from_fn(vec![2, 8], |i| ((i * 7 + 3) % 60) as f32);
    let mask = Tensor::from_fn(
        vec![2, 8],
        |i| if i % 8 < 8 - 3 * (i / 8) { 1.0 } else { 0.0 },
    );
    vec![("input_ids", ids), ("attention_mask", mask)]
}

#[test]
fn heads_and_neurons_are_found_by_axis_links() {
    let g = tiny_bert();
    let deps = DependencyGraph::build(&g).unwrap();
    let kinds: Vec<GroupKind> = deps.groups.iter().map(|g| g.kind).collect();
    assert_eq!(
        kinds,
        vec![
            GroupKind::Heads,
            GroupKind::Neurons,
            GroupKind::Heads,
            GroupKind::Neurons
        ]
    );
    for (layer, pair) in deps.groups.chunks(2).enumerate() {
        let heads = &pair[0];
        assert_eq!(heads.channels(), 4);
        let params: Vec<(&str, AxisRole)> = heads
            .members
            .iter()
            .filter_map(|m| m.param.as_ref().map(|p| (m.at.value.as_str(), p.axis)))
            .collect();
        for proj in ["query", "key", "value"] {
            let w = format!("encoder.layer.{layer}.attention.self.{proj}.weight");
            assert!(params.contains(&(w.as_str(), AxisRole::OutChannels)), "{w}");
        }
        let out = format!("encoder.layer.{layer}.attention.output.dense.weight");
        assert!(params.contains(&(out.as_str(), AxisRole::InChannels)));
        // head 2 covers features 8..12 of the query weight's output axis
        let m = heads
            .members
            .iter()
            .position(|m| m.at.value.ends_with("self.query.weight"))
            .unwrap();
        assert_eq!(heads.indices[2][m], vec![8, 9, 10, 11]);
        assert_eq!(pair[1].channels(), 24);
    }
}

fn prune(g: &Graph, kinds: Vec<GroupKind>) -> (Graph, Graph) {
    let deps = DependencyGraph::build(g).unwrap();
    let cfg = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.5),
        kinds,
        ..Default::default()
    };
    let plan = plan_channels(g, &deps, &cfg, &HashMap::new()).unwrap();
    let pruned = apply_plan(g, &deps, &plan).unwrap();
    let mut zeroed = g.clone();
    for e in &plan.entries {
        let group = deps.group(&e.group).unwrap();
        let removed: Vec<usize> = (0..group.channels())
            .filter(|c| !e.keep.contains(c))
            .collect();
        zero_channels(&mut zeroed, group, &removed).unwrap();
    }
    (pruned, zeroed)
}

#[test]
fn removing_heads_or_neurons_equals_zeroing_them() {
    let g = tiny_bert();
    let dense = evaluate(&g, &feeds()).unwrap().remove(0);
    for kinds in [
        vec![GroupKind::Heads],
        vec![GroupKind::Neurons],
        vec![GroupKind::Heads, GroupKind::Neurons],
    ] {
        let (pruned, zeroed) = prune(&g, kinds.clone());
        let a = evaluate(&pruned, &feeds()).unwrap().remove(0);
        let b = evaluate(&zeroed, &feeds()).unwrap().remove(0);
        assert!(
            a.max_abs_diff(&b) <= 1e-5,
            "{kinds:?}: {}",
            a.max_abs_diff(&b)
        );
        assert!(
            a.max_abs_diff(&dense) > 1e-4,
            "{kinds:?}: pruning changed nothing"
        );
        let q = &pruned.initializers["encoder.layer.0.attention.self.query.weight"];
        let f = &pruned.initializers["encoder.layer.0.intermediate.dense.weight"];
        let heads_kept = kinds.contains(&GroupKind::Heads);
        assert_eq!(q.shape(), &[16, if heads_kept { 8 } else { 16 }]);
        assert_eq!(
            f.shape(),
            &[
                16,
                if kinds.contains(&GroupKind::Neurons) {
                    12
                } else {
                    24
                }
            ]
        );
        // the reshape into heads now splits 8 features into 2 heads of 4
        let reshape = pruned
            .nodes
            .iter()
            .find(|n| n.name == "encoder.layer.0.attention.self/query/Reshape")
            .unwrap();
        if let (Op::Reshape(r), true) = (&reshape.op, heads_kept) {
            assert_eq!(r.shape, vec![0, 0, 2, 4]);
        }
    }
}

#[test]
fn pruned_bert_runs_in_onnx_runtime_with_our_outputs() {
    let Some(py) = require_python() else { return };
    let (pruned, _) = prune(&tiny_bert(), vec![GroupKind::Heads, GroupKind::Neurons]);
    let ours = evaluate(&pruned, &feeds()).unwrap().remove(0);
    let bytes = secateur_onnx::to_bytes(&pruned).unwrap();
    let f = feeds();
    let named: Vec<(&str, &Tensor)> = f.iter().map(|(n, t)| (*n, t)).collect();
    let ort = ort_run_inputs(&py, &bytes, &named).unwrap().remove(0);
    assert!(
        ort.max_abs_diff(&ours) <= 1e-5,
        "{}",
        ort.max_abs_diff(&ours)
    );
}

/// Calibration batches of random token ids (all rows real tokens).
fn calibration(batches: usize) -> Vec<Vec<(&'static str, Tensor)>> {
    (0..batches)
        .map(|b| {
            let ids = Tensor::from_fn(vec![4, 8], |i| ((i * 13 + b * 7 + 1) % 60) as f32);
            vec![
                ("input_ids", ids),
                ("attention_mask", Tensor::full(vec![4, 8], 1.0)),
            ]
        })
        .collect()
}

/// Squared output difference to the dense model over `feeds`.
fn output_error(g: &Graph, feeds: &[Vec<(&str, Tensor)>]) -> f32 {
    let d0 = tiny_bert();
    feeds
        .iter()
        .map(|f| {
            let a = evaluate(g, f).unwrap().remove(0);
            let b = evaluate(&d0, f).unwrap().remove(0);
            a.data()
                .iter()
                .zip(b.data())
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
        })
        .sum()
}

#[test]
fn sparsegpt_and_wanda_beat_magnitude_on_a_tiny_bert() {
    use secateur_prune::weights::*;
    let dense = tiny_bert();
    let calib = calibration(6);
    let held_out: Vec<_> = calibration(9).split_off(6);
    let linear = |g: &Graph| {
        prunable_weights(g)
            .unwrap()
            .into_iter()
            .filter(|l| l.shape.len() == 2)
            .count()
    };
    let mut errors = Vec::new();
    for method in [OneShotMethod::SparseGpt, OneShotMethod::Wanda] {
        let mut g = dense.clone();
        let cfg = OneShotConfig::new(method, 0.5);
        let pruned = prune_sequentially(&mut g, &calib, None, &cfg).unwrap();
        assert_eq!(pruned.len(), linear(&dense), "{method:?}");
        for w in &pruned {
            let t = &g.initializers[w];
            assert_eq!(t.count_zeros() * 2, t.len(), "{method:?} {w}");
        }
        errors.push(output_error(&g, &held_out));
    }
    let mut m = dense.clone();
    let cfg = WeightPruneConfig {
        criterion: Criterion::Magnitude { l2: false },
        granularity: Granularity::Unstructured,
        sparsity: Some(0.5),
        scope: Scope::PerLayer,
        exclude: Vec::new(),
        seed: 0,
        min_density: None,
    };
    let masks = compute_masks(&m, &cfg, &CriterionData::default()).unwrap();
    apply_masks(&mut m, masks).unwrap();
    let magnitude = output_error(&m, &held_out);
    let (sparsegpt, wanda) = (errors[0], errors[1]);
    assert!(
        sparsegpt < wanda && wanda < magnitude,
        "SparseGPT {sparsegpt}, Wanda {wanda}, magnitude {magnitude}"
    );
}

#[test]
fn least_squares_refit_recovers_structured_pruning() {
    use secateur_prune::weights::collect_grams;
    let dense = tiny_bert();
    let calib = calibration(8);
    let held_out: Vec<_> = calibration(11).split_off(8);
    let grams = collect_grams(&dense, &calib, None).unwrap();
    let deps = DependencyGraph::build(&dense).unwrap();
    let mut errors = Vec::new();
    for criterion in [GroupCriterion::L1, GroupCriterion::Activation] {
        let cfg = ChannelPruneConfig {
            target: StructuredTarget::Ratio(0.5),
            criterion,
            kinds: vec![GroupKind::Heads, GroupKind::Neurons],
            ..Default::default()
        };
        let data = activation_importance(&dense, &grams).unwrap();
        let plan = plan_channels(&dense, &deps, &cfg, &data).unwrap();
        let pruned = apply_plan(&dense, &deps, &plan).unwrap();
        let mut refit = pruned.clone();
        let layers = reconstruct_consumers(&dense, &mut refit, &deps, &plan, &grams).unwrap();
        // the attention output projections and the second FFN layers of both encoder layers
        assert_eq!(layers.len(), 4, "{layers:?}");
        let (before, after) = (
            output_error(&pruned, &held_out),
            output_error(&refit, &held_out),
        );
        assert!(
            after < before,
            "{criterion}: refit {after} vs plain {before}"
        );
        errors.push(after);
    }
    assert!(errors.iter().all(|e| e.is_finite()));
}

#[test]
fn a_global_ratio_removes_that_fraction_of_each_kind() {
    let g = tiny_bert();
    let deps = DependencyGraph::build(&g).unwrap();
    let cfg = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.5),
        allocation: Allocation::Global,
        normalizer: Normalizer::None,
        kinds: vec![GroupKind::Heads, GroupKind::Neurons],
        ..Default::default()
    };
    let plan = plan_channels(&g, &deps, &cfg, &HashMap::new()).unwrap();
    let kept = |kind: GroupKind| -> usize {
        deps.groups
            .iter()
            .filter(|gr| gr.kind == kind)
            .map(|gr| {
                plan.entries
                    .iter()
                    .find(|e| e.group == gr.name)
                    .map_or(gr.channels(), |e| e.keep.len())
            })
            .sum()
    };
    // heads and neurons are ranked separately: half of the 8 heads and half of the 48 neurons
    // stay, wherever their scores put them
    assert_eq!(kept(GroupKind::Heads), 4);
    assert_eq!(kept(GroupKind::Neurons), 24);
}

/// The sequential refit leaves every refitted layer (attention output projections, second FFN
/// layers) closer to the dense model where that layer's residual sum is taken, on the inputs
/// the final pruned model gives it, than either the plain pruned weights or the refit from the
/// dense model's statistics; and the whole model closer on held-out inputs than plain pruning.
#[test]
fn sequential_refit_fits_each_layer_on_the_pruned_models_inputs() {
    use secateur_graph::evaluate_all;
    use secateur_prune::weights::collect_grams;
    let dense = tiny_bert();
    let calib = calibration(8);
    let held_out: Vec<_> = calibration(11).split_off(8);
    let grams = collect_grams(&dense, &calib, None).unwrap();
    let deps = DependencyGraph::build(&dense).unwrap();
    let cfg = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.5),
        criterion: GroupCriterion::Activation,
        kinds: vec![GroupKind::Heads, GroupKind::Neurons],
        ..Default::default()
    };
    let data = activation_importance(&dense, &grams).unwrap();
    let plan = plan_channels(&dense, &deps, &cfg, &data).unwrap();
    let pruned = apply_plan(&dense, &deps, &plan).unwrap();
    let mut sequential = pruned.clone();
    let layers =
        reconstruct_sequential(&dense, &mut sequential, &deps, &plan, &calib, None).unwrap();
    assert_eq!(layers.len(), 4, "{layers:?}");
    let mut from_dense = pruned.clone();
    reconstruct_consumers(&dense, &mut from_dense, &deps, &plan, &grams).unwrap();
    let shapes = sequential.infer_shapes().unwrap();
    // squared distance to the dense model of the residual sum after `weight`'s layer, over the
    // calibration batches, in `g`
    let layer_error = |g: &Graph, weight: &str| -> f64 {
        let ni = g
            .nodes
            .iter()
            .position(|n| n.inputs.get(1).is_some_and(|w| w == weight))
            .unwrap();
        let (add, _) = g.fused_chain(ni, &shapes).residual.expect("a residual sum");
        let value = &g.nodes[add].outputs[0];
        calib
            .iter()
            .map(|f| {
                let (a, b) = (
                    evaluate_all(g, f).unwrap(),
                    evaluate_all(&dense, f).unwrap(),
                );
                a[value]
                    .data()
                    .iter()
                    .zip(b[value].data())
                    .map(|(x, y)| ((x - y) as f64).powi(2))
                    .sum::<f64>()
            })
            .sum()
    };
    for weight in &layers {
        let ni = sequential
            .nodes
            .iter()
            .position(|n| n.inputs.get(1) == Some(weight))
            .unwrap();
        let (_, bias) = sequential.fused_chain(ni, &shapes).bias.expect("a bias");
        let fitted = layer_error(&sequential, weight);
        for (name, alternative) in [("plain", &pruned), ("dense refit", &from_dense)] {
            // this layer's weight and bias from the alternative, every other layer as fitted
            let mut g = sequential.clone();
            for v in [weight, &bias] {
                g.initializers
                    .insert(v.clone(), alternative.initializers[v].clone());
            }
            let other = layer_error(&g, weight);
            assert!(
                fitted < other,
                "{weight}: sequential refit {fitted} vs {name} {other}"
            );
        }
    }
    let (before, after) = (
        output_error(&pruned, &held_out),
        output_error(&sequential, &held_out),
    );
    assert!(after < before, "sequential refit {after} vs plain {before}");
    for weight in &layers {
        check_centred_ridge_solution(&dense, &sequential, weight, &calib);
    }
}

/// `weight` and its bias in `fitted` are the centred ridge solution (damping 1 % of the mean
/// diagonal) of its layer's inputs in `fitted` against the dense model's residual sum minus
/// the residual `fitted` adds, solved here by plain elimination.
fn check_centred_ridge_solution(
    dense: &Graph,
    fitted: &Graph,
    weight: &str,
    calib: &[Vec<(&str, Tensor)>],
) {
    use secateur_graph::evaluate_all;
    let shapes = fitted.infer_shapes().unwrap();
    let ni = fitted
        .nodes
        .iter()
        .position(|n| n.inputs.get(1).is_some_and(|w| w == weight))
        .unwrap();
    let chain = fitted.fused_chain(ni, &shapes);
    let (add, residual) = chain.residual.expect("a residual sum");
    let (_, bias) = chain.bias.expect("a bias");
    let (input, sum) = (&fitted.nodes[ni].inputs[0], &fitted.nodes[add].outputs[0]);
    let w = &fitted.initializers[weight];
    let (s, m) = (w.shape()[0], w.shape()[1]);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for f in calib {
        let (vf, vd) = (
            evaluate_all(fitted, f).unwrap(),
            evaluate_all(dense, f).unwrap(),
        );
        xs.extend(vf[input].data().iter().map(|&v| v as f64));
        let target = vd[sum].data().iter().zip(vf[&residual].data());
        ys.extend(target.map(|(a, b)| (a - b) as f64));
    }
    let n = xs.len() / s;
    let mean = |v: &[f64], d: usize, j: usize| (0..n).map(|r| v[r * d + j]).sum::<f64>() / n as f64;
    let xm: Vec<f64> = (0..s).map(|j| mean(&xs, s, j)).collect();
    let ym: Vec<f64> = (0..m).map(|j| mean(&ys, m, j)).collect();
    // augmented [A + λI | B], A and B centred
    let mut a = vec![0.0f64; s * (s + m)];
    for r in 0..n {
        for p in 0..s {
            let xp = xs[r * s + p] - xm[p];
            for q in 0..s {
                a[p * (s + m) + q] += xp * (xs[r * s + q] - xm[q]);
            }
            for k in 0..m {
                a[p * (s + m) + s + k] += xp * (ys[r * m + k] - ym[k]);
            }
        }
    }
    let lambda = 1e-2 * (0..s).map(|p| a[p * (s + m) + p]).sum::<f64>() / s as f64;
    for p in 0..s {
        a[p * (s + m) + p] += lambda;
    }
    for p in 0..s {
        for q in 0..s {
            if q != p {
                let f = a[q * (s + m) + p] / a[p * (s + m) + p];
                for c in 0..s + m {
                    a[q * (s + m) + c] -= f * a[p * (s + m) + c];
                }
            }
        }
    }
    let want = |p: usize, k: usize| a[p * (s + m) + s + k] / a[p * (s + m) + p];
    let scale = w.data().iter().fold(1e-3f32, |acc, v| acc.max(v.abs())) as f64;
    for p in 0..s {
        for k in 0..m {
            let got = w.data()[p * m + k] as f64;
            assert!(
                (got - want(p, k)).abs() < 1e-3 * scale,
                "{weight}[{p}][{k}]: {got} vs {}",
                want(p, k)
            );
        }
    }
    let b = &fitted.initializers[&bias];
    for (k, y_mean) in ym.iter().enumerate() {
        let want_b = y_mean - (0..s).map(|p| xm[p] * want(p, k)).sum::<f64>();
        assert!(
            (b.data()[k] as f64 - want_b).abs() < 1e-3 * scale.max(want_b.abs()),
            "{bias}[{k}]: {} vs {want_b}",
            b.data()[k]
        );
    }
}
