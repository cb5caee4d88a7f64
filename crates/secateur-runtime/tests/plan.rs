//! Execution plans compute what the reference evaluator computes (within 1e-5 relative) for
//! every zoo model, dense and pruned (unstructured, 2:4, 4×1 blocks, structured, int8), at
//! batch 1 and N, on 1 and 2 threads, with every weight format; the measured plan never picks a
//! kernel slower than dense in its own measurement.

use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Graph, Node, Op, Softmax, Tensor, evaluate};
use secateur_prune::structured::{
    ChannelPruneConfig, DependencyGraph, StructuredTarget, apply_plan, plan_channels,
};
use secateur_prune::weights::{
    Criterion, CriterionData, Granularity, Scope, WeightPruneConfig, apply_masks, compute_masks,
};
use secateur_runtime::kernels::Format;
use secateur_runtime::{ExecPlan, FormatPolicy, LayoutPolicy, PlanConfig};
use secateur_testkit::{random_tensor, randomize_weights};
use std::collections::HashMap;

fn pruned(g: &Graph, granularity: Granularity, sparsity: Option<f64>, exclude: &[&str]) -> Graph {
    let mut g = g.clone();
    let cfg = WeightPruneConfig {
        criterion: Criterion::Magnitude { l2: false },
        granularity,
        sparsity,
        scope: Scope::PerLayer,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        seed: 0,
        min_density: None,
    };
    let m = compute_masks(&g, &cfg, &CriterionData::default()).unwrap();
    apply_masks(&mut g, m).unwrap();
    g
}

fn check(name: &str, g: &Graph, policy: FormatPolicy, batch: usize, threads: usize) {
    let mut shape = vec![batch];
    shape.extend(g.inputs[0].shape.resolve(1)[1..].iter());
    let x = random_tensor(&shape, batch as u64);
    let expect = evaluate(g, &[("input", x.clone())]).unwrap().remove(0);
    for layout in [LayoutPolicy::ChannelsFirst, LayoutPolicy::ChannelsLast] {
        check_layout(name, g, &x, &expect, policy, layout, threads);
    }
}

/// An unmeasured channels-last plan of `g` for one sample on one thread (kernels by rule).
fn dense_channels_last_plan(g: &Graph) -> ExecPlan {
    let config = PlanConfig {
        policy: FormatPolicy::Dense,
        layout: LayoutPolicy::ChannelsLast,
        ..PlanConfig::new(1, 1)
    };
    ExecPlan::compile(g, config).unwrap()
}

/// The names of the steps of one profiled run of `plan` on `input`, in order.
fn step_names(plan: &mut ExecPlan, input: &[f32]) -> Vec<String> {
    let profile = plan.run_profiled(&[input]).unwrap();
    profile.into_iter().map(|(name, _)| name).collect()
}

