//! The search as stages a driver chains: [`Search::open`] prepares the run (run directory,
//! dense model, latency table, sensitivity analysis, the space it bounds), [`Search::ask`] hands
//! out the next batch of genomes (an NSGA-II generation, screened by the cheap objectives and
//! the accuracy surrogate, then the uniform-ratio baseline), [`Search::evaluate`] evaluates one
//! (a pure function of the genome and the settings; [`super::worker::WorkerContext`] does the
//! same on another process or machine), [`Search::record`] persists each evaluation as it
//! arrives, and [`Search::tell`] closes the batch. Only finished batches advance the persisted
//! state, so a driver killed at any point resumes and asks the same genomes again, reusing every
//! evaluation already recorded.

use super::candidate::EvalContext;
use super::config::OptimizeConfig;
use super::costing::{Costing, LatencySource, build_latency_table};
use super::objectives::{self, Constraint, ObjectiveKind};
use super::scoring::Scoring;
use super::sensitivity::{self, Sensitivity};
use super::space::SearchSpace;
use super::store::{Evaluation, RunDir, SearchState};
use super::task::{GroupRanking, ImageTask, TaskData, TextTask};
use super::{
    InputData, OptimizeInputs, check_reachable, data_splits, dense_model, seeding, unique_keys,
};
use crate::progress::Reporter;
use crate::{Context, Result};
use secateur_cost::{HardwareProfile, LatencyTable};
use secateur_graph::Graph;
use secateur_search::{Individual, Nsga2, Nsga2Config, Truncation};
use secateur_train::Device;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Which stage a batch belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// NSGA-II generation `generation` (0 = the initial population) of `of`.
    Search { generation: usize, of: usize },
    /// The uniform-ratio sweep with as many distinct models as the search evaluated.
    Baseline,
}

/// Genomes asked for together; every one must be evaluated (or already be) before `tell`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub stage: Stage,
    pub genomes: Vec<Vec<f64>>,
    /// The model key of each genome (genomes standing for the same model share a key).
    pub keys: Vec<String>,
    /// One genome per model that has no recorded evaluation yet: what an executor runs.
    pub todo: Vec<Vec<f64>>,
}

/// A prepared search and its state.
pub struct Search {
    pub(super) cfg: OptimizeConfig,
    pub(super) model_label: String,
    pub(super) data_label: String,
    pub(super) dir: RunDir,
    pub(super) resumed: bool,
    pub(super) workers: usize,
    pub(super) device: Device,
    pub(super) base: Graph,
    pub(super) costing: Costing,
    pub(super) dense_values: BTreeMap<String, f64>,
    pub(super) sens: Sensitivity,
    pub(super) space: SearchSpace,
    pub(super) task: TaskData,
    pub(super) split_note: String,
    pub(super) search_constraints: Vec<Constraint>,
    pub(super) cache: HashMap<String, Evaluation>,
    pub(super) state: SearchState,
}

impl Search {
    /// Prepares a run in `inp.out` (or resumes the one there with the same settings).
    pub fn open(
        cfg: &OptimizeConfig,
        inp: OptimizeInputs,
        log: &mut dyn FnMut(&str),
    ) -> Result<Search> {
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
        let (task, split_note) = prepare_task(
            cfg,
            inp.data,
            &inp.model,
            &inp.model_label,
            &dir,
            &device,
            log,
        )?;
        // every stage and every worker reads the dense model as saved, so a fresh run, a
        // resumed one and a remote evaluation start from the same graph
        let base = secateur_onnx::load_model(dir.path("dense.onnx"))
            .context("reloading the dense model")?;
        let task = task.finish(cfg, &base, log)?;
        let ranking = task.ranking();
        let costing = costing(cfg, &base, &dir, &ranking)?;
        let dense_values = costing.cheap(&base, false)?;
        let workers = inp.workers.max(1);
        let sens = sensitivity(cfg, &base, &costing, &task, &dir, workers)?;
        log(&format!(
            "dense model: validation accuracy {:.4}; sensitivity analysis done ({} curves)",
            sens.dense_accuracy,
            sens.curves.len()
        ));
        let space = bounded_space(cfg, &base, &sens, &ranking)?;
        check_reachable(cfg, &space, &base, &costing)?;
        let search_constraints = accuracy_floor(cfg, sens.dense_accuracy);
        let cache = dir.read_lines("evaluations.jsonl", |e: &Evaluation| e.key.clone())?;
        let state = match dir.read_json("state.json")? {
            Some(s) => s,
            None => {
                let extra: Vec<Vec<f64>> = task
                    .seed_allocations(&base)?
                    .iter()
                    .map(|a| seeding::genome_of_allocation(&space, a))
                    .collect();
                initial_state(cfg, &space, fingerprint, &extra)?
            }
        };
        if resumed {
            log(&format!(
                "resuming: {} generation(s) done, {} evaluation(s) on disk",
                state.generations.len(),
                cache.len()
            ));
        }
        Ok(Search {
            cfg: cfg.clone(),
            model_label: inp.model_label,
            data_label: inp.data_label,
            dir,
            resumed,
            workers,
            device,
            base,
            costing,
            dense_values,
            sens,
            space,
            task,
            split_note,
            search_constraints,
            cache,
            state,
        })
    }

