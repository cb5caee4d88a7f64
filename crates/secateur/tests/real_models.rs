//! Reduced torchvision / CIFAR architectures exported by PyTorch's two exporters (TorchScript
//! at opset 17 and dynamo at opset 20; `crates/secateur-onnx/tests/fixtures/export_real.py`
//! made them, `manifest.json` describes them): each imports with the MAC count PyTorch's
//! modules give, and the reference evaluator, the
//! runtime and the training forward pass equal ONNX Runtime on the original file at batch 1
//! and 2; the re-exported file equals it too; structured channel pruning at ratio 0.5 equals
//! the model with the removed channels zeroed and gives a smaller file ONNX Runtime runs;
//! 90 % unstructured pruning exports to a file ONNX Runtime runs; with every convolution and
//! linear layer quantized to int8 (calibrated on one batch), the runtime (integer kernels where the CPU has
//! VNNI) equals the reference simulation, and ONNX Runtime runs the QDQ export to the same
//! values.

use secateur_graph::{ActQuant, Graph, Op, Quantization, Tensor, evaluate, evaluate_all};
use secateur_prune::structured::{
    ChannelPruneConfig, DependencyGraph, Group, GroupKind, StructuredTarget, apply_plan,
    plan_channels, zero_channels,
};
use secateur_prune::weights::{
    Criterion, CriterionData, Granularity, Scope, WeightPruneConfig, apply_masks, compute_masks,
};
use secateur_runtime::{ExecPlan, PlanConfig};
use secateur_testkit::{ort_run_inputs, random_tensor, require_python};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../secateur-onnx/tests/fixtures/real")
}

/// Image fixtures that must pass every check (both exporters unless noted).
const IMAGE_MODELS: &[&str] = &[
    "resnet_basic.ts17",
    "resnet_basic.dynamo",
    "mobilenet_v2.ts17",
    "mobilenet_v2.dynamo",
    "mobilenet_v3_small.ts17",
    "mobilenet_v3_small.dynamo",
    "efficientnet.ts17",
    "efficientnet.dynamo",
    "shufflenet_v2.ts17",
    "shufflenet_v2.dynamo",
    "squeezenet.ts17",
    "squeezenet.dynamo",
    "regnet_x.ts17",
    "regnet_x.dynamo",
    "resnet20_a.ts17",
    "resnet20_a.dynamo",
    "resnet20_b.ts17",
    "resnet20_b.dynamo",
    "convnext.ts17",
    "vit.ts17",
    "vit.dynamo",
    "convnext.dynamo",
];

/// Text fixtures: token ids and attention mask in; a pooled embedding (BERT) or the logits
/// at every position (the causal language models GPT-2 and Llama) out.
const TEXT_MODELS: &[&str] = &[
    "bert.ts17",
    "bert.dynamo",
    "gpt2.ts17",
    "gpt2.dynamo",
    "llama.ts17",
    "llama.dynamo",
    "gemma.ts17",
    "gemma.dynamo",
];

/// The sequence length text fixtures are tested at (their `seq` dimension is symbolic).
const SEQ: usize = 16;

/// The committed fixture `name` (without `.onnx`).
fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.onnx"))
}

/// The entry of a model file in the `manifest.json` beside it.
fn manifest_entry(path: &Path) -> serde_json::Value {
    let dir = path.parent().unwrap();
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file = path.file_name().unwrap().to_string_lossy();
    manifest["models"][file.as_ref()].clone()
}

/// A model's name for messages.
fn label(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Inputs for a fixture at `batch`, from the manifest's declarations: random values for
/// float inputs; for text models, token ids below the vocabulary size and an attention mask
/// whose second and later rows end in padding.
fn fixture_inputs(path: &Path, batch: usize, seed: u64) -> Vec<(String, Tensor)> {
    let entry = manifest_entry(path);
    let inputs = entry["inputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{} is not in the manifest", path.display()));
    inputs
        .iter()
        .map(|input| {
            let input_name = input["name"].as_str().unwrap().to_string();
            let dims: Vec<usize> = input["shape"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, d.as_u64()) {
                    (_, Some(n)) => n as usize,
                    (0, None) => batch,
                    _ => SEQ,
                })
                .collect();
            let t = match (input["dtype"].as_str(), input_name.as_str()) {
                (Some("float"), _) => random_tensor(&dims, seed),
                (_, "attention_mask") => Tensor::from_fn(dims.clone(), |i| {
                    let (row, col) = (i / dims[1], i % dims[1]);
                    if col + 3 * row < dims[1] { 1.0 } else { 0.0 }
                }),
                _ => {
                    let r = random_tensor(&dims, seed);
                    Tensor::from_fn(dims.clone(), |i| ((r.data()[i] + 1.0) * 49.9).floor())
                }
            };
            (input_name, t)
        })
        .collect()
}

