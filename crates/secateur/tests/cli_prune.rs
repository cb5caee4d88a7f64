//! `prune` end to end on the embedded data: data-free pruning of an ONNX file, recipes equal
//! to flags, N:M and int8 QDQ exports that ONNX Runtime runs with the reported accuracy, saved
//! and replayed structured plans, and clear errors for impossible requests.

use secateur_data::load_mini;
use std::path::{Path, PathBuf};
use std::process::Command;

fn secateur(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes")
}

/// A LeNet trained for one epoch on the embedded data (shared by the tests of this file).
fn trained_lenet(dir: &Path) -> PathBuf {
    let p = dir.join("lenet.onnx");
    ok(&secateur(&[
        "train",
        "--model",
        "lenet5-bn",
        "--epochs",
        "1",
        "--out",
        p.to_str().unwrap(),
    ]));
    p
}

#[test]
fn every_bundled_recipe_parses_and_validates() {
    let mut n = 0;
    for e in std::fs::read_dir(recipes_dir()).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let r = secateur::recipe::Recipe::from_toml(&text, &p.display().to_string()).unwrap();
        r.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        n += 1;
    }
    assert!(n >= 8);
}

#[test]
fn data_free_pruning_and_recipe_equals_flags() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.onnx");
    ok(&secateur(&["convert", "lenet5-bn", src.to_str().unwrap()]));
    let a = dir.path().join("a.onnx");
    let v = ok(&secateur(&[
        "prune",
        src.to_str().unwrap(),
        "--method",
        "magnitude",
        "--sparsity",
        "0.75",
        "--scope",
        "layer",
        "--exclude",
        "conv1",
        "--out",
        a.to_str().unwrap(),
        "--json",
        "--save-recipe",
        dir.path().join("r.toml").to_str().unwrap(),
    ]));
    assert!(v["result"]["before"].is_null(), "no data, no evaluation");
    for l in v["result"]["layers"].as_array().unwrap() {
        let s = l["sparsity"].as_f64().unwrap();
        if l["layer"] == "conv1" {
            assert_eq!(s, 0.0);
        } else {
            assert!((s - 0.75).abs() < 0.01, "{l}");
        }
    }
    // the saved recipe reproduces the same model byte for byte
    let b = dir.path().join("b.onnx");
    ok(&secateur(&[
        "prune",
        src.to_str().unwrap(),
        "--recipe",
        dir.path().join("r.toml").to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // and the input was not touched
    let g = secateur_onnx::load_model(&src).unwrap();
    assert!(g.masks.is_empty());
}

#[test]
fn nm_and_int8_exports_run_in_onnx_runtime_with_the_reported_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let lenet = trained_lenet(dir.path());
    let split = load_mini().unwrap();
    let idx: Vec<usize> = (0..split.test.len()).collect();
    let (x, y) = split.test.batch(&idx, &split.normalization);
    let py = secateur_testkit::require_python();
    // 2:4 from the bundled recipe
    let nm = dir.path().join("nm.onnx");
    let v = ok(&secateur(&[
        "prune",
        lenet.to_str().unwrap(),
        "--data",
        "fashion-mnist-mini",
        "--recipe",
        recipes_dir().join("nm-2of4.toml").to_str().unwrap(),
        "--out",
        nm.to_str().unwrap(),
        "--json",
    ]));
    let g = secateur_onnx::load_model(&nm).unwrap();
    for (w, m) in &g.masks {
        assert_eq!(
            m.pattern,
            secateur_graph::MaskPattern::NM { n: 2, m: 4 },
            "{w}"
        );
    }
    g.check().unwrap();
    let after = v["result"]["after"]["accuracy"].as_f64().unwrap();
    if let Some(py) = &py {
        let (acc, _) = secateur_testkit::ort_accuracy(py, &nm, &x, &y).unwrap();
        assert!(
            (acc - after).abs() <= 0.001,
            "ORT {acc} vs reported {after}"
        );
    }
    // 90 % + int8 QAT: the mask is preserved exactly and the QDQ model matches
    let q = dir.path().join("q.onnx");
    let v = ok(&secateur(&[
        "prune",
        lenet.to_str().unwrap(),
        "--data",
        "fashion-mnist-mini",
        "--recipe",
        recipes_dir().join("qat-int8.toml").to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
        "--json",
    ]));
    let r = &v["result"];
    let int8 = r["after_int8"]["accuracy"].as_f64().unwrap();
    assert!(r["after"]["accuracy"].as_f64().is_some());
    let (mut params, mut nonzero) = (0.0, 0.0);
    for l in r["layers"].as_array().unwrap() {
        if l["layer"] == "conv2" || l["layer"] == "fc1" {
            params += l["params"].as_f64().unwrap();
            nonzero += l["nonzero"].as_f64().unwrap();
        }
    }
    assert!(
        (1.0 - nonzero / params - 0.9).abs() < 1e-3,
        "global sparsity over the pruned layers: {}",
        1.0 - nonzero / params
    );
    let g = secateur_onnx::load_model(&q).unwrap();
    assert!(g.quantization.is_some());
    for (w, m) in &g.masks {
        let t = &g.initializers[w];
        assert!(
            m.keep.iter().zip(t.data()).all(|(k, v)| *k || *v == 0.0),
            "{w}: a pruned weight is non-zero after QAT"
        );
    }
    if let Some(py) = &py {
        let (acc, _) = secateur_testkit::ort_accuracy(py, &q, &x, &y).unwrap();
        assert!(
            (acc - int8).abs() <= 0.002,
            "ORT on the QDQ model {acc} vs reported int8 {int8}"
        );
    }
}

#[test]
fn impossible_requests_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "prune",
                "lenet5-bn",
                "--method",
                "magnitude",
                "--sparsity",
                "1.0",
                "--out",
                o,
            ],
            "[0, 1)",
        ),
        (
            vec![
                "prune",
                "lenet5-bn",
                "--method",
                "magnitude",
                "--granularity",
                "4:4",
                "--out",
                o,
            ],
            "N < M",
        ),
        (
            vec![
                "prune",
                "lenet5-bn",
                "--method",
                "magnitude",
                "--granularity",
                "block:3x1",
                "--sparsity",
                "0.5",
                "--out",
                o,
            ],
            "block 3x1",
        ),
        (
            vec![
                "prune",
                "lenet5-bn",
                "--method",
                "magnitude",
                "--sparsity",
                "0.5",
                "--exclude",
                "conv7",
                "--out",
                o,
            ],
            "conv7",
        ),
        (
            vec![
                "prune",
                "lenet5-bn",
                "--method",
                "taylor",
                "--sparsity",
                "0.5",
                "--out",
                o,
            ],
            "--data",
        ),
        (
            vec![
                "prune",
                "lenet5-bn",
                "--structured",
                "channels",
                "--ratio",
                "1.0",
                "--out",
                o,
            ],
            "ratio",
        ),
        (
            vec![
                "prune",
                "lenet5-bn",
                "--structured",
                "channels",
                "--target-macs",
                "0.001",
                "--out",
                o,
            ],
            "impossible",
        ),
    ];
    for (args, needle) in cases {
        let r = secateur(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!out.exists());
    }
}