fn check_layout(
    name: &str,
    g: &Graph,
    x: &Tensor,
    expect: &Tensor,
    policy: FormatPolicy,
    layout: LayoutPolicy,
    threads: usize,
) {
    let batch = x.shape()[0];
    let mut plan = ExecPlan::compile(
        g,
        PlanConfig {
            policy,
            layout,
            ..PlanConfig::new(batch, threads)
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let y = plan.run(x.data()).unwrap().to_vec();
    assert_eq!(plan.output_shape, expect.shape(), "{name}");
    let scale = expect.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = y
        .iter()
        .zip(expect.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff <= 1e-5 * scale,
        "{name} {policy:?} {layout:?} batch {batch} threads {threads}: max diff {diff} (scale {scale})"
    );
    // a second run on the same buffers gives the same result
    let again = plan.run(x.data()).unwrap().to_vec();
    assert_eq!(again, y, "{name}: plans must be re-runnable");
}

fn models() -> Vec<(String, Graph)> {
    let mut v = Vec::new();
    for m in ZooModel::ALL {
        let mut g = zoo::build(m, &ZooConfig::default()).unwrap();
        randomize_weights(&mut g, 17);
        v.push((m.name().to_string(), g));
    }
    v
}

#[test]
fn dense_and_unstructured_plans_match_the_reference() {
    for (name, g) in models() {
        let sparse = pruned(&g, Granularity::Unstructured, Some(0.9), &[]);
        for (variant, graph) in [("dense", &g), ("90%", &sparse)] {
            for (batch, threads) in [(1, 1), (1, 2), (3, 2)] {
                check(
                    &format!("{name}/{variant}"),
                    graph,
                    FormatPolicy::Dense,
                    batch,
                    threads,
                );
                check(
                    &format!("{name}/{variant}"),
                    graph,
                    FormatPolicy::Force(Format::Csr),
                    batch,
                    threads,
                );
            }
        }
    }
}

#[test]
fn structured_formats_match_the_reference() {
    let g = models()
        .into_iter()
        .find(|(n, _)| n == "lenet5-bn")
        .unwrap()
        .1;
    let nm = pruned(&g, Granularity::NM { n: 2, m: 4 }, None, &["conv1"]);
    let blocks = pruned(
        &g,
        Granularity::Block { rows: 4, cols: 1 },
        Some(0.8),
        &["fc2"],
    );
    for (batch, threads) in [(1, 1), (2, 2), (5, 1)] {
        check(
            "lenet 2:4",
            &nm,
            FormatPolicy::Force(Format::Nm { n: 2, m: 4 }),
            batch,
            threads,
        );
        check(
            "lenet 4x1",
            &blocks,
            FormatPolicy::Force(Format::Block { r: 4, c: 1 }),
            batch,
            threads,
        );
        check(
            "lenet 8x1",
            &blocks,
            FormatPolicy::Force(Format::Block { r: 8, c: 1 }),
            batch,
            threads,
        );
    }
    // channel-pruned (physically smaller) models
    for (name, g) in models() {
        let deps = DependencyGraph::build(&g).unwrap();
        let plan = plan_channels(
            &g,
            &deps,
            &ChannelPruneConfig {
                target: StructuredTarget::Macs(0.5),
                ..Default::default()
            },
            &HashMap::new(),
        )
        .unwrap();
        let small = apply_plan(&g, &deps, &plan).unwrap();
        check(
            &format!("{name}/channels"),
            &small,
            FormatPolicy::Dense,
            2,
            2,
        );
    }
}

#[test]
fn quantized_graphs_match_the_simulation() {
    let mut g = models()
        .into_iter()
        .find(|(n, _)| n == "lenet5-bn")
        .unwrap()
        .1;
    let mut q = secateur_graph::Quantization::default();
    for (w, n) in [
        ("conv1.weight", "conv1"),
        ("conv2.weight", "conv2"),
        ("fc1.weight", "fc1"),
        ("fc2.weight", "fc2"),
    ] {
        q.weights.insert(w.into(), 0);
        q.activations
            .insert(n.into(), secateur_graph::ActQuant::from_range(-2.0, 3.0));
    }
    g.quantization = Some(q);
    check("lenet int8", &g, FormatPolicy::Dense, 2, 1);
    // channels-last plans run the quantized convolutions in integers where the CPU can (a
    // measured plan keeps f32 where the int8 kernel times slower: LeNet's one-channel conv1)
    let plan = ExecPlan::compile(
        &g,
        PlanConfig {
            layout: LayoutPolicy::ChannelsLast,
            policy: FormatPolicy::Dense,
            ..PlanConfig::new(2, 1)
        },
    )
    .unwrap();
    let isa = secateur_runtime::kernels::Isa::detect();
    let int8 = secateur_runtime::kernels::nhwc_int8::int8_runs_fast(isa);
    for l in plan.layers.iter().filter(|l| l.node.starts_with("conv")) {
        assert_eq!(l.format == "nhwc-int8", int8, "{}: {}", l.node, l.format);
    }
}

#[test]
fn measured_plans_never_choose_slower_than_dense() {
    let g = models()
        .into_iter()
        .find(|(n, _)| n == "lenet5-bn")
        .unwrap()
        .1;
    let sparse = pruned(&g, Granularity::Unstructured, Some(0.9), &[]);
    let config = PlanConfig {
        layout: LayoutPolicy::ChannelsFirst,
        ..PlanConfig::new(8, 2)
    };
    let plan = ExecPlan::compile(&sparse, config).unwrap();
    assert_eq!(plan.layers.len(), 4);
    for l in &plan.layers {
        assert!(!l.candidates.is_empty(), "{}", l.node);
        assert!(
            l.chosen_ms <= l.dense_ms,
            "{}: chose {} at {} ms, dense {} ms",
            l.node,
            l.format,
            l.chosen_ms,
            l.dense_ms
        );
        let best = l
            .candidates
            .iter()
            .map(|c| c.2)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(l.chosen_ms, best, "{}", l.node);
        assert!(
            l.fused
                .iter()
                .any(|f| f.starts_with("bn") || f.starts_with("relu"))
                || l.node == "fc2"
        );
    }
    check("lenet measured", &sparse, FormatPolicy::Measure, 3, 2);
    let mem = plan.memory();
    assert!(mem.activation_bytes > 0 && mem.weight_bytes > 0);
}

#[test]
fn batches_run_as_separate_samples_match_the_reference() {
    for (name, g) in models() {
        assert!(
            g.samples_independent(),
            "{name}: zoo samples are independent"
        );
        let sparse = pruned(&g, Granularity::Unstructured, Some(0.9), &[]);
        for (variant, graph) in [("dense", &g), ("90%", &sparse)] {
            let mut shape = vec![3];
            shape.extend(graph.inputs[0].shape.resolve(1)[1..].iter());
            let x = random_tensor(&shape, 5);
            let expect = evaluate(graph, &[("input", x.clone())]).unwrap().remove(0);
            for (threads, layout, policy) in [
                (
                    1,
                    LayoutPolicy::ChannelsFirst,
                    FormatPolicy::Force(Format::Csr),
                ),
                (2, LayoutPolicy::ChannelsFirst, FormatPolicy::Dense),
                (2, LayoutPolicy::ChannelsLast, FormatPolicy::Dense),
            ] {
                let config = PlanConfig {
                    layout,
                    policy,
                    ..PlanConfig::new(3, threads)
                };
                let mut plan = ExecPlan::compile_samples_apart(graph, config).unwrap();
                assert!(plan.runs_samples_apart());
                assert_eq!(plan.output_shape, expect.shape(), "{name}/{variant}");
                let y = plan.run(x.data()).unwrap().to_vec();
                let scale = expect.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
                for (a, b) in y.iter().zip(expect.data()) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{name}/{variant} threads {threads} {layout:?}: {a} vs {b}"
                    );
                }
                let profiled: f64 = plan
                    .run_profiled(&[x.data()])
                    .unwrap()
                    .iter()
                    .map(|t| t.1)
                    .sum();
                assert!(profiled > 0.0);
                assert_eq!(plan.run(x.data()).unwrap(), y.as_slice(), "re-runnable");
            }
        }
    }
}

