//! Structured pruning: plans meet their targets with rounding and bounds, importance criteria
//! rank hand-made examples correctly, plans round-trip as data, depth pruning finds and removes
//! residual blocks, every pruned zoo model runs in ONNX Runtime with the expected shapes, and
//! the zero-masking equivalence holds on ONNX files written in the style of PyTorch exports.

use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Graph, GraphBuilder, Tensor, evaluate, summarize};
use secateur_prune::structured::*;
use secateur_testkit::{ort_run, random_tensor, randomize_weights, require_python};
use std::collections::HashMap;
use std::process::Command;

fn lenet() -> Graph {
    let mut g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    randomize_weights(&mut g, 5);
    g
}

fn cfg(target: StructuredTarget) -> ChannelPruneConfig {
    ChannelPruneConfig {
        target,
        ..Default::default()
    }
}

#[test]
fn uniform_ratio_with_rounding_and_bounds() {
    let g = lenet();
    let deps = DependencyGraph::build(&g).unwrap();
    let mut c = cfg(StructuredTarget::Ratio(0.6));
    c.round_to = 8;
    let plan = plan_channels(&g, &deps, &c, &HashMap::new()).unwrap();
    let kept: HashMap<&str, usize> = plan
        .entries
        .iter()
        .map(|e| (e.group.as_str(), e.keep.len()))
        .collect();
    // conv1 32 -> 12.8 -> 13 -> 16; conv2 64 -> 26 -> 32; fc1 256 -> 102 -> 104
    assert_eq!(kept["conv1"], 16);
    assert_eq!(kept["conv2"], 32);
    assert_eq!(kept["fc1"], 104);
    let mut c = cfg(StructuredTarget::Ratio(0.99));
    c.min_keep = 0.25;
    let plan = plan_channels(&g, &deps, &c, &HashMap::new()).unwrap();
    assert!(plan.entries.iter().all(|e| e.keep.len() * 4 >= e.channels));
}

#[test]
fn mac_and_param_targets_are_met() {
    let g = lenet();
    let deps = DependencyGraph::build(&g).unwrap();
    let base = summarize(&g).unwrap();
    for alloc in [Allocation::Uniform, Allocation::Global] {
        for f in [0.5, 0.25] {
            let mut c = cfg(StructuredTarget::Macs(f));
            c.allocation = alloc;
            let plan = plan_channels(&g, &deps, &c, &HashMap::new()).unwrap();
            let pruned = apply_plan(&g, &deps, &plan).unwrap();
            let macs = summarize(&pruned).unwrap().total_macs as f64 / base.total_macs as f64;
            assert!(
                macs <= f && macs > f * 0.85,
                "{alloc:?} {f}: kept {macs} of the MACs"
            );
        }
    }
    let plan = plan_channels(
        &g,
        &deps,
        &cfg(StructuredTarget::Params(0.3)),
        &HashMap::new(),
    )
    .unwrap();
    let p = summarize(&apply_plan(&g, &deps, &plan).unwrap())
        .unwrap()
        .total_params as f64
        / base.total_params as f64;
    assert!(p <= 0.3 && p > 0.25, "{p}");
}

#[test]
fn sensitivity_allocation_spares_the_groups_that_hurt_and_meets_the_target() {
    let g = lenet();
    let deps = DependencyGraph::build(&g).unwrap();
    let base = summarize(&g).unwrap();
    // conv2 is fragile, conv1 and fc1 cost nothing to prune until 75 %
    let curve = |steep: f64| vec![(0.25, 0.0), (0.5, steep * 0.5), (0.75, steep), (0.9, 4.0)];
    let mut c = cfg(StructuredTarget::Macs(0.5));
    c.allocation = Allocation::Sensitivity;
    c.drop_curves = [("conv1", 0.01), ("conv2", 2.0), ("fc1", 0.01)]
        .into_iter()
        .map(|(name, steep)| (name.to_string(), curve(steep)))
        .collect();
    let plan = plan_channels(&g, &deps, &c, &HashMap::new()).unwrap();
    let pruned = apply_plan(&g, &deps, &plan).unwrap();
    let macs = summarize(&pruned).unwrap().total_macs as f64 / base.total_macs as f64;
    assert!(macs <= 0.5 && macs > 0.49, "kept {macs} of the MACs");
    let kept = |group: &str| {
        let e = plan.entries.iter().find(|e| e.group == group);
        e.map_or(1.0, |e| e.keep.len() as f64 / e.channels as f64)
    };
    // conv2 loses only what is free on its curve; conv1 (cheap damage, many MACs) pays
    assert!(
        kept("conv2") >= 0.75 && kept("conv2") > kept("conv1"),
        "conv1 {} conv2 {} fc1 {}",
        kept("conv1"),
        kept("conv2"),
        kept("fc1")
    );
    // a ratio target removes that fraction of all channels, from the cheap groups first
    c.target = StructuredTarget::Ratio(0.3);
    let plan = plan_channels(&g, &deps, &c, &HashMap::new()).unwrap();
    let removed: usize = plan.entries.iter().map(|e| e.channels - e.keep.len()).sum();
    assert!(
        (105..=110).contains(&removed),
        "{removed} of 352 channels removed"
    );
    assert!(
        plan.entries
            .iter()
            .filter(|e| e.group == "conv2")
            .all(|e| e.keep.len() * 4 >= e.channels * 3),
        "conv2 pruned past the free part of its curve"
    );
    // every group needs its curve
    c.drop_curves.remove("fc1");
    let e = plan_channels(&g, &deps, &c, &HashMap::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("fc1") && e.contains("curve"), "{e}");
    c.drop_curves.insert("fc1".into(), vec![(0.5, f64::NAN)]);
    assert!(plan_channels(&g, &deps, &c, &HashMap::new()).is_err());
}

