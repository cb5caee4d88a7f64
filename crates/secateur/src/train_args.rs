//! Command-line options of training and fine-tuning (shared by `train`, `prune` and
//! `optimize`), turned into a validated [`TrainConfig`].

use anyhow::{Result, bail};
use clap::ValueEnum;
use secateur_data::Augment;
use secateur_train::{LrDecay, LrSchedule, OptimizerConfig, OptimizerKind, TrainConfig};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    Constant,
    Step,
    Cosine,
}

#[derive(clap::Args, Debug, Clone)]
pub struct OptimArgs {
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Batch size.
    #[arg(long = "batch", default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam)]
    pub optimizer: OptimizerName,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleName::Constant)]
    pub schedule: ScheduleName,
    /// Step schedule: decay every N epochs.
    #[arg(long, default_value_t = 1)]
    pub step_epochs: usize,
    /// Step schedule: decay factor.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Augmentation: `crop` (pad 2, random crop), `flip`, or both separated by commas.
    #[arg(long, value_delimiter = ',')]
    pub augment: Vec<String>,
    /// Random seed (data order, augmentation, initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl OptimArgs {
    /// The training configuration for `epochs` epochs.
    pub fn config(&self, epochs: usize) -> Result<TrainConfig> {
        let kind = match self.optimizer {
            OptimizerName::Sgd => OptimizerKind::Sgd {
                momentum: self.momentum,
                nesterov: self.nesterov,
            },
            OptimizerName::Adam => OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            OptimizerName::Adamw => OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        };
        let decay = match self.schedule {
            ScheduleName::Constant => LrDecay::Constant,
            ScheduleName::Step => LrDecay::Step {
                every_epochs: self.step_epochs,
                gamma: self.gamma,
            },
            ScheduleName::Cosine => LrDecay::Cosine { min_lr: 0.0 },
        };
        let mut augment = Augment::default();
        for a in &self.augment {
            match a.as_str() {
                "crop" => augment.crop_pad = 2,
                "flip" => augment.flip = true,
                "" | "none" => {}
                other => bail!("unknown augmentation '{other}' (use crop, flip)"),
            }
        }
        let cfg = TrainConfig {
            epochs,
            batch_size: self.batch_size,
            optimizer: OptimizerConfig {
                kind,
                lr: self.lr,
                weight_decay: self.weight_decay,
            },
            schedule: LrSchedule {
                decay,
                warmup_steps: self.warmup_steps,
            },
            seed: self.seed,
            augment,
            distill: None,
            frozen: Vec::new(),
            bn_l1: 0.0,
            micro_batches: 2,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
