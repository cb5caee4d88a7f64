//! QDQ export of int8-annotated graphs: ONNX Runtime runs them with the reference evaluator's
//! simulated quantization, masks and zeros survive quantization, and the QDQ file imports back
//! to the same annotations.

mod common;

use secateur_graph::{ActQuant, InputRole, Quantization, evaluate};
use secateur_onnx::{import_bytes, to_bytes};
use secateur_testkit::{ort_run, random_tensor, require_python};
use std::path::Path;

fn quantize_all(g: &mut secateur_graph::Graph) {
    let mut q = Quantization::default();
    let shapes = g.infer_shapes().unwrap();
    for node in &g.nodes {
        let roles = node.op.sem().input_roles(node.inputs.len());
        let ins: Vec<_> = node.inputs.iter().map(|v| shapes[v].clone()).collect();
        for (idx, axes) in node.op.sem().param_axes(&ins) {
            if roles[idx] == InputRole::Weight {
                let axis = axes
                    .iter()
                    .position(|a| *a == secateur_graph::AxisRole::OutChannels)
                    .unwrap();
                q.weights.insert(node.inputs[idx].clone(), axis);
                q.activations
                    .insert(node.name.clone(), ActQuant::from_range(-3.0, 4.0));
            }
        }
    }
    g.quantization = Some(q);
}

#[test]
fn qdq_models_run_in_onnx_runtime_like_the_reference() {
    let Some(py) = require_python() else { return };
    for (name, mut g, input) in common::test_models() {
        // a pruned weight stays exactly zero through quantization
        let w = g.weights_in_role(InputRole::Weight)[1].clone();
        let n = g.initializers[&w].len();
        g.masks.insert(
            w.clone(),
            secateur_graph::Mask {
                keep: (0..n).map(|i| i % 2 == 0).collect(),
                pattern: secateur_graph::MaskPattern::Unstructured,
                out_axis: 0,
            },
        );
        g.apply_masks().unwrap();
        quantize_all(&mut g);
        let mut shape = vec![4];
        shape.extend(&input);
        let x = random_tensor(&shape, 21);
        let ours = evaluate(&g, &[("input", x.clone())]).unwrap();
        let bytes = to_bytes(&g).unwrap();
        if std::env::var("QDQ_DEBUG").is_ok() {
            std::fs::write(format!("/tmp/qdq_{name}.onnx"), &bytes).unwrap();
            std::fs::write(
                format!("/tmp/qdq_{name}.x"),
                x.data()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            )
            .unwrap();
            std::fs::write(
                format!("/tmp/qdq_{name}.y"),
                ours[0]
                    .data()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            )
            .unwrap();
        }
        let theirs = ort_run(&py, &bytes, "input", &x).unwrap_or_else(|e| panic!("{name}: {e}"));
        // A float difference in the last bit can flip the rounding of a value that sits on a
        // quantization boundary and move it by one step; in deep nets (mobilenet-v2 has 21
        // quantized layers) a few such flips reach the output, so the bound is on the mean.
        let d: Vec<f32> = ours[0]
            .data()
            .iter()
            .zip(theirs[0].data())
            .map(|(a, b)| (a - b).abs())
            .collect();
        let mean = d.iter().sum::<f32>() / d.len() as f32;
        let max = d.iter().copied().fold(0.0, f32::max);
        assert!(
            mean <= 2e-3 && max <= 0.05,
            "{name}: QDQ model vs simulated quantization: mean diff {mean}, max {max}"
        );
        // the quantized graph differs from the float one (the simulation is not a no-op)
        let mut float = g.clone();
        float.quantization = None;
        let f = evaluate(&float, &[("input", x.clone())]).unwrap();
        assert!(f[0].max_abs_diff(&ours[0]) > 1e-5, "{name}");
        // back through import: same annotations and masks, zeros preserved
        let back = import_bytes(&bytes, Path::new(&name)).unwrap();
        assert_eq!(
            back.quantization.as_ref().unwrap().activations,
            g.quantization.as_ref().unwrap().activations,
            "{name}"
        );
        assert_eq!(
            back.quantization.as_ref().unwrap().weights,
            g.quantization.as_ref().unwrap().weights,
            "{name}"
        );
        assert_eq!(back.masks, g.masks);
        back.check().unwrap();
        let again = evaluate(&back, &[("input", x.clone())]).unwrap();
        assert!(
            again[0].max_abs_diff(&ours[0]) <= 1e-5,
            "{name}: re-imported QDQ model differs"
        );
    }
}
