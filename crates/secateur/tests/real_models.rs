//! Reduced torchvision / CIFAR architectures exported by PyTorch's two exporters (TorchScript
//! at opset 17 and dynamo at opset 20; `crates/secateur-onnx/tests/fixtures/export_real.py`
//! made them, `manifest.json` describes them): each imports with the MAC count PyTorch's
//! modules give, and the reference evaluator, the
//! runtime and the training forward pass equal ONNX Runtime on the original file at batch 1
//! and 2; the re-exported file equals it too; structured channel pruning at ratio 0.5 equals
//! the model with the removed channels zeroed and gives a smaller file ONNX Runtime runs;
//! 90 % unstructured pruning exports to a file ONNX Runtime runs.

use secateur_graph::{Graph, Tensor, evaluate};
use secateur_prune::structured::{
    ChannelPruneConfig, DependencyGraph, StructuredTarget, apply_plan, plan_channels, zero_channels,
};
use secateur_prune::weights::{
    Criterion, CriterionData, Granularity, Scope, WeightPruneConfig, apply_masks, compute_masks,
};
use secateur_runtime::{ExecPlan, PlanConfig};
use secateur_testkit::{ort_run, random_tensor, require_python};
use std::collections::HashMap;
use std::path::PathBuf;

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
];

/// The input shape (batch first) of a fixture, from the manifest.
fn input_shape(name: &str, batch: usize) -> Vec<usize> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file = format!("{name}.onnx");
    let entry = &manifest["models"][&file];
    let dims = entry["inputs"][0]["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("{file} is not in the manifest"));
    dims.iter()
        .map(|d| d.as_u64().map_or(batch, |n| n as usize))
        .collect()
}

/// The multiply-accumulates per image of the model's Conv2d and Linear modules, counted in
/// PyTorch with forward hooks when the fixture was exported (absent for attention models,
/// whose in-projections are not modules).
fn torch_macs(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["models"][format!("{name}.onnx")]["conv_linear_macs"].as_u64()
}

/// `|a - b| <= tol · max(1, max |b|)` element-wise; returns the relative error.
fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let scale = b.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.max_abs_diff(b) / scale
}

fn runtime_output(g: &Graph, x: &Tensor) -> Tensor {
    let batch = x.shape()[0];
    let mut plan = ExecPlan::compile(g, PlanConfig::new(batch, 1)).unwrap();
    let shape = plan.output_shape.clone();
    let y = plan.run(x.data()).unwrap().to_vec();
    Tensor::new(shape, y).unwrap()
}

fn check_model(py: &std::path::Path, name: &str) {
    let path = fixtures().join(format!("{name}.onnx"));
    let bytes = std::fs::read(&path).unwrap();
    let g = secateur_onnx::load_model(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let input = g.inputs[0].name.clone();
    let attention = g
        .nodes
        .iter()
        .any(|n| matches!(n.op, secateur_graph::Op::BatchMatMul(_)));
    if let (Some(expected), false) = (torch_macs(name), attention) {
        let ours = secateur_graph::summarize(&g).unwrap().total_macs;
        assert_eq!(
            ours, expected,
            "{name}: MACs per image vs PyTorch's module count"
        );
    }
    for batch in [1, 2] {
        let x = random_tensor(&input_shape(name, batch), 11 + batch as u64);
        let expected = ort_run(py, &bytes, &input, &x).unwrap().remove(0);
        let reference = evaluate(&g, &[(input.as_str(), x.clone())])
            .unwrap()
            .remove(0);
        let e = relative_error(&reference, &expected);
        assert!(e <= 1e-4, "{name} b{batch}: reference evaluator vs ORT {e}");
        let e = relative_error(&runtime_output(&g, &x), &expected);
        assert!(e <= 1e-4, "{name} b{batch}: runtime vs ORT {e}");
        let dev = secateur_train::cpu();
        let trained = secateur_train::evaluate::forward_batch(&g, &x, &dev)
            .unwrap_or_else(|e| panic!("{name}: training forward: {e}"));
        let e = relative_error(&trained, &expected);
        assert!(e <= 1e-4, "{name} b{batch}: training forward vs ORT {e}");
        let exported = secateur_onnx::to_bytes(&g).unwrap();
        let again = ort_run(py, &exported, &input, &x).unwrap().remove(0);
        let e = relative_error(&again, &expected);
        assert!(
            e <= 1e-5,
            "{name} b{batch}: re-exported file vs original {e}"
        );
    }
    check_channel_pruning(py, name, &g);
    check_unstructured(py, name, &g);
}

fn check_channel_pruning(py: &std::path::Path, name: &str, g: &Graph) {
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
    let input = g.inputs[0].name.clone();
    let x = random_tensor(&input_shape(name, 2), 5);
    let a = evaluate(&pruned, &[(input.as_str(), x.clone())])
        .unwrap()
        .remove(0);
    let b = evaluate(&zeroed, &[(input.as_str(), x.clone())])
        .unwrap()
        .remove(0);
    let e = relative_error(&a, &b);
    assert!(e <= 1e-5, "{name}: pruned vs zero-masked {e}");
    let (before, _) = g.parameter_counts();
    let (after, _) = pruned.parameter_counts();
    assert!(after < before, "{name}: pruning removed no parameters");
    let bytes = secateur_onnx::to_bytes(&pruned).unwrap();
    let ort = ort_run(py, &bytes, &input, &x).unwrap().remove(0);
    let e = relative_error(&ort, &a);
    assert!(e <= 1e-4, "{name}: ORT on the pruned file vs ours {e}");
}

fn check_unstructured(py: &std::path::Path, name: &str, g: &Graph) {
    let cfg = WeightPruneConfig {
        criterion: Criterion::Magnitude { l2: false },
        granularity: Granularity::Unstructured,
        sparsity: Some(0.9),
        scope: Scope::Global,
        exclude: Vec::new(),
        seed: 0,
    };
    let masks = compute_masks(g, &cfg, &CriterionData::default()).unwrap();
    let mut sparse = g.clone();
    apply_masks(&mut sparse, masks).unwrap();
    let input = g.inputs[0].name.clone();
    let x = random_tensor(&input_shape(name, 1), 6);
    let ours = evaluate(&sparse, &[(input.as_str(), x.clone())])
        .unwrap()
        .remove(0);
    let bytes = secateur_onnx::to_bytes(&sparse).unwrap();
    let ort = ort_run(py, &bytes, &input, &x).unwrap().remove(0);
    let e = relative_error(&ort, &ours);
    assert!(e <= 1e-4, "{name}: ORT on the 90 % sparse file vs ours {e}");
}

macro_rules! fixture_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let Some(py) = require_python() else { return };
                check_model(&py, $name);
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
}

#[test]
fn every_listed_image_fixture_has_a_test() {
    // the macro above and IMAGE_MODELS name the same files, each present on disk
    for name in IMAGE_MODELS {
        assert!(fixtures().join(format!("{name}.onnx")).is_file(), "{name}");
    }
    assert_eq!(IMAGE_MODELS.len(), 21);
}
