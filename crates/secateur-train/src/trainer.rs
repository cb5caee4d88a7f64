//! The training loop: seeded epoch order, augmentation, forward and backward on burn,
//! cross-entropy (or distillation from a teacher graph), optional L1 penalty on batch-norm
//! scales (network slimming), optimizer step with masks, running-statistics update, and hooks
//! through which pruning schedules read gradients and change masks between steps. Progress is
//! reported per batch; the state can be checkpointed and resumed at epoch boundaries.

use crate::batch::{check_fit, labels_tensor, to_value};
use crate::error::{Result, TrainError};
use crate::features::FeatureTeacher;
use crate::forward::{ForwardCtx, Taps, check_trainable, forward};
use crate::loss::{DistillConfig, cross_entropy, distillation};
use crate::micro::{MakeBatch, MicroBatch, Target, cosine_distance, split_rows};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::params::{ParamKind, ParamStore};
use crate::program::Program;
use crate::quant::{FakeQuant, RangeObserver};
use crate::schedule::LrSchedule;
use crate::value::Value;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use secateur_data::{Augment, Dataset, Normalization, batches, epoch_order};
use secateur_graph::{Graph, InputRole};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Instant;

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: LrSchedule,
    pub seed: u64,
    pub augment: Augment,
    pub distill: Option<DistillConfig>,
    /// Weights that must not change.
    pub frozen: Vec<String>,
    /// L1 penalty on batch-norm scales (network slimming); 0 disables it.
    pub bn_l1: f64,
    /// Each batch is split into this many micro-batches whose gradients are summed; they run
    /// in parallel on separate cores. Batch-norm statistics are per micro-batch ("ghost"
    /// batches). Results do not depend on the number of threads.
    pub micro_batches: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch_size: 128,
            optimizer: OptimizerConfig::adam(1e-3),
            schedule: LrSchedule::default(),
            seed: 0,
            augment: Augment::default(),
            distill: None,
            frozen: Vec::new(),
            bn_l1: 0.0,
            micro_batches: 2,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 2 {
            return Err(TrainError::Config(format!(
                "batch size must be at least 2, got {}",
                self.batch_size
            )));
        }
        if self.micro_batches == 0 || self.micro_batches > self.batch_size / 2 {
            return Err(TrainError::Config(format!(
                "micro_batches must be between 1 and batch_size / 2, got {}",
                self.micro_batches
            )));
        }
        if !(self.bn_l1 >= 0.0) {
            return Err(TrainError::Config(format!(
                "bn_l1 must be >= 0, got {}",
                self.bn_l1
            )));
        }
        self.optimizer.validate()?;
        self.schedule.validate()?;
        if let Some(d) = &self.distill {
            d.validate()?;
        }
        Ok(())
    }
}

/// Per-step information handed to hooks.
pub struct StepInfo<'a> {
    pub epoch: usize,
    /// Global step index (0-based) and the run's total number of steps.
    pub step: usize,
    pub total_steps: usize,
    pub steps_per_epoch: usize,
    pub loss: f32,
    pub lr: f64,
    /// Gradient of every parameter (dense: masked weights get their gradient too).
    pub grads: &'a [Option<Tensor<1>>],
}

/// Callbacks into the training loop.
pub trait TrainHook {
    /// After backward, before the optimizer step: may read gradients and change masks.
    fn after_backward(&mut self, _info: &StepInfo, _store: &mut ParamStore) -> Result<()> {
        Ok(())
    }
    /// After each epoch (checkpointing, evaluation, iterative pruning).
    fn after_epoch(&mut self, _epoch: usize, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
}

/// A hook that does nothing.
pub struct NoHook;
impl TrainHook for NoHook {}

/// Progress of a run, reported after each batch.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f32,
    pub lr: f64,
    pub images_per_sec: f64,
}

pub(crate) struct Teacher {
    pub graph: Graph,
    pub program: Program,
    pub store: ParamStore,
}

