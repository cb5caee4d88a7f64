//! `train` and `eval` end to end on the embedded data: a trained model exported to ONNX gives
//! the same accuracy in ONNX Runtime as `secateur eval`; a run killed mid-training resumes from
//! its checkpoint to the same model; bad input gives clear errors.

use secateur_data::load_mini;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn secateur(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn trained_model_has_the_same_accuracy_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lenet.onnx");
    ok(&secateur(&[
        "train",
        "--model",
        "lenet5-bn",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--out",
        model.to_str().unwrap(),
    ]));
    let out = ok(&secateur(&["eval", model.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ours = v["accuracy"].as_f64().unwrap();
    assert!(ours > 0.7, "accuracy {ours}");
    assert_eq!(v["per_class_accuracy"].as_array().unwrap().len(), 10);
    let Some(py) = secateur_testkit::require_python() else {
        return;
    };
    let split = load_mini().unwrap();
    let idx: Vec<usize> = (0..split.test.len()).collect();
    let (x, y) = split.test.batch(&idx, &split.normalization);
    let (theirs, _) = secateur_testkit::ort_accuracy(&py, &model, &x, &y).unwrap();
    assert!(
        (ours - theirs).abs() <= 0.001,
        "secateur eval {ours} vs ONNX Runtime {theirs}"
    );
    // agreement with itself is 1
    let out = ok(&secateur(&[
        "eval",
        model.to_str().unwrap(),
        "--reference",
        model.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["agreement"].as_f64().unwrap(), 1.0);
}

#[test]
fn killed_run_resumes_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    let args = |out: &std::path::Path| -> Vec<String> {
        [
            "train",
            "--model",
            "mlp",
            "--epochs",
            "6",
            "--seed",
            "5",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    ok(&secateur(
        &args(&a).iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    // run again and kill it as soon as the first checkpoint exists
    let ck = b.with_extension("ckpt.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(args(&b))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ck.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ck.exists(), "no checkpoint was written");
    assert!(!b.exists(), "the run finished before it could be killed");
    // without --resume the old checkpoint is not silently overwritten
    let out = secateur(&args(&b).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    let mut resume = args(&b);
    resume.push("--resume".into());
    ok(&secateur(
        &resume.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "resumed run differs from the uninterrupted one"
    );
    assert!(!ck.exists(), "checkpoint is removed after success");
}

#[test]
fn bad_input_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("x.onnx");
    let out = secateur(&[
        "train",
        "--model",
        "alexnet",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mobilenet-v2"));

    // a 3-channel model on 1-channel data
    let rgb = dir.path().join("rgb.onnx");
    let g = secateur_graph::zoo::build(
        secateur_graph::zoo::ZooModel::Lenet5Bn,
        &secateur_graph::zoo::ZooConfig {
            channels: 3,
            height: 32,
            width: 32,
            ..Default::default()
        },
    )
    .unwrap();
    secateur_onnx::save_model(&g, &rgb).unwrap();
    let out = secateur(&["eval", rgb.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[N, 3, 32, 32]") && err.contains("[1, 28, 28]"),
        "{err}"
    );

    let out = secateur(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "no-such-set",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fashion-mnist-mini"));

    let out = secateur(&[
        "train",
        "--model",
        "mlp",
        "--lr",
        "1e7",
        "--optimizer",
        "sgd",
        "--momentum",
        "0",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("diverged"));
    assert!(!out_path.exists());
}
