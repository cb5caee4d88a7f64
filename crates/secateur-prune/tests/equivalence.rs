//! For any group, zeroing its channels in the original model gives the same outputs as the
//! physically pruned model, on the zoo models, a graph with Concat, and ONNX models written in
//! the style of PyTorch exports; every pruned model exports to ONNX that ONNX Runtime runs.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Activation, Graph, GraphBuilder, evaluate};
use secateur_prune::structured::{DependencyGraph, Plan, apply_plan, zero_channels};
use secateur_testkit::{random_tensor, randomize_weights};

fn concat_net() -> Graph {
    let (mut b, x) = GraphBuilder::new("concat-net", &[3, 12, 12], 7);
    let s = b.conv_bn("stem", &x, 8, 3, 1, 1, Activation::Relu).unwrap();
    let l = b.conv_bn("left", &s, 6, 1, 1, 1, Activation::Relu).unwrap();
    let r = b
        .conv_bn("right", &s, 10, 3, 1, 1, Activation::Relu)
        .unwrap();
    let c = b.concat("cat", &[&l, &r]).unwrap();
    let m = b.conv_bn("mix", &c, 12, 3, 2, 1, Activation::Relu).unwrap();
    let p = b.global_avg_pool("pool", &m).unwrap();
    let f = b.flatten("flatten", &p).unwrap();
    let y = b.linear("fc", &f, 5).unwrap();
    b.finish(&y).unwrap()
}

fn models() -> Vec<(String, Graph, Vec<usize>)> {
    let fm = ZooConfig::default();
    let mut v = Vec::new();
    for m in ZooModel::ALL {
        let mut g = zoo::build(m, &fm).unwrap();
        randomize_weights(&mut g, 3);
        v.push((m.name().to_string(), g, vec![1, 28, 28]));
    }
    let mut c = concat_net();
    randomize_weights(&mut c, 4);
    v.push(("concat-net".into(), c, vec![3, 12, 12]));
    v
}

fn check_group_equivalence(name: &str, g: &Graph, input: &[usize], rng: &mut ChaCha8Rng) {
    let deps = DependencyGraph::build(g).unwrap();
    assert!(!deps.groups.is_empty(), "{name}: no prunable groups");
    let mut shape = vec![2];
    shape.extend(input);
    let x = random_tensor(&shape, 9);
    for group in &deps.groups {
        let n = group.channels();
        let mut all: Vec<usize> = (0..n).collect();
        all.shuffle(rng);
        let drop = rng.random_range(1..n.max(2)).min(n - 1);
        let removed = &all[..drop];
        let mut keep: Vec<usize> = all[drop..].to_vec();
        keep.sort();
        let mut plan = Plan::default();
        plan.keep(group, keep);
        let pruned =
            apply_plan(g, &deps, &plan).unwrap_or_else(|e| panic!("{name}/{}: {e}", group.name));
        let mut zeroed = g.clone();
        zero_channels(&mut zeroed, group, removed).unwrap();
        let a = evaluate(&pruned, &[("input", x.clone())]).unwrap();
        let b = evaluate(&zeroed, &[("input", x.clone())]).unwrap();
        let diff = a[0].max_abs_diff(&b[0]);
        assert!(
            diff <= 1e-5,
            "{name}/{}: pruned and zero-masked outputs differ by {diff}",
            group.name
        );
        let (p0, _) = g.parameter_counts();
        let (p1, _) = pruned.parameter_counts();
        assert!(
            p1 < p0,
            "{name}/{}: pruning removed no parameters",
            group.name
        );
    }
}

#[test]
fn pruned_equals_zero_masked_for_every_group() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (name, g, input) in models() {
        check_group_equivalence(&name, &g, &input, &mut rng);
    }
}

#[test]
fn expected_groups_on_lenet_and_resnet() {
    let g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let deps = DependencyGraph::build(&g).unwrap();
    let names: Vec<&str> = deps.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec!["conv1", "conv2", "fc1"]);
    let conv2 = deps.group("conv2").unwrap();
    assert_eq!(conv2.channels(), 64);
    // each conv2 channel covers 16 inputs of fc1 after flattening 64x4x4
    let fc1_w = conv2
        .members
        .iter()
        .position(|m| m.at.value == "fc1.weight")
        .unwrap();
    assert_eq!(conv2.indices[3][fc1_w], (48..64).collect::<Vec<_>>());
    assert_eq!(deps.protected, vec!["fc2".to_string()]);

    let r = zoo::build(ZooModel::Resnet8, &ZooConfig::default()).unwrap();
    let deps = DependencyGraph::build(&r).unwrap();
    // the stem and the first block's second conv are tied by the residual add
    assert!(
        deps.groups
            .iter()
            .any(|g| g.name == "stem.conv+layer1.0.b.conv"),
        "{:?}",
        deps.groups.iter().map(|g| &g.name).collect::<Vec<_>>()
    );
    let m = zoo::build(ZooModel::MobilenetV2, &ZooConfig::default()).unwrap();
    let deps = DependencyGraph::build(&m).unwrap();
    // the expansion conv and the depthwise conv after it are one group
    assert!(
        deps.groups
            .iter()
            .any(|g| g.name == "block2.0.expand.conv+block2.0.dw.conv")
    );
}

