//! The last stages of a search: the fronts and hypervolumes of the search and of the baseline,
//! the final fine-tune of the front (and its ensembles), the verification of every exported
//! front member, and the report. Every step is recorded in the run directory as it finishes,
//! so a resumed run redoes none.

use super::OptimizeOutcome;
use super::config::OptimizeConfig;
use super::objectives::Constraint;
use super::scoring::{HvFrame, Scoring};
use super::search::{Search, accuracy_floor};
use super::store::{Evaluation, FinalRecord, RunDir};
use super::task::Part;
use super::{dedup, finals, report_build, scoring, spread, unique_keys, unmet_message, verify};
use crate::Result;
use crate::progress::Reporter;
use secateur_report::{Point, Report, Verification};
use secateur_search::knee;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Hypervolume history, front and baseline hypervolumes, and the reference point.
type Hypervolumes = (Vec<(usize, f64)>, f64, f64, Vec<f64>);

/// The search and the baseline as the report shows them.
struct SearchSummary<'a> {
    search: Vec<&'a Evaluation>,
    baseline: Vec<&'a Evaluation>,
    /// Indices into `search` of its front.
    front: Vec<usize>,
    points: Vec<Point>,
    baseline_points: Vec<Point>,
    hv: Hypervolumes,
}

impl Search {
    /// Fronts, final stage, verification and report; the outcome of the run.
    pub fn finish(self, log: &mut dyn FnMut(&str)) -> Result<OptimizeOutcome> {
        let summary = self.summarize(log);
        let mut notes = vec![
            format!(
                "Hypervolumes are computed in a normalised frame: each objective scaled to [0, 1] over all feasible search and baseline points, reference point at {}; both from the search-stage accuracy estimates.",
                scoring::REFERENCE
            ),
            self.split_note.clone(),
        ];
        if summary.front.is_empty() {
            return self.finish_unmet(summary, notes);
        }
        let chosen = spread(
            summary.front.iter().map(|&i| summary.search[i]).collect(),
            self.cfg.max_final,
        );
        let mut bar = Reporter::new("final", 1);
        let finals = finals::run(
            &self.context(),
            &self.dir,
            &chosen,
            self.workers,
            &mut |what, d, n| bar.update(d as u64, n as u64, what, true),
        )?;
        bar.finish();
        // the final models are judged on the test split, against the dense model's test accuracy
        let dense_scores = self.task.scores(&self.base, Part::Final, &self.device)?;
        let dense_test = dense_scores["accuracy"];
        let constraints = accuracy_floor(&self.cfg, dense_test);
        let scoring = Scoring {
            objectives: &self.cfg.objectives,
            constraints: &constraints,
        };
        let values: Vec<&BTreeMap<String, f64>> = finals.iter().map(|r| &r.values).collect();
        let front = scoring.front(&values);
        let front_vectors: Vec<Vec<f64>> =
            front.iter().map(|&i| scoring.vector(values[i])).collect();
        let knee_idx = knee(&front_vectors).map(|k| front[k]);
        let verifications = self.verify_members(&finals, &front)?;

        let SearchSummary {
            mut points,
            baseline_points,
            hv,
            ..
        } = summary;
        for (i, r) in finals.iter().enumerate() {
            points.push(report_build::final_point(
                r,
                front.contains(&i),
                knee_idx == Some(i),
                verifications.get(&r.id).cloned(),
                &self.dense_values,
            ));
        }
        notes.extend(best_per_constraint(
            &self.cfg,
            &finals,
            &front,
            &self.dense_values,
        ));
        if !self.cfg.latency_on_host() {
            notes.push(format!(
                "Latency is modelled for the {} profile, not measured: there is nothing to re-measure on this machine.",
                self.cfg.latency_hardware
            ));
        }
        let mut dense_reference = self.dense_values.clone();
        dense_reference.extend(dense_scores);
        let report = self.report(
            points,
            baseline_points,
            hv,
            &constraints,
            notes,
            dense_reference,
        );
        write_report(&self.dir, &report)?;
        let unmet = front.is_empty().then(|| {
            let all: Vec<(&BTreeMap<String, f64>, String)> = finals
                .iter()
                .map(|r| {
                    let label = report_build::label(&r.values, &r.description, &self.dense_values);
                    (&r.values, format!("{} {label}", r.id))
                })
                .collect();
            format!(
                "after the final fine-tune, {}",
                unmet_message(&scoring, &all)
            )
        });
        Ok(OptimizeOutcome {
            report,
            dir: self.dir.root.clone(),
            unmet,
            resumed: self.resumed,
        })
    }

