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
        let cfg = OneShotConfig {
            method,
            sparsity: 0.5,
            nm: None,
            exclude: Vec::new(),
        };
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