fn load(path: &Path) -> Graph {
    let mut opts = secateur_onnx::ImportOptions::default();
    opts.dims.insert("seq".into(), SEQ);
    secateur_onnx::load_model_with(path, &opts)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn named(inputs: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
    inputs.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

fn reference(g: &Graph, inputs: &[(String, Tensor)]) -> Tensor {
    let args: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    evaluate(g, &args).unwrap().remove(0)
}

/// The multiply-accumulates per image of the model's Conv2d and Linear modules, counted in
/// PyTorch with forward hooks when the fixture was exported (absent for attention models,
/// whose in-projections are not modules).
fn torch_macs(path: &Path) -> Option<u64> {
    manifest_entry(path)["conv_linear_macs"].as_u64()
}

/// `|a - b| <= tol · max(1, max |b|)` element-wise; returns the relative error.
fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let scale = b.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.max_abs_diff(b) / scale
}

fn runtime_output(g: &Graph, inputs: &[(String, Tensor)]) -> Tensor {
    let batch = inputs[0].1.shape()[0];
    let mut plan = ExecPlan::compile(g, PlanConfig::new(batch, 1)).unwrap();
    let shape = plan.output_shape.clone();
    let slices: Vec<&[f32]> = inputs.iter().map(|(_, t)| t.data()).collect();
    let y = plan.run_inputs(&slices).unwrap().to_vec();
    Tensor::new(shape, y).unwrap()
}

/// The parameter count equals PyTorch's with every BatchNorm folded into the Conv before it
/// (`folded_param_count` in the manifest) for TorchScript exports; at a fixed sequence length
/// the position table keeps only the rows the model reads. The dynamo exporter's optimizer
/// drops all-zero biases from the file, so its models may count fewer.
fn check_parameter_count(path: &Path, g: &Graph) {
    let entry = manifest_entry(path);
    let Some(folded) = entry["folded_param_count"].as_u64() else {
        return;
    };
    let ours = secateur_graph::summarize(g).unwrap().total_params;
    let unread_positions = match (
        entry["family"].as_str(),
        entry["inputs"][0]["dtype"].as_str(),
    ) {
        // the fixture's 64 positions × 32 features
        (Some("bert"), _) => (64 - SEQ as u64) * 32,
        (_, Some("float")) => 0,
        _ => return,
    };
    let expected = folded - unread_positions;
    if entry["exporter"] == "ts17" {
        assert_eq!(ours, expected, "{}: parameters vs PyTorch", label(path));
    } else {
        assert!(ours <= expected, "{}: {ours} > {expected}", label(path));
    }
}

/// Every check at each of `batches`: import (MACs), reference evaluator, runtime, training
/// forward and re-export against ONNX Runtime; then channel and unstructured pruning.
fn check_model(py: &Path, path: &Path, batches: &[usize]) {
    let name = &label(path);
    let bytes = std::fs::read(path).unwrap();
    let g = load(path);
    let attention = g
        .nodes
        .iter()
        .any(|n| matches!(n.op, secateur_graph::Op::BatchMatMul(_)));
    check_parameter_count(path, &g);
    if let (Some(expected), false) = (torch_macs(path), attention) {
        let ours = secateur_graph::summarize(&g).unwrap().total_macs;
        assert_eq!(
            ours, expected,
            "{name}: MACs per image vs PyTorch's module count"
        );
    }
    for &batch in batches {
        let inputs = fixture_inputs(path, batch, 11 + batch as u64);
        let expected = ort_run_inputs(py, &bytes, &named(&inputs))
            .unwrap()
            .remove(0);
        let e = relative_error(&reference(&g, &inputs), &expected);
        assert!(e <= 1e-4, "{name} b{batch}: reference evaluator vs ORT {e}");
        let e = relative_error(&runtime_output(&g, &inputs), &expected);
        assert!(e <= 1e-4, "{name} b{batch}: runtime vs ORT {e}");
        check_bf16(name, &g, &inputs, &expected);
        let dev = secateur_train::cpu();
        let tensors: Vec<Tensor> = inputs.iter().map(|(_, t)| t.clone()).collect();
        let trained = secateur_train::evaluate::forward_inputs(&g, &tensors, &dev)
            .unwrap_or_else(|e| panic!("{name}: training forward: {e}"));
        let e = relative_error(&trained, &expected);
        assert!(e <= 1e-4, "{name} b{batch}: training forward vs ORT {e}");
        let exported = secateur_onnx::to_bytes(&g).unwrap();
        let again = ort_run_inputs(py, &exported, &named(&inputs))
            .unwrap()
            .remove(0);
        let e = relative_error(&again, &expected);
        assert!(
            e <= 1e-5,
            "{name} b{batch}: re-exported file vs original {e}"
        );
    }
    check_channel_pruning(py, path, &g);
    check_unstructured(py, path, &g);
    check_int8(py, path, &g);
}

/// The model run in bf16 (every ungrouped convolution and dense linear layer on bf16 operands)
/// stays within bf16's error of ONNX Runtime's f32 output, and really runs in bf16.
fn check_bf16(name: &str, g: &Graph, inputs: &[(String, Tensor)], expected: &Tensor) {
    let batch = inputs[0].1.shape()[0];
    let config = PlanConfig {
        precision: secateur_runtime::Precision::Bf16,
        policy: secateur_runtime::FormatPolicy::Dense,
        ..PlanConfig::new(batch, 1)
    };
    let mut plan = ExecPlan::compile(g, config).unwrap();
    assert!(
        plan.layers
            .iter()
            .any(|l| l.format.starts_with("nhwc-bf16")),
        "{name}: no layer runs in bf16"
    );
    let slices: Vec<&[f32]> = inputs.iter().map(|(_, t)| t.data()).collect();
    let y = plan.run_inputs(&slices).unwrap().to_vec();
    let y = Tensor::new(plan.output_shape.clone(), y).unwrap();
    let e = relative_error(&y, expected);
    eprintln!("{name}: bf16 vs f32 {e:.5}");
    // operands of 8 significant bits: errors of a few 2⁻⁹ per layer, which deep models
    // accumulate (the fixtures: up to 0.011 of the largest output, squeezenet)
    assert!(e <= 3e-2, "{name}: bf16 runtime vs ORT in f32: {e}");
    // against the output's own scale (a randomly initialised head gives outputs far below 1)
    let own = expected
        .data()
        .iter()
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let moved = y.max_abs_diff(expected) / own;
    assert!(
        moved > 1e-6,
        "{name}: the bf16 plan computed f32 values ({moved})"
    );
}

/// Every convolution's and linear layer's weight (per output channel) and input (ranges of
/// one calibration batch) quantized; the runtime and ONNX Runtime on the QDQ export against the simulation.
fn check_int8(py: &Path, path: &Path, g: &Graph) {
    let name = &label(path);
    let calibration = fixture_inputs(path, 2, 21);
    let feeds: Vec<(&str, Tensor)> = calibration
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let values = evaluate_all(g, &feeds).unwrap();
    let mut q = Quantization::default();
    for node in &g.nodes {
        // the output axis of each weighted layer's constant weight
        let axis = match &node.op {
            Op::Conv(_) => 0,
            Op::Gemm(gemm) if gemm.trans_b => 0,
            Op::Gemm(_) | Op::MatMul(_) => 1,
            _ => continue,
        };
        if node
            .inputs
            .get(1)
            .and_then(|w| g.initializers.get(w))
            .is_none()
        {
            continue;
        }
        let x = &values[&node.inputs[0]];
        let lo = x.data().iter().copied().fold(f32::INFINITY, f32::min);
        let hi = x.data().iter().copied().fold(f32::NEG_INFINITY, f32::max);
        q.weights.insert(node.inputs[1].clone(), axis);
        q.activations
            .insert(node.name.clone(), ActQuant::from_range(lo, hi));
    }
    let mut quantized = g.clone();
    quantized.quantization = Some(q);
    let inputs = fixture_inputs(path, 2, 22);
    let simulated = reference(&quantized, &inputs);
    let bytes = secateur_onnx::to_bytes(&quantized).unwrap();
    let ort = ort_run_inputs(py, &bytes, &named(&inputs))
        .unwrap()
        .remove(0);
    let runtime = runtime_output(&quantized, &inputs);
    // where the CPU has VNNI, linear layers and ungrouped convolutions of channels-last plans
    // run in integers
    let isa = secateur_runtime::kernels::Isa::detect();
    if secateur_runtime::kernels::nhwc_int8::int8_runs_fast(isa) {
        let config = PlanConfig {
            layout: secateur_runtime::LayoutPolicy::ChannelsLast,
            // (a measured plan keeps f32 for a layer where int8 times slower)
            policy: secateur_runtime::FormatPolicy::Dense,
            ..PlanConfig::new(2, 1)
        };
        let plan = ExecPlan::compile(&quantized, config).unwrap();
        for l in &plan.layers {
            let grouped = g
                .nodes
                .iter()
                .any(|n| n.name == l.node && matches!(&n.op, Op::Conv(c) if c.groups > 1));
            if matches!(l.op.as_str(), "Gemm" | "MatMul") || (l.op == "Conv" && !grouped) {
                assert_eq!(l.format, "nhwc-int8", "{name}: {} ({})", l.node, l.op);
            }
        }
    }
    // A value within f32 rounding of a level boundary may land on either level: a level is
    // 1/255 of an activation's range, so each implementation's own f32 arithmetic (summation
    // order, erf, exp) flips a few levels, and the flips propagate through deep models
    // (convnext_tiny: the three pairs all differ by max ≈ 0.018, mean ≈ 0.004 of the largest
    // output; all-MiniLM-L6-v2: the runtime and ORT agree to 7 digits, both 0.040 / 0.0048
    // from the reference simulation). So the runtime must be about as close to the others as
    // ONNX Runtime is to the simulation, and close in absolute terms; a wrong zero point, scale
    // or folded factor puts it far from both (a 5 % scale error: max 0.27, mean 0.068 on the
    // resnet fixture, whose ORT-to-simulation distance is under 0.003).
    let (ort_max, ort_mean) = level_errors(&ort, &simulated);
    assert!(
        ort_max <= 0.1 && ort_mean <= 1e-2,
        "{name}: ORT on the QDQ file vs the simulation: max {ort_max}, mean {ort_mean}"
    );
    for (what, want) in [
        ("ORT on the QDQ file", &ort),
        ("the simulation", &simulated),
    ] {
        let (max, mean) = level_errors(&runtime, want);
        assert!(
            max <= 2.0 * ort_max + 1e-2 && mean <= 2.0 * ort_mean + 1e-3,
            "{name}: int8 runtime vs {what}: max {max}, mean {mean} (ORT vs the simulation: \
             max {ort_max}, mean {ort_mean})"
        );
    }
}

/// The largest and the mean absolute difference, relative to the largest `|b|`.
fn level_errors(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let scale = b.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diffs = a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs());
    let sum: f32 = diffs.clone().sum();
    let max = diffs.fold(0.0f32, f32::max);
    (max / scale, sum / b.len().max(1) as f32 / scale)
}