    /// The settings of the run.
    pub fn config(&self) -> &OptimizeConfig {
        &self.cfg
    }

    /// The run directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir.root
    }

    /// Candidates the local executor evaluates at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// What an evaluation reads.
    pub(super) fn context(&self) -> EvalContext<'_> {
        EvalContext {
            config: &self.cfg,
            base: &self.base,
            space: &self.space,
            costing: &self.costing,
            task: &self.task,
            device: &self.device,
        }
    }

    pub(super) fn scoring(&self) -> Scoring<'_> {
        Scoring {
            objectives: &self.cfg.objectives,
            constraints: &self.search_constraints,
        }
    }

    /// The next batch, or `None` when the search and the baseline are done.
    pub fn ask(&mut self) -> Result<Option<Batch>> {
        if !self.state.nsga.finished() {
            let genomes = self.next_generation()?;
            let generation = self.state.nsga.generation;
            let stage = Stage::Search {
                generation,
                of: self.cfg.generations + 1,
            };
            return self.batch(stage, genomes).map(Some);
        }
        if self.cfg.baseline && self.state.baseline.is_none() {
            let n = unique_keys(&self.state.generations).len();
            let (genomes, _) = super::baseline_models(&self.space, &self.base, n)?;
            return self.batch(Stage::Baseline, genomes).map(Some);
        }
        Ok(None)
    }

    /// Offspring of the current generation, screened; those standing for models evaluated in
    /// finished generations (or twice in this one) are moved elsewhere. Only finished
    /// generations count, so a resumed run asks the same genomes.
    fn next_generation(&mut self) -> Result<Vec<Vec<f64>>> {
        let done: HashSet<String> = self.state.generations.iter().flatten().cloned().collect();
        let mut in_batch: HashSet<String> = HashSet::new();
        let evaluated: Vec<&Evaluation> = unique_keys(&self.state.generations)
            .iter()
            .filter_map(|k| self.cache.get(k))
            .collect();
        let ctx = self.context();
        let scoring = self.scoring();
        let (space, base) = (&self.space, &self.base);
        let mut screen_error = None;
        // the generator advances on a copy (the context borrows the whole search); the copy
        // replaces the state below
        let mut nsga = self.state.nsga.clone();
        let genomes = nsga.ask_screened(
            self.cfg.population * self.cfg.screen_pool,
            &mut |g| {
                space
                    .model_key(base, g)
                    .is_ok_and(|k| !done.contains(&k) && in_batch.insert(k))
            },
            &mut |pool| {
                super::screening::choose(&ctx, &scoring, &evaluated, pool).unwrap_or_else(|e| {
                    screen_error = Some(e);
                    Vec::new()
                })
            },
        );
        if let Some(e) = screen_error {
            return Err(e.context("screening offspring"));
        }
        self.state.nsga = nsga;
        Ok(genomes)
    }

    fn batch(&self, stage: Stage, genomes: Vec<Vec<f64>>) -> Result<Batch> {
        let keys = super::model_keys(&self.space, &self.base, &genomes)?;
        let mut planned = HashSet::new();
        let todo = genomes
            .iter()
            .zip(&keys)
            .filter(|(_, k)| !self.cache.contains_key(*k) && planned.insert((*k).clone()))
            .map(|(g, _)| g.clone())
            .collect();
        Ok(Batch {
            stage,
            genomes,
            keys,
            todo,
        })
    }

    /// Evaluates one genome here.
    pub fn evaluate(&self, genome: &[f64]) -> Result<Evaluation> {
        self.context().evaluate(genome)
    }

    /// Persists an evaluation (from any executor) as soon as it is known.
    pub fn record(&mut self, e: Evaluation) -> Result<()> {
        let expected = self.space.model_key(&self.base, &e.genome)?;
        if expected != e.key {
            crate::bail!(
                "an evaluation of model '{}' came back for a genome that stands for '{expected}': the executor ran other settings or another dense model",
                e.key
            );
        }
        if !self.cache.contains_key(&e.key) {
            self.dir.append("evaluations.jsonl", &e)?;
            self.cache.insert(e.key.clone(), e);
        }
        Ok(())
    }

    /// Closes a batch whose models are all recorded; returns a line saying where the search
    /// stands.
    pub fn tell(&mut self, batch: Batch) -> Result<String> {
        if let Some(k) = batch.keys.iter().find(|k| !self.cache.contains_key(*k)) {
            crate::bail!("cannot close the batch: model '{k}' has no recorded evaluation");
        }
        match batch.stage {
            Stage::Baseline => {
                self.state.baseline = Some(batch.keys);
                self.dir.write_json("state.json", &self.state)?;
                Ok(format!(
                    "baseline: {} uniform-ratio models evaluated",
                    super::dedup(self.state.baseline.as_deref().unwrap_or_default()).len()
                ))
            }
            Stage::Search { generation, of } => {
                let scoring = self.scoring();
                let told: Vec<Individual> = batch
                    .keys
                    .iter()
                    .zip(&batch.genomes)
                    .map(|(k, g)| {
                        let e = &self.cache[k];
                        Individual {
                            genome: g.clone(),
                            objectives: scoring.vector(&e.values),
                            violation: scoring.violation(&e.values),
                        }
                    })
                    .collect();
                self.state.nsga.tell(told)?;
                self.state.generations.push(batch.keys);
                self.dir.write_json("state.json", &self.state)?;
                let seen: Vec<&BTreeMap<String, f64>> = unique_keys(&self.state.generations)
                    .iter()
                    .map(|k| &self.cache[k].values)
                    .collect();
                let scoring = self.scoring();
                let front = scoring.front(&seen);
                let best = front
                    .iter()
                    .map(|&i| seen[i].get("accuracy").copied().unwrap_or(0.0))
                    .fold(0.0, f64::max);
                Ok(format!(
                    "generation {}/{of} done: {} on the front, best accuracy {best:.4}",
                    generation + 1,
                    front.len()
                ))
            }
        }
    }

    /// Everything a worker needs to evaluate this run's candidates elsewhere, as bytes.
    pub fn worker_context(&self) -> Result<Vec<u8>> {
        super::worker::WorkerContext::bytes_of(self)
    }
}

