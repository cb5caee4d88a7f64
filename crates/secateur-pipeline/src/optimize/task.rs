//! What a search scores its candidates on. An image classifier: a labelled split, fine-tuned
//! on and scored by top-1 accuracy. A sentence encoder: a text set, from which the dense
//! model's calibration statistics are gathered once (the Gram matrices of its linear layers'
//! inputs, and from them each head's and neuron's output energy, which orders the channels of
//! every group); candidates are pruned one-shot, the layers reading pruned channels refitted by
//! least squares on those statistics, and scored by agreement with the dense model (mean
//! cosine of the pooled embeddings) or the set's task score on held-out texts. Half of the
//! held-out texts score the search, the other half the final figures.

use super::config::{OptimizeConfig, TextScore};
use super::space::SCALE_RANGE;
use crate::finetune::TrainData;
use crate::runtime_eval::evaluate_in_runtime;
use crate::text::{
    DISTILL_EXTRA_VIEWS, Embedder, SetEmbeddings, TEXT_CALIBRATION_BATCHES, TextData, TextGraph,
    embed_set, score,
};
use crate::{Context, Result};
use secateur_data::{Normalization, Split, TextSet, TextTask as SetTask};
use secateur_graph::{Graph, Precision};
use secateur_prune::structured::{
    Allocation, ChannelPruneConfig, DependencyGraph, GroupCriterion, GroupKind, Normalizer,
    StructuredTarget, activation_importance, plan_channels,
};
use secateur_prune::weights::Gram;
use secateur_train::{Device, EmbeddingSet, evaluate};
use std::collections::{BTreeMap, HashMap};

/// Range of the per-layer scales of a sentence encoder's space: wide enough to hold the
/// allocations of a global ranking (one layer keeps 90 % of its neurons while another keeps
/// 20 %), which the search is seeded with.
pub const TEXT_SCALE_RANGE: (f64, f64) = (0.0, 2.5);
/// Fractions of heads and neurons removed by the global-ranking seeds of a text search.
pub const GLOBAL_SEED_LEVELS: [f64; 5] = [0.2, 0.35, 0.5, 0.6, 0.7];

/// Texts embedded at once when scoring candidates.
pub const SCORING_BATCH: usize = 16;

/// Which data a step uses: the search's (fine-tuning subset, validation split) or the final
/// stage's (whole training split, test split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Search,
    Final,
}

/// Labelled images.
pub struct ImageTask {
    /// Search fine-tuning subset (train) and validation split (test).
    pub search: Split,
    /// The full data (final fine-tune on `train`, accuracy on `test`); absent in a worker that
    /// evaluates search candidates only.
    pub full: Option<Split>,
    pub norm: Normalization,
}

/// A text set for a sentence encoder, with the dense model's statistics and embeddings.
pub struct TextTask {
    pub data: TextData,
    /// Held-out texts scoring the search, and those of the final figures.
    pub validation: TextSet,
    pub test: TextSet,
    pub score: TextScore,
    validation_reference: SetEmbeddings,
    test_reference: SetEmbeddings,
    /// Gram matrices of the dense model's linear-layer inputs on calibration text.
    pub grams: HashMap<String, Gram>,
    /// Output energy of each channel, per weight (the activation criterion's data).
    pub importance: HashMap<String, Vec<f32>>,
    /// Calibration texts with the dense model's embeddings, for distillation and int8
    /// calibration (built when the settings need them).
    distillation: Option<EmbeddingSet>,
}

/// What candidates are scored on.
pub enum TaskData {
    Images(Box<ImageTask>),
    Text(Box<TextTask>),
}

impl TaskData {
    /// Scores of `g`: `accuracy` (the objective) and, on text, `agreement` and the task score.
    pub fn scores(&self, g: &Graph, part: Part, device: &Device) -> Result<BTreeMap<String, f64>> {
        match self {
            TaskData::Images(t) => {
                let data = match part {
                    Part::Search => &t.search.test,
                    Part::Final => &t.full()?.test,
                };
                // bf16 has no simulation in the training engine: run it in the runtime
                let acc = match g.precision {
                    Precision::F32 => evaluate(g, data, &t.norm, 256, device, None)?.accuracy,
                    Precision::Bf16 => {
                        evaluate_in_runtime(g, data, &t.norm, 256, Precision::Bf16)?.accuracy
                    }
                };
                Ok(BTreeMap::from([("accuracy".into(), acc)]))
            }
            TaskData::Text(t) => t.scores(g, part),
        }
    }

    /// Epochs of a search candidate's fine-tune: text candidates are scored one-shot.
    pub fn search_epochs(&self, cfg: &OptimizeConfig) -> usize {
        match self {
            TaskData::Images(_) => cfg.search_epochs,
            TaskData::Text(_) => 0,
        }
    }