fn check_channel_pruning(py: &Path, path: &Path, g: &Graph) {
    let name = &label(path);
    let deps = DependencyGraph::build(g).unwrap();
    assert!(!deps.groups.is_empty(), "{name}: no prunable channel group");
    let cfg = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.5),
        ..Default::default()
    };
    let plan = plan_channels(g, &deps, &cfg, &HashMap::new()).unwrap();
    let pruned = apply_plan(g, &deps, &plan).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut zeroed = g.clone();
    for entry in &plan.entries {
        let group = deps.group(&entry.group).unwrap();
        let removed: Vec<usize> = (0..group.channels())
            .filter(|c| !entry.keep.contains(c))
            .collect();
        zero_channels(&mut zeroed, group, &removed).unwrap();
    }
    let inputs = fixture_inputs(path, 2, 5);
    let a = reference(&pruned, &inputs);
    let b = reference(&zeroed, &inputs);
    let e = relative_error(&a, &b);
    assert!(e <= 1e-5, "{name}: pruned vs zero-masked {e}");
    let (before, _) = g.parameter_counts();
    let (after, _) = pruned.parameter_counts();
    assert!(after < before, "{name}: pruning removed no parameters");
    let bytes = secateur_onnx::to_bytes(&pruned).unwrap();
    let ort = ort_run_inputs(py, &bytes, &named(&inputs))
        .unwrap()
        .remove(0);
    let e = relative_error(&ort, &a);
    assert!(e <= 1e-4, "{name}: ORT on the pruned file vs ours {e}");
}

