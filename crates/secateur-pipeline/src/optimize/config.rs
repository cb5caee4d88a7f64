//! Settings of an `optimize` run: objectives and constraints, hardware for latency and energy,
//! the search budget (population, generations, fine-tuning per candidate), what the space may
//! use (int8, bf16, block removal, ensembles) and the final re-training. `validate()` rejects
//! settings that cannot work, including constraints that contradict each other; the
//! fingerprint guards a resumed run against changed settings.

use super::objectives::{Constraint, ObjectiveKind};
use crate::recipe::FinetuneRecipe;
use crate::{Result, bail};
use serde::{Deserialize, Serialize};

/// Where the validation images that score candidates during the search come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValSource {
    /// `train` for a model secateur trains itself (the images are held out of its training),
    /// `test` for a model given as trained (its training data may include any training image).
    #[default]
    Auto,
    /// Held out of the training split.
    Train,
    /// Held out of the test split; final accuracies use the rest of the test split.
    Test,
}

impl std::fmt::Display for ValSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValSource::Auto => "auto",
            ValSource::Train => "train",
            ValSource::Test => "test",
        })
    }
}

/// What scores a sentence encoder's candidates on a text set (their "accuracy" objective).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TextScore {
    /// Agreement with the dense model: mean cosine similarity of the two embeddings of each
    /// held-out text (no labels needed).
    #[default]
    Agreement,
    /// The text set's task score: retrieval top-1 for pairs, Spearman correlation for scored
    /// pairs.
    Task,
}

impl std::fmt::Display for TextScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextScore::Agreement => "agreement",
            TextScore::Task => "task",
        })
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Everything that determines the result of a run (the worker count does not).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizeConfig {
    pub objectives: Vec<ObjectiveKind>,
    pub constraints: Vec<Constraint>,
    /// Profile for latency: `host` is this machine (lookup table, then measured); any other
    /// profile is modelled.
    pub latency_hardware: String,
    /// Profile for energy per inference.
    pub energy_hardware: String,
    /// Batch size of the latency, energy and memory figures.
    pub batch: usize,
    /// Threads of the runtime when measuring latency.
    pub threads: usize,
    pub population: usize,
    pub generations: usize,
    pub seed: u64,
    /// Training images of the short fine-tune that estimates a candidate's accuracy.
    pub search_samples: usize,
    pub search_epochs: usize,
    /// Images held out to estimate accuracy during the search.
    pub val_samples: usize,
    /// Which split the validation images are held out of.
    #[serde(default)]
    pub val_from: ValSource,
    /// Epochs of the final fine-tune of every front member (on the training split).
    pub final_epochs: usize,
    /// Epochs to train the model first (built-in models start untrained).
    pub dense_epochs: usize,
    pub finetune: FinetuneRecipe,
    pub int8: bool,
    /// bf16 execution in the space, where latency is measured on this machine and its CPU
    /// runs bf16 in hardware (AVX-512 BF16).
    /// (Absent from the settings of runs made before bf16: false.)
    #[serde(default)]
    pub bf16: bool,
    pub remove_blocks: bool,
    /// Largest ensemble (2 or 3); below 2, no ensembles.
    pub ensemble_size: usize,
    /// Ensembles are formed from this many of the most accurate front members.
    pub ensemble_pool: usize,
    /// Run the uniform-ratio baseline with the same number of evaluations.
    pub baseline: bool,
    /// At most this many front members are re-trained at the end.
    pub max_final: usize,
    /// Channel counts are rounded up to multiples of this.
    pub round_to: usize,
    /// A layer whose accuracy drops by more than this (before fine-tuning) at a ratio limits
    /// the search to smaller ratios.
    pub sensitivity_drop: f64,
    /// Candidates more than this below the dense model's accuracy are infeasible (an implicit
    /// constraint: collapsed models are not trade-offs); 1 disables it.
    pub max_accuracy_drop: f64,
    /// Children bred per generation, in multiples of the population; the surrogate screening
    /// picks which of them are evaluated (1 evaluates every child: plain NSGA-II).
    #[serde(default = "default_screen_pool")]
    pub screen_pool: usize,
    /// With a text set: what scores candidates (left out of the settings' JSON at its
    /// default, so image runs keep their fingerprints).
    #[serde(default, skip_serializing_if = "is_default")]
    pub text_score: TextScore,
}

fn default_screen_pool() -> usize {
    4
}

