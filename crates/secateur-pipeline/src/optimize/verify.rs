//! Independent checks of exported front members: the accuracy objective of the ONNX file on
//! the test data in ONNX Runtime (when a Python with onnxruntime is available), otherwise in
//! secateur's own runtime (a different engine from the training one): top-1 on the test split
//! for a classifier; for a sentence encoder the embeddings of the test texts, scored against
//! the dense model's as the search scores them. A bf16 member is checked in secateur's runtime
//! in bf16 (ONNX Runtime would run its file in f32). The figure is compared with the accuracy
//! the front reports.

use super::task::{Part, TaskData, TextTask};
use crate::text::{CALIBRATION_BATCH, Embedder, SetEmbeddings, TextGraph, embed_set};
use crate::{Context, Result, bail};
use secateur_data::npy::{NpyData, encode};
use secateur_data::{Dataset, Normalization};
use secateur_graph::Graph;
use secateur_graph::Precision;
use secateur_runtime::{ExecPlan, PlanConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One front member's verification as recorded in `verifications.jsonl`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Checked {
    pub id: String,
    pub verification: secateur_report::Verification,
}

/// Accuracy checker of a task's test data.
pub enum Verifier<'a> {
    Images(ImageVerifier),
    Text(TextVerifier<'a>),
}

impl<'a> Verifier<'a> {
    pub fn new(task: &'a TaskData) -> Result<Self> {
        Ok(match task {
            TaskData::Images(t) => Verifier::Images(ImageVerifier::new(&t.full()?.test, &t.norm)?),
            TaskData::Text(t) => Verifier::Text(TextVerifier::new(t)?),
        })
    }

    /// The engine that checks the accuracy of `graph`.
    pub fn engine(&self, graph: &Graph) -> &'static str {
        if graph.precision == Precision::Bf16 {
            return "secateur runtime in bf16 (ONNX Runtime runs the file in f32)";
        }
        let python = match self {
            Verifier::Images(v) => v.python.is_some(),
            Verifier::Text(v) => v.python.is_some(),
        };
        if python {
            "ONNX Runtime"
        } else {
            "secateur runtime (ONNX Runtime not available)"
        }
    }

    /// Accuracy of the exported `model` (or of `graph` in secateur's runtime without Python,
    /// or in bf16).
    pub fn accuracy(&self, model: &Path, graph: &Graph) -> Result<f64> {
        match self {
            Verifier::Images(v) => v.accuracy(model, graph),
            Verifier::Text(v) => v.accuracy(model, graph),
        }
    }
}

/// Top-1 checker for one test split.
pub struct ImageVerifier {
    python: Option<PathBuf>,
    dir: tempfile::TempDir,
    inputs: Vec<f32>,
    sample: usize,
    labels: Vec<u32>,
}

impl ImageVerifier {
    pub fn new(test: &Dataset, norm: &Normalization) -> Result<Self> {
        let idx: Vec<usize> = (0..test.len()).collect();
        let (x, labels) = test.batch(&idx, norm);
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let python = crate::ort_python::find();
        if python.is_some() {
            std::fs::write(
                dir.path().join("x.npy"),
                encode(x.shape(), &NpyData::F32(x.data().to_vec())),
            )?;
            std::fs::write(
                dir.path().join("y.npy"),
                encode(
                    &[labels.len()],
                    &NpyData::I64(labels.iter().map(|&v| v as i64).collect()),
                ),
            )?;
            std::fs::write(
                dir.path().join("ort_accuracy.py"),
                include_str!("../../assets/ort_accuracy.py"),
            )?;
        }
        Ok(ImageVerifier {
            python,
            dir,
            sample: test.sample_len(),
            inputs: x.data().to_vec(),
            labels,
        })
    }

    fn accuracy(&self, model: &Path, graph: &Graph) -> Result<f64> {
        match &self.python {
            Some(py) if graph.precision == Precision::F32 => {
                let mut cmd = Command::new(py);
                cmd.arg(self.dir.path().join("ort_accuracy.py"))
                    .arg(model)
                    .arg(self.dir.path().join("x.npy"))
                    .arg(self.dir.path().join("y.npy"));
                let out = run_ort(cmd, model)?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                v["accuracy"]
                    .as_f64()
                    .context("ONNX Runtime printed no accuracy")
            }
            _ => self.runtime_accuracy(graph),
        }
    }