/// A RegNet-style bottleneck: 1×1 conv, grouped 3×3 conv (4 groups of 4), 1×1 conv, residual.
fn grouped_net() -> Graph {
    let (mut b, x) = GraphBuilder::new("grouped-net", &[3, 10, 10], 5);
    let s = b.conv_bn("stem", &x, 8, 3, 1, 1, Activation::Relu).unwrap();
    let a = b.conv_bn("a", &s, 16, 1, 1, 1, Activation::Relu).unwrap();
    let g = b.conv_bn("g", &a, 16, 3, 1, 4, Activation::Relu).unwrap();
    let c = b.conv_bn("c", &g, 8, 1, 1, 1, Activation::None).unwrap();
    let r = b.add("res", &c, &s).unwrap();
    let p = b.global_avg_pool("pool", &r).unwrap();
    let f = b.flatten("flatten", &p).unwrap();
    let y = b.linear("fc", &f, 5).unwrap();
    b.finish(&y).unwrap()
}

#[test]
fn grouped_convolutions_shrink_every_group_evenly() {
    let mut g = grouped_net();
    randomize_weights(&mut g, 8);
    let deps = DependencyGraph::build(&g).unwrap();
    let group = deps.group("g.conv").unwrap();
    assert_eq!(group.channels(), 16);
    assert_eq!(group.block_count(), 4);
    assert_eq!(group.blocks, (0..16).map(|c| c / 4).collect::<Vec<_>>());
    // the grouped conv's input channels are pinned: the 1×1 conv feeding it is protected
    assert!(
        deps.protected.contains(&"a.conv".to_string()),
        "{:?}",
        deps.protected
    );

    // an uneven choice (3 channels of block 0, 1 of block 1) is refused, not silently wrong
    let mut uneven = Plan::default();
    uneven.keep(group, vec![0, 1, 2, 4]);
    let e = apply_plan(&g, &deps, &uneven).unwrap_err().to_string();
    assert!(
        e.contains("same number of channels in each of its 4 groups"),
        "{e}"
    );

    // the best balanced choice keeps 2 channels of every block, and pruning equals zeroing
    let order: Vec<usize> = (0..16).rev().collect();
    let keep = group.best_balanced(&order, 7);
    assert_eq!(keep, vec![15, 14, 11, 10, 7, 6, 3, 2]);
    assert!(group.is_balanced(&keep));
    let mut plan = Plan::default();
    plan.keep(group, keep.clone());
    let pruned = apply_plan(&g, &deps, &plan).unwrap();
    let removed: Vec<usize> = (0..16).filter(|c| !keep.contains(c)).collect();
    let mut zeroed = g.clone();
    zero_channels(&mut zeroed, group, &removed).unwrap();
    let x = random_tensor(&[2, 3, 10, 10], 4);
    let a = evaluate(&pruned, &[("input", x.clone())]).unwrap();
    let b = evaluate(&zeroed, &[("input", x)]).unwrap();
    let diff = a[0].max_abs_diff(&b[0]);
    assert!(diff <= 1e-5, "pruned and zero-masked differ by {diff}");
    let conv = pruned.nodes.iter().find(|n| n.name == "g.conv").unwrap();
    let secateur_graph::Op::Conv(c) = &conv.op else {
        panic!("g.conv is not a Conv");
    };
    assert_eq!(c.groups, 4);
    assert_eq!(pruned.initializers["g.conv.weight"].shape(), &[8, 4, 3, 3]);
}

#[test]
fn channel_selection_respects_grouped_convolutions() {
    use secateur_prune::structured::{ChannelPruneConfig, StructuredTarget, plan_channels};
    let mut g = grouped_net();
    randomize_weights(&mut g, 9);
    let deps = DependencyGraph::build(&g).unwrap();
    let cfg = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.6),
        ..Default::default()
    };
    let plan = plan_channels(&g, &deps, &cfg, &Default::default()).unwrap();
    let entry = plan.entries.iter().find(|e| e.group == "g.conv").unwrap();
    assert!(deps.group("g.conv").unwrap().is_balanced(&entry.keep));
    assert!(entry.keep.len() < 16);
    apply_plan(&g, &deps, &plan).unwrap();
}
