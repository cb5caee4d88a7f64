//! Losses: cross-entropy from logits and integer labels, and knowledge distillation
//! (Hinton et al. 2015): `(1 − α)·CE(student, y) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))`.

use crate::error::{Result, TrainError};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// Mean cross-entropy of `[N, C]` logits against labels.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    log_softmax(logits, 1)
        .gather(1, labels.reshape([n, 1]))
        .mean()
        .neg()
}

/// Distillation settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillConfig {
    pub temperature: f64,
    /// Weight of the soft (teacher) term; the hard label term gets `1 − alpha`.
    pub alpha: f64,
}

impl DistillConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0) || !(0.0..=1.0).contains(&self.alpha) {
            return Err(TrainError::Config(format!(
                "distillation needs temperature > 0 and alpha in [0, 1], got {} and {}",
                self.temperature, self.alpha
            )));
        }
        Ok(())
    }
}

/// The distillation loss given student logits, teacher logits (constants) and labels.
pub fn distillation(
    student: Tensor<2>,
    teacher: Tensor<2>,
    labels: Tensor<1, Int>,
    cfg: &DistillConfig,
) -> Tensor<1> {
    let t = cfg.temperature;
    let n = student.dims()[0] as f64;
    let hard = cross_entropy(student.clone(), labels);
    let p_t = softmax(teacher.clone() / t, 1);
    let log_p_t = log_softmax(teacher / t, 1);
    let log_p_s = log_softmax(student / t, 1);
    let kl = (p_t * (log_p_t - log_p_s)).sum() / n;
    hard * (1.0 - cfg.alpha) + kl * (cfg.alpha * t * t)
}