#[test]
fn a_softmax_over_the_batch_keeps_the_batch_together() {
    let mut g = zoo::build(ZooModel::ALL[0], &ZooConfig::default()).unwrap();
    let out = g.outputs[0].clone();
    g.nodes.push(Node {
        name: "batch_softmax".into(),
        op: Op::Softmax(Softmax {
            axis: 0,
            legacy: false,
        }),
        inputs: vec![out],
        outputs: vec!["probabilities".into()],
    });
    g.outputs = vec!["probabilities".into()];
    assert!(!g.samples_independent());
    assert!(ExecPlan::compile_samples_apart(&g, PlanConfig::new(3, 1)).is_err());
    // the whole-batch plan still computes it
    let x = random_tensor(&g.inputs[0].shape.resolve(3), 9);
    let expect = evaluate(&g, &[("input", x.clone())]).unwrap().remove(0);
    let mut plan = ExecPlan::compile(&g, PlanConfig::new(3, 2)).unwrap();
    assert!(!plan.runs_samples_apart());
    let y = plan.run(x.data()).unwrap();
    for (a, b) in y.iter().zip(expect.data()) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }
}

#[test]
fn compile_chooses_among_the_candidate_configurations() {
    use secateur_runtime::BatchMode;
    let g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let one = ExecPlan::candidate_configs(&g, PlanConfig::new(1, 1));
    assert!(one.iter().all(|c| c.batch_mode == BatchMode::Whole));
    assert!(one.iter().all(|c| c.layout != LayoutPolicy::Auto));
    let four = ExecPlan::candidate_configs(&g, PlanConfig::new(4, 2));
    assert_eq!(
        four.len(),
        2 * one.len(),
        "whole batch and samples apart per layout"
    );
    let fixed = PlanConfig {
        layout: LayoutPolicy::ChannelsLast,
        batch_mode: BatchMode::SamplesApart,
        ..PlanConfig::new(4, 2)
    };
    assert_eq!(ExecPlan::candidate_configs(&g, fixed), vec![fixed]);
    let plan = ExecPlan::compile(&g, fixed).unwrap();
    assert!(plan.runs_samples_apart());
    assert!(four.contains(&ExecPlan::compile(&g, PlanConfig::new(4, 2)).unwrap().config));
}

#[test]
fn pruned_convolutions_keep_sparse_kernels_inside_mixed_layout_plans() {
    for model in [ZooModel::Resnet8, ZooModel::MobilenetV2] {
        let mut g = zoo::build(model, &ZooConfig::default()).unwrap();
        randomize_weights(&mut g, 3);
        let sparse = pruned(&g, Granularity::Unstructured, Some(0.9), &[]);
        let name = format!("{}/90% mixed layouts", model.name());
        let x = random_tensor(&sparse.inputs[0].shape.resolve(2), 4);
        let expect = evaluate(&sparse, &[("input", x.clone())])
            .unwrap()
            .remove(0);
        check_layout(
            &name,
            &sparse,
            &x,
            &expect,
            FormatPolicy::Measure,
            LayoutPolicy::Mixed,
            1,
        );
        let plan = ExecPlan::compile(
            &sparse,
            PlanConfig {
                layout: LayoutPolicy::Mixed,
                batch_mode: secateur_runtime::BatchMode::Whole,
                ..PlanConfig::new(2, 1)
            },
        )
        .unwrap();
        let formats: Vec<&str> = plan.layers.iter().map(|l| l.format.as_str()).collect();
        assert!(
            formats.iter().any(|f| f.starts_with("nhwc")) || model == ZooModel::Resnet8,
            "{name}: {formats:?}"
        );
        assert!(
            formats
                .iter()
                .any(|f| !f.starts_with("nhwc") && *f != "dense"),
            "{name}: a 90 % sparse convolution runs a sparse kernel: {formats:?}"
        );
    }
}

