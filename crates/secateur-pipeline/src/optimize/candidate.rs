//! Evaluating one candidate: decode its genome against the trained dense model, compute the
//! cheap objectives first, and only when they break no constraint fine-tune it briefly on a
//! fixed subset of the training split and measure accuracy on the held-out validation split
//! (the search's accuracy estimate). The final evaluation of a front member fine-tunes it with
//! the full budget on the whole training split and measures accuracy on the test split.
//! Training is seeded by the run's seed, so an evaluation is a pure function of the genome.

use super::config::OptimizeConfig;
use super::costing::Costing;
use super::objectives::ObjectiveKind;
use super::space::{Decoded, Ratios, SearchSpace, key_of};
use super::store::{Evaluation, RanOn};
use crate::finetune::{Finetune, TrainData};
use crate::{Context, Result};
use secateur_data::{Dataset, Normalization, Split};
use secateur_graph::Graph;
use secateur_train::{Device, NoHook, evaluate};
use std::collections::BTreeMap;

/// Everything an evaluation reads.
pub struct EvalContext<'a> {
    pub config: &'a OptimizeConfig,
    /// The trained dense model.
    pub base: &'a Graph,
    pub space: &'a SearchSpace,
    pub costing: &'a Costing,
    /// Search fine-tuning subset (train) and validation split (test) of the training data.
    pub search: &'a Split,
    /// The full data (final fine-tune on `train`, accuracy on `test`); absent in a worker
    /// that evaluates search candidates only.
    pub full: Option<&'a Split>,
    pub norm: &'a Normalization,
    pub device: &'a Device,
}

/// Calibration batches of quantization-aware fine-tuning.
const CALIBRATION_BATCHES: usize = 4;

impl EvalContext<'_> {
    fn finetune(&self, d: &Decoded, split: &Split, epochs: usize, label: &str) -> Result<Graph> {
        let ft = Finetune {
            data: TrainData::Images {
                split,
                norm: self.norm,
            },
            device: self.device,
            recipe: &self.config.finetune,
            teacher: self.config.finetune.distill.then_some(self.base),
            quantize: d.int8.then_some(CALIBRATION_BATCHES),
            seed: self.config.seed,
            label,
            quiet: true,
        };
        ft.run(d.graph.clone(), epochs, &mut NoHook)
    }

    fn accuracy(&self, g: &Graph, data: &Dataset) -> Result<f64> {
        Ok(evaluate(g, data, self.norm, 256, self.device, None)?.accuracy)
    }

    /// The full data of the final stage.
    pub fn full(&self) -> Result<&Split> {
        self.full.ok_or_else(|| {
            crate::invalid!(
                "the final stage needs the full data set; this context evaluates search candidates only"
            )
        })
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
        let d = self.space.decode(self.base, genome)?;
        let key = key_of(&d.description);
        let mut values = self.costing.cheap(&d.graph, d.int8)?;
        let finetuned = !self.breaks_cost_constraint(&values);
        let graph = if finetuned {
            self.finetune(&d, self.search, self.config.search_epochs, "candidate")
                .with_context(|| format!("fine-tuning candidate {key}"))?
        } else {
            d.graph.clone()
        };
        let mut acc = self.accuracy(&graph, &self.search.test)?;
        if finetuned && !d.int8 {
            // a short fine-tune on a subset can lower the accuracy of a lightly pruned model,
            // which starts near the dense optimum: keep the better weights, as checkpoint
            // selection on the validation split does (int8 needs its calibrating fine-tune)
            acc = acc.max(self.accuracy(&d.graph, &self.search.test)?);
        }
        values.insert("accuracy".into(), acc);
        Ok(Evaluation {
            key,
            genome: genome.to_vec(),
            values,
            description: d.description,
            layer_keep: d.layer_keep,
            int8: d.int8,
            finetuned,
            ran: Some(RanOn::here(started.elapsed().as_secs_f64())),
        })
    }

    /// Accuracy on the validation split of the model pruned with `ratios`, not fine-tuned.
    pub fn accuracy_untrained(&self, ratios: &Ratios) -> Result<f64> {
        let d = self.space.apply(self.base, ratios)?;
        self.accuracy(&d.graph, &self.search.test)
    }

    /// The final fine-tune of a front member: the trained graph and its quantities (accuracy
    /// on the test split; latency still predicted, measured later on a quiet machine).
    pub fn final_train(&self, genome: &[f64]) -> Result<(Graph, BTreeMap<String, f64>)> {
        let d = self.space.decode(self.base, genome)?;
        let graph = if self.config.final_epochs > 0 || d.int8 {
            let tuned = self.finetune(&d, self.full()?, self.config.final_epochs, "final")?;
            // checkpoint selection on the validation split (never on the test split the
            // figures come from): a float model keeps its pruned-only weights if fine-tuning
            // did not improve them
            if !d.int8
                && self.accuracy(&d.graph, &self.search.test)?
                    > self.accuracy(&tuned, &self.search.test)?
            {
                d.graph.clone()
            } else {
                tuned
            }
        } else {
            d.graph.clone()
        };
        let mut values = self.costing.cheap(&graph, d.int8)?;
        let r = evaluate(
            &graph,
            &self.full()?.test,
            self.norm,
            256,
            self.device,
            None,
        )?;
        values.insert("accuracy".into(), r.accuracy);
        Ok((graph, values))
    }
}
