//! Export → import preserves the graph exactly (nodes, weights, masks, metadata, execution
//! precision), and the
//! exported models run in ONNX Runtime with the reference evaluator's outputs.

mod common;

use secateur_graph::{Mask, MaskPattern, evaluate};
use secateur_onnx::{import_bytes, to_bytes};
use secateur_testkit::{ort_run, random_tensor, require_python};
use std::path::Path;

#[test]
fn import_of_export_is_the_same_graph() {
    for (i, (name, mut g, _)) in common::test_models().into_iter().enumerate() {
        if i % 2 == 1 {
            g.precision = secateur_graph::Precision::Bf16;
        }
        // a mask travels too
        let w = g.weights_in_role(secateur_graph::InputRole::Weight)[0].clone();
        let len = g.initializers[&w].len();
        let keep: Vec<bool> = (0..len).map(|i| i % 3 != 0).collect();
        let mask = Mask {
            keep,
            pattern: MaskPattern::Unstructured,
            out_axis: 0,
        };
        g.masks.insert(w.clone(), mask);
        g.apply_masks().unwrap();
        g.metadata
            .insert("secateur.normalize".into(), "0.286;0.353".into());
        let bytes = to_bytes(&g).unwrap();
        let back = import_bytes(&bytes, Path::new(&name)).unwrap();
        assert_eq!(back, g, "{name}: round trip changed the graph");
        // and a second trip is byte-identical
        assert_eq!(to_bytes(&back).unwrap(), bytes, "{name}");
    }
}

#[test]
fn an_unknown_precision_in_the_metadata_is_a_named_error() {
    let (name, mut g, _) = common::test_models().remove(0);
    g.precision = secateur_graph::Precision::Bf16;
    let mut bytes = to_bytes(&g).unwrap();
    let at = bytes.windows(4).position(|w| w == b"bf16").unwrap();
    bytes[at..at + 4].copy_from_slice(b"fp16");
    let e = import_bytes(&bytes, Path::new(&name))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("secateur.precision") && e.contains("'fp16'") && e.contains("f32, bf16"),
        "{e}"
    );
}

#[test]
fn exported_models_match_the_reference_in_onnx_runtime() {
    let Some(py) = require_python() else { return };
    for (name, g, input) in common::test_models() {
        let mut shape = vec![3];
        shape.extend(&input);
        let x = random_tensor(&shape, 5);
        let ours = evaluate(&g, &[("input", x.clone())]).unwrap();
        let bytes = to_bytes(&g).unwrap();
        let theirs = ort_run(&py, &bytes, "input", &x).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(theirs.len(), 1);
        let diff = ours[0].max_abs_diff(&theirs[0]);
        assert!(
            diff <= 1e-5,
            "{name}: max abs diff {diff} between the reference evaluator and ONNX Runtime"
        );
    }
}

#[test]
fn sparse_weights_are_written_small_and_run_in_onnx_runtime() {
    let py = require_python();
    for (name, dense, input) in common::test_models() {
        let mut g = dense.clone();
        let (mut masked_bytes, mut masked) = (0, 0);
        for w in g.weights_in_role(secateur_graph::InputRole::Weight) {
            let len = g.initializers[&w].len();
            if g.initializers[&w].shape().len() < 2 {
                continue;
            }
            // 90 % pruned, and one kept weight that is exactly zero stays in the mask
            let keep: Vec<bool> = (0..len).map(|i| i % 10 == 3).collect();
            masked_bytes += 4 * len;
            masked += 1;
            g.initializers.get_mut(&w).unwrap().data_mut()[3] = 0.0;
            let pattern = MaskPattern::Unstructured;
            g.masks.insert(
                w,
                Mask {
                    keep,
                    pattern,
                    out_axis: 0,
                },
            );
        }
        g.apply_masks().unwrap();
        let bytes = to_bytes(&g).unwrap();
        let dense_bytes = to_bytes(&dense).unwrap().len();
        // each masked weight takes 12 bytes per kept element (value + int64 index) instead of
        // 4 per element: 0.3 of its dense bytes at 10 % density, plus under 200 bytes of names
        // (Constant node, indices, mask entry) per weight
        let saved = dense_bytes as f64 - bytes.len() as f64;
        assert!(
            saved >= 0.65 * masked_bytes as f64 - 200.0 * masked as f64,
            "{name}: {} bytes sparse vs {dense_bytes} dense saves {saved} of {masked_bytes} weight bytes",
            bytes.len()
        );
        let back = import_bytes(&bytes, Path::new(&name)).unwrap();
        assert_eq!(
            back, g,
            "{name}: masks or weights changed through the sparse file"
        );
        let Some(py) = &py else { continue };
        let mut shape = vec![2];
        shape.extend(&input);
        let x = random_tensor(&shape, 9);
        let ours = evaluate(&g, &[("input", x.clone())]).unwrap();
        let theirs = ort_run(py, &bytes, "input", &x).unwrap_or_else(|e| panic!("{name}: {e}"));
        let diff = ours[0].max_abs_diff(&theirs[0]);
        assert!(diff <= 1e-5, "{name}: ONNX Runtime differs by {diff}");
    }
}
