//! The last stages of a search: the fronts and hypervolumes of the search and of the baseline,
//! the final fine-tune of the front (and its ensembles), the verification of every exported
//! front member, and the report. Every step is recorded in the run directory as it finishes,
//! so a resumed run redoes none.

use super::OptimizeOutcome;
use super::config::OptimizeConfig;
use super::scoring::{HvFrame, Scoring};
use super::search::{Search, accuracy_floor};
use super::store::{Evaluation, FinalRecord, RunDir};
use super::{dedup, finals, report_build, scoring, spread, unique_keys, unmet_message, verify};
use crate::Result;
use crate::progress::Reporter;
use secateur_report::{Point, Report, Verification};
use secateur_search::knee;
use std::collections::{BTreeMap, HashMap, HashSet};

impl Search {
    /// Fronts, final stage, verification and report; the outcome of the run.
    pub fn finish(self, log: &mut dyn FnMut(&str)) -> Result<OptimizeOutcome> {
        let cfg = &self.cfg;
        let (dir, state, cache) = (&self.dir, &self.state, &self.cache);
        let (sens, dense_values, costing) = (&self.sens, &self.dense_values, &self.costing);
        let (full_split, search_split) = (&self.full_split, &self.search_split);
        let (ctx, workers, device, base) = (self.context(), self.workers, &self.device, &self.base);
        let scoring = self.scoring();
        let search_constraints = &self.search_constraints;
        let floor = |dense: f64| accuracy_floor(cfg, dense);
        // fronts and hypervolumes of the search and the baseline
        let search_keys = unique_keys(&state.generations);
        let search_evals: Vec<&Evaluation> = search_keys.iter().map(|k| &cache[k]).collect();
        let baseline_keys = state
            .baseline
            .clone()
            .map(|b| dedup(&b))
            .unwrap_or_default();
        let baseline_evals: Vec<&Evaluation> = baseline_keys.iter().map(|k| &cache[k]).collect();
        let sv: Vec<&BTreeMap<String, f64>> = search_evals.iter().map(|e| &e.values).collect();
        let bv: Vec<&BTreeMap<String, f64>> = baseline_evals.iter().map(|e| &e.values).collect();
        let search_front = scoring.front(&sv);
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
        let frame = HvFrame::over(&all_feasible, cfg.objectives.len());
        let front_hv = frame.hypervolume(&vecs(&sv, &search_front));
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
            search_evals.len(),
            search_front.len(),
            baseline_evals.len()
        ));
        let mut points: Vec<Point> = search_evals
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let generation = state
                    .generations
                    .iter()
                    .position(|ks| ks.contains(&e.key))
                    .unwrap_or(0);
                report_build::search_point(
                    e,
                    generation,
                    "search",
                    search_front.contains(&i),
                    dense_values,
                )
            })
            .collect();
        let baseline_points: Vec<Point> = baseline_evals
            .iter()
            .enumerate()
            .map(|(i, e)| {
                report_build::search_point(
                    e,
                    0,
                    "baseline",
                    baseline_front.contains(&i),
                    dense_values,
                )
            })
            .collect();
        let objectives =
            report_build::objectives(cfg, costing, full_split.test.len(), search_split.test.len());
        let title = format!("secateur: Pareto front of {}", self.model_label);
        let hv = (history, front_hv, baseline_hv, frame.reference());
        let mut notes = vec![
            format!(
                "Hypervolumes are computed in a normalised frame: each objective scaled to [0, 1] over all feasible search and baseline points, reference point at {}; both from the search-stage accuracy estimates.",
                scoring::REFERENCE
            ),
            self.split_note.clone(),
        ];

        if search_front.is_empty() {
            let all: Vec<(&BTreeMap<String, f64>, String)> = search_evals
                .iter()
                .chain(&baseline_evals)
                .map(|e| {
                    (
                        &e.values,
                        report_build::label(&e.values, &e.description, dense_values),
                    )
                })
                .collect();
            let message = unmet_message(&scoring, &all);
            notes.push(message.clone());
            let report = report_build::assemble(
                title,
                self.model_label.clone(),
                self.data_label.clone(),
                cfg,
                objectives,
                points,
                baseline_points,
                hv,
                sens.curves.clone(),
                search_constraints,
                notes,
                workers,
                dense_values.clone(),
            );
            write_report(dir, &report)?;
            return Ok(OptimizeOutcome {
                report,
                dir: dir.root.clone(),
                unmet: Some(message),
                resumed: self.resumed,
            });
        }

        // the final stage
        let chosen = spread(
            search_front.iter().map(|&i| search_evals[i]).collect(),
            cfg.max_final,
        );
        let mut bar = Reporter::new("final", 1);
        let finals = finals::run(&ctx, dir, &chosen, workers, &mut |what, d, n| {
            bar.update(d as u64, n as u64, what, true)
        })?;
        bar.finish();
        // the final models are judged on the test split, against the dense model's test accuracy
        let dense_test =
            secateur_train::evaluate(base, &full_split.test, &self.norm, 256, device, None)?
                .accuracy;
        let final_constraints = floor(dense_test);
        let mut dense_reference = dense_values.clone();
        dense_reference.insert("accuracy".into(), dense_test);
        let scoring = Scoring {
            objectives: &cfg.objectives,
            constraints: &final_constraints,
        };
        let fv: Vec<&BTreeMap<String, f64>> = finals.iter().map(|r| &r.values).collect();
        let final_front = scoring.front(&fv);
        let front_vecs: Vec<Vec<f64>> =
            final_front.iter().map(|&i| scoring.vector(fv[i])).collect();
        let knee_idx = knee(&front_vecs).map(|k| final_front[k]);

        // verification of every front member (each recorded at once: a resumed run redoes none)
        let verifier = verify::Verifier::new(&full_split.test, &self.norm)?;
        let mut verifications: HashMap<String, Verification> = dir
            .read_lines("verifications.jsonl", |v: &verify::Checked| v.id.clone())?
            .into_iter()
            .map(|(id, c)| (id, c.verification))
            .collect();
        let mut bar = Reporter::new("verify", 1);
        for (n, &i) in final_front.iter().enumerate() {
            bar.update(
                n as u64,
                final_front.len() as u64,
                "checking exported models",
                true,
            );
            let r = &finals[i];
            if verifications.contains_key(&r.id) {
                continue;
            }
            let g = finals::load_final(dir, r)?;
            let acc = verifier.accuracy(&dir.path(&r.model_path), &g)?;
            let remeasured = if cfg.latency_on_host() {
                Some(costing.measure_latency(&g)?)
            } else {
                None
            };
            let checked = verify::Checked {
                id: r.id.clone(),
                verification: verification(r, acc, remeasured, verifier.engine()),
            };
            dir.append("verifications.jsonl", &checked)?;
            verifications.insert(checked.id, checked.verification);
        }
        bar.finish();
        for (i, r) in finals.iter().enumerate() {
            points.push(report_build::final_point(
                r,
                final_front.contains(&i),
                knee_idx == Some(i),
                verifications.get(&r.id).cloned(),
                dense_values,
            ));
        }
        notes.extend(best_per_constraint(
            cfg,
            &finals,
            &final_front,
            dense_values,
        ));
        if !cfg.latency_on_host() {
            notes.push(format!(
                "Latency is modelled for the {} profile, not measured: there is nothing to re-measure on this machine.",
                cfg.latency_hardware
            ));
        }
        let report = report_build::assemble(
            title,
            self.model_label.clone(),
            self.data_label.clone(),
            cfg,
            objectives,
            points,
            baseline_points,
            hv,
            sens.curves.clone(),
            &final_constraints,
            notes,
            workers,
            dense_reference,
        );
        write_report(dir, &report)?;
        let unmet = if final_front.is_empty() {
            let all: Vec<(&BTreeMap<String, f64>, String)> = finals
                .iter()
                .map(|r| {
                    (
                        &r.values,
                        format!(
                            "{} {}",
                            r.id,
                            report_build::label(&r.values, &r.description, dense_values)
                        ),
                    )
                })
                .collect();
            Some(format!(
                "after the final fine-tune, {}",
                unmet_message(&scoring, &all)
            ))
        } else {
            None
        };
        Ok(OptimizeOutcome {
            report,
            dir: dir.root.clone(),
            unmet,
            resumed: self.resumed,
        })
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