    /// What fine-tuning (and int8 calibration) trains on.
    pub fn train_data(&self, part: Part) -> Result<TrainData<'_>> {
        match self {
            TaskData::Images(t) => Ok(TrainData::Images {
                split: match part {
                    Part::Search => &t.search,
                    Part::Final => t.full()?,
                },
                norm: &t.norm,
            }),
            TaskData::Text(t) => t
                .distillation
                .as_ref()
                .map(TrainData::Embeddings)
                .context("this text search was prepared without distillation texts"),
        }
    }

    /// Statistics the layers reading pruned channels are refitted with, when the task has them.
    pub fn refit(&self) -> Option<&HashMap<String, Gram>> {
        match self {
            TaskData::Images(_) => None,
            TaskData::Text(t) => Some(&t.grams),
        }
    }

    /// How channels are ranked and which groups the search prunes.
    pub fn ranking(&self) -> GroupRanking<'_> {
        match self {
            TaskData::Images(_) => GroupRanking {
                criterion: GroupCriterion::L2,
                data: None,
                kinds: Vec::new(),
                weights: true,
                scale_range: SCALE_RANGE,
            },
            TaskData::Text(t) => GroupRanking {
                criterion: GroupCriterion::Activation,
                data: Some(&t.importance),
                kinds: vec![GroupKind::Heads, GroupKind::Neurons],
                weights: false,
                scale_range: TEXT_SCALE_RANGE,
            },
        }
    }

    /// Allocations the search starts from besides the uniform ones: for a sentence encoder,
    /// the fractions of each group removed when heads and neurons are ranked across layers
    /// (one ranking per kind by output energy: `prune`'s default with text, BENCHMARKS.md) at
    /// [`GLOBAL_SEED_LEVELS`]; none for images.
    pub fn seed_allocations(&self, base: &Graph) -> Result<Vec<HashMap<String, f64>>> {
        let TaskData::Text(t) = self else {
            return Ok(Vec::new());
        };
        let deps = DependencyGraph::build(base)?;
        let mut out = Vec::new();
        for level in GLOBAL_SEED_LEVELS {
            let cfg = ChannelPruneConfig {
                criterion: GroupCriterion::Activation,
                normalizer: Normalizer::None,
                allocation: Allocation::Global,
                kinds: vec![GroupKind::Heads, GroupKind::Neurons],
                target: StructuredTarget::Ratio(level),
                ..Default::default()
            };
            let plan = plan_channels(base, &deps, &cfg, &t.importance)?;
            out.push(
                plan.entries
                    .iter()
                    .map(|e| {
                        let removed = 1.0 - e.keep.len() as f64 / e.channels.max(1) as f64;
                        (e.group.clone(), removed)
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    /// The accuracy objective's name and how it is measured, for the report.
    pub fn accuracy_method(&self, cfg: &OptimizeConfig) -> (String, String) {
        match self {
            TaskData::Images(t) => {
                let val_split = match cfg.val_source() {
                    super::config::ValSource::Test => "test",
                    _ => "training",
                };
                let test = t.full.as_ref().map_or(0, |f| f.test.len());
                (
                    "accuracy".into(),
                    format!(
                        "final models: top-1 on the test split ({test} images) after {} epoch(s) of fine-tuning; search: top-1 on {} images held out of the {val_split} split after {} epoch(s) on {} images; a float model keeps its pruned-only weights where the validation split scores them higher",
                        cfg.final_epochs,
                        t.search.test.len(),
                        cfg.search_epochs,
                        cfg.search_samples
                    ),
                )
            }
            TaskData::Text(t) => t.accuracy_method(cfg),
        }
    }
}

/// How a search space orders channels and what it prunes.
pub struct GroupRanking<'a> {
    pub criterion: GroupCriterion,
    /// Per-weight channel scores the criterion reads (activation energies); none for L2.
    pub data: Option<&'a HashMap<String, Vec<f32>>>,
    /// Kinds of groups pruned (empty: all).
    pub kinds: Vec<GroupKind>,
    /// Whether the space holds weight sparsity (unstructured, blocks, N:M).
    pub weights: bool,
    /// Range of the per-group scales around the global level.
    pub scale_range: (f64, f64),
}

impl ImageTask {
    /// The full data of the final stage.
    pub fn full(&self) -> Result<&Split> {
        self.full.as_ref().ok_or_else(|| {
            crate::invalid!(
                "the final stage needs the full data set; this context evaluates search candidates only"
            )
        })
    }
}

impl TextTask {
    /// Splits the held-out texts into validation and test halves and gathers the dense
    /// model's statistics and embeddings.
    pub fn build(
        data: TextData,
        dense: &Graph,
        cfg: &OptimizeConfig,
        log: &mut dyn FnMut(&str),
    ) -> Result<TextTask> {
        TextGraph::of(dense).context(
            "a text set needs a sentence encoder whose inputs are token tensors (input_ids, attention_mask, token_type_ids)",
        )?;
        let (validation, test) = data.held_out.split(0.5).with_context(|| {
            format!(
                "text set '{}': its held-out texts are split into validation and test halves",
                data.name
            )
        })?;
        let grams = data.criterion_data(dense, TEXT_CALIBRATION_BATCHES)?.grams;
        let importance = activation_importance(dense, &grams)?;
        let mut m = Embedder::for_scoring(dense, SCORING_BATCH, rayon::current_num_threads())?;
        let validation_reference = embed_set(&mut m, &data.encoder, &validation)?;
        let test_reference = embed_set(&mut m, &data.encoder, &test)?;
        let distillation = if cfg.final_epochs > 0 || cfg.int8 {
            Some(data.distillation_set(dense, DISTILL_EXTRA_VIEWS, cfg.seed)?)
        } else {
            None
        };
        log(&format!(
            "text set {}: {} calibration examples ({} statistics batches), {} validation and {} test examples held out",
            data.name,
            data.calibration.examples.len(),
            TEXT_CALIBRATION_BATCHES,
            validation.examples.len(),
            test.examples.len()
        ));
        Ok(TextTask {
            data,
            validation,
            test,
            score: cfg.text_score,
            validation_reference,
            test_reference,
            grams,
            importance,
            distillation,
        })
    }

    /// The texts and the dense model's embeddings of them for `part`.
    pub fn part(&self, part: Part) -> (&TextSet, &SetEmbeddings) {
        match part {
            Part::Search => (&self.validation, &self.validation_reference),
            Part::Final => (&self.test, &self.test_reference),
        }
    }

    /// Scores of `g`'s embeddings of `part`'s texts.
    pub fn scores(&self, g: &Graph, part: Part) -> Result<BTreeMap<String, f64>> {
        let (set, reference) = self.part(part);
        let mut m = Embedder::for_scoring(g, SCORING_BATCH, rayon::current_num_threads())?;
        let e = embed_set(&mut m, &self.data.encoder, set)?;
        Ok(self.score_embeddings(set, &e, reference))
    }

    /// Scores of embeddings `e` of `set`, against the dense model's `reference`.
    pub fn score_embeddings(
        &self,
        set: &TextSet,
        e: &SetEmbeddings,
        reference: &SetEmbeddings,
    ) -> BTreeMap<String, f64> {
        let s = score(set, e, Some(reference));
        let agreement = s.agreement.unwrap_or(0.0);
        let mut out = BTreeMap::from([("agreement".to_string(), agreement)]);
        let task = s.task.map(|(name, v)| (task_key(&name), v));
        if let Some((k, v)) = &task {
            out.insert(k.clone(), *v);
        }
        let accuracy = match (self.score, task) {
            (TextScore::Task, Some((_, v))) => v,
            _ => agreement,
        };
        out.insert("accuracy".into(), accuracy);
        out
    }

    fn accuracy_method(&self, cfg: &OptimizeConfig) -> (String, String) {
        let sizes = format!(
            "final models: {} held-out texts; search: {} other held-out texts",
            self.test.all_texts().len(),
            self.validation.all_texts().len()
        );
        let recovery = if cfg.final_epochs > 0 {
            format!(
                "; final models distilled from the dense model's embeddings for {} epoch(s) on the calibration texts (kept only where the validation texts score them higher)",
                cfg.final_epochs
            )
        } else {
            String::new()
        };
        let how = format!(
            "pruned one-shot (heads and FFN neurons ranked by output energy on {} calibration texts, the layers reading them refitted by least squares){recovery}",
            self.data.calibration_texts(TEXT_CALIBRATION_BATCHES)
        );
        match self.score {
            TextScore::Agreement => (
                "agreement (mean cosine to the dense model)".into(),
                format!(
                    "mean cosine similarity of each text's pooled embedding to the dense model's ({sizes}); {how}"
                ),
            ),
            TextScore::Task => {
                let name = match self.validation.task() {
                    SetTask::Similarity => {
                        "Spearman correlation of cosine similarities with the given scores"
                    }
                    _ => "retrieval top-1 (each text's nearest pair by cosine is its own)",
                };
                ("task score".into(), format!("{name} ({sizes}); {how}"))
            }
        }
    }
}

/// The values key of a task score's name ("retrieval top-1" → `retrieval_top1`).
fn task_key(name: &str) -> String {
    name.replace(['-', ' '], "_").replace("__", "_")
}
