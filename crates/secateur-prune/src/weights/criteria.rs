//! Importance criteria of weight pruning: an element-wise score per weight (higher = more
//! important). Magnitude (L1: |w|, L2: w²), random (seeded), first-order Taylor (|w·∂L/∂w|
//! accumulated over batches, computed by the training engine and passed in as data), and
//! Wanda (|w| · ‖x_j‖, the norm of the input feature a weight reads, from a calibration set).
//! LAMP (Lee et al. 2021) rescales squared magnitudes within each layer:
//! `score(u) = w_u² / Σ_{v ≥ u} w_v²` over the layer's weights sorted by magnitude.

use crate::error::{PruneError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A weight-pruning criterion.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Criterion {
    /// |w| (`l1`) or w² (`l2`); identical rankings for single elements, different for blocks.
    Magnitude {
        l2: bool,
    },
    /// Prune every weight with |w| ≤ t (no sparsity target).
    Threshold {
        t: f32,
    },
    Random,
    Taylor,
    Lamp,
    Wanda,
    /// SparseGPT: Wanda-like scores choose, and the calibration Hessian reconstructs the kept
    /// weights ([`super::sparsegpt`]); one-shot only.
    #[serde(rename = "sparsegpt")]
    SparseGpt,
}

impl Criterion {
    /// Whether the criterion needs gradients (Taylor) or calibration activations (Wanda,
    /// SparseGPT).
    pub fn needs_data(self) -> bool {
        matches!(
            self,
            Criterion::Taylor | Criterion::Wanda | Criterion::SparseGpt
        )
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Criterion::Magnitude { l2: false } => f.write_str("magnitude"),
            Criterion::Magnitude { l2: true } => f.write_str("magnitude-l2"),
            Criterion::Threshold { t } => write!(f, "threshold:{t}"),
            Criterion::Random => f.write_str("random"),
            Criterion::Taylor => f.write_str("taylor"),
            Criterion::Lamp => f.write_str("lamp"),
            Criterion::Wanda => f.write_str("wanda"),
            Criterion::SparseGpt => f.write_str("sparsegpt"),
        }
    }
}

impl FromStr for Criterion {
    type Err = PruneError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "magnitude" | "l1" | "magnitude-l1" => Criterion::Magnitude { l2: false },
            "l2" | "magnitude-l2" => Criterion::Magnitude { l2: true },
            "random" => Criterion::Random,
            "taylor" => Criterion::Taylor,
            "lamp" => Criterion::Lamp,
            "wanda" => Criterion::Wanda,
            "sparsegpt" => Criterion::SparseGpt,
            t if t.starts_with("threshold:") => {
                let v: f32 = t["threshold:".len()..]
                    .parse()
                    .map_err(|_| PruneError::Invalid(format!("bad threshold in '{t}'")))?;
                if !(v >= 0.0) {
                    return Err(PruneError::Invalid(format!(
                        "threshold must be >= 0, got {v}"
                    )));
                }
                Criterion::Threshold { t: v }
            }
            other => {
                return Err(PruneError::Invalid(format!(
                    "criterion '{other}' is not one of magnitude, l2, threshold:T, random, taylor, lamp, wanda, sparsegpt"
                )));
            }
        })
    }
}

/// Data some criteria need, by weight name.
#[derive(Clone, Debug, Default)]
pub struct CriterionData {
    /// Accumulated |w·g| per element (Taylor).
    pub taylor: HashMap<String, Vec<f32>>,
    /// L2 norm of each input channel / feature of the layer reading the weight (Wanda).
    pub input_norms: HashMap<String, Vec<f32>>,
    /// Gram matrices of linear layers' inputs (SparseGPT).
    pub grams: HashMap<String, super::calibration::Gram>,
}