impl Teacher {
    pub fn new(graph: Graph, device: &Device) -> Result<Teacher> {
        graph.check()?;
        check_trainable(&graph)?;
        let store = ParamStore::from_graph(&graph, device, &HashSet::new())?;
        let program = Program::compile(&graph, &store)?;
        Ok(Teacher {
            graph,
            program,
            store,
        })
    }
}

/// A graph being trained.
pub struct Trainer {
    pub graph: Graph,
    pub store: ParamStore,
    pub(crate) program: Program,
    pub optimizer: Optimizer,
    pub quant: Option<FakeQuant>,
    teacher: Option<Teacher>,
    /// A teacher whose intermediate sequence features the model is trained to match.
    features: Option<FeatureTeacher>,
    pub device: Device,
    pub config: TrainConfig,
    pub epochs_done: usize,
    pub steps_done: usize,
    /// One single-threaded pool per parallel micro-batch worker.
    pools: Vec<rayon::ThreadPool>,
}

/// Where in the run a step is.
#[derive(Clone, Copy)]
struct StepAt {
    epoch: usize,
    total: usize,
    per_epoch: usize,
    lr: f64,
}

/// What one micro-batch's forward and backward pass yields.
struct MicroResult {
    grads: Vec<Option<Tensor<1>>>,
    loss: f32,
    stats: Vec<crate::forward::BnBatchStats>,
}

