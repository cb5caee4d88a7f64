//! Pruning recipes: the whole pruning pipeline as data (TOML), so a run can be written down,
//! versioned and replayed. Every `prune` flag has a field here; flags given on the command
//! line override the recipe file. `validate` rejects impossible requests before any work.

use crate::{Result, bail};
use secateur_prune::weights::{Criterion, Granularity, Scope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// When masks are computed relative to fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Prune once, then fine-tune.
    #[default]
    Oneshot,
    /// Prune and fine-tune in rounds, removing the same fraction of the remaining weights each round.
    Iterative,
    /// Gradual polynomial (cubic) sparsity increase during fine-tuning (Zhu & Gupta).
    Agp,
    /// Dynamic sparse training at fixed sparsity with prune-and-regrow (Evci et al., RigL).
    Rigl,
}

/// How a sparsity target is spread over layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    /// One ranking over all layers, magnitudes normalised per layer (LAMP).
    #[default]
    Global,
    /// One ranking over all layers of the raw magnitudes (PyTorch's global pruning).
    #[serde(rename = "global-raw")]
    #[value(name = "global-raw")]
    GlobalRaw,
    Layer,
}

/// The weight-pruning step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRecipe {
    /// magnitude, l2, threshold:T, random, taylor, lamp, wanda
    pub method: String,
    /// unstructured, N:M, block:RxC
    #[serde(default = "default_granularity")]
    pub granularity: String,
    pub sparsity: Option<f64>,
    #[serde(default)]
    pub scope: ScopeKind,
    /// Per-layer sparsity targets (node or weight name → sparsity); overrides `scope`.
    #[serde(default)]
    pub targets: BTreeMap<String, f64>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fraction of each layer's weights a global ranking leaves (default 0.02: no layer above
    /// 98 % sparsity; 0 lets a layer lose all but one weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_density: Option<f64>,
    #[serde(default)]
    pub schedule: ScheduleKind,
    /// Iterative: number of prune / fine-tune rounds.
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    /// AGP: fraction of the fine-tuning steps after which pruning starts.
    #[serde(default)]
    pub start_fraction: f64,
    /// AGP and RigL: fraction of the fine-tuning steps after which masks stop changing.
    #[serde(default = "default_end")]
    pub end_fraction: f64,
    /// AGP and RigL: steps between mask updates.
    #[serde(default = "default_frequency")]
    pub frequency: usize,
    /// RigL: initial fraction of active weights dropped and regrown per update.
    #[serde(default = "default_alpha")]
    pub rigl_alpha: f64,
    /// Batches used by data-dependent criteria (Taylor, Wanda).
    #[serde(default = "default_calibration")]
    pub calibration_batches: usize,
    /// Wanda and SparseGPT: each pruned layer's bias absorbs the shift of its mean output on
    /// the calibration inputs.
    #[serde(default = "default_bias_correction")]
    pub bias_correction: bool,
    /// Wanda and SparseGPT: the kept weights of each pruned layer are refitted by least
    /// squares to the layer's dense outputs on the calibration inputs.
    #[serde(default = "default_refit")]
    pub refit: bool,
}

fn default_granularity() -> String {
    "unstructured".into()
}
fn default_rounds() -> usize {
    3
}
fn default_end() -> f64 {
    0.75
}
fn default_frequency() -> usize {
    50
}
fn default_alpha() -> f64 {
    0.3
}
fn default_calibration() -> usize {
    8
}
fn default_bias_correction() -> bool {
    true
}
fn default_refit() -> bool {
    true
}

/// Fine-tuning after (or during) pruning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneRecipe {
    #[serde(default)]
    pub epochs: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// sgd, adam, adamw
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    #[serde(default)]
    pub weight_decay: f64,
    /// constant, cosine
    #[serde(default = "default_schedule")]
    pub lr_schedule: String,
    /// Distil from the unpruned model.
    #[serde(default)]
    pub distill: bool,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_distill_alpha")]
    pub alpha: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_batch() -> usize {
    128
}
fn default_optimizer() -> String {
    "adam".into()
}
fn default_schedule() -> String {
    "constant".into()
}
fn default_temperature() -> f64 {
    4.0
}
fn default_distill_alpha() -> f64 {
    0.5
}

impl Default for FinetuneRecipe {
    fn default() -> Self {
        FinetuneRecipe {
            epochs: 0,
            lr: default_lr(),
            batch: default_batch(),
            optimizer: default_optimizer(),
            weight_decay: 0.0,
            lr_schedule: default_schedule(),
            distill: false,
            temperature: default_temperature(),
            alpha: default_distill_alpha(),
        }
    }
}