#[test]
fn constant_padding_and_winograd_layers_match_the_reference_in_both_layouts() {
    use secateur_graph::{GraphBuilder, Pad, PadMode};
    let (mut b, x) = GraphBuilder::new("padded", &[3, 20, 19], 5);
    let a = b.conv("a", &x, 48, 3, 1, 1, 1, true).unwrap();
    // channels, top and right padded with 0.25 (an option-A shortcut pads channels with zeros)
    let pad = Op::Pad(Pad {
        before: vec![0, 2, 1, 0],
        after: vec![0, 6, 0, 2],
        mode: PadMode::Constant(0.25),
    });
    let p = b.node("pad", pad, &[&a], vec![]).unwrap();
    // 56 -> 32 channels, 3×3 on a 21×21 output (36 tiles and 56 channels, enough for
    // Winograd with AVX-512 too): the Winograd kernel on channels-last
    let c = b.conv("c", &p, 32, 3, 1, 1, 1, true).unwrap();
    let d = b.conv("d", &c, 24, 1, 1, 0, 1, true).unwrap();
    let g = b.finish(&d).unwrap();
    // measured: Winograd and the implicit GEMM are timed on the threads the layer runs on
    for (batch, threads) in [(1, 1), (1, 2), (3, 2)] {
        check("padded", &g, FormatPolicy::Dense, batch, threads);
        check("padded", &g, FormatPolicy::Measure, batch, threads);
    }
    let plan = dense_channels_last_plan(&g);
    let formats: Vec<&str> = plan.layers.iter().map(|c| c.format.as_str()).collect();
    assert!(formats.contains(&"nhwc-winograd"), "{formats:?}");
}

/// Convolutions whose output only a channel concatenation reads write into the concatenated
/// buffer in place (SqueezeNet's fire modules: a 1×1 and a 3×3 expand, the 3×3 on Winograd
/// where the rule picks it, with ReLU); a concatenation input something else also reads, or
/// that is not a convolution's output, is still copied. All equal the reference.
#[test]
fn concatenated_convolutions_write_in_place_and_match_the_reference() {
    use secateur_graph::GraphBuilder;
    let (mut b, x) = GraphBuilder::new("fire", &[8, 14, 15], 9);
    let s = b.conv("squeeze", &x, 40, 1, 1, 0, 1, true).unwrap();
    let s = b.relu("squeeze_relu", &s).unwrap();
    let e1 = b.conv("expand1", &s, 24, 1, 1, 0, 1, true).unwrap();
    let e1 = b.relu("expand1_relu", &e1).unwrap();
    let e3 = b.conv("expand3", &s, 136, 3, 1, 1, 1, true).unwrap();
    let e3 = b.relu("expand3_relu", &e3).unwrap();
    let fire = b.concat("fire_cat", &[&e1, &e3]).unwrap();
    // a second concatenation: a convolution (in place), the pooled fire output (copied) and
    // a convolution whose output a later layer also reads (copied)
    let a = b.conv("a", &fire, 20, 1, 1, 0, 1, true).unwrap();
    let c = b.conv("c", &fire, 12, 3, 1, 1, 1, false).unwrap();
    let p = b.max_pool("pool", &fire, 1).unwrap();
    let mixed = b.concat("mixed_cat", &[&a, &p, &c]).unwrap();
    let d = b.conv("d", &mixed, 12, 1, 1, 0, 1, true).unwrap();
    let sum = b.add("sum", &d, &c).unwrap();
    let g = b.finish(&sum).unwrap();
    for (batch, threads) in [(1, 1), (1, 2), (3, 2)] {
        check("fire", &g, FormatPolicy::Dense, batch, threads);
        check("fire", &g, FormatPolicy::Measure, batch, threads);
    }
    let mut plan = dense_channels_last_plan(&g);
    let input = vec![0.5f32; 8 * 14 * 15];
    let steps = step_names(&mut plan, &input);
    let formats: Vec<&str> = plan.layers.iter().map(|c| c.format.as_str()).collect();
    if secateur_runtime::kernels::Isa::detect() != secateur_runtime::kernels::Isa::Portable {
        assert!(formats.contains(&"nhwc-winograd"), "{formats:?}");
    }
    assert!(!steps.iter().any(|s| s == "fire_cat"), "{steps:?}");
    assert!(steps.iter().any(|s| s == "mixed_cat"), "{steps:?}");
}

/// Convolutions, pools and layout conversions over images whose leading axis is a multiple
/// of the batch (TNT's pixel patches: `[N, 4·C, H, W] → [4N, C, H, W]`) run every image, not
/// one per sample, in both layouts, and equal the reference.
#[test]
fn images_several_per_sample_all_run_and_match_the_reference() {
    use secateur_graph::{GraphBuilder, Reshape};
    let (mut b, x) = GraphBuilder::new("patches", &[12, 10, 10], 7);
    let split = Op::Reshape(Reshape {
        shape: vec![-1, 3, 10, 10],
        allowzero: false,
    });
    let patches = b.node("split", split, &[&x], vec![]).unwrap();
    let a = b.conv("a", &patches, 8, 3, 2, 1, 1, true).unwrap();
    let a = b.relu("a_relu", &a).unwrap();
    let d = b.conv("dw", &a, 8, 3, 1, 1, 8, true).unwrap();
    let p = b.max_pool("pool", &d, 2).unwrap();
    let c = b.conv("c", &p, 16, 1, 1, 0, 1, true).unwrap();
    let g = b.finish(&c).unwrap();
    for (batch, threads) in [(1, 1), (2, 1), (3, 2)] {
        check("patches", &g, FormatPolicy::Dense, batch, threads);
        check("patches", &g, FormatPolicy::Measure, batch, threads);
    }
}