/// The cost models: the host's latency table (measured once, kept in the run directory) or a
/// modelled profile.
fn costing(
    cfg: &OptimizeConfig,
    base: &Graph,
    dir: &RunDir,
    ranking: &GroupRanking,
) -> Result<Costing> {
    let latency = if cfg.latency_on_host() {
        match dir.read_json::<LatencyTable>("latency-table.json")? {
            Some(t) => LatencySource::Table(t),
            None => {
                let mut bar = Reporter::new("latency table", 1);
                let t = build_latency_table(
                    base,
                    cfg.batch,
                    cfg.threads,
                    cfg.space_shape(),
                    ranking,
                    &mut |d, n| bar.update(d as u64, n as u64, "timing layers", false),
                )?;
                bar.finish();
                dir.write_json("latency-table.json", &t)?;
                LatencySource::Table(t)
            }
        }
    } else {
        LatencySource::Modelled
    };
    Ok(Costing {
        latency_profile: HardwareProfile::load(&cfg.latency_hardware)?,
        energy_profile: HardwareProfile::load(&cfg.energy_hardware)?,
        latency,
        batch: cfg.batch,
        threads: cfg.threads,
    })
}

/// The sensitivity analysis over the full ranges (kept in the run directory).
fn sensitivity(
    cfg: &OptimizeConfig,
    base: &Graph,
    costing: &Costing,
    task: &TaskData,
    dir: &RunDir,
    workers: usize,
) -> Result<Sensitivity> {
    if let Some(s) = dir.read_json("sensitivity.json")? {
        return Ok(s);
    }
    let no_bounds = HashMap::new();
    let full_space = SearchSpace::derive(
        base,
        &cfg.space_shape(),
        &task.ranking(),
        &no_bounds,
        &no_bounds,
    )?;
    let ctx = EvalContext {
        config: cfg,
        base,
        space: &full_space,
        costing,
        task,
        device: &Device::flex(),
    };
    let mut bar = Reporter::new("sensitivity", 1);
    let s = sensitivity::analyse(&ctx, workers, &mut |d, n| {
        bar.update(d as u64, n as u64, "pruning one layer at a time", false)
    })?;
    bar.finish();
    dir.write_json("sensitivity.json", &s)?;
    Ok(s)
}

