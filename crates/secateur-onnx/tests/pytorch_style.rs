//! Import of ONNX files in the style of `torch.onnx.export` and `onnx.helper` (made by
//! `pytorch_style.py`): the reference evaluator on the imported graph must reproduce ONNX
//! Runtime's outputs, and each model must survive export → ONNX Runtime again.

use secateur_graph::{Tensor, evaluate};
use secateur_onnx::{load_model, to_bytes};
use secateur_testkit::{ort_run, require_python};
use std::process::Command;

fn read_f32(path: &str, shape: Vec<usize>) -> Tensor {
    let raw = std::fs::read(path).unwrap();
    Tensor::new(
        shape,
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
    .unwrap()
}

#[test]
fn pytorch_style_models_import_and_match_onnx_runtime() {
    let Some(py) = require_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pytorch_style.py");
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
    assert_eq!(manifest.len(), 13);
    for case in manifest {
        let path = case["path"].as_str().unwrap();
        let shape = |k: &str| {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect::<Vec<_>>()
        };
        let g = load_model(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            g.inputs[0].shape.has_batch(),
            "{path}: batch must stay symbolic"
        );
        let x = read_f32(&format!("{path}.in.bin"), shape("input"));
        let expected = read_f32(&format!("{path}.out.bin"), shape("output"));
        let ours = evaluate(&g, &[("input", x.clone())]).unwrap();
        let diff = ours[0].max_abs_diff(&expected);
        assert!(
            diff <= 1e-5,
            "{path}: imported graph differs from ONNX Runtime by {diff}"
        );
        // re-export at opset 17 and run again
        let again = ort_run(&py, &to_bytes(&g).unwrap(), "input", &x).unwrap();
        let diff = again[0].max_abs_diff(&expected);
        assert!(diff <= 1e-5, "{path}: re-exported model differs by {diff}");
    }
}