/// A first layer of few input channels runs on the stem kernel reading the graph's NCHW
/// input (no conversion step before it); one reading another layer's channels-last output
/// reads NHWC. Both equal the reference.
#[test]
fn stem_convolutions_read_either_layout_and_match_the_reference() {
    use secateur_graph::GraphBuilder;
    use secateur_runtime::kernels::Isa;
    let (mut b, x) = GraphBuilder::new("stem", &[3, 23, 30], 5);
    let a = b.conv("a", &x, 12, 3, 2, 1, 1, true).unwrap();
    let c = b.conv("c", &a, 3, 1, 1, 0, 1, true).unwrap();
    let d = b.conv("d", &c, 20, 5, 1, 2, 1, true).unwrap();
    let g = b.finish(&d).unwrap();
    for (batch, threads) in [(1, 1), (1, 2), (3, 2)] {
        check("stem", &g, FormatPolicy::Dense, batch, threads);
        check("stem", &g, FormatPolicy::Measure, batch, threads);
    }
    if Isa::detect() != Isa::Avx512 {
        return;
    }
    let mut plan = dense_channels_last_plan(&g);
    let formats: Vec<&str> = plan.layers.iter().map(|c| c.format.as_str()).collect();
    assert_eq!(formats, ["nhwc-stem", "nhwc-gemm", "nhwc-stem"]);
    let input = vec![0.5f32; 3 * 23 * 30];
    let steps = step_names(&mut plan, &input);
    assert!(!steps.iter().any(|s| s.contains("to_nhwc")), "{steps:?}");
}

#[test]
fn one_sample_plans_with_a_batched_classifier_match_the_reference() {
    use secateur_graph::GraphBuilder;
    use secateur_runtime::BatchMode;
    // conv → pool → flatten → 512×600 linear → relu → linear: the linear layers run batched
    let (mut b, x) = GraphBuilder::new("classifier", &[3, 8, 8], 3);
    let c = b.conv("conv", &x, 512, 3, 1, 1, 1, true).unwrap();
    let p = b.global_avg_pool("gap", &c).unwrap();
    let f = b.flatten("flat", &p).unwrap();
    let l = b.linear("fc1", &f, 600).unwrap();
    let r = b.relu("act", &l).unwrap();
    let o = b.linear("fc2", &r, 10).unwrap();
    let g = b.finish(&o).unwrap();
    for (batch, threads) in [(5, 1), (5, 2), (2, 2)] {
        let x = random_tensor(&[batch, 3, 8, 8], batch as u64);
        let expect = evaluate(&g, &[("input", x.clone())]).unwrap().remove(0);
        let mut plan = ExecPlan::compile(
            &g,
            PlanConfig {
                batch_mode: BatchMode::SamplesApart,
                ..PlanConfig::new(batch, threads)
            },
        )
        .unwrap();
        assert!(plan.runs_samples_apart() && plan.has_batched_tail());
        assert_eq!(plan.output_shape, expect.shape());
        let y = plan.run(x.data()).unwrap().to_vec();
        let scale = expect.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (a, e) in y.iter().zip(expect.data()) {
            assert!((a - e).abs() <= 1e-5 * scale, "batch {batch}: {a} vs {e}");
        }
        // profiled runs time the tail's steps too, and the result is the same
        let steps = plan.time_steps(&[x.data()], 2).unwrap();
        assert!(steps.iter().any(|(name, _)| name == "fc1"), "{steps:?}");
        assert_eq!(plan.run(x.data()).unwrap(), &y[..]);
    }
}

/// Batch norms no layer absorbs — after a concatenation, as in DenseNet's pre-activation
/// layers, with the ReLU after them, with another function, and with none — run as
/// per-channel affine steps in both layouts, with statistics that are not the identity.
#[test]
fn standalone_batch_norms_match_the_reference_in_both_layouts() {
    use secateur_graph::GraphBuilder;
    let (mut b, x) = GraphBuilder::new("dense_block", &[3, 12, 11], 7);
    let a = b.conv("a", &x, 20, 3, 1, 1, 1, true).unwrap();
    let c = b.conv("c", &x, 12, 1, 1, 0, 1, true).unwrap();
    let cat = b.concat("cat", &[&a, &c]).unwrap();
    let n1 = b.batch_norm("norm1", &cat).unwrap();
    let r1 = b.relu("relu1", &n1).unwrap();
    let d = b.conv("d", &r1, 16, 3, 1, 1, 1, true).unwrap();
    let cat2 = b.concat("cat2", &[&cat, &d]).unwrap();
    // read twice: no function to absorb
    let n2 = b.batch_norm("norm2", &cat2).unwrap();
    let e = b.conv("e", &n2, 8, 1, 1, 0, 1, true).unwrap();
    let sum = b.add("sum", &n2, &n2).unwrap();
    let f = b.conv("f", &sum, 8, 1, 1, 0, 1, true).unwrap();
    let ef = b.add("ef", &e, &f).unwrap();
    // another function than ReLU after the norm: a second pass
    let n3 = b.batch_norm("norm3", &d).unwrap();
    let r6 = b.relu6("relu6", &n3).unwrap();
    let h = b.conv("h", &r6, 8, 1, 1, 0, 1, true).unwrap();
    let out = b.add("out", &ef, &h).unwrap();
    let mut g = b.finish(&out).unwrap();
    let stats: Vec<(String, usize)> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm(_)))
        .flat_map(|n| n.inputs[1..].iter().cloned().zip(1..))
        .collect();
    for (k, (name, role)) in stats.into_iter().enumerate() {
        let t = g.initializers.get_mut(&name).unwrap();
        let r = random_tensor(t.shape(), 40 + k as u64);
        // running variances stay positive
        let data = r
            .data()
            .iter()
            .map(|v| if role == 4 { v.abs() + 0.3 } else { *v });
        *t = Tensor::new(t.shape().to_vec(), data.collect()).unwrap();
    }
    for (batch, threads) in [(1, 1), (3, 2)] {
        check("dense_block", &g, FormatPolicy::Dense, batch, threads);
    }
}

