//! The report model: everything a search produced, as plain serialisable data — objectives
//! with units and the method behind each number, every evaluated point (front members with
//! their model files and verification), the uniform-ratio baseline, hypervolume per
//! generation, sensitivity curves, constraints and notes. `front.json` is this model.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Key in every point's `values` (e.g. `accuracy`, `latency_ms`).
    pub key: String,
    pub name: String,
    pub unit: String,
    /// How the number was obtained ("measured on the host, batch 64, median of ...",
    /// "modelled with the mobile profile", ...).
    pub method: String,
    /// Larger is better (accuracy) or smaller is better.
    pub maximize: bool,
}

fn default_engine() -> String {
    "ONNX Runtime".to_string()
}

/// A check of an exported model after the search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Accuracy of the exported file as evaluated by `engine`.
    #[serde(alias = "onnx_runtime_accuracy")]
    pub checked_accuracy: Option<f64>,
    /// What evaluated it: "ONNX Runtime", or secateur's own runtime when ONNX Runtime is not
    /// available.
    #[serde(default = "default_engine")]
    pub engine: String,
    pub remeasured_latency_ms: Option<f64>,
    pub note: String,
}

/// One candidate model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub id: String,
    pub label: String,
    /// Decoded genome: gene name → value as text.
    pub genome: BTreeMap<String, String>,
    pub values: BTreeMap<String, f64>,
    pub on_front: bool,
    pub knee: bool,
    /// Member ids when the candidate is an ensemble.
    pub members: Vec<String>,
    /// The exported ONNX file, relative to the report directory.
    pub model_path: Option<String>,
    /// Fraction of channels / weights kept per layer (for the keep-ratio plot).
    pub layer_keep: Vec<(String, f64)>,
    pub verification: Option<Verification>,
    pub generation: usize,
    /// `search` (accuracy estimated during the search), `baseline`, `final` (re-trained with
    /// the full budget) or `ensemble`.
    #[serde(default)]
    pub stage: String,
    /// Whether the point is on the front of the search (before the final re-training).
    #[serde(default)]
    pub on_search_front: bool,
}

impl Point {
    /// Whether the point belongs to the final stage (re-trained members and ensembles).
    pub fn is_final(&self) -> bool {
        self.stage == "final" || self.stage == "ensemble"
    }
}

/// Accuracy drop against pruning ratio for one layer or group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityCurve {
    pub layer: String,
    /// `channels` or `weights`.
    pub kind: String,
    /// (fraction removed, accuracy drop).
    pub points: Vec<(f64, f64)>,
}

/// A whole search report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub model: String,
    pub data: String,
    pub created: String,
    pub settings: Vec<(String, String)>,
    pub objectives: Vec<Objective>,
    pub constraints: Vec<String>,
    pub points: Vec<Point>,
    pub baseline: Vec<Point>,
    /// (generation, hypervolume of the feasible front so far).
    pub hypervolume_history: Vec<(usize, f64)>,
    pub front_hypervolume: f64,
    pub baseline_hypervolume: f64,
    /// Reference point of the hypervolume, in objective order (minimisation form).
    pub hypervolume_reference: Vec<f64>,
    pub sensitivity: Vec<SensitivityCurve>,
    pub notes: Vec<String>,
    /// The dense model the run started from, as the reference of every plot and table
    /// (objective key → value; accuracy on the test split, like the final models).
    #[serde(default)]
    pub dense: Option<BTreeMap<String, f64>>,
}

impl Report {
    pub fn front(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(|p| p.on_front)
    }

    /// Points of the search itself (not the baseline, not the final stage).
    pub fn search_points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(|p| !p.is_final())
    }

    pub fn objective(&self, key: &str) -> Option<&Objective> {
        self.objectives.iter().find(|o| o.key == key)
    }
}