#[test]
fn impossible_targets_are_explained() {
    let g = lenet();
    let deps = DependencyGraph::build(&g).unwrap();
    let e = plan_channels(
        &g,
        &deps,
        &cfg(StructuredTarget::Macs(0.001)),
        &HashMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("impossible") && e.contains('%'), "{e}");
    let e = plan_channels(
        &g,
        &deps,
        &cfg(StructuredTarget::Ratio(1.0)),
        &HashMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("[0, 1)"), "{e}");
    let mut c = cfg(StructuredTarget::Ratio(0.5));
    c.exclude = vec!["nope".into()];
    assert!(
        plan_channels(&g, &deps, &c, &HashMap::new())
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
    // a plan for another model is refused
    let other = zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap();
    let plan = plan_channels(
        &g,
        &deps,
        &cfg(StructuredTarget::Ratio(0.5)),
        &HashMap::new(),
    )
    .unwrap();
    let odeps = DependencyGraph::build(&other).unwrap();
    assert!(apply_plan(&other, &odeps, &plan).is_err());
}

#[test]
fn plans_are_data_that_replay() {
    let g = lenet();
    let deps = DependencyGraph::build(&g).unwrap();
    let plan = plan_channels(
        &g,
        &deps,
        &cfg(StructuredTarget::Macs(0.5)),
        &HashMap::new(),
    )
    .unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    assert_eq!(
        apply_plan(&g, &deps, &back).unwrap(),
        apply_plan(&g, &deps, &plan).unwrap()
    );
    assert!(plan.describe().contains("conv2: 64 →"));
}

/// A conv with four filters of known norms followed by BN (γ chosen) and a linear head.
fn hand_made() -> Graph {
    let (mut b, x) = GraphBuilder::new("h", &[1, 3, 3], 0);
    let c = b.conv("conv", &x, 4, 3, 1, 0, 1, false).unwrap();
    let n = b.batch_norm("bn", &c).unwrap();
    let f = b.flatten("f", &n).unwrap();
    let y = b.linear("fc", &f, 2).unwrap();
    let mut g = b.finish(&y).unwrap();
    // filter k is all (k+1)/10 except filter 2, which is far from the others
    let mut w = vec![0.0; 36];
    for k in 0..4 {
        for i in 0..9 {
            w[k * 9 + i] = if k == 2 { 0.9 } else { (k + 1) as f32 / 10.0 };
        }
    }
    g.initializers.insert(
        "conv.weight".into(),
        Tensor::new(vec![4, 1, 3, 3], w).unwrap(),
    );
    g.initializers.insert(
        "bn.weight".into(),
        Tensor::new(vec![4], vec![0.5, 0.1, 2.0, 1.0]).unwrap(),
    );
    g.initializers
        .insert("fc.weight".into(), Tensor::full(vec![2, 4], 0.1));
    g
}

#[test]
fn criteria_rank_hand_made_channels() {
    let g = hand_made();
    let deps = DependencyGraph::build(&g).unwrap();
    let group = deps.group("conv").unwrap();
    let score = |c: GroupCriterion| {
        group_scores(
            &g,
            group,
            c,
            Reduction::Sum,
            Normalizer::None,
            &HashMap::new(),
            0,
        )
        .unwrap()
    };
    let l1 = score(GroupCriterion::L1);
    assert!(l1[0] < l1[1] && l1[1] < l1[3] && l1[3] < l1[2], "{l1:?}");
    let bn = score(GroupCriterion::BnScale);
    assert!(bn[1] < bn[0] && bn[0] < bn[3] && bn[3] < bn[2], "{bn:?}");
    // FPGM: filters are points 0.1, 0.2, 0.9, 0.4 on a line; the two middle ones (0.2, 0.4)
    // are closest to the geometric median (least important), 0.9 is farthest
    let fp = score(GroupCriterion::Fpgm);
    assert!(
        (fp[1] - fp[3]).abs() < 1e-6 && fp[1] < fp[0] && fp[0] < fp[2],
        "{fp:?}"
    );
    let r1 = score(GroupCriterion::Random);
    assert_eq!(r1, score(GroupCriterion::Random));
    // Taylor uses the provided per-weight scores
    let mut t = HashMap::new();
    t.insert(
        "conv.weight".into(),
        (0..36)
            .map(|i| if i < 9 { 5.0 } else { 0.0 })
            .collect::<Vec<f32>>(),
    );
    t.insert("fc.weight".into(), vec![0.0; 8]);
    let ty = group_scores(
        &g,
        group,
        GroupCriterion::Taylor,
        Reduction::Sum,
        Normalizer::None,
        &t,
        0,
    )
    .unwrap();
    assert!(ty[0] > ty[1] && ty[0] > ty[2]);
    assert!(
        group_scores(
            &g,
            group,
            GroupCriterion::Taylor,
            Reduction::Sum,
            Normalizer::None,
            &HashMap::new(),
            0
        )
        .is_err()
    );
}

#[test]
fn residual_blocks_are_found_and_removed() {
    let mut g = zoo::build(ZooModel::Resnet20, &ZooConfig::default()).unwrap();
    randomize_weights(&mut g, 2);
    let blocks = residual_blocks(&g).unwrap();
    // 3 stages x 3 blocks, the first block of stages 2 and 3 changes shape (projection)
    assert_eq!(
        blocks.len(),
        7,
        "{:?}",
        blocks.iter().map(|b| &b.name).collect::<Vec<_>>()
    );
    let b = blocks.iter().find(|b| b.name == "layer2.1.add").unwrap();
    assert!(
        b.nodes.contains(&"layer2.1.a.conv".to_string())
            && b.nodes.contains(&"layer2.1.b.bn".to_string())
    );
    let smaller = remove_block(&g, b).unwrap();
    // conv, bn, relu, conv, bn of the branch and the add
    assert_eq!(smaller.nodes.len(), g.nodes.len() - 6);
    assert!(summarize(&smaller).unwrap().total_macs < summarize(&g).unwrap().total_macs);
    let x = random_tensor(&[2, 1, 28, 28], 3);
    assert_eq!(
        evaluate(&smaller, &[("input", x)]).unwrap()[0].shape(),
        &[2, 10]
    );
    // removal driven by a damage measure picks the least damaging block first
    let mut calls = 0;
    let (g2, removed) = remove_blocks(&g, 2, false, &mut |c: &Graph| {
        calls += 1;
        Ok(c.nodes
            .iter()
            .filter(|n| n.name.starts_with("layer3"))
            .count() as f64)
    })
    .unwrap();
    assert_eq!(removed.len(), 2);
    assert!(
        removed.iter().all(|(n, _)| n.starts_with("layer3")),
        "{removed:?}"
    );
    assert!(calls >= 7 + 6);
    g2.check().unwrap();
    // MLP layers change shape: nothing to remove
    let mlp = zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap();
    assert!(residual_blocks(&mlp).unwrap().is_empty() && identity_layers(&mlp).unwrap().is_empty());
}

#[test]
fn pruned_zoo_models_run_in_onnx_runtime() {
    let Some(py) = require_python() else { return };
    for m in ZooModel::ALL {
        let mut g = zoo::build(m, &ZooConfig::default()).unwrap();
        randomize_weights(&mut g, 8);
        let deps = DependencyGraph::build(&g).unwrap();
        let mut c = cfg(StructuredTarget::Macs(0.5));
        c.round_to = 4;
        let plan = plan_channels(&g, &deps, &c, &HashMap::new()).unwrap();
        let p = apply_plan(&g, &deps, &plan).unwrap();
        let x = random_tensor(&[3, 1, 28, 28], 4);
        let ours = evaluate(&p, &[("input", x.clone())]).unwrap();
        let theirs = ort_run(&py, &secateur_onnx::to_bytes(&p).unwrap(), "input", &x).unwrap();
        assert_eq!(theirs[0].shape(), &[3, 10], "{m}");
        assert!(ours[0].max_abs_diff(&theirs[0]) <= 1e-4, "{m}");
    }
}

#[test]
fn equivalence_on_pytorch_style_onnx_files() {
    let Some(py) = require_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../secateur-onnx/tests/pytorch_style.py"
    );
    let out = Command::new(&py)
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut groups_checked = 0;
    for case in manifest {
        let path = case["path"].as_str().unwrap();
        let g = secateur_onnx::load_model(path).unwrap();
        let deps = DependencyGraph::build(&g).unwrap();
        let shape: Vec<usize> = case["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let x = random_tensor(&shape, 6);
        for group in &deps.groups {
            let n = group.channels();
            if n < 2 {
                continue;
            }
            let keep: Vec<usize> = (0..n).filter(|k| k % 2 == 0).collect();
            let removed: Vec<usize> = (0..n).filter(|k| k % 2 == 1).collect();
            let mut plan = Plan::default();
            plan.keep(group, keep);
            let pruned = apply_plan(&g, &deps, &plan)
                .unwrap_or_else(|e| panic!("{path}/{}: {e}", group.name));
            let mut zeroed = g.clone();
            zero_channels(&mut zeroed, group, &removed).unwrap();
            let a = evaluate(&pruned, &[("input", x.clone())]).unwrap();
            let b = evaluate(&zeroed, &[("input", x.clone())]).unwrap();
            assert!(a[0].max_abs_diff(&b[0]) <= 1e-5, "{path}/{}", group.name);
            groups_checked += 1;
        }
    }
    assert!(groups_checked >= 8, "{groups_checked}");
}