/// The largest absolute difference between two outputs.
/// The plan of `g` for `x`'s batch in `layout` on one thread, checked against the reference
/// output `expect`, and the names of its steps.
fn checked_steps(g: &Graph, x: &Tensor, expect: &Tensor, layout: LayoutPolicy) -> Vec<String> {
    let batch = x.shape()[0];
    let config = PlanConfig {
        layout,
        ..PlanConfig::new(batch, 1)
    };
    let mut plan = ExecPlan::compile(g, config).unwrap();
    let d = max_diff(plan.run(x.data()).unwrap(), expect.data());
    assert!(
        d <= 1e-5,
        "{} batch {batch} {layout:?}: differs by {d}",
        g.name
    );
    let steps = plan.time_steps(&[x.data()], 1).unwrap();
    steps.into_iter().map(|s| s.0).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn bf16_plans_stay_within_bf16_error_and_agree_across_instruction_sets() {
    use secateur_runtime::Precision;
    use secateur_runtime::kernels::Isa;
    use secateur_runtime::kernels::bf16::bf16_runs_fast;
    for (name, g) in models() {
        let batch = 2;
        let mut shape = vec![batch];
        shape.extend(g.inputs[0].shape.resolve(1)[1..].iter());
        let x = random_tensor(&shape, 5);
        let expect = evaluate(&g, &[("input", x.clone())]).unwrap().remove(0);
        let scale = expect.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let mut outputs = Vec::new();
        for isa in Isa::available() {
            let config = PlanConfig {
                policy: FormatPolicy::Dense,
                layout: LayoutPolicy::ChannelsLast,
                precision: Precision::Bf16,
                isa,
                ..PlanConfig::new(batch, 2)
            };
            let mut plan = ExecPlan::compile(&g, config).unwrap();
            let y = plan.run(x.data()).unwrap().to_vec();
            // every operand rounded to 8 significant bits: errors of a few 2⁻⁹ per layer
            // (3–5e-3 of the output's scale on these models)
            let diff = max_diff(&y, expect.data());
            assert!(diff <= 2e-2 * scale, "{name} {isa}: {diff} (scale {scale})");
            // not the f32 values: the layers really ran in bf16
            assert!(diff > 1e-6 * scale, "{name} {isa}: {diff} (scale {scale})");
            let wanted = if bf16_runs_fast(isa) {
                "nhwc-bf16"
            } else {
                "nhwc-bf16-in-f32"
            };
            let formats: Vec<&str> = plan.layers.iter().map(|c| c.format.as_str()).collect();
            for l in &plan.layers {
                let grouped = l.op.contains("depthwise") || l.format == "nhwc-depthwise";
                assert!(
                    grouped || l.format == wanted,
                    "{name} {isa}: {} runs {} ({formats:?})",
                    l.node,
                    l.format
                );
            }
            outputs.push((isa, y));
        }
        // a graph that asks for bf16 gets it from a default configuration, channels-last
        let mut marked = g.clone();
        marked.precision = Precision::Bf16;
        let configs = ExecPlan::candidate_configs(&marked, PlanConfig::new(batch, 1));
        assert!(
            configs
                .iter()
                .all(|c| c.precision == Precision::Bf16 && c.layout == LayoutPolicy::ChannelsLast)
        );
        // (unmeasured: a measured plan keeps f32 kernels on layers where they time faster,
        // which on a core without a fast bf16 product can be all of a small model's layers)
        let unmeasured = PlanConfig {
            policy: FormatPolicy::Dense,
            ..PlanConfig::new(batch, 1)
        };
        let plan = ExecPlan::compile(&marked, unmeasured).unwrap();
        assert!(
            plan.layers
                .iter()
                .any(|l| l.format.starts_with("nhwc-bf16")),
            "{name}: no bf16 layer"
        );
        // the AVX-512 BF16 kernels and the f32 kernels on rounded operands compute the same
        // products; only the order of the f32 sums differs, which can move a later layer's
        // input across a bf16 rounding boundary (up to 1.2e-3 of the scale seen here)
        let (first, rest) = outputs.split_first().unwrap();
        for (isa, y) in rest {
            let diff = max_diff(y, &first.1);
            assert!(diff <= 3e-3 * scale, "{name}: {isa} vs {}: {diff}", first.0);
        }
    }
}

/// A BERT encoder's attention (scores scaled by 1/√d, masked by the padding mask, softmax) runs
/// as one step per layer, and the plan equals the reference with padded positions, at batch 1
/// and 2, on 1 and 2 threads.
#[test]
fn bert_attention_runs_its_scaled_masked_softmax_as_one_step() {
    use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, random_bert};
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
    let seq = 7;
    let g = random_bert(&cfg, seq, Pooling::Mean, 5).unwrap();
    for (batch, threads) in [(1, 1), (2, 1), (2, 2)] {
        let ids = Tensor::from_fn(vec![batch, seq], |i| ((i * 11 + 5) % 60) as f32);
        // the second sample's last three tokens are padding
        let mask = Tensor::from_fn(vec![batch, seq], |i| {
            if i / seq == 1 && i % seq >= seq - 3 {
                0.0
            } else {
                1.0
            }
        });
        let feeds = [("input_ids", ids.clone()), ("attention_mask", mask.clone())];
        let expect = evaluate(&g, &feeds).unwrap().remove(0);
        let inputs: Vec<&[f32]> = g
            .inputs
            .iter()
            .map(|v| {
                if v.name == "input_ids" {
                    ids.data()
                } else {
                    mask.data()
                }
            })
            .collect();
        let mut plan = ExecPlan::compile(&g, PlanConfig::new(batch, threads)).unwrap();
        let y = plan.run_inputs(&inputs).unwrap().to_vec();
        let d = max_diff(&y, expect.data());
        assert!(
            d <= 1e-5,
            "batch {batch}, {threads} threads: differs by {d}"
        );
        let steps: Vec<String> = plan
            .time_steps(&inputs, 1)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        let named = |suffix: &str| steps.iter().filter(|n| n.ends_with(suffix)).count();
        assert_eq!(named("scores/Mul"), 2, "{steps:?}");
        assert_eq!(named("scores/Add") + named("Softmax"), 0, "{steps:?}");
    }
}

