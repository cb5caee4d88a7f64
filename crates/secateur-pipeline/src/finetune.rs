//! Fine-tuning inside pipelines: a training run from a recipe's fine-tune settings, with
//! optional distillation from a teacher, optional int8 quantization-aware training (or, with
//! zero epochs, post-training calibration), and a pruning hook. Sentence encoders train towards
//! the dense model's embeddings of unlabeled text instead (distillation without labels).

use crate::progress::Reporter;
use crate::recipe::FinetuneRecipe;
use crate::{Result, bail};
use secateur_data::{Normalization, Split};
use secateur_graph::Graph;
use secateur_train::{
    Device, DistillConfig, EmbeddingSet, LrDecay, LrSchedule, OptimizerConfig, OptimizerKind,
    TrainConfig, TrainHook, Trainer,
};

/// The training configuration of a fine-tune recipe.
pub fn train_config(f: &FinetuneRecipe, epochs: usize, seed: u64) -> Result<TrainConfig> {
    let kind = match f.optimizer.as_str() {
        "sgd" => OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        "adam" => OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        "adamw" => OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        o => bail!("fine-tune optimizer '{o}' is not one of sgd, adam, adamw"),
    };
    let decay = match f.lr_schedule.as_str() {
        "constant" => LrDecay::Constant,
        "cosine" => LrDecay::Cosine { min_lr: 0.0 },
        o => bail!("fine-tune lr_schedule '{o}' is not one of constant, cosine"),
    };
    let cfg = TrainConfig {
        epochs,
        batch_size: f.batch,
        optimizer: OptimizerConfig {
            kind,
            lr: f.lr,
            weight_decay: f.weight_decay,
        },
        schedule: LrSchedule {
            decay,
            warmup_steps: 0,
        },
        seed,
        distill: f.distill.then_some(DistillConfig {
            temperature: f.temperature,
            alpha: f.alpha,
        }),
        ..Default::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A training call given a progress callback.
type Fit<'a> =
    dyn FnMut(&mut dyn FnMut(&secateur_train::Progress)) -> secateur_train::Result<()> + 'a;

/// What a fine-tuning run trains on.
#[derive(Clone, Copy)]
pub enum TrainData<'a> {
    /// Labelled images (cross-entropy, or distillation from the teacher's logits).
    Images {
        split: &'a Split,
        norm: &'a Normalization,
    },
    /// Token inputs and the dense model's embeddings of them (cosine distance).
    Embeddings(&'a EmbeddingSet),
}

/// What a fine-tuning run needs besides the graph.
pub struct Finetune<'a> {
    pub data: TrainData<'a>,
    pub device: &'a Device,
    pub recipe: &'a FinetuneRecipe,
    pub teacher: Option<&'a Graph>,
    /// Quantization-aware training with this many calibration batches.
    pub quantize: Option<usize>,
    pub seed: u64,
    pub label: &'a str,
    /// No progress display (for fine-tunes running in parallel).
    pub quiet: bool,
}

impl Finetune<'_> {
    /// Trains `graph` for `epochs` epochs with `hook`; returns the trained graph.
    pub fn run(&self, graph: Graph, epochs: usize, hook: &mut dyn TrainHook) -> Result<Graph> {
        let cfg = train_config(self.recipe, epochs, self.seed)?;
        let mut t = Trainer::new(graph, cfg, self.device.clone())?;
        match self.data {
            TrainData::Images { split, norm } => {
                if let (Some(teacher), true) = (self.teacher, self.recipe.distill) {
                    t.set_teacher(teacher.clone())?;
                }
                if let Some(batches) = self.quantize
                    && t.quant.is_none()
                {
                    t.enable_quantization(&split.train, norm, batches)?;
                }
                if epochs > 0 {
                    self.with_progress(&mut |p| t.fit(&split.train, norm, hook, p))?;
                }
            }
            TrainData::Embeddings(set) => {
                if let Some(batches) = self.quantize
                    && t.quant.is_none()
                {
                    t.enable_quantization_on(set, batches)?;
                }
                // --distill adds the hidden states both graphs share to the matched outputs
                if let (Some(teacher), true) = (self.teacher, self.recipe.distill)
                    && epochs > 0
                {
                    t.set_feature_teacher(teacher.clone())?;
                }
                if epochs > 0 {
                    self.with_progress(&mut |p| t.fit_embeddings(set, hook, p))?;
                }
            }
        }
        Ok(t.into_graph()?)
    }

    /// Runs `fit` with a progress bar (none when quiet).
    fn with_progress(&self, fit: &mut Fit) -> Result<()> {
        if self.quiet {
            fit(&mut |_| {})?;
            return Ok(());
        }
        let mut bar = Reporter::new(self.label, 1);
        let mut progress = |p: &secateur_train::Progress| {
            bar.update(
                ((p.epoch * p.batches) + p.batch) as u64,
                (p.epochs * p.batches) as u64,
                &format!("epoch {}/{} loss {:.4}", p.epoch + 1, p.epochs, p.loss),
                false,
            );
        };
        fit(&mut progress)?;
        bar.finish();
        Ok(())
    }
}
