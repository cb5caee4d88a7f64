//! Learning-rate schedules: constant, step decay, cosine annealing, each with an optional
//! linear warm-up, evaluated per optimizer step.

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};

/// The decay part of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LrDecay {
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        every_epochs: usize,
        gamma: f64,
    },
    /// Cosine from the base rate down to `min_lr` over the whole run.
    Cosine {
        min_lr: f64,
    },
}

/// A schedule: decay plus linear warm-up over the first `warmup_steps` steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub decay: LrDecay,
    pub warmup_steps: usize,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule {
            decay: LrDecay::Constant,
            warmup_steps: 0,
        }
    }
}

impl LrSchedule {
    pub fn validate(&self) -> Result<()> {
        match self.decay {
            LrDecay::Step {
                every_epochs,
                gamma,
            } if every_epochs == 0 || !(gamma > 0.0) => Err(TrainError::Config(format!(
                "step decay needs every_epochs > 0 and gamma > 0, got {every_epochs}, {gamma}"
            ))),
            LrDecay::Cosine { min_lr } if !(min_lr >= 0.0) => Err(TrainError::Config(format!(
                "cosine min_lr must be >= 0, got {min_lr}"
            ))),
            _ => Ok(()),
        }
    }

    /// Learning rate at `step` (0-based) of `total` steps with `per_epoch` steps per epoch.
    ///
    /// ```
    /// use secateur_train::schedule::{LrDecay, LrSchedule};
    /// let s = LrSchedule { decay: LrDecay::Cosine { min_lr: 0.0 }, warmup_steps: 10 };
    /// assert!((s.lr_at(0.1, 4, 100, 10) - 0.05).abs() < 1e-12); // warm-up: (4+1)/10
    /// assert!((s.lr_at(0.1, 55, 100, 10) - 0.05).abs() < 1e-9); // halfway through the cosine
    /// ```
    pub fn lr_at(&self, base: f64, step: usize, total: usize, per_epoch: usize) -> f64 {
        let decayed = match self.decay {
            LrDecay::Constant => base,
            LrDecay::Step {
                every_epochs,
                gamma,
            } => base * gamma.powi((step / per_epoch.max(1) / every_epochs.max(1)) as i32),
            LrDecay::Cosine { min_lr } => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = (step.saturating_sub(self.warmup_steps) as f64 / span).min(1.0);
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        if step < self.warmup_steps {
            decayed * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            decayed
        }
    }
}
