//! The `inspect` and `convert` subcommands end to end: hand-counted parameters and MACs, JSON
//! output, round trips, and clear errors with a non-zero exit.

use std::process::Command;

fn secateur(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inspect_lenet_matches_hand_count() {
    let out = secateur(&["inspect", "lenet5-bn", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // conv1 32·25+32, bn1 2·32, conv2 64·32·25+64, bn2 2·64, fc1 1024·256+256, fc2 256·10+10
    let params = 832 + 64 + 51_264 + 128 + 262_400 + 2_570;
    // conv1 32·24·24·25, conv2 64·8·8·32·25, fc1 1024·256, fc2 256·10
    let macs = 460_800 + 3_276_800 + 262_144 + 2_560;
    assert_eq!(v["total_params"], params);
    assert_eq!(v["total_macs"], macs);
    let conv2 = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["node"] == "conv2")
        .unwrap();
    assert_eq!(conv2["macs"], 3_276_800);
    assert_eq!(conv2["output_shape"], "[N, 64, 8, 8]");
}

#[test]
fn convert_round_trips_and_inspect_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    assert!(
        secateur(&["convert", "resnet8", a.to_str().unwrap()])
            .status
            .success()
    );
    let out = secateur(&["convert", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let text = String::from_utf8(secateur(&["inspect", b.to_str().unwrap()]).stdout).unwrap();
    assert!(
        text.contains("layer1.0.add") && text.contains("total"),
        "{text}"
    );
    // marked bf16: secateur's runtime runs it in bf16 (bench says so), back to f32 on request
    let c = dir.path().join("c.onnx");
    let (a_s, c_s) = (a.to_str().unwrap(), c.to_str().unwrap());
    let out = secateur(&["convert", a_s, c_s, "--precision", "bf16"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("runs in bf16"));
    let bench = ["bench", c_s, "--batch", "1", "--budget-ms", "50", "--json"];
    let out = secateur(&bench);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["precision"], "bf16");
    let out = secateur(&["convert", c_s, b.to_str().unwrap(), "--precision", "f32"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let out = secateur(&["convert", a_s, c_s, "--precision", "fp16"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--precision") && err.contains("f32, bf16"),
        "{err}"
    );
}

#[test]
fn errors_are_clear_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\x08\x07\x12\x05hello").unwrap();
    let out = secateur(&["inspect", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.onnx"), "{err}");

    let out = secateur(&["inspect", "resnet9000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lenet5-bn"));

    let a = dir.path().join("a.onnx");
    assert!(
        secateur(&["convert", "mlp", a.to_str().unwrap()])
            .status
            .success()
    );
    let before = std::fs::read(&a).unwrap();
    let out = secateur(&["convert", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&a).unwrap(), before);

    // a text set handed to optimize with an image model: both named, and what the model
    // must be
    let text = dir.path().join("pairs.jsonl");
    std::fs::write(&text, "{\"text\": \"a\", \"pair\": \"b\"}\n").unwrap();
    let out_dir = dir.path().join("run");
    let out = secateur(&[
        "optimize",
        "lenet5-bn",
        "--data",
        text.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pairs.jsonl")
            && err.contains("is a text set")
            && err.contains("lenet5-bn")
            && err.contains("sentence encoder"),
        "{err}"
    );

    // the least-squares refit of structured pruning needs calibration text: refused without
    let pruned = dir.path().join("p.onnx");
    let out = secateur(&[
        "prune",
        "lenet5-bn",
        "--structured",
        "channels",
        "--ratio",
        "0.5",
        "--reconstruction",
        "dense",
        "--out",
        pruned.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--reconstruction") && err.contains("text set"),
        "{err}"
    );
    assert!(!pruned.exists());
}

#[test]
fn bench_names_layers_without_unmeasured_placeholders() {
    let out = secateur(&[
        "bench",
        "lenet5-bn",
        "--batch",
        "1",
        "--threads",
        "1",
        "--budget-ms",
        "50",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("median") && text.contains("conv2"), "{text}");
    assert!(!text.contains("NaN"), "{text}");
}

#[cfg(unix)]
#[test]
fn written_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (umask, want) in [("022", 0o644), ("077", 0o600)] {
        let out_file = dir.path().join(format!("m{umask}.onnx"));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" convert lenet5-bn \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_secateur"))
            .arg(&out_file)
            .status()
            .unwrap();
        assert!(status.success());
        let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "umask {umask}: mode {mode:o}");
    }
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(["inspect", "resnet8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // close the reading end before anything is written: every write meets a broken pipe
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