    /// Fronts and hypervolumes of the search and of the baseline, and their report points.
    fn summarize(&self, log: &mut dyn FnMut(&str)) -> SearchSummary<'_> {
        let (state, cache) = (&self.state, &self.cache);
        let scoring = self.scoring();
        let search_keys = unique_keys(&state.generations);
        let search: Vec<&Evaluation> = search_keys.iter().map(|k| &cache[k]).collect();
        let baseline_keys = state.baseline.as_deref().map(dedup).unwrap_or_default();
        let baseline: Vec<&Evaluation> = baseline_keys.iter().map(|k| &cache[k]).collect();
        let sv: Vec<&BTreeMap<String, f64>> = search.iter().map(|e| &e.values).collect();
        let bv: Vec<&BTreeMap<String, f64>> = baseline.iter().map(|e| &e.values).collect();
        let front = scoring.front(&sv);
        let baseline_front = scoring.front(&bv);
        let vecs = |set: &[&BTreeMap<String, f64>], idx: &[usize]| -> Vec<Vec<f64>> {
            idx.iter().map(|&i| scoring.vector(set[i])).collect()
        };
        let all_feasible: Vec<Vec<f64>> = sv
            .iter()
            .chain(&bv)
            .filter(|v| scoring.violation(v) <= 0.0)
            .map(|v| scoring.vector(v))
            .collect();
        let frame = HvFrame::over(&all_feasible, self.cfg.objectives.len());
        let front_hv = frame.hypervolume(&vecs(&sv, &front));
        let baseline_hv = frame.hypervolume(&vecs(&bv, &baseline_front));
        let mut history = Vec::new();
        let mut so_far: Vec<&BTreeMap<String, f64>> = Vec::new();
        let mut seen = HashSet::new();
        for (g, keys) in state.generations.iter().enumerate() {
            for k in keys {
                if seen.insert(k.clone()) {
                    so_far.push(&cache[k].values);
                }
            }
            let f = scoring.front(&so_far);
            history.push((g, frame.hypervolume(&vecs(&so_far, &f))));
        }
        log(&format!(
            "search: {} evaluated, {} on the front, hypervolume {front_hv:.4} vs uniform-ratio baseline {baseline_hv:.4} ({} evaluated)",
            search.len(),
            front.len(),
            baseline.len()
        ));
        let generation_of = |e: &Evaluation| {
            state
                .generations
                .iter()
                .position(|ks| ks.contains(&e.key))
                .unwrap_or(0)
        };
        let points = search
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let on_front = front.contains(&i);
                report_build::search_point(
                    e,
                    generation_of(e),
                    "search",
                    on_front,
                    &self.dense_values,
                )
            })
            .collect();
        let baseline_points = baseline
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let on_front = baseline_front.contains(&i);
                report_build::search_point(e, 0, "baseline", on_front, &self.dense_values)
            })
            .collect();
        SearchSummary {
            search,
            baseline,
            front,
            points,
            baseline_points,
            hv: (history, front_hv, baseline_hv, frame.reference()),
        }
    }

    /// The outcome when no searched candidate meets the constraints: the report of what was
    /// evaluated, and which constraints failed with the closest point.
    fn finish_unmet(
        &self,
        summary: SearchSummary<'_>,
        mut notes: Vec<String>,
    ) -> Result<OptimizeOutcome> {
        let all: Vec<(&BTreeMap<String, f64>, String)> = summary
            .search
            .iter()
            .chain(&summary.baseline)
            .map(|e| {
                let label = report_build::label(&e.values, &e.description, &self.dense_values);
                (&e.values, label)
            })
            .collect();
        let message = unmet_message(&self.scoring(), &all);
        notes.push(message.clone());
        let report = self.report(
            summary.points,
            summary.baseline_points,
            summary.hv,
            &self.search_constraints,
            notes,
            self.dense_values.clone(),
        );
        write_report(&self.dir, &report)?;
        Ok(OptimizeOutcome {
            report,
            dir: self.dir.root.clone(),
            unmet: Some(message),
            resumed: self.resumed,
        })
    }

    /// Verifies every front member's exported file (accuracy in the reference engine, latency
    /// re-measured on the host); each result is recorded at once, so a resumed run redoes none.
    fn verify_members(
        &self,
        finals: &[FinalRecord],
        front: &[usize],
    ) -> Result<HashMap<String, Verification>> {
        let dir = &self.dir;
        let verifier = verify::Verifier::new(&self.task)?;
        let mut verifications: HashMap<String, Verification> = dir
            .read_lines("verifications.jsonl", |v: &verify::Checked| v.id.clone())?
            .into_iter()
            .map(|(id, c)| (id, c.verification))
            .collect();
        let mut bar = Reporter::new("verify", 1);
        for (n, &i) in front.iter().enumerate() {
            bar.update(
                n as u64,
                front.len() as u64,
                "checking exported models",
                true,
            );
            let r = &finals[i];
            if verifications.contains_key(&r.id) {
                continue;
            }
            let g = finals::load_final(dir, r)?;
            let acc = verifier.accuracy(&dir.path(&r.model_path), &g)?;
            let remeasured = if self.cfg.latency_on_host() {
                Some(self.costing.measure_latency(&g)?)
            } else {
                None
            };
            let checked = verify::Checked {
                id: r.id.clone(),
                verification: verification(r, acc, remeasured, verifier.engine(&g)),
            };
            dir.append("verifications.jsonl", &checked)?;
            verifications.insert(checked.id, checked.verification);
        }
        bar.finish();
        Ok(verifications)
    }

    /// The report of this run with the given points, constraints and notes.
    fn report(
        &self,
        points: Vec<Point>,
        baseline_points: Vec<Point>,
        hv: Hypervolumes,
        constraints: &[Constraint],
        notes: Vec<String>,
        dense: BTreeMap<String, f64>,
    ) -> Report {
        let objectives = report_build::objectives(
            &self.cfg,
            &self.costing,
            self.task.accuracy_method(&self.cfg),
        );
        report_build::assemble(
            format!("secateur: Pareto front of {}", self.model_label),
            self.model_label.clone(),
            self.data_label.clone(),
            &self.cfg,
            objectives,
            points,
            baseline_points,
            hv,
            self.sens.curves.clone(),
            constraints,
            notes,
            self.workers,
            dense,
        )
    }
}

