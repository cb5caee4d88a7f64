//! Independent checks of exported front members: top-1 accuracy of the ONNX file on the test
//! split in ONNX Runtime (when a Python with onnxruntime is available), otherwise in secateur's
//! own runtime (a different engine from the training one); the figure is compared with the
//! accuracy the front reports.

use crate::{Context, Result, bail};
use secateur_data::npy::{NpyData, encode};
use secateur_data::{Dataset, Normalization};
use secateur_graph::Graph;
use secateur_runtime::{ExecPlan, PlanConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One front member's verification as recorded in `verifications.jsonl`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Checked {
    pub id: String,
    pub verification: secateur_report::Verification,
}

/// Accuracy checker for one test split.
pub struct Verifier {
    python: Option<PathBuf>,
    dir: tempfile::TempDir,
    inputs: Vec<f32>,
    sample: usize,
    labels: Vec<u32>,
}

impl Verifier {
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
        Ok(Verifier {
            python,
            dir,
            sample: test.sample_len(),
            inputs: x.data().to_vec(),
            labels,
        })
    }

    /// The engine that checks accuracy.
    pub fn engine(&self) -> &'static str {
        if self.python.is_some() {
            "ONNX Runtime"
        } else {
            "secateur runtime (ONNX Runtime not available)"
        }
    }

    /// Accuracy of the exported `model` (or of `graph` in secateur's runtime without Python).
    pub fn accuracy(&self, model: &Path, graph: &Graph) -> Result<f64> {
        match &self.python {
            Some(py) => {
                let out = Command::new(py)
                    .arg(self.dir.path().join("ort_accuracy.py"))
                    .arg(model)
                    .arg(self.dir.path().join("x.npy"))
                    .arg(self.dir.path().join("y.npy"))
                    .output()
                    .context("running ONNX Runtime")?;
                if !out.status.success() {
                    bail!(
                        "ONNX Runtime could not evaluate {}: {}",
                        model.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                v["accuracy"]
                    .as_f64()
                    .context("ONNX Runtime printed no accuracy")
            }
            None => self.runtime_accuracy(graph),
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
