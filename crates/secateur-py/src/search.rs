//! The stages of an `optimize` search for a Python driver: `Search(request_json)` prepares the
//! run, `ask()` hands out the genomes still to evaluate, `evaluate_locally()` runs them on this
//! machine's cores or `record(evaluation_json)` takes each result of a remote executor, `tell()`
//! closes the batch and `finish()` runs the final stage and returns the outcome. `Worker(bytes)`
//! evaluates genomes from `worker_context()` in another process. Data cross as JSON text.

use crate::{py_err, sink};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use secateur_pipeline::optimize::request::OptimizeRequest;
use secateur_pipeline::optimize::store::Evaluation;
use secateur_pipeline::optimize::worker::WorkerContext;
use secateur_pipeline::optimize::{self, Batch, Stage};
use secateur_pipeline::progress::{Sink, with_sink};

/// A search being driven from Python. The state lives in boxes: a Python object's memory is
/// aligned for Python (16 bytes), not for the over-aligned types inside a search.
#[pyclass(unsendable, module = "secateur._native")]
pub struct Search {
    inner: Option<Box<optimize::Search>>,
    pending: Option<Batch>,
    progress: Option<Sink>,
}

impl Search {
    fn inner(&mut self) -> PyResult<&mut optimize::Search> {
        self.inner
            .as_deref_mut()
            .ok_or_else(|| py_err("this search has finished"))
    }
}

#[pymethods]
impl Search {
    /// Prepares (or resumes) the run that `request` (JSON of the optimize settings) describes.
    #[new]
    #[pyo3(signature = (request, progress=None))]
    fn new(py: Python<'_>, request: &str, progress: Option<Py<PyAny>>) -> PyResult<Self> {
        let request = OptimizeRequest::from_json(request).map_err(py_err)?;
        let progress = sink(progress);
        let sink = progress.clone();
        let inner = py
            .detach(move || {
                with_sink(sink, || {
                    let (cfg, inputs) = request.prepare()?;
                    optimize::Search::open(&cfg, inputs, &mut |m| eprintln!("{m}"))
                })
            })
            .map_err(py_err)?;
        Ok(Search {
            inner: Some(Box::new(inner)),
            pending: None,
            progress,
        })
    }

    /// The run directory.
    #[getter]
    fn dir(&self) -> PyResult<String> {
        let s = self
            .inner
            .as_ref()
            .ok_or_else(|| py_err("this search has finished"))?;
        Ok(s.dir().display().to_string())
    }

    /// The next batch as JSON (`stage`, `generation`, `generations`, `todo`: the genomes
    /// without a recorded evaluation), or None when the search and the baseline are done.
    fn ask(&mut self, py: Python<'_>) -> PyResult<Option<String>> {
        if self.pending.is_some() {
            return Err(py_err("the previous batch has not been told yet"));
        }
        let inner = self.inner()?;
        let Some(batch) = py.detach(|| inner.ask()).map_err(py_err)? else {
            return Ok(None);
        };
        let (stage, generation, of) = match batch.stage {
            Stage::Search { generation, of } => ("search", generation, of),
            Stage::Baseline => ("baseline", 0, 0),
        };
        let json = serde_json::json!({
            "stage": stage,
            "generation": generation,
            "generations": of,
            "todo": batch.todo,
        });
        self.pending = Some(batch);
        Ok(Some(json.to_string()))
    }

    /// Evaluates the pending batch on this machine's cores (the local executor).
    fn evaluate_locally(&mut self, py: Python<'_>) -> PyResult<()> {
        let batch = self
            .pending
            .clone()
            .ok_or_else(|| py_err("no batch to evaluate: call ask() first"))?;
        let sink = self.progress.clone();
        let inner = self.inner()?;
        py.detach(|| {
            with_sink(sink.clone(), || {
                optimize::evaluate_locally(inner, &batch, &mut |d, n| {
                    if let Some(s) = &sink {
                        s("evaluate", d as u64, n as u64, "candidates evaluated");
                    }
                })
            })
        })
        .map_err(py_err)
    }

    /// Records one evaluation (JSON, as a `Worker` returns it).
    fn record(&mut self, evaluation: &str) -> PyResult<()> {
        let e: Evaluation = serde_json::from_str(evaluation).map_err(py_err)?;
        self.inner()?.record(e).map_err(py_err)
    }

    /// Closes the pending batch; returns a line saying where the search stands.
    fn tell(&mut self) -> PyResult<String> {
        let batch = self
            .pending
            .take()
            .ok_or_else(|| py_err("no batch to tell: call ask() first"))?;
        let inner = self.inner()?;
        match inner.tell(batch.clone()) {
            Ok(line) => Ok(line),
            Err(e) => {
                self.pending = Some(batch);
                Err(py_err(e))
            }
        }
    }

    /// What a `Worker` needs to evaluate this run's candidates, as bytes.
    fn worker_context<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.inner()?.worker_context().map_err(py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The final stage, verification and report; the outcome as JSON (`report`, `dir`,
    /// `unmet`, `resumed`).
    fn finish(&mut self, py: Python<'_>) -> PyResult<String> {
        if self.pending.is_some() {
            return Err(py_err("a batch is still pending: tell() it first"));
        }
        let inner = self
            .inner
            .take()
            .ok_or_else(|| py_err("this search has finished"))?;
        let sink = self.progress.clone();
        let outcome = py
            .detach(|| with_sink(sink, || (*inner).finish(&mut |m| eprintln!("{m}"))))
            .map_err(py_err)?;
        let json = serde_json::json!({
            "report": outcome.report,
            "dir": outcome.dir,
            "unmet": outcome.unmet,
            "resumed": outcome.resumed,
        });
        Ok(json.to_string())
    }
}

/// Evaluates a run's candidates from its worker context (another process or machine).
#[pyclass(module = "secateur._native")]
pub struct Worker {
    context: Box<WorkerContext>,
}

#[pymethods]
impl Worker {
    #[new]
    fn new(py: Python<'_>, context: &[u8]) -> PyResult<Self> {
        let context = py
            .detach(|| WorkerContext::from_bytes(context))
            .map_err(py_err)?;
        Ok(Worker {
            context: Box::new(context),
        })
    }

    /// The fingerprint of the run's settings.
    #[getter]
    fn fingerprint(&self) -> &str {
        self.context.fingerprint()
    }

    /// The evaluation of `genome` as JSON (recorded by `Search.record`).
    fn evaluate(&self, py: Python<'_>, genome: Vec<f64>) -> PyResult<String> {
        let e = py
            .detach(|| self.context.evaluate(&genome))
            .map_err(py_err)?;
        serde_json::to_string(&e).map_err(py_err)
    }
}