/// Element-wise scores of one weight. `cols` is the row length of its matrix view, `col_of`
/// maps a flat index to its column, `in_channels` the number of input channels.
pub fn element_scores(
    criterion: Criterion,
    name: &str,
    values: &[f32],
    col_of: &dyn Fn(usize) -> usize,
    cols: usize,
    data: &CriterionData,
    seed: u64,
) -> Result<Vec<f32>> {
    let missing = |what: &str| PruneError::Layer {
        layer: name.to_string(),
        message: format!("criterion needs {what}; run with --data"),
    };
    Ok(match criterion {
        Criterion::Magnitude { l2: false } | Criterion::Threshold { .. } => {
            values.iter().map(|v| v.abs()).collect()
        }
        Criterion::Magnitude { l2: true } => values.iter().map(|v| v * v).collect(),
        Criterion::Random => {
            let mut h = seed;
            for b in name.bytes() {
                h = h.wrapping_mul(1_000_003).wrapping_add(b as u64);
            }
            let mut rng = ChaCha8Rng::seed_from_u64(h);
            values.iter().map(|_| rng.random::<f32>()).collect()
        }
        Criterion::Taylor => {
            let s = data
                .taylor
                .get(name)
                .ok_or_else(|| missing("gradients (Taylor)"))?;
            if s.len() != values.len() {
                return Err(PruneError::Layer {
                    layer: name.into(),
                    message: "Taylor scores do not match the weight size".into(),
                });
            }
            s.clone()
        }
        Criterion::Wanda | Criterion::SparseGpt => {
            if data.input_norms.is_empty() {
                return Err(missing("calibration activations (Wanda)"));
            }
            // grouped convolutions have no per-input-channel norms: plain magnitude there
            let Some(norms) = data.input_norms.get(name) else {
                return Ok(values.iter().map(|v| v.abs()).collect());
            };
            if norms.is_empty() || !cols.is_multiple_of(norms.len()) {
                return Err(PruneError::Layer {
                    layer: name.into(),
                    message: format!("{} input norms do not divide rows of {cols}", norms.len()),
                });
            }
            let per = cols / norms.len();
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.abs() * norms[col_of(i) / per])
                .collect()
        }
        Criterion::Lamp => lamp(values),
    })
}

/// LAMP scores of one layer.
pub fn lamp(values: &[f32]) -> Vec<f32> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| (values[a] * values[a]).total_cmp(&(values[b] * values[b])));
    let mut suffix = 0.0f64;
    let mut scores = vec![0.0f32; values.len()];
    for &i in order.iter().rev() {
        let sq = (values[i] as f64) * (values[i] as f64);
        suffix += sq;
        scores[i] = if suffix > 0.0 {
            (sq / suffix) as f32
        } else {
            0.0
        };
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lamp_ranks_hand_example() {
        // magnitudes 1, 2, 3: sorted squares 1, 4, 9; LAMP = 1/14, 4/13, 9/9
        let s = lamp(&[3.0, -1.0, 2.0]);
        assert!((s[1] - 1.0 / 14.0).abs() < 1e-6);
        assert!((s[2] - 4.0 / 13.0).abs() < 1e-6);
        assert!((s[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn wanda_weights_by_input_norm() {
        // 1 output x 2 inputs: |w| = (1, 1), input norms (10, 1): the second is less important
        let mut d = CriterionData::default();
        d.input_norms.insert("w".into(), vec![10.0, 1.0]);
        let s = element_scores(Criterion::Wanda, "w", &[1.0, -1.0], &|i| i, 2, &d, 0).unwrap();
        assert_eq!(s, vec![10.0, 1.0]);
        assert!(
            element_scores(Criterion::Taylor, "w", &[1.0], &|i| i, 1, &d, 0)
                .unwrap_err()
                .to_string()
                .contains("--data")
        );
    }

    #[test]
    fn parse_criteria() {
        assert_eq!(
            "threshold:0.05".parse::<Criterion>().unwrap(),
            Criterion::Threshold { t: 0.05 }
        );
        assert!("threshold:-1".parse::<Criterion>().is_err());
        assert!("snip".parse::<Criterion>().is_err());
    }
}