impl Default for OptimizeConfig {
    fn default() -> Self {
        OptimizeConfig {
            objectives: vec![
                ObjectiveKind::Accuracy,
                ObjectiveKind::Latency,
                ObjectiveKind::Energy,
                ObjectiveKind::Bytes,
            ],
            constraints: Vec::new(),
            latency_hardware: "host".into(),
            energy_hardware: "mobile".into(),
            batch: 64,
            threads: 1,
            population: 12,
            generations: 5,
            seed: 0,
            search_samples: 1500,
            search_epochs: 1,
            val_samples: 1000,
            val_from: ValSource::Auto,
            final_epochs: 3,
            dense_epochs: 8,
            finetune: FinetuneRecipe::default(),
            int8: true,
            bf16: true,
            remove_blocks: true,
            ensemble_size: 2,
            ensemble_pool: 4,
            baseline: true,
            max_final: 12,
            round_to: 1,
            sensitivity_drop: 0.3,
            max_accuracy_drop: 0.1,
            screen_pool: default_screen_pool(),
            text_score: TextScore::default(),
        }
    }
}

impl OptimizeConfig {
    pub fn validate(&self) -> Result<()> {
        if self.objectives.is_empty() {
            bail!("objectives: give at least one of accuracy, latency, energy, bytes, memory");
        }
        for (i, o) in self.objectives.iter().enumerate() {
            if self.objectives[..i].contains(o) {
                bail!("objectives: '{o}' is listed twice");
            }
        }
        if self.population < 4 || !self.population.is_multiple_of(2) {
            bail!(
                "population must be an even number >= 4, got {}",
                self.population
            );
        }
        if self.batch == 0 || self.threads == 0 {
            bail!("batch and threads must be at least 1");
        }
        if self.search_samples < 64 || self.val_samples < 50 {
            bail!(
                "search-samples must be >= 64 and val-samples >= 50 (got {} and {})",
                self.search_samples,
                self.val_samples
            );
        }
        if self.search_epochs == 0 {
            bail!("search-epochs must be at least 1");
        }
        if self.ensemble_size > 3 {
            bail!(
                "ensemble-size must be 0, 2 or 3, got {}",
                self.ensemble_size
            );
        }
        if self.ensemble_size >= 2 && self.ensemble_pool < self.ensemble_size {
            bail!(
                "ensemble-pool ({}) must be at least ensemble-size ({})",
                self.ensemble_pool,
                self.ensemble_size
            );
        }
        if self.max_final == 0 {
            bail!("max-final must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.max_accuracy_drop) {
            bail!(
                "max-accuracy-drop must be in [0, 1], got {}",
                self.max_accuracy_drop
            );
        }
        if !(1..=16).contains(&self.screen_pool) {
            bail!(
                "screen-pool must be between 1 and 16 (children bred per evaluated one), got {}",
                self.screen_pool
            );
        }
        if !(0.0..=1.0).contains(&self.sensitivity_drop) {
            bail!(
                "sensitivity-drop must be in [0, 1], got {}",
                self.sensitivity_drop
            );
        }
        self.check_constraints()
    }

    /// Rejects pairs of constraints on one quantity that no value can meet together.
    fn check_constraints(&self) -> Result<()> {
        for a in &self.constraints {
            if a.kind == ObjectiveKind::Accuracy && !a.at_most && a.bound > 1.0 {
                bail!(
                    "constraint '{}' cannot be met: accuracy is at most 1",
                    a.text
                );
            }
            if a.kind != ObjectiveKind::Accuracy && a.at_most && a.bound <= 0.0 {
                bail!(
                    "constraint '{}' cannot be met: {} is always positive",
                    a.text,
                    a.kind
                );
            }
            for b in &self.constraints {
                if a.kind == b.kind && a.at_most && !b.at_most && a.bound < b.bound {
                    bail!(
                        "constraints '{}' and '{}' contradict each other: no {} is both at most {} and at least {} {}",
                        a.text,
                        b.text,
                        a.kind,
                        a.bound,
                        b.bound,
                        a.kind.unit()
                    );
                }
            }
        }
        Ok(())
    }

    /// A digest of the settings that determine the result.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        // FNV-1a, stable across builds and platforms
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The validation source after resolving `auto`: a model taken as trained (no dense
    /// epochs) may have seen every training image, so its validation comes from the test split.
    pub fn val_source(&self) -> ValSource {
        match self.val_from {
            ValSource::Auto if self.dense_epochs == 0 => ValSource::Test,
            ValSource::Auto => ValSource::Train,
            v => v,
        }
    }

    /// The defaults for a sentence encoder searched on a text set, before the user's settings:
    /// latency at batch 1 (one text), candidates scored one-shot (no fine-tuning, no int8,
    /// no ensembles of embeddings), a collapse floor of 0.2 below the dense score.
    pub fn text_defaults(&mut self) {
        self.batch = 1;
        self.int8 = false;
        self.ensemble_size = 0;
        self.remove_blocks = false;
        self.final_epochs = 0;
        self.dense_epochs = 0;
        self.max_accuracy_drop = 0.2;
    }

    /// Rejects settings a text search cannot honour.
    pub fn validate_text(&self) -> Result<()> {
        if self.dense_epochs > 0 {
            bail!(
                "dense-epochs is {}: a sentence encoder is searched as given (pretrained); set it to 0",
                self.dense_epochs
            );
        }
        if self.ensemble_size >= 2 {
            bail!(
                "ensemble-size is {}: ensembles average classifiers' outputs and are not built for sentence encoders; set it to 0",
                self.ensemble_size
            );
        }
        Ok(())
    }

    /// What the search space may use besides channels.
    pub fn space_shape(&self) -> super::space::SpaceShape {
        let isa = secateur_runtime::kernels::Isa::detect();
        super::space::SpaceShape {
            int8: self.int8,
            bf16: self.bf16
                && self.latency_on_host()
                && secateur_runtime::kernels::bf16::bf16_runs_fast(isa),
            blocks: self.remove_blocks,
            round_to: self.round_to,
        }
    }

    /// Whether latency is measured on this machine.
    pub fn latency_on_host(&self) -> bool {
        self.latency_hardware == "host"
    }
}

/// The settings a user gives: a TOML file (`optimize --config FILE`), the command-line flags
/// and the Python package's keyword arguments all fill this one structure, under the same
/// (underscored) names. Unset fields keep their defaults; [`OptimizeFile::overlay`] lets later
/// sources (flags over the file) win.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeFile {
    /// e.g. `["accuracy", "latency", "energy", "bytes"]`
    pub objectives: Option<Vec<String>>,
    /// e.g. `["latency<=2ms", "accuracy>=0.88"]`
    pub constraints: Option<Vec<String>>,
    pub hardware: Option<String>,
    pub energy_hardware: Option<String>,
    pub batch: Option<usize>,
    pub threads: Option<usize>,
    pub population: Option<usize>,
    pub generations: Option<usize>,
    /// Search budget in evaluations: sets the generations for the population.
    pub budget: Option<usize>,
    pub seed: Option<u64>,
    pub search_samples: Option<usize>,
    pub search_epochs: Option<usize>,
    pub val_samples: Option<usize>,
    /// `auto`, `train` or `test`
    pub val_from: Option<ValSource>,
    pub final_epochs: Option<usize>,
    pub dense_epochs: Option<usize>,
    pub lr: Option<f64>,
    pub distill: Option<bool>,
    pub int8: Option<bool>,
    pub bf16: Option<bool>,
    pub remove_blocks: Option<bool>,
    pub ensemble_size: Option<usize>,
    pub ensemble_pool: Option<usize>,
    pub baseline: Option<bool>,
    pub max_final: Option<usize>,
    pub round_to: Option<usize>,
    pub sensitivity_drop: Option<f64>,
    pub max_accuracy_drop: Option<f64>,
    pub screen_pool: Option<usize>,
    /// With a text set: `agreement` (with the dense model) or `task` (the set's task score).
    pub text_score: Option<TextScore>,
}

impl OptimizeFile {
    /// Reads a settings file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::invalid!("cannot read settings file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| crate::invalid!("settings file {}: {e}", path.display()))
    }

