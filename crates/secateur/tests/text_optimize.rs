//! `secateur optimize` on a text set: a sentence encoder (a small random BERT with the real
//! all-MiniLM-L6-v2 tokenizer, so no download beyond the package CI installs) searched over
//! heads and FFN neurons, scored by agreement with the dense model; the front is exported,
//! verified by an independent engine (ONNX Runtime when available), resumable, and settings a
//! text search cannot honour are refused with a clear message.

use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, random_bert};
use secateur_graph::{Tensor, evaluate};
use secateur_testkit::require_minilm;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEQ: usize = 24;

/// A small random encoder saved as `model.onnx` next to the real tokenizer.
fn encoder(dir: &Path, tokenizer_dir: &Path) -> PathBuf {
    let cfg = BertConfig {
        vocab_size: 30522,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: HiddenAct::Gelu,
        position_offset: 0,
    };
    let g = random_bert(&cfg, SEQ, Pooling::Mean, 11).unwrap();
    let model = dir.join("model.onnx");
    secateur_onnx::save_model(&g, &model).unwrap();
    std::fs::copy(
        tokenizer_dir.join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    model
}

/// The first `n` pairs of the bundled text set (or their first sentences only, as .txt).
fn text_set(dir: &Path, n: usize, sentences_only: bool) -> PathBuf {
    let all = std::fs::read_to_string(
        secateur_testkit::workspace_root()
            .join("crates/secateur-data/data/pydoc-pairs/pydoc-pairs.jsonl"),
    )
    .unwrap();
    let lines: Vec<&str> = all.lines().take(n).collect();
    if sentences_only {
        let texts: Vec<String> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["text"].as_str().unwrap().replace('\n', " ")
            })
            .collect();
        let path = dir.join("sentences.txt");
        std::fs::write(&path, texts.join("\n")).unwrap();
        return path;
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Two sequences of token ids (the second padded) and their attention mask.
fn token_feeds() -> Vec<(&'static str, Tensor)> {
    let ids: Vec<f32> = (0..2 * SEQ)
        .map(|i| {
            if i >= SEQ + 10 {
                0.0
            } else {
                (101 + i * 37 % 2000) as f32
            }
        })
        .collect();
    let mask: Vec<f32> = ids.iter().map(|&v| (v != 0.0) as u8 as f32).collect();
    vec![
        ("input_ids", Tensor::new(vec![2, SEQ], ids).unwrap()),
        ("attention_mask", Tensor::new(vec![2, SEQ], mask).unwrap()),
    ]
}

fn optimize(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args(["optimize", model.to_str().unwrap(), "--data"])
        .arg(data)
        .args([
            "--population",
            "4",
            "--generations",
            "1",
            "--max-final",
            "3",
        ])
        .args(["--workers", "2", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn front_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("front.json")).unwrap()).unwrap()
}

#[test]
fn a_sentence_encoder_is_searched_on_a_text_set_and_its_front_verified() {
    let Some(tok) = require_minilm() else { return };
    let d = tempfile::tempdir().unwrap();
    let model = encoder(d.path(), &tok);
    let data = text_set(d.path(), 100, false);
    let out = d.path().join("run");
    let o = optimize(&model, &data, &out, &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("text set pairs"), "{stderr}");
    let r = front_json(&out);
    assert!(
        r["objectives"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("agreement"),
        "{}",
        r["objectives"][0]
    );
    let dense_macs = r["dense"]["macs"].as_f64().unwrap();
    assert_eq!(r["dense"]["agreement"].as_f64(), Some(1.0));
    let front: Vec<&serde_json::Value> = r["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["on_front"] == true)
        .collect();
    assert!(!front.is_empty(), "{stdout}");
    let mut pruned = 0;
    for p in &front {
        let v = &p["values"];
        let (acc, agreement) = (
            v["accuracy"].as_f64().unwrap(),
            v["agreement"].as_f64().unwrap(),
        );
        assert_eq!(acc, agreement, "the objective is the agreement by default");
        assert!((-1.0..=1.0 + 1e-9).contains(&acc));
        assert!(v["retrieval_top_1"].as_f64().is_some(), "{v}");
        // the exported file, run by another engine, scores what the front reports
        let checked = p["verification"]["checked_accuracy"].as_f64().unwrap();
        assert!((checked - acc).abs() < 1e-3, "{checked} vs {acc}: {p}");
        let path = out.join(p["model_path"].as_str().unwrap());
        let g = secateur_onnx::load_model(&path).unwrap();
        // export -> import -> export -> import keeps the model (no helper defined twice)
        let again = d.path().join("again.onnx");
        secateur_onnx::save_model(&g, &again).unwrap();
        let g2 = secateur_onnx::load_model(&again).unwrap();
        let feeds = token_feeds();
        let (y, y2) = (
            evaluate(&g, &feeds).unwrap().remove(0),
            evaluate(&g2, &feeds).unwrap().remove(0),
        );
        assert_eq!(y.data(), y2.data());
        if v["macs"].as_f64().unwrap() < dense_macs * 0.99 {
            pruned += 1;
            assert!(
                acc < 1.0 - 1e-6,
                "a pruned random encoder agrees exactly: {v}"
            );
        }
    }
    assert!(pruned > 0, "no pruned model on the front: {stdout}");
    // heads and neurons are what the space prunes: every group is one or the other
    let sens = r["sensitivity"].as_array().unwrap();
    assert_eq!(sens.len(), 4, "2 layers x (heads, neurons): {sens:?}");

    // a second run resumes and changes nothing
    let before = std::fs::read(out.join("front.json")).unwrap();
    let o = optimize(&model, &data, &out, &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    let after = front_json(&out);
    let before: serde_json::Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(after["points"], before["points"]);
}

#[test]
fn int8_and_distillation_reach_the_text_front_when_asked_for() {
    let Some(tok) = require_minilm() else { return };
    let d = tempfile::tempdir().unwrap();
    let model = encoder(d.path(), &tok);
    let data = text_set(d.path(), 100, false);
    let config = d.path().join("search.toml");
    std::fs::write(&config, "int8 = true\nfinal_epochs = 1\nlr = 0.0003\n").unwrap();
    let out = d.path().join("run");
    let o = optimize(
        &model,
        &data,
        &out,
        &[
            "--config",
            config.to_str().unwrap(),
            "--objectives",
            "accuracy,bytes",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = front_json(&out);
    let points = r["points"].as_array().unwrap();
    let int8: Vec<&serde_json::Value> = points
        .iter()
        .filter(|p| p["genome"]["precision"] == "int8")
        .collect();
    assert!(!int8.is_empty(), "no int8 candidate evaluated");
    for p in points.iter().filter(|p| p["on_front"] == true) {
        let (acc, checked) = (
            p["values"]["accuracy"].as_f64().unwrap(),
            p["verification"]["checked_accuracy"].as_f64().unwrap(),
        );
        // int8 files run in another engine than the simulation that scored them
        let tolerance = if p["genome"]["precision"] == "int8" {
            0.02
        } else {
            1e-3
        };
        assert!((acc - checked).abs() < tolerance, "{p}");
    }
}

#[test]
fn settings_a_text_search_cannot_honour_are_refused() {
    let Some(tok) = require_minilm() else { return };
    let d = tempfile::tempdir().unwrap();
    let model = encoder(d.path(), &tok);
    let sentences = text_set(d.path(), 60, true);
    let out = d.path().join("run");
    let cases: [(&Path, &[&str], &str); 3] = [
        (&sentences, &["--text-score", "task"], "needs pairs"),
        (&sentences, &["--dense-epochs", "2"], "dense-epochs"),
        (&sentences, &["--ensemble-size", "2"], "ensemble-size"),
    ];
    for (data, extra, want) in cases {
        let o = optimize(&model, data, &out, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} was accepted");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
    // an image model with a text set: told that the model is not a sentence encoder
    let o = optimize(Path::new("lenet5-bn"), &sentences, &out, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("sentence encoder"), "{stderr}");
}