fn check_unstructured(py: &Path, path: &Path, g: &Graph) {
    let name = &label(path);
    let cfg = WeightPruneConfig {
        criterion: Criterion::Magnitude { l2: false },
        granularity: Granularity::Unstructured,
        sparsity: Some(0.9),
        scope: Scope::Global,
        exclude: Vec::new(),
        seed: 0,
        min_density: None,
    };
    let masks = compute_masks(g, &cfg, &CriterionData::default()).unwrap();
    let mut sparse = g.clone();
    apply_masks(&mut sparse, masks).unwrap();
    let inputs = fixture_inputs(path, 1, 6);
    let ours = reference(&sparse, &inputs);
    let bytes = secateur_onnx::to_bytes(&sparse).unwrap();
    let ort = ort_run_inputs(py, &bytes, &named(&inputs))
        .unwrap()
        .remove(0);
    let e = relative_error(&ort, &ours);
    assert!(e <= 1e-4, "{name}: ORT on the 90 % sparse file vs ours {e}");
}

macro_rules! fixture_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let Some(py) = require_python() else { return };
                check_model(&py, &fixture($name), &[1, 2]);
            }
        )*
    };
}

fixture_tests! {
    resnet_basic_ts17 => "resnet_basic.ts17",
    resnet_basic_dynamo => "resnet_basic.dynamo",
    mobilenet_v2_ts17 => "mobilenet_v2.ts17",
    mobilenet_v2_dynamo => "mobilenet_v2.dynamo",
    mobilenet_v3_small_ts17 => "mobilenet_v3_small.ts17",
    mobilenet_v3_small_dynamo => "mobilenet_v3_small.dynamo",
    efficientnet_ts17 => "efficientnet.ts17",
    efficientnet_dynamo => "efficientnet.dynamo",
    shufflenet_v2_ts17 => "shufflenet_v2.ts17",
    shufflenet_v2_dynamo => "shufflenet_v2.dynamo",
    squeezenet_ts17 => "squeezenet.ts17",
    squeezenet_dynamo => "squeezenet.dynamo",
    regnet_x_ts17 => "regnet_x.ts17",
    regnet_x_dynamo => "regnet_x.dynamo",
    resnet20_a_ts17 => "resnet20_a.ts17",
    resnet20_a_dynamo => "resnet20_a.dynamo",
    resnet20_b_ts17 => "resnet20_b.ts17",
    resnet20_b_dynamo => "resnet20_b.dynamo",
    convnext_ts17 => "convnext.ts17",
    vit_ts17 => "vit.ts17",
    vit_dynamo => "vit.dynamo",
    convnext_dynamo => "convnext.dynamo",
    bert_ts17 => "bert.ts17",
    bert_dynamo => "bert.dynamo",
    gpt2_ts17 => "gpt2.ts17",
    gpt2_dynamo => "gpt2.dynamo",
    llama_ts17 => "llama.ts17",
    llama_dynamo => "llama.dynamo",
    gemma_ts17 => "gemma.ts17",
    gemma_dynamo => "gemma.dynamo",
}