    /// Settings from a JSON object (the Python package's keyword arguments); an unknown name
    /// is refused with the list of known ones.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(value.clone()).map_err(|e| crate::invalid!("settings: {e}"))
    }

    /// Sets every field that `later` sets (flags over a file).
    pub fn overlay(&mut self, later: &OptimizeFile) {
        macro_rules! take {
            ($($field:ident),*) => {
                $(if later.$field.is_some() { self.$field = later.$field.clone(); })*
            };
        }
        take!(
            objectives,
            constraints,
            hardware,
            energy_hardware,
            batch,
            threads,
            population,
            generations,
            budget,
            seed,
            search_samples,
            search_epochs,
            val_samples,
            val_from,
            final_epochs,
            dense_epochs,
            lr,
            distill,
            int8,
            bf16,
            remove_blocks,
            ensemble_size,
            ensemble_pool,
            baseline,
            max_final,
            round_to,
            sensitivity_drop,
            max_accuracy_drop,
            screen_pool,
            text_score
        );
    }

    /// The run's configuration: defaults (a model given as a file is taken as trained: no
    /// dense epochs; a built-in one is trained for 8; a sentence encoder on a `text` set gets
    /// [`OptimizeConfig::text_defaults`]), then these settings, validated.
    pub fn to_config(&self, model_is_file: bool, text: bool) -> Result<OptimizeConfig> {
        let mut c = OptimizeConfig {
            dense_epochs: if model_is_file { 0 } else { 8 },
            ..Default::default()
        };
        if text {
            c.text_defaults();
        }
        self.apply(&mut c)?;
        c.validate()?;
        if text {
            c.validate_text()?;
        }
        Ok(c)
    }

    /// Applies the settings to `c`.
    pub fn apply(&self, c: &mut OptimizeConfig) -> Result<()> {
        if let Some(o) = &self.objectives {
            c.objectives = o.iter().map(|s| s.parse()).collect::<Result<_>>()?;
        }
        if let Some(k) = &self.constraints {
            c.constraints = k.iter().map(|s| s.parse()).collect::<Result<_>>()?;
        }
        macro_rules! set {
            ($($field:ident => $target:ident),*) => {
                $(if let Some(v) = &self.$field { c.$target = v.clone(); })*
            };
        }
        set!(
            hardware => latency_hardware,
            energy_hardware => energy_hardware,
            batch => batch,
            threads => threads,
            population => population,
            generations => generations,
            seed => seed,
            search_samples => search_samples,
            search_epochs => search_epochs,
            val_samples => val_samples,
            val_from => val_from,
            final_epochs => final_epochs,
            dense_epochs => dense_epochs,
            int8 => int8,
            bf16 => bf16,
            remove_blocks => remove_blocks,
            ensemble_size => ensemble_size,
            ensemble_pool => ensemble_pool,
            baseline => baseline,
            max_final => max_final,
            round_to => round_to,
            sensitivity_drop => sensitivity_drop,
            max_accuracy_drop => max_accuracy_drop,
            screen_pool => screen_pool,
            text_score => text_score
        );
        if let Some(v) = self.lr {
            c.finetune.lr = v;
        }
        if let Some(v) = self.distill {
            c.finetune.distill = v;
        }
        if let Some(b) = self.budget {
            if b < 2 * c.population {
                crate::bail!(
                    "budget {b} is less than two generations of the population ({})",
                    c.population
                );
            }
            c.generations = b / c.population - 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_contradictory_constraints() {
        let mut c = OptimizeConfig {
            constraints: vec![
                "latency<=1ms".parse().unwrap(),
                "latency>=2ms".parse().unwrap(),
            ],
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("latency<=1ms") && e.contains("latency>=2ms"),
            "{e}"
        );
        c.constraints = vec!["accuracy>=1.2".parse().unwrap()];
        assert!(c.validate().is_err());
        c.constraints = vec!["accuracy>=0.8".parse().unwrap()];
        c.validate().unwrap();
        let f: OptimizeFile = toml::from_str(
            "objectives = [\"accuracy\", \"bytes\"]\nconstraints = [\"bytes<=64KiB\"]\npopulation = 8",
        )
        .unwrap();
        let mut d = OptimizeConfig::default();
        f.apply(&mut d).unwrap();
        assert_eq!(
            d.objectives,
            vec![ObjectiveKind::Accuracy, ObjectiveKind::Bytes]
        );
        assert_eq!((d.population, d.constraints[0].bound), (8, 64.0));
        assert!(toml::from_str::<OptimizeFile>("populaton = 8").is_err());
        assert_ne!(
            c.fingerprint(),
            OptimizeConfig::default().fingerprint(),
            "constraints are part of the fingerprint"
        );
    }

    #[test]
    fn screen_pool_is_bounded_read_from_toml_and_fingerprinted() {
        for bad in [0, 17] {
            let c = OptimizeConfig {
                screen_pool: bad,
                ..Default::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("screen-pool") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
        let f: OptimizeFile = toml::from_str("screen_pool = 1").unwrap();
        let mut c = OptimizeConfig::default();
        assert_eq!(c.screen_pool, 4);
        f.apply(&mut c).unwrap();
        c.validate().unwrap();
        assert_eq!(c.screen_pool, 1);
        assert_ne!(c.fingerprint(), OptimizeConfig::default().fingerprint());
    }
}
