//! Evaluation of a graph on a data set: accuracy, per-class accuracy, mean cross-entropy, the
//! predictions (for top-1 agreement between two models), optionally with fake quantization.

use crate::batch::{check_fit, labels_tensor, to_value};
use crate::error::{Result, TrainError};
use crate::forward::{ForwardCtx, check_trainable, forward};
use crate::loss::cross_entropy;
use crate::params::ParamStore;
use crate::program::Program;
use crate::quant::FakeQuant;
use burn::tensor::Device;
use secateur_data::{Dataset, Normalization};
use secateur_graph::Graph;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Results of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub samples: usize,
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub per_class_accuracy: Vec<f64>,
    pub class_names: Vec<String>,
    /// Top-1 prediction per sample.
    #[serde(skip)]
    pub predictions: Vec<u32>,
}

impl EvalReport {
    /// Fraction of samples on which two evaluations predict the same class.
    pub fn agreement(&self, other: &EvalReport) -> Option<f64> {
        if self.predictions.len() != other.predictions.len() || self.predictions.is_empty() {
            return None;
        }
        let same = self
            .predictions
            .iter()
            .zip(&other.predictions)
            .filter(|(a, b)| a == b)
            .count();
        Some(same as f64 / self.predictions.len() as f64)
    }
}

/// Evaluates `graph` on `data` in batches.
pub fn evaluate(
    graph: &Graph,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
    device: &Device,
    quant: Option<&FakeQuant>,
) -> Result<EvalReport> {
    check_fit(graph, data)?;
    check_trainable(graph)?;
    norm.validate(data.channels())?;
    if data.is_empty() {
        return Err(TrainError::DataMismatch(format!(
            "data set '{}' is empty",
            data.name
        )));
    }
    let store = ParamStore::from_graph(graph, device, &HashSet::new())?;
    let program = Program::compile(graph, &store)?;
    let from_graph = match (quant, &graph.quantization) {
        (None, Some(spec)) => Some(FakeQuant::from_spec(graph, &store, spec)),
        _ => None,
    };
    let quant = quant.or(from_graph.as_ref());
    let mut tally = Tally::new(data);
    let order: Vec<usize> = (0..data.len()).collect();
    for chunk in order.chunks(batch.max(1)) {
        let (x, y) = data.batch(chunk, norm);
        let input = to_value(x, device)?;
        let (_, logits, _) = forward(
            graph,
            &program,
            &store.values,
            &store.shapes,
            &[input],
            &mut ForwardCtx {
                train: false,
                quant,
                observer: None,
                taps: None,
            },
        )?;
        let logits = logits.into_r2().ok_or_else(|| {
            TrainError::DataMismatch("the model's logits are not [N, classes]".into())
        })?;
        let loss =
            cross_entropy(logits.clone(), labels_tensor(&y, device)).into_scalar::<f32>() as f64;
        tally.loss_sum += loss * chunk.len() as f64;
        let pred = logits.argmax(1).try_to_vec_as::<i64>().unwrap_or_default();
        for (p, &l) in pred.iter().zip(&y) {
            tally.add(*p as u32, l);
        }
    }
    Ok(tally.report())
}

/// An evaluation in progress: correct predictions per class, the summed loss and every
/// prediction (shared by the training engine's evaluation and the runtime's).
pub struct Tally<'a> {
    data: &'a Dataset,
    correct: Vec<usize>,
    seen: Vec<usize>,
    /// Cross-entropy summed over the samples seen.
    pub loss_sum: f64,
    predictions: Vec<u32>,
}

impl<'a> Tally<'a> {
    pub fn new(data: &'a Dataset) -> Self {
        Tally {
            data,
            correct: vec![0; data.classes()],
            seen: vec![0; data.classes()],
            loss_sum: 0.0,
            predictions: Vec::with_capacity(data.len()),
        }
    }

    /// Records one sample's top-1 prediction.
    pub fn add(&mut self, predicted: u32, label: u32) {
        self.seen[label as usize] += 1;
        if predicted == label {
            self.correct[label as usize] += 1;
        }
        self.predictions.push(predicted);
    }

    pub fn report(self) -> EvalReport {
        let n = self.data.len();
        let total_correct: usize = self.correct.iter().sum();
        EvalReport {
            samples: n,
            accuracy: total_correct as f64 / n as f64,
            loss: self.loss_sum / n as f64,
            per_class_accuracy: self
                .correct
                .iter()
                .zip(&self.seen)
                .map(|(&c, &s)| if s == 0 { 0.0 } else { c as f64 / s as f64 })
                .collect(),
            class_names: self.data.class_names.clone(),
            predictions: self.predictions,
        }
    }
}

/// Logits of every sample of `data` (row-major `[N, classes]`), in evaluation mode.
pub fn predict_logits(
    graph: &Graph,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    check_fit(graph, data)?;
    check_trainable(graph)?;
    let store = ParamStore::from_graph(graph, device, &HashSet::new())?;
    let program = Program::compile(graph, &store)?;
    let quant = graph
        .quantization
        .as_ref()
        .map(|q| FakeQuant::from_spec(graph, &store, q));
    let mut out = Vec::new();
    let order: Vec<usize> = (0..data.len()).collect();
    for chunk in order.chunks(batch.max(1)) {
        let (x, _) = data.batch(chunk, norm);
        let mut ctx = ForwardCtx {
            train: false,
            quant: quant.as_ref(),
            observer: None,
            taps: None,
        };
        let (_, logits, _) = forward(
            graph,
            &program,
            &store.values,
            &store.shapes,
            &[to_value(x, device)?],
            &mut ctx,
        )?;
        out.extend(logits.to_vec());
    }
    Ok(out)
}

/// The graph's first output on one batch `x` in evaluation mode: the training engine's forward
/// pass, for comparing it with the reference evaluator, the runtime and ONNX Runtime.
pub fn forward_batch(
    graph: &Graph,
    x: &secateur_graph::Tensor,
    device: &Device,
) -> Result<secateur_graph::Tensor> {
    forward_inputs(graph, std::slice::from_ref(x), device)
}

/// [`forward_batch`] of a graph with several inputs: one tensor per graph input, in order.
pub fn forward_inputs(
    graph: &Graph,
    inputs: &[secateur_graph::Tensor],
    device: &Device,
) -> Result<secateur_graph::Tensor> {
    check_trainable(graph)?;
    let store = ParamStore::from_graph(graph, device, &HashSet::new())?;
    let program = Program::compile(graph, &store)?;
    let mut ctx = ForwardCtx::eval();
    let values = inputs
        .iter()
        .map(|x| to_value(x.clone(), device))
        .collect::<Result<Vec<_>>>()?;
    let (out, _, _) = forward(
        graph,
        &program,
        &store.values,
        &store.shapes,
        &values,
        &mut ctx,
    )?;
    let dims = out.dims();
    secateur_graph::Tensor::new(dims, out.to_vec()).map_err(crate::error::TrainError::from)
}