#[test]
fn every_listed_image_fixture_has_a_test() {
    // the macro above and IMAGE_MODELS name the same files, each present on disk
    for name in IMAGE_MODELS.iter().chain(TEXT_MODELS) {
        assert!(fixture(name).is_file(), "{name}");
    }
    assert_eq!(IMAGE_MODELS.len() + TEXT_MODELS.len(), 30);
}

/// The dependency groups of one kind.
fn groups_of(deps: &DependencyGraph, kind: GroupKind) -> Vec<&Group> {
    deps.groups.iter().filter(|g| g.kind == kind).collect()
}

/// The heads of causal language models, in both exports. GPT-2 packs Q, K and V in one
/// `Conv1D` (a `Gemm` over flattened rows whose output is split in three): the import unpacks
/// it, so each layer has one group of 4 heads over the three projections. Llama's
/// grouped-query attention repeats each of its 2 key/value heads for 2 query heads: a
/// channel of its group is one key/value head with its query heads (4 query columns of 8
/// features, against 8 key columns). Gemma's multi-query attention broadcasts its one
/// key/value head to the 4 query heads (an `Expand` from size 1): its groups are the query
/// heads with the output projection's columns, the shared key and value staying whole.
/// Pruning all three is checked against zero-masking and ONNX Runtime by `check_model`.
#[test]
fn causal_language_model_heads_are_found_in_both_exports() {
    for (model, channels, producers, q_features_per_channel) in
        [("gpt2", 4, 3, 8), ("llama", 2, 3, 16), ("gemma", 4, 1, 8)]
    {
        for exporter in ["ts17", "dynamo"] {
            let name = format!("{model}.{exporter}");
            let g = load(&fixture(&name));
            let deps = DependencyGraph::build(&g).unwrap();
            let heads = groups_of(&deps, GroupKind::Heads);
            assert_eq!(heads.len(), 2, "{name}: one heads group per layer");
            for h in heads {
                assert_eq!(h.channels(), channels, "{name}: channels of {}", h.name);
                assert_eq!(
                    h.producers().count(),
                    producers,
                    "{name}: producers of {}",
                    h.name
                );
                let widths: Vec<usize> = h.indices[0].iter().map(Vec::len).collect();
                assert!(
                    widths.contains(&q_features_per_channel),
                    "{name}: {} has no member with {q_features_per_channel} features per \
                     channel ({widths:?})",
                    h.name
                );
            }
            let neurons = groups_of(&deps, GroupKind::Neurons).len();
            assert_eq!(neurons, 2, "{name}: MLP neurons");
        }
    }
}