/// A position encoding computed from constants alone (a constant expanded to the batch, its
/// sine, a 1×1 projection) is evaluated when the plan compiles: no step runs it, and the plan
/// still equals the reference at batch 1 and 3, in both layouts.
#[test]
fn values_computed_from_constants_are_precomputed() {
    use secateur_graph::{Binary, Conv, Expand, GraphBuilder, Pointwise, Shape, Unary};
    let (mut b, x) = GraphBuilder::new("pe", &[4, 6, 6], 1);
    let y = b.conv("conv", &x, 4, 3, 1, 1, 1, true).unwrap();
    let mut g = b.finish(&y).unwrap();
    g.add_initializer(
        "pe.base",
        Tensor::from_fn(vec![1, 4, 6, 6], |i| i as f32 * 0.05),
    );
    g.add_initializer(
        "pe.w",
        Tensor::from_fn(vec![4, 4, 1, 1], |i| 0.3 - i as f32 * 0.04),
    );
    let expand = Op::Expand(Expand {
        shape: Shape::batched(&[4, 6, 6]),
    });
    g.add_node("pe/Expand", expand, &["pe.base", "input"], &["pe.batch"]);
    let sin = Op::Unary(Unary { f: Pointwise::Sin });
    g.add_node("pe/Sin", sin, &["pe.batch"], &["pe.sin"]);
    let proj = Op::Conv(Conv::new([1, 1], 0));
    g.add_node("pe/proj", proj, &["pe.sin", "pe.w"], &["pe.proj"]);
    let _ = y; // `finish` renamed the convolution's output
    g.add_node(
        "sum",
        Op::Binary(Binary::ADD),
        &["logits", "pe.proj"],
        &["out"],
    );
    g.outputs = vec!["out".into()];
    for batch in [1, 3] {
        let xin = random_tensor(&[batch, 4, 6, 6], 4);
        let expect = evaluate(&g, &[("input", xin.clone())]).unwrap().remove(0);
        for layout in [LayoutPolicy::ChannelsFirst, LayoutPolicy::ChannelsLast] {
            let steps = checked_steps(&g, &xin, &expect, layout);
            assert!(steps.iter().all(|n| !n.starts_with("pe/")), "{steps:?}");
        }
    }
}

/// Scores scaled and biased by a constant table before their softmax (LeViT's attention biases)
/// run as one step, equal to the reference at batch 1 and 2.
#[test]
fn a_constant_attention_bias_fuses_into_the_softmax() {
    use secateur_graph::{Binary, Shape};
    let mut g = Graph::new("biased");
    g.add_input("input", Shape::batched(&[2, 3, 5]));
    g.add_initializer("scale", Tensor::scalar(0.7));
    g.add_initializer(
        "bias",
        Tensor::from_fn(vec![2, 3, 5], |i| (i % 7) as f32 - 3.0),
    );
    g.add_node("Mul", Op::Binary(Binary::MUL), &["input", "scale"], &["s"]);
    g.add_node("Add", Op::Binary(Binary::ADD), &["s", "bias"], &["b"]);
    let softmax = Op::Softmax(Softmax {
        axis: -1,
        legacy: false,
    });
    g.add_node("Softmax", softmax, &["b"], &["p"]);
    g.outputs = vec!["p".into()];
    for batch in [1, 2] {
        let x = random_tensor(&[batch, 2, 3, 5], 8);
        let expect = evaluate(&g, &[("input", x.clone())]).unwrap().remove(0);
        let mut plan = ExecPlan::compile(&g, PlanConfig::new(batch, 1)).unwrap();
        let d = max_diff(plan.run(x.data()).unwrap(), expect.data());
        assert!(d <= 1e-6, "batch {batch}: differs by {d}");
        let steps = plan.time_steps(&[x.data()], 1).unwrap();
        assert_eq!(steps.len(), 1, "{steps:?}");
    }
}

