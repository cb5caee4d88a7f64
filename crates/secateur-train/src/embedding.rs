//! Training a model towards given embeddings: distillation of an encoder from its dense
//! original on unlabeled inputs (sentence encoders on text). Each sample is one row of every
//! graph input (token ids, attention mask) and the teacher's embedding of it; the loss is the
//! mean cosine distance between the model's output and that embedding, the quantity the
//! agreement metric measures.

use crate::batch::to_value;
use crate::error::{Result, TrainError};
use crate::micro::{Target, split_rows};
use crate::trainer::{Progress, TrainHook, Trainer};
use secateur_graph::Tensor;

/// Samples for embedding training: one tensor per graph input (rows are samples) and the
/// target embeddings `[N, dim]`.
#[derive(Clone, Debug)]
pub struct EmbeddingSet {
    pub inputs: Vec<Tensor>,
    pub targets: Tensor,
    /// Weight of each token `[N, T]` in matched sequence features (the attention mask: 0 for
    /// padding); all tokens count equally when absent.
    pub token_weights: Option<Tensor>,
}

impl EmbeddingSet {
    /// Checks that every tensor has the same number of rows and the targets are `[N, dim]`.
    pub fn new(inputs: Vec<Tensor>, targets: Tensor) -> Result<EmbeddingSet> {
        let n = targets.shape().first().copied().unwrap_or(0);
        if targets.shape().len() != 2 || n == 0 {
            return Err(TrainError::DataMismatch(format!(
                "target embeddings must be [N, dim] with N > 0, got {:?}",
                targets.shape()
            )));
        }
        if let Some(t) = inputs.iter().find(|t| t.shape().first() != Some(&n)) {
            return Err(TrainError::DataMismatch(format!(
                "an input has shape {:?} but there are {n} target embeddings",
                t.shape()
            )));
        }
        Ok(EmbeddingSet {
            inputs,
            targets,
            token_weights: None,
        })
    }

    /// Weighs the tokens of matched sequence features by `w` (`[N, T]`).
    pub fn with_token_weights(mut self, w: Tensor) -> Result<EmbeddingSet> {
        if w.shape().len() != 2 || w.shape()[0] != self.len() {
            return Err(TrainError::DataMismatch(format!(
                "token weights must be [{}, T], got {:?}",
                self.len(),
                w.shape()
            )));
        }
        self.token_weights = Some(w);
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.targets.shape()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `indices` of every tensor.
    fn rows(&self, indices: &[usize]) -> Result<(Vec<Tensor>, Tensor, Option<Tensor>)> {
        let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.select_axis(0, indices)?) };
        Ok((
            self.inputs.iter().map(pick).collect::<Result<_>>()?,
            pick(&self.targets)?,
            self.token_weights.as_ref().map(pick).transpose()?,
        ))
    }
}

impl Trainer {
    /// Calibrates activation ranges on the first `batches` batches of `set`'s inputs, then
    /// trains and evaluates with int8 fake quantization (as [`Trainer::enable_quantization`]
    /// does on images): post-training quantization of an encoder, or quantization-aware
    /// distillation when epochs follow.
    pub fn enable_quantization_on(&mut self, set: &EmbeddingSet, batches: usize) -> Result<()> {
        self.check_inputs(set)?;
        let order: Vec<usize> = (0..set.len()).collect();
        let device = self.device.clone();
        let batches = order
            .chunks(self.config.batch_size.max(1))
            .take(batches.max(1))
            .map(|chunk| {
                let (inputs, _, _) = set.rows(chunk)?;
                inputs
                    .into_iter()
                    .map(|t| to_value(t, &device))
                    .collect::<Result<Vec<_>>>()
            });
        self.calibrate(batches)
    }

    fn check_inputs(&self, set: &EmbeddingSet) -> Result<()> {
        if set.inputs.len() != self.graph.inputs.len() {
            return Err(TrainError::DataMismatch(format!(
                "the model has {} inputs but the embedding set gives {}",
                self.graph.inputs.len(),
                set.inputs.len()
            )));
        }
        Ok(())
    }

    /// Trains the remaining epochs of the configuration so that the model's output on each
    /// sample points along its target embedding (cosine distance; augmentation does not
    /// apply).
    pub fn fit_embeddings(
        &mut self,
        set: &EmbeddingSet,
        hook: &mut dyn TrainHook,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        self.check_inputs(set)?;
        let parts = self.config.micro_batches;
        let mut make = |chunk: &[usize], _: &mut rand_chacha::ChaCha8Rng| {
            let (inputs, targets, token_weights) = set.rows(chunk)?;
            let target = Target::Embeddings {
                targets,
                token_weights,
            };
            split_rows(&inputs, target, parts)
        };
        self.run_epochs(set.len(), &mut make, hook, progress)
    }
}
