//! What a user asks `optimize` for, in one structure the command line and the Python package
//! both fill: the model and data arguments, the settings (a TOML file, then the settings given
//! directly), the run directory, and the local worker count. [`OptimizeRequest::prepare`]
//! resolves it into the run's configuration and inputs, refusing what cannot work (an output
//! directory that holds the input model, settings a text search cannot honour) before anything
//! is written. A text set (.txt / .jsonl) makes the run a sentence-encoder search.

use super::config::TextScore;
use super::config::{OptimizeConfig, OptimizeFile};
use super::parallel::default_workers;
use super::{InputData, OptimizeInputs, check_paths};
use crate::model_ref::load_model;
use crate::text::{TextData, TextGraph};
use crate::{Context, Result, bail};
use secateur_data::TextTask;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The built-in model `optimize` trains and searches when no model is given.
pub const DEFAULT_MODEL: &str = "lenet5-bn";
/// The embedded data set used when no data is given.
pub const DEFAULT_DATA: &str = "fashion-mnist-mini";
/// The run directory used when none is given.
pub const DEFAULT_OUT: &str = "secateur-out";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeRequest {
    /// An .onnx file (taken as trained) or a built-in model name (trained first).
    #[serde(default = "default_model")]
    pub model: String,
    /// A data set name or directory.
    #[serde(default = "default_data")]
    pub data: String,
    /// Per-channel input normalisation, both or neither.
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    #[serde(default)]
    pub std: Option<Vec<f32>>,
    /// The model's tokenizer.json for a text set (default: next to the model).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// A TOML settings file; `settings` override it.
    #[serde(default)]
    pub config: Option<PathBuf>,
    #[serde(default)]
    pub settings: OptimizeFile,
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// Start over instead of resuming the run in `out`.
    #[serde(default)]
    pub fresh: bool,
    /// Candidates evaluated at once by the local executor (default: the cores).
    #[serde(default)]
    pub workers: Option<usize>,
}

fn default_model() -> String {
    DEFAULT_MODEL.into()
}
fn default_data() -> String {
    DEFAULT_DATA.into()
}
fn default_out() -> PathBuf {
    DEFAULT_OUT.into()
}

impl Default for OptimizeRequest {
    fn default() -> Self {
        OptimizeRequest {
            model: default_model(),
            data: default_data(),
            mean: None,
            std: None,
            tokenizer: None,
            config: None,
            settings: OptimizeFile::default(),
            out: default_out(),
            fresh: false,
            workers: None,
        }
    }
}

impl OptimizeRequest {
    /// A request from JSON (the Python package); unknown names are refused.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| crate::invalid!("optimize settings: {e}"))
    }

    /// Whether the model argument names a file (taken as trained) rather than a built-in.
    pub fn model_is_file(&self) -> bool {
        Path::new(&self.model).exists() || self.model.ends_with(".onnx")
    }

    /// The run's settings: the file, then the settings given directly, on the defaults.
    pub fn config(&self) -> Result<OptimizeConfig> {
        let mut settings = match &self.config {
            Some(p) => OptimizeFile::load(p)?,
            None => OptimizeFile::default(),
        };
        settings.overlay(&self.settings);
        settings.to_config(self.model_is_file(), self.is_text())
    }

    /// Whether the data is a text set (the model then is a sentence encoder).
    pub fn is_text(&self) -> bool {
        secateur_data::is_text_path(&self.data)
    }

    /// The configuration and the inputs of the run: settings validated, paths checked, data
    /// and model loaded.
    pub fn prepare(&self) -> Result<(OptimizeConfig, OptimizeInputs)> {
        let cfg = self.config()?;
        check_paths(&self.model, &self.out)?;
        let (graph, data) = if self.is_text() {
            let graph = load_model(&self.model, &Default::default())?;
            TextGraph::of(&graph).with_context(|| {
                format!(
                    "'{}' is a text set, so '{}' must be a sentence encoder whose inputs are token tensors",
                    self.data, self.model
                )
            })?;
            let text = TextData::load(
                Path::new(&self.data),
                &self.model,
                self.tokenizer.as_deref(),
            )
            .with_context(|| format!("loading text set '{}'", self.data))?;
            if cfg.text_score == TextScore::Task && text.held_out.task() == TextTask::Sentences {
                bail!(
                    "text-score task needs pairs (a .jsonl with \"pair\", optionally \"score\"); '{}' holds single sentences: use text-score agreement",
                    self.data
                );
            }
            (graph, InputData::Text(Box::new(text)))
        } else {
            let split = crate::data::load(&self.data)?;
            let graph = load_model(&self.model, &crate::data::zoo_config_for(&split, cfg.seed))?;
            let norm = crate::data::normalization(
                self.mean.as_deref(),
                self.std.as_deref(),
                &split,
                Some(&graph),
            )?;
            (graph, InputData::Images { split, norm })
        };
        let inputs = OptimizeInputs {
            model: graph,
            model_label: self.model.clone(),
            data_label: self.data.clone(),
            data,
            out: self.out.clone(),
            fresh: self.fresh,
            workers: self.workers.unwrap_or_else(default_workers),
        };
        Ok((cfg, inputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_settings_are_refused_and_known_ones_reach_the_config() {
        let r = OptimizeRequest::from_json(
            r#"{"settings": {"population": 8, "budget": 24, "objectives": ["accuracy", "bytes"]}}"#,
        )
        .unwrap();
        assert_eq!(r.model, DEFAULT_MODEL);
        let c = r.config().unwrap();
        assert_eq!((c.population, c.generations), (8, 2));
        assert_eq!(c.dense_epochs, 8, "a built-in model is trained first");
        let e = OptimizeRequest::from_json(r#"{"settings": {"populaton": 8}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("populaton") && e.contains("population"), "{e}");
        let e = OptimizeRequest::from_json(r#"{"settings": {"population": 7}}"#)
            .unwrap()
            .config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("population") && e.contains('7'), "{e}");
    }
}