/// ConvNeXt's block order: a convolution, a permute to channels-last, a LayerNorm over the
/// channels, a permute back, a 1×1 convolution. A channels-last plan moves no data for either
/// permute (no transpose and no layout conversion runs between the convolutions); every
/// layout equals the reference at batch 1 and 2.
#[test]
fn permutes_around_a_channels_last_layer_norm_move_no_data() {
    use secateur_graph::{Conv, GraphBuilder, LayerNorm, Transpose};
    let (mut b, x) = GraphBuilder::new("block", &[8, 5, 6], 2);
    let y = b.conv("dw", &x, 8, 3, 1, 1, 8, true).unwrap();
    let mut g = b.finish(&y).unwrap();
    let _ = y; // `finish` renamed the convolution's output
    let to_last = Op::Transpose(Transpose {
        perm: vec![0, 2, 3, 1],
    });
    g.add_node("norm/Transpose", to_last, &["logits"], &["t"]);
    g.add_initializer("ln.w", Tensor::from_fn(vec![8], |i| 1.0 + i as f32 * 0.1));
    g.add_initializer("ln.b", Tensor::from_fn(vec![8], |i| i as f32 * 0.05));
    let ln = Op::LayerNorm(LayerNorm {
        axis: -1,
        epsilon: 1e-6,
    });
    g.add_node("norm/LayerNorm", ln, &["t", "ln.w", "ln.b"], &["n"]);
    let to_first = Op::Transpose(Transpose {
        perm: vec![0, 3, 1, 2],
    });
    g.add_node("norm/Transpose_1", to_first, &["n"], &["f"]);
    g.add_initializer(
        "fc.w",
        Tensor::from_fn(vec![16, 8, 1, 1], |i| ((i * 7) % 11) as f32 * 0.05 - 0.25),
    );
    g.add_node(
        "fc",
        Op::Conv(Conv::new([1, 1], 0)),
        &["f", "fc.w"],
        &["out"],
    );
    g.outputs = vec!["out".into()];
    for batch in [1, 2] {
        let xin = random_tensor(&[batch, 8, 5, 6], 6);
        let expect = evaluate(&g, &[("input", xin.clone())]).unwrap().remove(0);
        for layout in [LayoutPolicy::ChannelsFirst, LayoutPolicy::ChannelsLast] {
            let steps = checked_steps(&g, &xin, &expect, layout);
            if layout == LayoutPolicy::ChannelsLast {
                let moved = steps
                    .iter()
                    .filter(|n| n.contains("Transpose") || n.contains(".to_"))
                    .count();
                // only the graph input's conversion and the output's
                assert!(moved <= 2, "{steps:?}");
                assert!(steps.iter().all(|n| !n.contains("Transpose")), "{steps:?}");
            }
        }
    }
}

/// A layer whose data input is a weight and whose output is the graph's (so not precomputed)
/// reads it from a buffer filled by a copy step, in either layout.
#[test]
fn a_constant_data_input_runs_from_a_buffer() {
    use secateur_graph::{Binary, Conv, Shape};
    let mut g = Graph::new("constant-data");
    g.add_input("input", Shape::batched(&[4, 3, 3]));
    g.add_initializer(
        "w",
        Tensor::from_fn(vec![4, 4, 1, 1], |i| (i % 5) as f32 * 0.2 - 0.4),
    );
    g.add_initializer(
        "plane",
        Tensor::from_fn(vec![1, 4, 3, 3], |i| (i % 7) as f32 * 0.3),
    );
    g.add_node(
        "conv",
        Op::Conv(Conv::new([1, 1], 0)),
        &["plane", "w"],
        &["c"],
    );
    g.add_node("add", Op::Binary(Binary::ADD), &["input", "c"], &["out"]);
    g.outputs = vec!["out".into()];
    // the convolution alone is the output: it cannot be precomputed
    let mut alone = g.clone();
    alone.nodes.pop();
    alone.outputs = vec!["c".into()];
    for (graph, batch) in [(&g, 2), (&alone, 1)] {
        let x = random_tensor(&[batch, 4, 3, 3], 3);
        let expect = evaluate(graph, &[("input", x.clone())]).unwrap().remove(0);
        for layout in [LayoutPolicy::ChannelsFirst, LayoutPolicy::ChannelsLast] {
            checked_steps(graph, &x, &expect, layout);
        }
    }
}
