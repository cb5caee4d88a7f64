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
mod finish;
pub mod objectives;
pub mod parallel;
pub mod report_build;
pub mod request;
pub mod scoring;
pub mod screening;
mod search;
pub mod seeding;
pub mod sensitivity;
pub mod space;
pub mod store;
pub mod task;
pub mod verify;
pub mod worker;

pub use search::{Batch, Search, Stage};

use crate::finetune::train_config;
use crate::progress::Reporter;
use crate::{Context, Result, bail};
use config::{OptimizeConfig, ValSource};
use costing::Costing;
use objectives::ObjectiveKind;
use scoring::Scoring;
use secateur_data::{NORMALIZATION_KEY, Normalization, Split, epoch_order};
use secateur_graph::Graph;
use secateur_report::Report;
use secateur_train::{Device, NoHook, Trainer};
use space::SearchSpace;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use store::{Evaluation, RunDir};

/// The data a run searches with (one value per run: its variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum InputData {
    /// A labelled image set and the model's input normalisation.
    Images { split: Split, norm: Normalization },
    /// A text set with the model's tokenizer (the model is a sentence encoder).
    Text(Box<crate::text::TextData>),
}

/// What a run starts from.
pub struct OptimizeInputs {
    pub model: Graph,
    pub model_label: String,
    pub data_label: String,
    pub data: InputData,
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

/// Makes sure the run directory holds the dense model (`dense.onnx`): trained here, or the
/// input as given.
fn dense_model(
    model: &Graph,
    model_label: &str,
    (full, norm): (&Split, &Normalization),
    cfg: &OptimizeConfig,
    dir: &RunDir,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let path = dir.path("dense.onnx");
    if path.exists() {
        return Ok(());
    }
    let mut g = model.clone();
    if cfg.dense_epochs > 0 {
        log(&format!(
            "training {} for {} epoch(s) on {} images",
            model_label,
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
        t.fit(&full.train, norm, &mut NoHook, &mut |p| {
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
        .insert(NORMALIZATION_KEY.into(), norm.to_metadata());
    secateur_onnx::save_model(&g, &path).context("saving the dense model")
}

/// Refuses an output directory that holds the input model (it could be overwritten).
pub(crate) fn check_paths(model: &str, out: &Path) -> Result<()> {
    let m = Path::new(model);
    if m.exists()
        && let (Ok(mc), Ok(oc)) = (m.canonicalize(), out.canonicalize())
        && mc.starts_with(&oc)
    {
        bail!(
            "the input model {} lies inside the output directory {}; choose another --out so that it cannot be overwritten",
            m.display(),
            out.display()
        );
    }
    Ok(())
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
                arithmetic: m.arithmetic,
            };
            let mut g = seeding::uniform_ratio(space, 1.0, method);
            for b in &space.blocks {
                if let Some(k) = space.index(&format!("remove:{}", b.name)) {
                    g[k] = 1.0;
                }
            }
            let d = space.decode(base, &g)?;
            let v = costing.cheap(&d.graph, d.int8())?;
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

/// Runs (or resumes) an optimisation: the stages of [`Search`] chained, candidates evaluated
/// on this machine's cores.
pub fn run(
    cfg: &OptimizeConfig,
    inp: OptimizeInputs,
    log: &mut dyn FnMut(&str),
) -> Result<OptimizeOutcome> {
    let mut search = Search::open(cfg, inp, log)?;
    let mut bar = Reporter::new("search", 1);
    while let Some(batch) = search.ask()? {
        evaluate_locally(&mut search, &batch, &mut |d, n| {
            bar.update(
                d as u64,
                n as u64,
                &progress_line(&batch.stage, d, n),
                false,
            )
        })?;
        let done = batch.todo.len() as u64;
        let line = search.tell(batch)?;
        bar.update(done, done, &line, true);
    }
    bar.finish();
    search.finish(log)
}

/// What a progress line says about a batch.
fn progress_line(stage: &Stage, done: usize, total: usize) -> String {
    match stage {
        Stage::Search { generation, of } => {
            format!(
                "generation {}/{of}: {done}/{total} evaluated",
                generation + 1
            )
        }
        Stage::Baseline => format!("uniform-ratio sweep: {done}/{total} evaluated"),
    }
}

/// Evaluates a batch's missing models on `search.workers()` threads, recording each as it
/// finishes.
pub fn evaluate_locally(
    search: &mut Search,
    batch: &Batch,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let total = batch.todo.len();
    let mut finished = Vec::new();
    progress(0, total);
    {
        let ctx = search.context();
        let dir = &search.dir;
        parallel_map(
            &batch.todo,
            search.workers,
            &|_, g| ctx.evaluate(g),
            &mut |_, e| {
                dir.append("evaluations.jsonl", e)?;
                finished.push(e.key.clone());
                progress(finished.len(), total);
                Ok(())
            },
        )?
    }
    .into_iter()
    .for_each(|e| {
        search.cache.insert(e.key.clone(), e);
    });
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
