//! `optimize`: from a model and data to a Pareto front of pruned (optionally int8, optionally
//! ensembled) models. Stages, each persisted in the run directory so that a killed run resumes
//! where it stopped: train the dense model (built-in models start untrained); measure the
//! latency lookup table; sensitivity analysis, which bounds the search space; NSGA-II over the
//! space with cheap objectives first, offspring screened by them and an accuracy surrogate
//! (`screening`), and accuracy from a short fine-tune; the uniform-ratio
//! baseline with the same number of evaluations; the final fine-tune, measurement and export
//! of the front, ensembles; verification of every front member; the report.

pub mod candidate;
pub mod config;
pub mod costing;
pub mod finals;
pub mod objectives;
pub mod parallel;
pub mod report_build;
pub mod scoring;
pub mod screening;
pub mod seeding;
pub mod sensitivity;
pub mod space;
pub mod store;
pub mod verify;

use crate::pipeline::finetune::train_config;
use crate::progress::Reporter;
use anyhow::{Context, Result, bail};
use candidate::EvalContext;
use config::{OptimizeConfig, ValSource};
use costing::{Costing, LatencySource, build_latency_table};
use objectives::ObjectiveKind;
use scoring::{HvFrame, Scoring};
use secateur_cost::{HardwareProfile, LatencyTable};
use secateur_data::{NORMALIZATION_KEY, Normalization, Split, epoch_order};
use secateur_graph::Graph;
use secateur_report::{Point, Report, Verification};
use secateur_search::{Individual, Nsga2, Nsga2Config, Truncation, knee};
use secateur_train::{Device, NoHook, Trainer};
use sensitivity::Sensitivity;
use space::SearchSpace;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use store::{Evaluation, FinalRecord, RunDir, SearchState};

/// What a run starts from.
pub struct OptimizeInputs {
    pub model: Graph,
    pub model_label: String,
    pub data_label: String,
    pub split: Split,
    pub norm: Normalization,
    pub out: PathBuf,
    pub fresh: bool,
    pub workers: usize,
}

/// What a run produced.
pub struct OptimizeOutcome {
    pub report: Report,
    pub dir: PathBuf,
    /// Set when no candidate meets the constraints: which, and the closest point.
    pub unmet: Option<String>,
    pub resumed: bool,
}

/// The current time as an RFC 3339 string (UTC).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Splits the data into the search's fine-tuning subset (from the training split), the
/// validation images that score candidates (held out of the training split, or of the test
/// split for a model given as trained: see [`OptimizeConfig::val_source`]) and the splits of
/// the final stage; returns (search split, full split, a sentence for the report).
fn data_splits(split: &Split, cfg: &OptimizeConfig) -> Result<(Split, Split, String)> {
    let order_of = |n: usize| epoch_order(n, cfg.seed ^ 0x5eed, 0);
    let (train, val, test, note) = match cfg.val_source() {
        ValSource::Test => {
            let n = split.test.len();
            // `auto` leaves at least half of the test split for the final figures
            let val_n = if cfg.val_from == ValSource::Auto {
                cfg.val_samples.min(n / 2)
            } else {
                cfg.val_samples
            };
            if n < val_n + 100 {
                bail!(
                    "the test split has {n} images; --val-from test needs val-samples ({val_n}) plus at least 100 left for the final accuracies"
                );
            }
            let order = order_of(n);
            let (val_idx, test_idx) = order.split_at(val_n);
            (
                split.train.clone(),
                split.test.subset(val_idx),
                split.test.subset(test_idx),
                format!(
                    "Validation: {val_n} images held out of the test split (the model was given as trained, so any training image may have been seen); final accuracies use the other {} test images.",
                    n - val_n
                ),
            )
        }
        _ => {
            let n = split.train.len();
            if n < cfg.val_samples + 64 {
                bail!(
                    "the training split has {n} images; the search needs val-samples ({}) plus at least 64 to fine-tune on",
                    cfg.val_samples
                );
            }
            let order = order_of(n);
            let (val_idx, train_idx) = order.split_at(cfg.val_samples);
            (
                split.train.subset(train_idx),
                split.train.subset(val_idx),
                split.test.clone(),
                format!(
                    "Validation: {} images held out of the training split and of every training run; final accuracies use the {} test images.",
                    cfg.val_samples,
                    split.test.len()
                ),
            )
        }
    };
    let search_train = train.take(cfg.search_samples.min(train.len()));
    Ok((
        Split {
            train: search_train,
            test: val,
            normalization: split.normalization.clone(),
        },
        Split {
            train,
            test,
            normalization: split.normalization.clone(),
        },
        note,
    ))
}