/// Full-size models that this suite does not carry: every `*.onnx` with a `manifest.json`
/// entry in `$SECATEUR_FULL_MODELS` (made by `export_real.py --full DIR`), at batch 1. Run with
/// `SECATEUR_FULL_MODELS=DIR cargo test --release -p secateur --test real_models -- --ignored`.
#[test]
#[ignore = "needs full-size models in $SECATEUR_FULL_MODELS"]
fn full_size_models() {
    let Some(py) = require_python() else { return };
    let dir = PathBuf::from(std::env::var("SECATEUR_FULL_MODELS").expect("SECATEUR_FULL_MODELS"));
    let only = std::env::var("SECATEUR_FULL_ONLY").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .filter(|p| only.is_empty() || label(p).contains(only.as_str()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no models in {}", dir.display());
    for path in files {
        let t = std::time::Instant::now();
        check_model(&py, &path, &[1]);
        eprintln!("{}: ok ({:.0} s)", label(&path), t.elapsed().as_secs_f64());
    }
}

/// torchvision's ViT computes Q, K and V with one packed projection and folds heads into the
/// batch axis; the import rewrites that layout so that each encoder layer has one group of
/// attention heads spanning its Q, K and V projections (both exporters). Pruning them is
/// checked against zero-masking and ONNX Runtime by `check_model` above.
#[test]
fn vit_attention_heads_are_found_in_both_exports() {
    for name in ["vit.ts17", "vit.dynamo"] {
        let g = secateur_onnx::load_model(fixture(name)).unwrap();
        let deps = DependencyGraph::build(&g).unwrap();
        let heads = groups_of(&deps, GroupKind::Heads);
        assert_eq!(heads.len(), 2, "{name}: one heads group per encoder layer");
        for h in heads {
            assert_eq!(h.channels(), 2, "{name}: {} heads", h.name);
            assert_eq!(h.producers().count(), 3, "{name}: Q, K and V in {}", h.name);
        }
        let neurons = groups_of(&deps, GroupKind::Neurons).len();
        assert!(neurons >= 2, "{name}: MLP neurons");
    }
}