    fn runtime_accuracy(&self, graph: &Graph) -> Result<f64> {
        let batch = 100usize;
        let mut plan = ExecPlan::compile(graph, PlanConfig::new(batch, 1))?;
        let n = self.labels.len();
        let mut correct = 0usize;
        let mut x = vec![0f32; batch * self.sample];
        for start in (0..n).step_by(batch) {
            let m = batch.min(n - start);
            x.fill(0.0);
            x[..m * self.sample]
                .copy_from_slice(&self.inputs[start * self.sample..(start + m) * self.sample]);
            let y = plan.run(&x)?;
            let classes = y.len() / batch;
            for i in 0..m {
                let row = &y[i * classes..(i + 1) * classes];
                let arg = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |p| p.0);
                correct += (arg as u32 == self.labels[start + i]) as usize;
            }
        }
        Ok(correct as f64 / n.max(1) as f64)
    }
}

/// Runs an ONNX Runtime script on `model`; a failure names the model and what the script said.
fn run_ort(mut cmd: Command, model: &Path) -> Result<std::process::Output> {
    let out = cmd.output().context("running ONNX Runtime")?;
    if !out.status.success() {
        bail!(
            "ONNX Runtime could not run {}: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Checker of a sentence encoder on the test texts: the token inputs of every test text written
/// once as .npy files (int64, one per graph input), the exported file's embeddings read back.
pub struct TextVerifier<'a> {
    task: &'a TextTask,
    python: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl<'a> TextVerifier<'a> {
    fn new(task: &'a TextTask) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let python = crate::ort_python::find();
        if python.is_some() {
            std::fs::write(
                dir.path().join("ort_embeddings.py"),
                include_str!("../../assets/ort_embeddings.py"),
            )?;
        }
        Ok(TextVerifier { task, python, dir })
    }

    fn accuracy(&self, model: &Path, graph: &Graph) -> Result<f64> {
        let (set, reference) = self.task.part(Part::Final);
        let e = match &self.python {
            Some(py) if graph.precision == Precision::F32 => {
                self.ort_embeddings(py, model, graph)?
            }
            _ => {
                let mut m = Embedder::new(graph, CALIBRATION_BATCH, rayon::current_num_threads())?;
                embed_set(&mut m, &self.task.data.encoder, set)?
            }
        };
        Ok(self.task.score_embeddings(set, &e, reference)["accuracy"])
    }

    /// The test texts' embeddings by ONNX Runtime on the exported `model` (`graph` as loaded
    /// from it names the inputs and the sequence length).
    fn ort_embeddings(&self, py: &Path, model: &Path, graph: &Graph) -> Result<SetEmbeddings> {
        let (set, _) = self.task.part(Part::Final);
        let shape = TextGraph::of(graph)?;
        let texts = set.all_texts();
        let batch = self.task.data.encoder.encode(&texts, shape.seq_len)?;
        let mut args = Vec::new();
        for (name, t) in shape.feeds(graph, &batch) {
            let path = self.dir.path().join(format!("input{}.npy", args.len()));
            let ids: Vec<i64> = t.data().iter().map(|&v| v as i64).collect();
            std::fs::write(&path, encode(t.shape(), &NpyData::I64(ids)))?;
            args.push(format!("{name}={}", path.display()));
        }
        let out_path = self.dir.path().join("embeddings.npy");
        let mut cmd = Command::new(py);
        cmd.arg(self.dir.path().join("ort_embeddings.py"))
            .arg(model)
            .arg(&out_path)
            .args(&args);
        run_ort(cmd, model)?;
        let arr = secateur_data::npy::read(&out_path)?;
        let (NpyData::F32(values), &[n, dim]) = (arr.data, arr.shape.as_slice()) else {
            bail!(
                "ONNX Runtime's embeddings of {} are not a float32 [texts, dim] array",
                model.display()
            );
        };
        if n != texts.len() || dim == 0 {
            bail!(
                "ONNX Runtime returned {n} embeddings of {}, expected {}",
                model.display(),
                texts.len()
            );
        }
        Ok(SetEmbeddings {
            rows: values.chunks(dim).map(<[f32]>::to_vec).collect(),
            examples: set.examples.len(),
        })
    }
}