/// The space bounded by the sensitivity analysis.
pub(super) fn bounded_space(
    cfg: &OptimizeConfig,
    base: &Graph,
    sens: &Sensitivity,
    ranking: &GroupRanking,
) -> Result<SearchSpace> {
    SearchSpace::derive(
        base,
        &cfg.space_shape(),
        ranking,
        &sens.max_removed,
        &sens.max_sparsity,
    )
}

/// The task's data before the dense model is known: image splits (the dense model trained on
/// them when it starts untrained), or the text set (the encoder taken as given).
enum PendingTask {
    Images(Box<ImageTask>),
    Text(Box<crate::text::TextData>),
}

impl PendingTask {
    /// The task, with what it derives from the dense model as saved.
    fn finish(
        self,
        cfg: &OptimizeConfig,
        base: &Graph,
        log: &mut dyn FnMut(&str),
    ) -> Result<TaskData> {
        Ok(match self {
            PendingTask::Images(t) => TaskData::Images(t),
            PendingTask::Text(data) => {
                TaskData::Text(Box::new(TextTask::build(*data, base, cfg, log)?))
            }
        })
    }
}

/// Splits the data and makes sure the run directory holds the dense model; returns the task
/// still to finish and the note on the split for the report.
fn prepare_task(
    cfg: &OptimizeConfig,
    data: InputData,
    model: &Graph,
    model_label: &str,
    dir: &RunDir,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<(PendingTask, String)> {
    match data {
        InputData::Images { split, norm } => {
            let (search, full, note) = data_splits(&split, cfg)?;
            dense_model(model, model_label, (&full, &norm), cfg, dir, device, log)?;
            let task = ImageTask {
                search,
                full: Some(full),
                norm,
            };
            Ok((PendingTask::Images(Box::new(task)), note))
        }
        InputData::Text(text) => {
            let path = dir.path("dense.onnx");
            if !path.exists() {
                secateur_onnx::save_model(model, &path).context("saving the dense model")?;
            }
            let note = format!(
                "Text set {}: {} examples calibrate (channel ranking and least-squares refit); of the {} held out, every other one scores the search, the rest the final figures (agreement: mean cosine of the pooled embeddings to the dense model's).",
                text.name,
                text.calibration.examples.len(),
                text.held_out.examples.len()
            );
            Ok((PendingTask::Text(text), note))
        }
    }
}

/// The user's constraints plus the accuracy floor relative to the dense model's `dense`.
pub(super) fn accuracy_floor(cfg: &OptimizeConfig, dense: f64) -> Vec<Constraint> {
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
}

fn initial_state(
    cfg: &OptimizeConfig,
    space: &SearchSpace,
    fingerprint: String,
    extra_seeds: &[Vec<f64>],
) -> Result<SearchState> {
    Ok(SearchState {
        fingerprint,
        nsga: Nsga2::new(
            space.space.clone(),
            Nsga2Config {
                population: cfg.population,
                generations: cfg.generations,
                seed: cfg.seed,
                truncation: Truncation::Hypervolume,
                ..Default::default()
            },
            seeding::seeds(space, cfg.population, extra_seeds),
        )?,
        generations: Vec::new(),
        baseline: None,
    })
}
