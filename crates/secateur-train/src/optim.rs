//! Optimizers on plain burn tensors: SGD (momentum, Nesterov, weight decay, as PyTorch defines
//! them), Adam (L2 weight decay) and AdamW (decoupled weight decay). Gradients are masked
//! before the update and the optimizer state is masked after it, so a pruned weight receives no
//! update and carries no momentum: it stays exactly zero.

use crate::error::{Result, TrainError};
use crate::params::{ParamKind, ParamStore};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which optimizer, with its own hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd { momentum: f32, nesterov: bool },
    Adam { beta1: f32, beta2: f32, eps: f32 },
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

/// An optimizer configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
}

impl OptimizerConfig {
    /// Adam with PyTorch's defaults.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            lr,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum 0.9.
    pub fn sgd(lr: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            lr,
            weight_decay: 0.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        match self.kind {
            OptimizerKind::Sgd { momentum, nesterov } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("momentum must be in [0, 1), got {momentum}"));
                }
                if nesterov && momentum == 0.0 {
                    return bad("Nesterov momentum needs momentum > 0".into());
                }
            }
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) || !(eps > 0.0) {
                    return bad(format!(
                        "Adam needs betas in [0, 1) and eps > 0, got {beta1}, {beta2}, {eps}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Optimizer state: first and second moments per parameter.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub config: OptimizerConfig,
    pub first: Vec<Option<Tensor<1>>>,
    pub second: Vec<Option<Tensor<1>>>,
    pub steps: u64,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, n_params: usize) -> Self {
        Optimizer {
            config,
            first: vec![None; n_params],
            second: vec![None; n_params],
            steps: 0,
        }
    }

    /// One update of every trainable parameter that has a gradient.
    pub fn step(&mut self, store: &mut ParamStore, grads: &[Option<Tensor<1>>], lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let wd = self.config.weight_decay;
        for i in 0..store.len() {
            if store.kinds[i] != ParamKind::Trainable {
                continue;
            }
            let Some(g) = grads.get(i).cloned().flatten() else {
                continue;
            };
            let mask = store.masks[i].clone();
            let g = match &mask {
                Some(m) => g * m.clone(),
                None => g,
            };
            let p = store.values[i].clone();
            let new_p = match self.config.kind {
                OptimizerKind::Sgd { momentum, nesterov } => {
                    let g = if wd > 0.0 { g + p.clone() * wd } else { g };
                    let d = if momentum > 0.0 {
                        let buf = match self.first[i].take() {
                            Some(b) => b * momentum + g.clone(),
                            None => g.clone(),
                        };
                        self.first[i] = Some(buf.clone());
                        if nesterov { g + buf * momentum } else { buf }
                    } else {
                        g
                    };
                    p - d * lr
                }
                OptimizerKind::Adam { beta1, beta2, eps }
                | OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let decoupled = matches!(self.config.kind, OptimizerKind::AdamW { .. });
                    let g = if wd > 0.0 && !decoupled {
                        g + p.clone() * wd
                    } else {
                        g
                    };
                    let m = match self.first[i].take() {
                        Some(m) => m * beta1 + g.clone() * (1.0 - beta1),
                        None => g.clone() * (1.0 - beta1),
                    };
                    let v = match self.second[i].take() {
                        Some(v) => v * beta2 + g.clone().square() * (1.0 - beta2),
                        None => g.square() * (1.0 - beta2),
                    };
                    let bc1 = 1.0 - (beta1 as f64).powi(t);
                    let bc2 = 1.0 - (beta2 as f64).powi(t);
                    let step_size = lr / bc1;
                    let denom = (v.clone() / bc2).sqrt() + eps as f64;
                    self.first[i] = Some(m.clone());
                    self.second[i] = Some(v);
                    let p = if decoupled && wd > 0.0 {
                        p.clone() * (1.0 - lr * wd)
                    } else {
                        p
                    };
                    p - m / denom * step_size
                }
            };
            store.values[i] = match &mask {
                Some(m) => new_p * m.clone(),
                None => new_p,
            };
            if let Some(m) = &mask {
                self.first[i] = self.first[i].take().map(|s| s * m.clone());
                self.second[i] = self.second[i].take().map(|s| s * m.clone());
            }
        }
    }

    /// Clears the state of parameters whose mask changed (new regrowth starts from zero state).
    pub fn mask_state(&mut self, store: &ParamStore) {
        for i in 0..store.len() {
            if let Some(m) = &store.masks[i] {
                self.first[i] = self.first[i].take().map(|s| s * m.clone());
                self.second[i] = self.second[i].take().map(|s| s * m.clone());
            }
        }
    }
}
