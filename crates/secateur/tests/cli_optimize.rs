//! `optimize` end to end with a tiny budget on the embedded data: the report directory and its
//! verified front, a run killed mid-search that resumes to the same front as an uninterrupted
//! one, and clear messages for constraints that cannot be met.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A small but complete run: latency modelled for the mobile profile (deterministic).
fn tiny_args(out: &Path) -> Vec<String> {
    tiny_args_with(out, 1)
}

fn tiny_args_with(out: &Path, dense_epochs: usize) -> Vec<String> {
    let dense = dense_epochs.to_string();
    [
        "optimize",
        "lenet5-bn",
        "--hardware",
        "mobile",
        "--dense-epochs",
        &dense,
        "--population",
        "4",
        "--generations",
        "2",
        "--search-samples",
        "256",
        "--val-samples",
        "200",
        "--final-epochs",
        "1",
        "--max-final",
        "3",
        "--workers",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn secateur(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(args)
        .output()
        .unwrap()
}

fn front_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("front.json")).unwrap()).unwrap()
}

/// (id, accuracy, energy, bytes, latency) of every front member, sorted.
fn front_summary(r: &serde_json::Value) -> Vec<(String, Vec<f64>)> {
    let mut v: Vec<(String, Vec<f64>)> = r["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["on_front"].as_bool() == Some(true))
        .map(|p| {
            let vals = &p["values"];
            (
                p["id"].as_str().unwrap().to_string(),
                ["accuracy", "energy_mj", "model_kib", "latency_ms"]
                    .iter()
                    .map(|k| vals[k].as_f64().unwrap())
                    .collect(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Lines in a run-directory file (0 when it does not exist yet).
fn lines(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Starts the tiny run in `dir` ten times and kills it with SIGKILL at a fixed schedule of
/// moments: during start-up and dense training; after 2, 5, 9, 13, 17 and 21 of its 24
/// evaluations (search generations, then the baseline); after the last one (in the final
/// fine-tune); after the final model is recorded (measurement, export, verification); after
/// its verification (the report). Returns how many kills came before the run ended.
fn kill_on_schedule(dir: &Path) -> usize {
    let schedule: [(&str, usize); 10] = [
        ("", 0),
        ("evaluations.jsonl", 2),
        ("evaluations.jsonl", 5),
        ("evaluations.jsonl", 9),
        ("evaluations.jsonl", 13),
        ("evaluations.jsonl", 17),
        ("evaluations.jsonl", 21),
        ("evaluations.jsonl", 24),
        ("finals.jsonl", 1),
        ("verifications.jsonl", 1),
    ];
    let mut kills = 0;
    for (file, count) in schedule {
        let mut child = Command::new(env!("CARGO_BIN_EXE_secateur"))
            .args(tiny_args(dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let due = |elapsed: Duration| {
            if file.is_empty() {
                elapsed >= Duration::from_millis(700)
            } else {
                lines(dir, file) >= count
            }
        };
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the run failed before the kill at {file}:{count}"
                );
                break true;
            }
            if due(start.elapsed()) || start.elapsed() > Duration::from_secs(600) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if finished {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    kills
}

#[test]
fn tiny_run_writes_a_verified_report_and_resumes_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let out = secateur(&tiny_args(&whole));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Pareto front of lenet5-bn"), "{stdout}");
    let r = front_json(&whole);
    let front = front_summary(&r);
    assert!(!front.is_empty());
    // every front member is exported, and the exported file scores what the front reports
    for p in r["points"].as_array().unwrap() {
        if p["on_front"].as_bool() != Some(true) {
            continue;
        }
        let model = whole.join(p["model_path"].as_str().unwrap());
        assert!(model.exists(), "{}", model.display());
        let reported = p["values"]["accuracy"].as_f64().unwrap();
        let checked = p["verification"]["checked_accuracy"].as_f64().unwrap();
        assert!(
            (reported - checked).abs() <= 0.002,
            "{reported} vs {checked}"
        );
    }
    let html = std::fs::read_to_string(whole.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Pareto front"));
    assert!(
        r["baseline"].as_array().unwrap().len() >= 4,
        "baseline evaluated"
    );
    assert!(r["hypervolume_history"].as_array().unwrap().len() == 3);

    // the same run, killed (SIGKILL) at ten moments across every stage, each time resumed
    let killed = tmp.path().join("killed");
    let kills = kill_on_schedule(&killed);
    assert!(
        kills >= 8,
        "only {kills} of the 10 kills came before the run ended"
    );

    // a write that fails (the report's path is taken by a directory) ends with the path and
    // the reason and loses nothing: once the cause is gone the run resumes to the same front
    let report = killed.join("report.html");
    let _ = std::fs::remove_file(&report);
    std::fs::create_dir_all(report.join("blocker")).unwrap();
    let out = secateur(&tiny_args(&killed));
    assert!(!out.status.success(), "the blocked write must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("report.html"), "{err}");
    std::fs::remove_dir_all(&report).unwrap();
    let out = secateur(&tiny_args(&killed));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    assert_eq!(front_summary(&front_json(&killed)), front);

    // other settings in the same directory are refused rather than mixed
    let mut other = tiny_args(&killed);
    other.extend(["--seed".to_string(), "5".to_string()]);
    let out = secateur(&other);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("different settings"));
}

#[test]
fn impossible_constraints_are_named_with_the_closest_point() {
    let tmp = tempfile::tempdir().unwrap();
    // contradictory: rejected before any work
    let mut args = tiny_args(&tmp.path().join("a"));
    args.extend(
        [
            "--constraint",
            "latency<=1ms",
            "--constraint",
            "latency>=2ms",
        ]
        .map(String::from),
    );
    let out = secateur(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("latency<=1ms") && err.contains("latency>=2ms"),
        "{err}"
    );

    // a size no model of the space reaches: named, with the smallest size found
    let mut args = tiny_args_with(&tmp.path().join("b"), 0);
    args.extend(["--constraint", "bytes<=100B"].map(String::from));
    let out = secateur(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bytes<=100B") && err.contains("closest point"),
        "{err}"
    );

    // an accuracy no candidate reaches: the search runs, the report is written, the message
    // names the constraint and the closest point
    let dir = tmp.path().join("c");
    let mut args = tiny_args_with(&dir, 0);
    args.extend(["--constraint", "accuracy>=0.999"].map(String::from));
    let out = secateur(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no candidate meets constraint 'accuracy>=0.999'")
            && err.contains("closest point"),
        "{err}"
    );
    assert!(dir.join("report.html").exists());
}
