//! Evaluating one candidate: decode its genome against the dense model, compute the cheap
//! objectives first, and only when they break no constraint fine-tune it briefly on a fixed
//! subset of the training split (image classifiers; sentence encoders are scored one-shot,
//! their pruned layers refitted on calibration statistics) and score it on the held-out
//! validation data (the search's accuracy estimate). The final evaluation of a front member
//! fine-tunes (or distils) it with the full budget and scores it on the test data. Training is
//! seeded by the run's seed, so an evaluation is a pure function of the genome.

use super::config::OptimizeConfig;
use super::costing::Costing;
use super::objectives::ObjectiveKind;
use super::space::{Arithmetic, Decoded, Ratios, SearchSpace, key_of};
use super::store::{Evaluation, RanOn};
use super::task::{Part, TaskData};
use crate::finetune::Finetune;
use crate::{Context, Result};
use secateur_graph::Graph;
use secateur_train::{Device, NoHook};
use std::collections::BTreeMap;

/// Everything an evaluation reads.
pub struct EvalContext<'a> {
    pub config: &'a OptimizeConfig,
    /// The dense model.
    pub base: &'a Graph,
    pub space: &'a SearchSpace,
    pub costing: &'a Costing,
    /// The data candidates are fine-tuned and scored on.
    pub task: &'a TaskData,
    pub device: &'a Device,
}

/// Calibration batches of quantization-aware fine-tuning.
const CALIBRATION_BATCHES: usize = 4;

impl EvalContext<'_> {
    fn finetune(&self, d: &Decoded, part: Part, epochs: usize, label: &str) -> Result<Graph> {
        let ft = Finetune {
            data: self.task.train_data(part)?,
            device: self.device,
            recipe: &self.config.finetune,
            teacher: self.config.finetune.distill.then_some(self.base),
            quantize: d.int8().then_some(CALIBRATION_BATCHES),
            seed: self.config.seed,
            label,
            quiet: true,
        };
        ft.run(d.graph.clone(), epochs, &mut NoHook)
    }

    /// `accuracy` (and the task's other scores) of `g` on `part`'s held-out data.
    fn scores(&self, g: &Graph, part: Part) -> Result<BTreeMap<String, f64>> {
        self.task.scores(g, part, self.device)
    }

    fn decode(&self, genome: &[f64]) -> Result<Decoded> {
        self.space
            .decode_refit(self.base, genome, self.task.refit())
    }

    /// Whether cheap `values` already break a constraint on a cost.
    fn breaks_cost_constraint(&self, values: &BTreeMap<String, f64>) -> bool {
        self.config
            .constraints
            .iter()
            .any(|c| c.kind != ObjectiveKind::Accuracy && c.violation(values) > 0.0)
    }

    /// The search's evaluation of a genome.
    pub fn evaluate(&self, genome: &[f64]) -> Result<Evaluation> {
        let started = std::time::Instant::now();
        let d = self.decode(genome)?;
        let key = key_of(&d.description);
        let mut values = self.costing.cheap(&d.graph, d.int8())?;
        let epochs = self.task.search_epochs(self.config);
        let finetuned = !self.breaks_cost_constraint(&values) && (epochs > 0 || d.int8());
        let graph = if finetuned {
            self.finetune(&d, Part::Search, epochs, "candidate")
                .with_context(|| format!("fine-tuning candidate {key}"))?
        } else {
            d.graph.clone()
        };
        let mut scores = self.scores(&graph, Part::Search)?;
        if finetuned && !d.int8() {
            // a short fine-tune on a subset can lower the accuracy of a lightly pruned model,
            // which starts near the dense optimum: keep the better weights, as checkpoint
            // selection on the validation split does (int8 needs its calibrating fine-tune)
            let before = self.scores(&d.graph, Part::Search)?;
            if before["accuracy"] > scores["accuracy"] {
                scores = before;
            }
        }
        values.extend(scores);
        Ok(Evaluation {
            key,
            genome: genome.to_vec(),
            values,
            description: d.description,
            layer_keep: d.layer_keep,
            int8: d.arithmetic == Arithmetic::Int8,
            bf16: d.arithmetic == Arithmetic::Bf16,
            finetuned,
            ran: Some(RanOn::here(started.elapsed().as_secs_f64())),
        })
    }

    /// Validation accuracy of the model pruned with `ratios`, not fine-tuned (refitted on text).
    pub fn accuracy_untrained(&self, ratios: &Ratios) -> Result<f64> {
        let d = self
            .space
            .apply_refit(self.base, ratios, self.task.refit())?;
        Ok(self.scores(&d.graph, Part::Search)?["accuracy"])
    }

    /// The final fine-tune of a front member: the trained graph and its quantities (accuracy
    /// on the test data; latency still predicted, measured later on a quiet machine).
    pub fn final_train(&self, genome: &[f64]) -> Result<(Graph, BTreeMap<String, f64>)> {
        let d = self.decode(genome)?;
        let graph = if self.config.final_epochs > 0 || d.int8() {
            let tuned = self.finetune(&d, Part::Final, self.config.final_epochs, "final")?;
            // checkpoint selection on the validation data (never on the test data the figures
            // come from): a float model keeps its pruned-only weights if fine-tuning did not
            // improve them
            if !d.int8()
                && self.scores(&d.graph, Part::Search)?["accuracy"]
                    > self.scores(&tuned, Part::Search)?["accuracy"]
            {
                d.graph.clone()
            } else {
                tuned
            }
        } else {
            d.graph.clone()
        };
        let mut values = self.costing.cheap(&graph, d.int8())?;
        values.extend(self.scores(&graph, Part::Final)?);
        Ok((graph, values))
    }
}