impl Trainer {
    pub fn new(graph: Graph, config: TrainConfig, device: Device) -> Result<Self> {
        config.validate()?;
        graph.check()?;
        check_trainable(&graph)?;
        let frozen: HashSet<String> = config.frozen.iter().cloned().collect();
        let store = ParamStore::from_graph(&graph, &device, &frozen)?;
        let program = Program::compile(&graph, &store)?;
        let optimizer = Optimizer::new(config.optimizer, store.len());
        let quant = graph
            .quantization
            .as_ref()
            .map(|q| FakeQuant::from_spec(&graph, &store, q));
        let workers = config
            .micro_batches
            .min(rayon::current_num_threads())
            .max(1);
        let pools = if workers > 1 {
            (0..workers)
                .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| TrainError::Config(format!("cannot start worker threads: {e}")))?
        } else {
            Vec::new()
        };
        Ok(Trainer {
            graph,
            store,
            program,
            optimizer,
            quant,
            teacher: None,
            features: None,
            device,
            config,
            epochs_done: 0,
            steps_done: 0,
            pools,
        })
    }

    /// Distils from `teacher` (evaluated in inference mode) during training.
    pub fn set_teacher(&mut self, teacher: Graph) -> Result<()> {
        if self.config.distill.is_none() {
            return Err(TrainError::Config(
                "a teacher needs distillation settings (temperature, alpha)".into(),
            ));
        }
        self.teacher = Some(Teacher::new(teacher, &self.device)?);
        Ok(())
    }

    /// Trains embeddings to also match `teacher`'s intermediate sequence features (see
    /// [`FeatureTeacher`]); returns how many features are matched.
    pub fn set_feature_teacher(&mut self, teacher: Graph) -> Result<usize> {
        let f = FeatureTeacher::new(&self.graph, Teacher::new(teacher, &self.device)?)?;
        let n = f.student_nodes.len();
        self.features = Some(f);
        Ok(n)
    }

    /// Calibrates activation ranges on `batches` batches of `data`, then trains and evaluates
    /// with int8 fake quantization.
    pub fn enable_quantization(
        &mut self,
        data: &Dataset,
        norm: &Normalization,
        batches_n: usize,
    ) -> Result<()> {
        check_fit(&self.graph, data)?;
        let order: Vec<usize> = (0..data.len()).collect();
        let device = self.device.clone();
        let batches = order
            .chunks(self.config.batch_size)
            .take(batches_n.max(1))
            .map(|chunk| {
                let (x, _) = data.batch(chunk, norm);
                Ok(vec![to_value(x, &device)?])
            });
        self.calibrate(batches)
    }

    /// Observes the activation ranges entering every quantized layer over `batches` (the
    /// graph inputs of each, made one batch at a time), then turns on int8 fake quantization
    /// with them.
    pub(crate) fn calibrate(
        &mut self,
        batches: impl Iterator<Item = Result<Vec<Value>>>,
    ) -> Result<()> {
        let mut observer = RangeObserver::default();
        for inputs in batches {
            let inputs = inputs?;
            let mut ctx = ForwardCtx {
                train: false,
                quant: None,
                observer: Some(&mut observer),
                taps: None,
            };
            forward(
                &self.graph,
                &self.program,
                &self.store.values,
                &self.store.shapes,
                &inputs,
                &mut ctx,
            )?;
        }
        self.quant = Some(FakeQuant::new(&self.graph, &self.store, &observer));
        Ok(())
    }

    /// Number of optimizer steps per epoch on `data`.
    pub fn steps_per_epoch(&self, data: &Dataset) -> usize {
        data.len().div_ceil(self.config.batch_size)
    }

    /// Trains for the remaining epochs of the configuration.
    pub fn fit(
        &mut self,
        data: &Dataset,
        norm: &Normalization,
        hook: &mut dyn TrainHook,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        check_fit(&self.graph, data)?;
        norm.validate(data.channels())?;
        let augment = self.config.augment;
        let parts = self.config.micro_batches;
        let mut make = |chunk: &[usize], rng: &mut ChaCha8Rng| {
            let (mut x, y) = data.batch(chunk, norm);
            augment.apply(&mut x, rng);
            split_rows(&[x], Target::Labels(y), parts)
        };
        self.run_epochs(data.len(), &mut make, hook, progress)
    }

    /// The epoch loop over `n` samples; `make` turns a batch of sample indices into weighted
    /// micro-batches.
    pub(crate) fn run_epochs(
        &mut self,
        n: usize,
        make: &mut MakeBatch,
        hook: &mut dyn TrainHook,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<()> {
        let per_epoch = n.div_ceil(self.config.batch_size);
        let total = per_epoch * self.config.epochs;
        let has_bn = self.store.roles.contains(&InputRole::BnMean);
        while self.epochs_done < self.config.epochs {
            let epoch = self.epochs_done;
            let order = epoch_order(n, self.config.seed, epoch);
            let mut rng =
                ChaCha8Rng::seed_from_u64(self.config.seed.wrapping_add(1 + epoch as u64));
            let start = Instant::now();
            let mut samples = 0usize;
            for (bi, chunk) in batches(&order, self.config.batch_size).enumerate() {
                if has_bn && chunk.len() < 2 {
                    continue;
                }
                let lr = self.config.schedule.lr_at(
                    self.config.optimizer.lr,
                    self.steps_done,
                    total,
                    per_epoch,
                );
                let parts = make(chunk, &mut rng)?;
                let at = StepAt {
                    epoch,
                    total,
                    per_epoch,
                    lr,
                };
                let loss = self.step(parts, at, hook)?;
                samples += chunk.len();
                progress(&Progress {
                    epoch,
                    epochs: self.config.epochs,
                    batch: bi + 1,
                    batches: per_epoch,
                    loss,
                    lr,
                    images_per_sec: samples as f64 / start.elapsed().as_secs_f64().max(1e-9),
                });
            }
            self.epochs_done += 1;
            hook.after_epoch(epoch, self)?;
        }
        self.sync_graph()?;
        Ok(())
    }

    /// The parameters as autodiff leaves (trainable ones tracked).
    fn leaves(&self) -> Vec<Tensor<1>> {
        self.store
            .values
            .iter()
            .zip(&self.store.kinds)
            .map(|(v, k)| {
                if *k == ParamKind::Trainable {
                    v.clone().autodiff().require_grad()
                } else {
                    v.clone()
                }
            })
            .collect()
    }

    /// Forward and backward of one micro-batch.
    fn micro(&self, mb: MicroBatch) -> Result<MicroResult> {
        let inputs = mb
            .inputs
            .into_iter()
            .map(|x| to_value(x, &self.device))
            .collect::<Result<Vec<_>>>()?;
        let leaves = self.leaves();
        let mut taps = Taps::new(
            self.features
                .as_ref()
                .map_or(Vec::new(), |f| f.student_nodes.clone()),
        );
        let mut ctx = ForwardCtx {
            train: true,
            quant: self.quant.as_ref(),
            observer: None,
            taps: Some(&mut taps),
        };
        let (output, logits, stats) = forward(
            &self.graph,
            &self.program,
            &leaves,
            &self.store.shapes,
            &inputs,
            &mut ctx,
        )?;
        let mut loss = match mb.target {
            Target::Labels(y) => self.label_loss(logits, &y, &inputs)?,
            Target::Embeddings {
                targets,
                token_weights,
            } => {
                let out = output.into_r2().ok_or_else(|| {
                    TrainError::DataMismatch("the model's output is not [N, dim]".into())
                })?;
                let target = to_value(targets, &self.device)?.into_r2().ok_or_else(|| {
                    TrainError::DataMismatch("target embeddings are not [N, dim]".into())
                })?;
                if out.dims() != target.dims() {
                    return Err(TrainError::DataMismatch(format!(
                        "the model's output is {:?} but the target embeddings are {:?}",
                        out.dims(),
                        target.dims()
                    )));
                }
                let mut loss = cosine_distance(out, target);
                if let Some(f) = &self.features {
                    let w = token_weights
                        .map(|w| to_value(w, &self.device))
                        .transpose()?;
                    loss = loss + f.loss(taps, &inputs, w)?;
                }
                loss
            }
        };
        if self.config.bn_l1 > 0.0 {
            for (i, leaf) in leaves.iter().enumerate() {
                if self.store.roles[i] == InputRole::BnScale
                    && self.store.kinds[i] == ParamKind::Trainable
                {
                    loss = loss + leaf.clone().abs().sum() * self.config.bn_l1;
                }
            }
        }
        let loss_value = loss.clone().inner().into_scalar::<f32>();
        let grads = loss.backward();
        let grads = leaves
            .iter()
            .zip(&self.store.kinds)
            .map(|(l, k)| {
                if *k == ParamKind::Trainable {
                    l.grad(&grads)
                } else {
                    None
                }
            })
            .collect();
        Ok(MicroResult {
            grads,
            loss: loss_value,
            stats,
        })
    }

    /// Cross-entropy of the logits against labels, or distillation from the teacher.
    fn label_loss(&self, logits: Value, y: &[u32], inputs: &[Value]) -> Result<Tensor<1>> {
        let labels = labels_tensor(y, &self.device);
        let logits = logits.into_r2().ok_or_else(|| {
            TrainError::DataMismatch("the model's logits are not [N, classes]".into())
        })?;
        Ok(match (&self.teacher, &self.config.distill) {
            (Some(t), Some(cfg)) => {
                let mut tctx = ForwardCtx::eval();
                let (_, tl, _) = forward(
                    &t.graph,
                    &t.program,
                    &t.store.values,
                    &t.store.shapes,
                    inputs,
                    &mut tctx,
                )?;
                let tl = tl.into_r2().ok_or_else(|| {
                    TrainError::DataMismatch("the teacher's logits are not [N, classes]".into())
                })?;
                distillation(logits, tl.inner(), labels, cfg)
            }
            _ => cross_entropy(logits, labels),
        })
    }

    /// Runs the micro-batches (in parallel when there are workers) and sums their results,
    /// each scaled by its weight.
    fn run_micro(&self, parts: Vec<(MicroBatch, f64)>) -> Result<Vec<(MicroResult, f64)>> {
        let weights: Vec<f64> = parts.iter().map(|p| p.1).collect();
        let results: Vec<Result<MicroResult>> = if self.pools.len() > 1 && parts.len() > 1 {
            std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (mb, _))| {
                        let pool = &self.pools[i % self.pools.len()];
                        scope.spawn(move || pool.install(|| self.micro(mb)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(TrainError::Config("a training worker panicked".into()))
                        })
                    })
                    .collect()
            })
        } else {
            parts.into_iter().map(|(mb, _)| self.micro(mb)).collect()
        };
        results
            .into_iter()
            .zip(weights)
            .map(|(r, w)| Ok((r?, w)))
            .collect()
    }

    /// One optimizer step on weighted micro-batches.
    fn step(
        &mut self,
        parts: Vec<(MicroBatch, f64)>,
        at: StepAt,
        hook: &mut dyn TrainHook,
    ) -> Result<f32> {
        let mut grads: Vec<Option<Tensor<1>>> = vec![None; self.store.len()];
        let mut loss_value = 0.0f32;
        let mut bn: Vec<crate::forward::BnBatchStats> = Vec::new();
        for (r, w) in self.run_micro(parts)? {
            loss_value += r.loss * w as f32;
            for (acc, g) in grads.iter_mut().zip(r.grads) {
                if let Some(g) = g {
                    let g = g * w;
                    *acc = Some(match acc.take() {
                        Some(s) => s + g,
                        None => g,
                    });
                }
            }
            if bn.is_empty() {
                bn = r
                    .stats
                    .into_iter()
                    .map(|mut s| {
                        s.mean = s.mean * w;
                        s.var = s.var * w;
                        s
                    })
                    .collect();
            } else {
                for (acc, s) in bn.iter_mut().zip(r.stats) {
                    acc.mean = acc.mean.clone() + s.mean * w;
                    acc.var = acc.var.clone() + s.var * w;
                }
            }
        }
        let lr = at.lr;
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged(format!(
                "the loss became {loss_value} at epoch {}, step {} (learning rate {lr:.3e}); lower the learning rate or check the input normalisation",
                at.epoch + 1,
                self.steps_done + 1
            )));
        }
        let info = StepInfo {
            epoch: at.epoch,
            step: self.steps_done,
            total_steps: at.total,
            steps_per_epoch: at.per_epoch,
            loss: loss_value,
            lr,
            grads: &grads,
        };
        hook.after_backward(&info, &mut self.store)?;
        self.optimizer.mask_state(&self.store);
        self.optimizer.step(&mut self.store, &grads, lr);
        for s in bn {
            let m = self.momentum_of(s.mean_param);
            self.store.values[s.mean_param] =
                self.store.values[s.mean_param].clone() * m + s.mean * (1.0 - m);
            self.store.values[s.var_param] =
                self.store.values[s.var_param].clone() * m + s.var * (1.0 - m);
        }
        self.steps_done += 1;
        Ok(loss_value)
    }

    /// ONNX momentum (weight of the old running value) of the batch norm owning a statistic.
    fn momentum_of(&self, param: usize) -> f64 {
        let name = &self.store.names[param];
        self.graph
            .nodes
            .iter()
            .find_map(|n| match &n.op {
                secateur_graph::Op::BatchNorm(b) if n.inputs.iter().any(|i| i == name) => {
                    Some(b.momentum as f64)
                }
                _ => None,
            })
            .unwrap_or(0.9)
    }

    /// Copies the current parameters (and quantization annotations) into `self.graph`.
    pub fn sync_graph(&mut self) -> Result<&Graph> {
        self.store.write_to_graph(&mut self.graph)?;
        if let Some(q) = &self.quant {
            self.graph.quantization = Some(q.to_spec(&self.graph, &self.store));
        }
        for (i, name) in self.store.names.iter().enumerate() {
            if let (Some(m), Some(mask)) = (&self.store.masks[i], self.graph.masks.get_mut(name)) {
                mask.keep = crate::params::to_host(m)
                    .iter()
                    .map(|v| *v != 0.0)
                    .collect();
            }
        }
        Ok(&self.graph)
    }

    /// The trained graph.
    pub fn into_graph(mut self) -> Result<Graph> {
        self.sync_graph()?;
        Ok(self.graph)
    }
}