/// The dense model: reloaded from the run directory, or trained (or taken as given).
fn dense_model(
    inp: &OptimizeInputs,
    cfg: &OptimizeConfig,
    full: &Split,
    dir: &RunDir,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<Graph> {
    let path = dir.path("dense.onnx");
    if path.exists() {
        return secateur_onnx::load_model(&path).context("reloading the dense model");
    }
    let mut g = inp.model.clone();
    if cfg.dense_epochs > 0 {
        log(&format!(
            "training {} for {} epoch(s) on {} images",
            inp.model_label,
            cfg.dense_epochs,
            full.train.len()
        ));
        let recipe = crate::recipe::FinetuneRecipe {
            lr: 2e-3,
            ..cfg.finetune.clone()
        };
        let tc = train_config(&recipe, cfg.dense_epochs, cfg.seed)?;
        let mut t = Trainer::new(g, tc, device.clone())?;
        let mut bar = Reporter::new("dense training", 1);
        t.fit(&full.train, &inp.norm, &mut NoHook, &mut |p| {
            bar.update(
                (p.epoch * p.batches + p.batch) as u64,
                (p.epochs * p.batches) as u64,
                &format!("epoch {}/{} loss {:.4}", p.epoch + 1, p.epochs, p.loss),
                false,
            );
        })?;
        bar.finish();
        g = t.into_graph()?;
    }
    g.metadata
        .insert(NORMALIZATION_KEY.into(), inp.norm.to_metadata());
    secateur_onnx::save_model(&g, &path).context("saving the dense model")?;
    Ok(g)
}

/// Fails early when even the most pruned models of the space break a cost constraint.
fn check_reachable(
    cfg: &OptimizeConfig,
    space: &SearchSpace,
    base: &Graph,
    costing: &Costing,
) -> Result<()> {
    let costly: Vec<_> = cfg
        .constraints
        .iter()
        .filter(|c| c.kind != ObjectiveKind::Accuracy && c.at_most)
        .collect();
    if costly.is_empty() {
        return Ok(());
    }
    let mut best: HashMap<ObjectiveKind, f64> = HashMap::new();
    for m in seeding::baseline_methods(space) {
        for gran in 0..space::GRANULARITIES.len() {
            let method = seeding::Method {
                channels: true,
                granularity: Some(gran),
                int8: m.int8,
            };
            let mut g = seeding::uniform_ratio(space, 1.0, method);
            for b in &space.blocks {
                if let Some(k) = space.index(&format!("remove:{}", b.name)) {
                    g[k] = 1.0;
                }
            }
            let d = space.decode(base, &g)?;
            let v = costing.cheap(&d.graph, d.int8)?;
            for c in &costly {
                let x = v.get(c.kind.key()).copied().unwrap_or(f64::INFINITY);
                let e = best.entry(c.kind).or_insert(f64::INFINITY);
                *e = e.min(x);
            }
        }
    }
    for c in costly {
        let b = best[&c.kind];
        if b > c.bound {
            bail!(
                "no candidate can meet constraint '{}': the most pruned models of the search space still have {} {:.4} {} (closest point); relax the constraint or allow more pruning (--sensitivity-drop)",
                c.text,
                c.kind,
                b,
                c.kind.unit()
            );
        }
    }
    Ok(())
}

/// Says which constraints no evaluated candidate meets, and the closest candidate.
fn unmet_message(scoring: &Scoring, evals: &[(&BTreeMap<String, f64>, String)]) -> String {
    let mut lines = Vec::new();
    for c in scoring.constraints {
        let met = evals.iter().filter(|e| c.violation(e.0) <= 0.0).count();
        if met == 0 {
            let closest = evals
                .iter()
                .map(|e| e.0.get(c.kind.key()).copied().unwrap_or(f64::NAN))
                .filter(|v| v.is_finite())
                .fold(None, |acc: Option<f64>, v| {
                    Some(match acc {
                        None => v,
                        Some(a) if c.at_most => a.min(v),
                        Some(a) => a.max(v),
                    })
                });
            lines.push(format!(
                "no candidate meets constraint '{}' (best {} found: {} {})",
                c.text,
                c.kind,
                closest.map_or("none".into(), |v| format!("{v:.4}")),
                c.kind.unit()
            ));
        }
    }
    if lines.is_empty() {
        lines.push(format!(
            "no candidate meets all constraints together ({}), although each is met by some",
            scoring
                .constraints
                .iter()
                .map(|c| c.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some((values, label)) = evals
        .iter()
        .min_by(|a, b| scoring.violation(a.0).total_cmp(&scoring.violation(b.0)))
    {
        let vals: Vec<String> = scoring
            .constraints
            .iter()
            .map(|c| {
                format!(
                    "{} {:.4} {}",
                    c.kind.key(),
                    values.get(c.kind.key()).copied().unwrap_or(f64::NAN),
                    c.kind.unit()
                )
            })
            .collect();
        lines.push(format!("closest point: {label} ({})", vals.join(", ")));
    }
    lines.join("; ")
}

/// Picks at most `k` members of a front spread along accuracy, extremes included.
fn spread(mut front: Vec<&Evaluation>, k: usize) -> Vec<&Evaluation> {
    front.sort_by(|a, b| {
        b.values["accuracy"]
            .total_cmp(&a.values["accuracy"])
            .then(a.key.cmp(&b.key))
    });
    if front.len() <= k {
        return front;
    }
    let n = front.len();
    let mut idx: Vec<usize> = (0..k)
        .map(|i| (i as f64 * (n - 1) as f64 / (k - 1).max(1) as f64).round() as usize)
        .collect();
    idx.dedup();
    idx.into_iter().map(|i| front[i]).collect()
}

/// Runs (or resumes) an optimisation.
pub fn run(
    cfg: &OptimizeConfig,
    inp: OptimizeInputs,
    log: &mut dyn FnMut(&str),
) -> Result<OptimizeOutcome> {
    cfg.validate()?;
    let fingerprint = cfg.fingerprint();
    let dir = RunDir::open(&inp.out, &fingerprint, inp.fresh)?;
    let resumed = dir.path("state.json").exists();
    dir.write_json(
        "settings.json",
        &serde_json::json!({
            "fingerprint": fingerprint,
            "model": inp.model_label,
            "data": inp.data_label,
            "config": cfg,
        }),
    )?;
    let device = Device::flex();
    let workers = inp.workers.max(1);
    let (search_split, full_split, split_note) = data_splits(&inp.split, cfg)?;
    let base = dense_model(&inp, cfg, &full_split, &dir, &device, log)?;

    // cost models
    let latency_profile = HardwareProfile::load(&cfg.latency_hardware)?;
    let energy_profile = HardwareProfile::load(&cfg.energy_hardware)?;
    let latency = if cfg.latency_on_host() {
        match dir.read_json::<LatencyTable>("latency-table.json")? {
            Some(t) => LatencySource::Table(t),
            None => {
                let mut bar = Reporter::new("latency table", 1);
                let t = build_latency_table(&base, cfg.batch, cfg.threads, &mut |d, n| {
                    bar.update(d as u64, n as u64, "timing layers", false)
                })?;
                bar.finish();
                dir.write_json("latency-table.json", &t)?;
                LatencySource::Table(t)
            }
        }
    } else {
        LatencySource::Modelled
    };
    let costing = Costing {
        latency_profile,
        energy_profile,
        latency,
        batch: cfg.batch,
        threads: cfg.threads,
    };
    let dense_values = costing.cheap(&base, false)?;

    // sensitivity analysis, then the space it bounds
    let has_blocks = cfg.remove_blocks;
    let sens: Sensitivity = match dir.read_json("sensitivity.json")? {
        Some(s) => s,
        None => {
            let full_space = SearchSpace::derive(
                &base,
                cfg.int8,
                has_blocks,
                cfg.round_to,
                &HashMap::new(),
                &HashMap::new(),
            )?;
            let ctx = EvalContext {
                config: cfg,
                base: &base,
                space: &full_space,
                costing: &costing,
                search: &search_split,
                full: &full_split,
                norm: &inp.norm,
                device: &device,
            };
            let mut bar = Reporter::new("sensitivity", 1);
            let s = sensitivity::analyse(&ctx, workers, &mut |d, n| {
                bar.update(d as u64, n as u64, "pruning one layer at a time", false)
            })?;
            bar.finish();
            dir.write_json("sensitivity.json", &s)?;
            s
        }
    };
    log(&format!(
        "dense model: validation accuracy {:.4}; sensitivity analysis done ({} curves)",
        sens.dense_accuracy,
        sens.curves.len()
    ));
    let space = SearchSpace::derive(
        &base,
        cfg.int8,
        has_blocks,
        cfg.round_to,
        &sens.max_removed,
        &sens.max_sparsity,
    )?;
    check_reachable(cfg, &space, &base, &costing)?;
    let ctx = EvalContext {
        config: cfg,
        base: &base,
        space: &space,
        costing: &costing,
        search: &search_split,
        full: &full_split,
        norm: &inp.norm,
        device: &device,
    };
    // the user's constraints, plus the accuracy floor relative to the dense model
    let floor = |dense: f64| {
        let mut c = cfg.constraints.clone();
        if cfg.max_accuracy_drop < 1.0 {
            c.push(objectives::Constraint {
                kind: ObjectiveKind::Accuracy,
                at_most: false,
                bound: dense - cfg.max_accuracy_drop,
                text: format!(
                    "accuracy>={:.4} (dense model {dense:.4} − {})",
                    dense - cfg.max_accuracy_drop,
                    cfg.max_accuracy_drop
                ),
            });
        }
        c
    };
    let search_constraints = floor(sens.dense_accuracy);
    let scoring = Scoring {
        objectives: &cfg.objectives,
        constraints: &search_constraints,
    };

    // the search
    let mut cache: HashMap<String, Evaluation> =
        dir.read_lines("evaluations.jsonl", |e: &Evaluation| e.key.clone())?;
    let mut state: SearchState = match dir.read_json("state.json")? {
        Some(s) => s,
        None => SearchState {
            fingerprint: fingerprint.clone(),
            nsga: Nsga2::new(
                space.space.clone(),
                Nsga2Config {
                    population: cfg.population,
                    generations: cfg.generations,
                    seed: cfg.seed,
                    truncation: Truncation::Hypervolume,
                    ..Default::default()
                },
                seeding::seeds(&space, cfg.population),
            )?,
            generations: Vec::new(),
            baseline: None,
        },
    };
    if resumed {
        log(&format!(
            "resuming: {} generation(s) done, {} evaluation(s) on disk",
            state.generations.len(),
            cache.len()
        ));
    }
    let total_gens = cfg.generations + 1;
    let mut bar = Reporter::new("search", 1);
    while !state.nsga.finished() {
        let generation = state.nsga.generation;
        // offspring standing for models evaluated in finished generations (or twice in this
        // one) are moved elsewhere; only finished generations count, so a resumed run asks the
        // same genomes
        let done: HashSet<String> = state.generations.iter().flatten().cloned().collect();
        let mut batch: HashSet<String> = HashSet::new();
        let evaluated: Vec<&Evaluation> = unique_keys(&state.generations)
            .iter()
            .filter_map(|k| cache.get(k))
            .collect();
        let mut screen_error = None;
        let genomes = state.nsga.ask_screened(
            cfg.population * cfg.screen_pool,
            &mut |g| {
                space
                    .model_key(&base, g)
                    .is_ok_and(|k| !done.contains(&k) && batch.insert(k))
            },
            &mut |pool| {
                screening::choose(&ctx, &scoring, &evaluated, pool).unwrap_or_else(|e| {
                    screen_error = Some(e);
                    Vec::new()
                })
            },
        );
        if let Some(e) = screen_error {
            return Err(e.context("screening offspring"));
        }
        let keys = model_keys(&space, &base, &genomes)?;
        evaluate_missing(
            &ctx,
            &dir,
            &mut cache,
            &genomes,
            &keys,
            workers,
            &mut |d, n| {
                bar.update(
                    (generation * cfg.population + d) as u64,
                    (total_gens * cfg.population) as u64,
                    &format!(
                        "generation {}/{}: {d}/{n} evaluated",
                        generation + 1,
                        total_gens
                    ),
                    false,
                )
            },
        )?;
        let told: Vec<Individual> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let e = &cache[k];
                Individual {
                    genome: genomes[i].clone(),
                    objectives: scoring.vector(&e.values),
                    violation: scoring.violation(&e.values),
                }
            })
            .collect();
        state.nsga.tell(told)?;
        state.generations.push(keys);
        dir.write_json("state.json", &state)?;
        let seen: Vec<&BTreeMap<String, f64>> = unique_keys(&state.generations)
            .iter()
            .map(|k| &cache[k].values)
            .collect();
        let front = scoring.front(&seen);
        let best = front
            .iter()
            .map(|&i| seen[i].get("accuracy").copied().unwrap_or(0.0))
            .fold(0.0, f64::max);
        bar.update(
            ((generation + 1) * cfg.population) as u64,
            (total_gens * cfg.population) as u64,
            &format!(
                "generation {}/{} done: {} on the front, best accuracy {best:.4}",
                generation + 1,
                total_gens,
                front.len()
            ),
            true,
        );
    }
    bar.finish();

    // the uniform-ratio baseline, with as many evaluations as the search
    if cfg.baseline && state.baseline.is_none() {
        // as many distinct models as the search evaluated
        let n = unique_keys(&state.generations).len();
        let (genomes, keys) = baseline_models(&space, &base, n)?;
        let mut bar = Reporter::new("baseline", 1);
        evaluate_missing(
            &ctx,
            &dir,
            &mut cache,
            &genomes,
            &keys,
            workers,
            &mut |d, t| bar.update(d as u64, t as u64, "uniform-ratio sweep", false),
        )?;
        bar.finish();
        state.baseline = Some(keys);
        dir.write_json("state.json", &state)?;
    }

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
                &dense_values,
            )
        })
        .collect();
    let baseline_points: Vec<Point> = baseline_evals
        .iter()
        .enumerate()
        .map(|(i, e)| {
            report_build::search_point(e, 0, "baseline", baseline_front.contains(&i), &dense_values)
        })
        .collect();
    let objectives = report_build::objectives(
        cfg,
        &costing,
        full_split.test.len(),
        search_split.test.len(),
    );
    let title = format!("secateur: Pareto front of {}", inp.model_label);
    let hv = (history, front_hv, baseline_hv, frame.reference());
    let mut notes = vec![
        format!(
            "Hypervolumes are computed in a normalised frame: each objective scaled to [0, 1] over all feasible search and baseline points, reference point at {}; both from the search-stage accuracy estimates.",
            scoring::REFERENCE
        ),
        split_note,
    ];

    if search_front.is_empty() {
        let all: Vec<(&BTreeMap<String, f64>, String)> = search_evals
            .iter()
            .chain(&baseline_evals)
            .map(|e| {
                (
                    &e.values,
                    report_build::label(&e.values, &e.description, &dense_values),
                )
            })
            .collect();
        let message = unmet_message(&scoring, &all);
        notes.push(message.clone());
        let report = report_build::assemble(
            title,
            inp.model_label.clone(),
            inp.data_label.clone(),
            cfg,
            objectives,
            points,
            baseline_points,
            hv,
            sens.curves.clone(),
            &search_constraints,
            notes,
            workers,
            dense_values.clone(),
        );
        write_report(&dir, &report)?;
        return Ok(OptimizeOutcome {
            report,
            dir: dir.root.clone(),
            unmet: Some(message),
            resumed,
        });
    }

    // the final stage
    let chosen = spread(
        search_front.iter().map(|&i| search_evals[i]).collect(),
        cfg.max_final,
    );
    let mut bar = Reporter::new("final", 1);
    let finals = finals::run(&ctx, &dir, &chosen, workers, &mut |what, d, n| {
        bar.update(d as u64, n as u64, what, true)
    })?;
    bar.finish();
    // the final models are judged on the test split, against the dense model's test accuracy
    let dense_test =
        secateur_train::evaluate(&base, &full_split.test, &inp.norm, 256, &device, None)?.accuracy;
    let final_constraints = floor(dense_test);
    let mut dense_reference = dense_values.clone();
    dense_reference.insert("accuracy".into(), dense_test);
    let scoring = Scoring {
        objectives: &cfg.objectives,
        constraints: &final_constraints,
    };
    let fv: Vec<&BTreeMap<String, f64>> = finals.iter().map(|r| &r.values).collect();
    let final_front = scoring.front(&fv);
    let front_vecs: Vec<Vec<f64>> = final_front.iter().map(|&i| scoring.vector(fv[i])).collect();
    let knee_idx = knee(&front_vecs).map(|k| final_front[k]);

    // verification of every front member (each recorded at once: a resumed run redoes none)
    let verifier = verify::Verifier::new(&full_split.test, &inp.norm)?;
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
        let g = finals::load_final(&dir, r)?;
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
            &dense_values,
        ));
    }
    notes.extend(best_per_constraint(
        cfg,
        &finals,
        &final_front,
        &dense_values,
    ));
    if !cfg.latency_on_host() {
        notes.push(format!(
            "Latency is modelled for the {} profile, not measured: there is nothing to re-measure on this machine.",
            cfg.latency_hardware
        ));
    }
    let report = report_build::assemble(
        title,
        inp.model_label.clone(),
        inp.data_label.clone(),
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
    write_report(&dir, &report)?;
    let unmet = if final_front.is_empty() {
        let all: Vec<(&BTreeMap<String, f64>, String)> = finals
            .iter()
            .map(|r| {
                (
                    &r.values,
                    format!(
                        "{} {}",
                        r.id,
                        report_build::label(&r.values, &r.description, &dense_values)
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
        resumed,
    })
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

fn dedup(keys: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    keys.iter().filter(|k| seen.insert(*k)).cloned().collect()
}

fn unique_keys(gens: &[Vec<String>]) -> Vec<String> {
    dedup(&gens.concat())
}

/// The model key of every genome.
fn model_keys(space: &SearchSpace, base: &Graph, genomes: &[Vec<f64>]) -> Result<Vec<String>> {
    genomes.iter().map(|g| space.model_key(base, g)).collect()
}

/// Baseline genomes making `n` distinct models: the sweep is refined until it has enough.
fn baseline_models(
    space: &SearchSpace,
    base: &Graph,
    n: usize,
) -> Result<(Vec<Vec<f64>>, Vec<String>)> {
    let mut tried = n;
    loop {
        let genomes = seeding::baseline_genomes(space, tried);
        let keys = model_keys(space, base, &genomes)?;
        let (mut g_out, mut k_out, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
        for (g, k) in genomes.into_iter().zip(keys) {
            if seen.insert(k.clone()) {
                g_out.push(g);
                k_out.push(k);
            }
        }
        if g_out.len() >= n || tried > 8 * n.max(1) {
            g_out.truncate(n);
            k_out.truncate(n);
            return Ok((g_out, k_out));
        }
        tried = tried * 3 / 2 + 1;
    }
}

/// Evaluates the genomes not in `cache` in parallel, persisting each as it finishes.
#[allow(clippy::too_many_arguments)]
fn evaluate_missing(
    ctx: &EvalContext,
    dir: &RunDir,
    cache: &mut HashMap<String, Evaluation>,
    genomes: &[Vec<f64>],
    keys: &[String],
    workers: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let mut todo: Vec<Vec<f64>> = Vec::new();
    let mut planned = HashSet::new();
    for (g, k) in genomes.iter().zip(keys) {
        if !cache.contains_key(k) && planned.insert(k.clone()) {
            todo.push(g.clone());
        }
    }
    let total = todo.len();
    let mut done = 0;
    progress(0, total);
    let results = parallel_map(&todo, workers, &|_, g| ctx.evaluate(g), &mut |_, e| {
        dir.append("evaluations.jsonl", e)?;
        done += 1;
        progress(done, total);
        Ok(())
    })?;
    for e in results {
        cache.insert(e.key.clone(), e);
    }
    Ok(())
}

use parallel::parallel_map;

#[cfg(test)]
mod tests {
    use super::*;
    use secateur_data::{Dataset, Samples};
    use std::collections::BTreeSet;

    /// A data set whose one-value samples are unique ids `first..first+n`.
    fn ids(first: usize, n: usize) -> Dataset {
        Dataset::new(
            "ids",
            vec![1, 1, 1],
            Samples::F32((first..first + n).map(|i| i as f32).collect()),
            vec![0; n],
            vec!["only".into()],
        )
        .unwrap()
    }

    fn set(d: &Dataset) -> BTreeSet<u32> {
        match &d.samples {
            Samples::F32(v) => v.iter().map(|x| *x as u32).collect(),
            Samples::U8(_) => unreachable!(),
        }
    }

    fn split() -> Split {
        Split {
            train: ids(0, 3000),
            test: ids(100_000, 1000),
            normalization: Normalization::identity(1),
        }
    }

    fn cfg(val_from: ValSource, dense_epochs: usize, val_samples: usize) -> OptimizeConfig {
        OptimizeConfig {
            val_from,
            dense_epochs,
            val_samples,
            search_samples: 500,
            ..OptimizeConfig::default()
        }
    }

    #[test]
    fn a_model_given_as_trained_is_validated_on_held_out_test_images() {
        // auto with no dense training: validation from the test split, capped at half of it
        let (search, full, note) = data_splits(&split(), &cfg(ValSource::Auto, 0, 800)).unwrap();
        let (val, test) = (set(&search.test), set(&full.test));
        assert_eq!((val.len(), test.len()), (500, 500));
        assert!(val.is_disjoint(&test));
        assert!(val.iter().all(|&i| i >= 100_000));
        assert_eq!(full.train.len(), 3000);
        assert!(set(&search.train).is_subset(&set(&full.train)));
        assert!(note.contains("test split"), "{note}");
    }

    #[test]
    fn a_model_trained_here_is_validated_on_held_out_training_images() {
        let (search, full, note) = data_splits(&split(), &cfg(ValSource::Auto, 8, 800)).unwrap();
        let (val, train) = (set(&search.test), set(&full.train));
        assert_eq!((val.len(), train.len()), (800, 2200));
        assert!(val.is_disjoint(&train));
        assert!(set(&search.train).is_subset(&train));
        assert_eq!(set(&full.test), set(&split().test));
        assert!(note.contains("training split"), "{note}");
        // the same choice made explicitly gives the same split
        let (s2, f2, _) = data_splits(&split(), &cfg(ValSource::Train, 0, 800)).unwrap();
        assert_eq!((set(&s2.test), set(&f2.train)), (val, train));
    }

    #[test]
    fn an_explicit_test_validation_too_large_for_the_test_split_is_refused() {
        let err = data_splits(&split(), &cfg(ValSource::Test, 0, 950)).unwrap_err();
        assert!(err.to_string().contains("val-samples (950)"), "{err}");
    }
}