/// Int8 quantization-aware fine-tuning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeRecipe {
    /// Only `int8` is supported.
    pub format: String,
    #[serde(default = "default_calibration")]
    pub calibration_batches: usize,
}

/// A complete pruning recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub seed: u64,
    pub structured: Option<crate::recipe_structured::StructuredRecipe>,
    pub weights: Option<WeightsRecipe>,
    #[serde(default)]
    pub finetune: FinetuneRecipe,
    pub quantize: Option<QuantizeRecipe>,
}

impl WeightsRecipe {
    pub fn criterion(&self) -> Result<Criterion> {
        Ok(self.method.parse()?)
    }

    pub fn granularity(&self) -> Result<Granularity> {
        Ok(self.granularity.parse()?)
    }

    pub fn scope(&self) -> Scope {
        if !self.targets.is_empty() {
            Scope::Targets(self.targets.clone())
        } else {
            match self.scope {
                ScopeKind::Layer => Scope::PerLayer,
                ScopeKind::GlobalRaw => Scope::GlobalRaw,
                ScopeKind::Global => Scope::Global,
            }
        }
    }
}

impl Recipe {
    /// Parses a TOML recipe, naming the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let r: Recipe =
            toml::from_str(text).map_err(|e| crate::invalid!("recipe '{origin}': {e}"))?;
        Ok(r)
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Whether the recipe needs training data.
    pub fn needs_data(&self) -> Result<bool> {
        let data_criterion = match &self.weights {
            Some(w) => w.criterion()?.needs_data() || matches!(w.schedule, ScheduleKind::Rigl),
            None => false,
        };
        let structured_data = self.structured.as_ref().is_some_and(|s| s.needs_data());
        Ok(
            self.finetune.epochs > 0
                || data_criterion
                || structured_data
                || self.quantize.is_some(),
        )
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(w) = &self.weights {
            let c = w.criterion()?;
            let g = w.granularity()?;
            let cfg = secateur_prune::weights::WeightPruneConfig {
                criterion: c,
                granularity: g,
                sparsity: w.sparsity,
                scope: w.scope(),
                exclude: w.exclude.clone(),
                seed: self.seed,
                min_density: w.min_density,
            };
            cfg.validate()?;
            if w.rounds == 0 {
                bail!("weights.rounds must be at least 1");
            }
            if !(w.end_fraction > 0.0 && w.end_fraction <= 1.0) {
                bail!(
                    "weights.end_fraction must be in (0, 1], got {}",
                    w.end_fraction
                );
            }
            if !(w.start_fraction >= 0.0 && w.start_fraction < w.end_fraction) {
                bail!(
                    "weights.start_fraction must be in [0, end_fraction), got {}",
                    w.start_fraction
                );
            }
            if w.frequency == 0 {
                bail!("weights.frequency must be at least 1");
            }
            if !(w.rigl_alpha > 0.0 && w.rigl_alpha < 1.0) {
                bail!("weights.rigl_alpha must be in (0, 1), got {}", w.rigl_alpha);
            }
            let gradual = matches!(
                w.schedule,
                ScheduleKind::Agp | ScheduleKind::Rigl | ScheduleKind::Iterative
            );
            if gradual && self.finetune.epochs == 0 {
                bail!(
                    "the {:?} schedule prunes during fine-tuning: give finetune epochs > 0",
                    w.schedule
                );
            }
            if w.schedule == ScheduleKind::Iterative && self.finetune.epochs < w.rounds {
                bail!(
                    "iterative pruning needs at least one fine-tune epoch per round ({} rounds, {} epochs)",
                    w.rounds,
                    self.finetune.epochs
                );
            }
            if matches!(w.schedule, ScheduleKind::Agp | ScheduleKind::Rigl)
                && (g != Granularity::Unstructured || matches!(c, Criterion::Threshold { .. }))
            {
                bail!("AGP and RigL schedules need unstructured granularity and a sparsity target");
            }
        }
        if let Some(s) = &self.structured {
            s.validate()?;
        }
        if let Some(q) = &self.quantize
            && q.format != "int8"
        {
            bail!("quantize.format must be \"int8\", got \"{}\"", q.format);
        }
        if self.weights.is_none() && self.structured.is_none() && self.quantize.is_none() {
            bail!(
                "nothing to do: give a weight-pruning method (--method), structured pruning (--structured) or --quantize"
            );
        }
        Ok(())
    }
}