/// How an exported model compares with what the front reports.
fn verification(r: &FinalRecord, acc: f64, remeasured: Option<f64>, engine: &str) -> Verification {
    let reported = r.values.get("accuracy").copied().unwrap_or(f64::NAN);
    let mut note = format!(
        "{engine}: {:+.2} points vs reported{}",
        100.0 * (acc - reported),
        if (acc - reported).abs() <= 0.002 {
            " (within 0.2)"
        } else {
            " (OUTSIDE 0.2)"
        }
    );
    if let (Some(m), Some(l)) = (remeasured, r.values.get("latency_ms")) {
        let d = (m - l) / l;
        note += &format!(
            "; latency re-measured {:+.1}%{}",
            100.0 * d,
            if d.abs() <= 0.15 {
                " (within 15%)"
            } else {
                " (OUTSIDE 15%)"
            }
        );
    }
    Verification {
        checked_accuracy: Some(acc),
        engine: engine.to_string(),
        remeasured_latency_ms: remeasured,
        note,
    }
}

/// For each constraint, the most accurate front member that meets it.
fn best_per_constraint(
    cfg: &OptimizeConfig,
    finals: &[FinalRecord],
    front: &[usize],
    dense: &BTreeMap<String, f64>,
) -> Vec<String> {
    cfg.constraints
        .iter()
        .filter_map(|c| {
            front
                .iter()
                .map(|&i| &finals[i])
                .filter(|r| c.violation(&r.values) <= 0.0)
                .max_by(|a, b| a.values["accuracy"].total_cmp(&b.values["accuracy"]))
                .map(|r| {
                    format!(
                        "Best point meeting {}: {} — {} (accuracy {:.4}, {} {:.4} {}).",
                        c.text,
                        r.id,
                        report_build::label(&r.values, &r.description, dense),
                        r.values["accuracy"],
                        c.kind.key(),
                        r.values.get(c.kind.key()).copied().unwrap_or(f64::NAN),
                        c.kind.unit()
                    )
                })
        })
        .collect()
}

fn write_report(dir: &RunDir, report: &Report) -> Result<()> {
    for (name, text) in secateur_report::render_files(report)? {
        dir.write(name, text.as_bytes())?;
    }
    Ok(())
}
