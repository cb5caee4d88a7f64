//! NSGA-II (Deb et al. 2002) as an ask/tell loop: `ask` hands out the genomes to evaluate
//! (the initial population, then each generation's offspring), the caller evaluates them —
//! in parallel, from a cache, however it likes — and `tell`s the objectives back; the
//! algorithm keeps the best `population` by constrained non-dominated rank and crowding
//! distance. Offspring come from binary tournaments, simulated binary crossover and polynomial
//! mutation for real and integer genes, uniform crossover and random reset for choices;
//! optionally a larger pool of children is bred and the caller screens which are evaluated
//! ([`Nsga2::ask_screened`]). The whole state, random generator included, is serialisable,
//! so a run resumes exactly.

use crate::error::{Result, SearchError};
use crate::pareto::{crowding, hypervolume, non_dominated_sort};
use crate::space::{Gene, Space};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How often a rejected genome is perturbed before it is taken anyway.
pub const REJECTION_TRIES: usize = 16;

/// Distribution index of the wide mutation of screened offspring (steps of a quarter of a
/// gene's range are common, against a few percent at the usual 20).
const WIDE_ETA: f64 = 3.0;

/// Settings of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nsga2Config {
    pub population: usize,
    pub generations: usize,
    pub crossover_prob: f64,
    /// Distribution indices of SBX crossover and polynomial mutation.
    pub eta_crossover: f64,
    pub eta_mutation: f64,
    pub seed: u64,
    /// How the last front that does not fit is cut down.
    #[serde(default)]
    pub truncation: Truncation,
}

/// Truncation of the last front in environmental selection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Truncation {
    /// Crowding distance (Deb et al. 2002): keeps the front spread out.
    #[default]
    Crowding,
    /// Smallest exclusive hypervolume contribution removed first, one at a time (as in
    /// SMS-EMOA): maximises the hypervolume of what is kept, and stays discriminating with
    /// four or more objectives, where crowding distance does not.
    Hypervolume,
}

impl Default for Nsga2Config {
    fn default() -> Self {
        Nsga2Config {
            population: 12,
            generations: 5,
            crossover_prob: 0.9,
            eta_crossover: 15.0,
            eta_mutation: 20.0,
            seed: 0,
            truncation: Truncation::Crowding,
        }
    }
}

impl Nsga2Config {
    pub fn validate(&self) -> Result<()> {
        if self.population < 4 || !self.population.is_multiple_of(2) {
            return Err(SearchError::Config(format!(
                "population must be an even number >= 4, got {}",
                self.population
            )));
        }
        if !(0.0..=1.0).contains(&self.crossover_prob) {
            return Err(SearchError::Config(format!(
                "crossover probability must be in [0, 1], got {}",
                self.crossover_prob
            )));
        }
        Ok(())
    }
}

/// An evaluated genome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Individual {
    pub genome: Vec<f64>,
    /// Objectives to minimise.
    pub objectives: Vec<f64>,
    /// Total constraint violation (0 when feasible).
    pub violation: f64,
}

/// The state of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Nsga2 {
    pub config: Nsga2Config,
    pub space: Space,
    rng: ChaCha8Rng,
    /// Current parents (empty before the first `tell`).
    pub population: Vec<Individual>,
    /// Generations completed.
    pub generation: usize,
    /// Genomes handed out by the last `ask` and not yet told.
    pending: Vec<Vec<f64>>,
    seeds: Vec<Vec<f64>>,
}

impl Nsga2 {
    /// A new run; `seeds` are genomes placed in the initial population before random ones.
    pub fn new(space: Space, config: Nsga2Config, seeds: Vec<Vec<f64>>) -> Result<Self> {
        config.validate()?;
        if space.is_empty() {
            return Err(SearchError::Config("the search space has no genes".into()));
        }
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(Nsga2 {
            config,
            space,
            rng,
            population: Vec::new(),
            generation: 0,
            pending: Vec::new(),
            seeds,
        })
    }

    /// Whether all generations are done.
    pub fn finished(&self) -> bool {
        self.generation > self.config.generations
    }

    /// The genomes to evaluate next (repeats the last answer until `tell` is called).
    pub fn ask(&mut self) -> Vec<Vec<f64>> {
        self.ask_filtered(&mut |_| true)
    }

    /// Like [`ask`](Self::ask), but a new genome that `accept` rejects (typically: it stands
    /// for a solution evaluated before, or already in this batch) is perturbed, gene by gene,
    /// up to [`REJECTION_TRIES`] times before it is taken anyway. `accept` must depend only on
    /// state that is the same when a run is resumed, for the run to stay deterministic.
    pub fn ask_filtered(&mut self, accept: &mut dyn FnMut(&[f64]) -> bool) -> Vec<Vec<f64>> {
        if !self.pending.is_empty() {
            return self.pending.clone();
        }
        let n = self.config.population;
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(n);
        if self.population.is_empty() {
            for s in self.seeds.clone().iter().take(n) {
                let mut g = s.clone();
                self.space.repair(&mut g);
                self.admit(&mut g, accept);
                out.push(g);
            }
            while out.len() < n {
                let mut g = self.space.random(&mut self.rng);
                self.admit(&mut g, accept);
                out.push(g);
            }
        } else {
            out = self.breed(n, false, accept);
        }
        self.pending = out.clone();
        out
    }

    /// `count` children of tournament-selected parents by crossover and mutation (the second
    /// child of each pair by the wide mutation when `wide`), each admitted by `accept`.
    fn breed(
        &mut self,
        count: usize,
        wide: bool,
        accept: &mut dyn FnMut(&[f64]) -> bool,
    ) -> Vec<Vec<f64>> {
        let ranks = self.ranks();
        let mut out: Vec<Vec<f64>> = Vec::with_capacity(count);
        while out.len() < count {
            let a = self.tournament(&ranks);
            let b = self.tournament(&ranks);
            let (mut c1, mut c2) = self.crossover(
                &self.population[a].genome.clone(),
                &self.population[b].genome.clone(),
            );
            self.mutate(&mut c1);
            if wide {
                self.mutate_wide(&mut c2);
            } else {
                self.mutate(&mut c2);
            }
            for mut c in [c1, c2] {
                if out.len() < count {
                    self.admit(&mut c, accept);
                    out.push(c);
                }
            }
        }
        out
    }

    /// Like [`ask_filtered`](Self::ask_filtered), with offspring screening (pre-selection, as
    /// in surrogate-assisted evolutionary search): after the initial population, `pool` ≥
    /// `population` children are bred — every other one with a wider mutation (more genes,
    /// larger steps) so that the pool also reaches past the parents' neighbourhood — and
    /// `choose` picks the `population` of them that are evaluated, typically by predicted
    /// objectives. `choose` returns indices into the pool in order of preference; repeated or
    /// out-of-range indices are skipped and missing picks are filled in pool order. It must,
    /// like `accept`, depend only on state that is the same when a run is resumed.
    pub fn ask_screened(
        &mut self,
        pool: usize,
        accept: &mut dyn FnMut(&[f64]) -> bool,
        choose: &mut dyn FnMut(&[Vec<f64>]) -> Vec<usize>,
    ) -> Vec<Vec<f64>> {
        let n = self.config.population;
        if !self.pending.is_empty() || self.population.is_empty() || pool <= n {
            return self.ask_filtered(accept);
        }
        let bred = self.breed(pool, true, accept);
        let mut taken = vec![false; pool];
        let mut out = Vec::with_capacity(n);
        for k in choose(&bred).into_iter().chain(0..pool) {
            if out.len() == n {
                break;
            }
            if k < pool && !taken[k] {
                taken[k] = true;
                out.push(bred[k].clone());
            }
        }
        self.pending = out.clone();
        out
    }

    /// A wide mutation: at least one gene, each with probability 2 / genes, by polynomial
    /// mutation with a small distribution index (large steps) or, for choices, a random option.
    fn mutate_wide(&mut self, g: &mut [f64]) {
        let len = self.space.len();
        let first = self.rng.random_range(0..len);
        let p = (2.0 / len as f64).min(1.0);
        for k in 0..len {
            if k == first || self.rng.random_bool(p) {
                self.mutate_gene_eta(g, k, WIDE_ETA);
            }
        }
        self.space.repair(g);
    }

    fn admit(&mut self, g: &mut [f64], accept: &mut dyn FnMut(&[f64]) -> bool) {
        for attempt in 0..REJECTION_TRIES {
            if accept(g) {
                return;
            }
            self.perturb(g, attempt);
        }
    }

    /// Reports the evaluations of the last `ask` (in any order) and advances a generation.
    pub fn tell(&mut self, evaluated: Vec<Individual>) -> Result<()> {
        if evaluated.len() != self.pending.len() {
            return Err(SearchError::Config(format!(
                "told {} evaluations for {} asked genomes",
                evaluated.len(),
                self.pending.len()
            )));
        }
        let mut all = std::mem::take(&mut self.population);
        all.extend(evaluated);
        self.population = self.select(all, self.config.population);
        self.pending.clear();
        self.generation += 1;
        Ok(())
    }

    /// (rank, crowding) of every parent.
    fn ranks(&self) -> Vec<(usize, f64)> {
        let objs: Vec<Vec<f64>> = self
            .population
            .iter()
            .map(|i| i.objectives.clone())
            .collect();
        let viol: Vec<f64> = self.population.iter().map(|i| i.violation).collect();
        let mut out = vec![(0, 0.0); objs.len()];
        for (r, front) in non_dominated_sort(&objs, &viol).iter().enumerate() {
            for (k, d) in front.iter().zip(crowding(&objs, front)) {
                out[*k] = (r, d);
            }
        }
        out
    }

    fn tournament(&mut self, ranks: &[(usize, f64)]) -> usize {
        let n = ranks.len();
        let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
        let better = |x: usize, y: usize| {
            ranks[x].0 < ranks[y].0 || (ranks[x].0 == ranks[y].0 && ranks[x].1 > ranks[y].1)
        };
        if better(b, a) { b } else { a }
    }

    fn crossover(&mut self, p1: &[f64], p2: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (mut c1, mut c2) = (p1.to_vec(), p2.to_vec());
        if !self.rng.random_bool(self.config.crossover_prob) {
            return (c1, c2);
        }
        let eta = self.config.eta_crossover;
        for (k, gene) in self.space.genes.iter().enumerate() {
            match gene {
                Gene::Choice { .. } => {
                    if self.rng.random_bool(0.5) {
                        std::mem::swap(&mut c1[k], &mut c2[k]);
                    }
                }
                _ => {
                    if !self.rng.random_bool(0.5) || (p1[k] - p2[k]).abs() < 1e-12 {
                        continue;
                    }
                    let u: f64 = self.rng.random();
                    let beta = if u <= 0.5 {
                        (2.0 * u).powf(1.0 / (eta + 1.0))
                    } else {
                        (1.0 / (2.0 * (1.0 - u))).powf(1.0 / (eta + 1.0))
                    };
                    c1[k] = 0.5 * ((1.0 + beta) * p1[k] + (1.0 - beta) * p2[k]);
                    c2[k] = 0.5 * ((1.0 - beta) * p1[k] + (1.0 + beta) * p2[k]);
                }
            }
        }
        self.space.repair(&mut c1);
        self.space.repair(&mut c2);
        (c1, c2)
    }

    fn mutate(&mut self, g: &mut [f64]) {
        let p = 1.0 / self.space.len() as f64;
        for k in 0..self.space.len() {
            if self.rng.random_bool(p) {
                self.mutate_gene(g, k);
            }
        }
        self.space.repair(g);
    }

    /// Moves a rejected child elsewhere: a polynomial mutation of one random gene at first,
    /// a random reset of one or more genes after repeated rejections.
    fn perturb(&mut self, g: &mut [f64], attempt: usize) {
        let genes = 1 + attempt / 4;
        for _ in 0..genes {
            let k = self.rng.random_range(0..self.space.len());
            if attempt < REJECTION_TRIES / 2 {
                self.mutate_gene(g, k);
            } else {
                g[k] = self.space.genes[k].random(&mut self.rng);
            }
        }
        self.space.repair(g);
    }

    /// Polynomial mutation of a real or integer gene; a random option for a choice.
    fn mutate_gene(&mut self, g: &mut [f64], k: usize) {
        self.mutate_gene_eta(g, k, self.config.eta_mutation);
    }

    /// [`mutate_gene`](Self::mutate_gene) with distribution index `eta`.
    fn mutate_gene_eta(&mut self, g: &mut [f64], k: usize, eta: f64) {
        let gene = &self.space.genes[k];
        match gene {
            Gene::Choice { .. } => g[k] = gene.random(&mut self.rng),
            _ => {
                let (lo, hi) = gene.bounds();
                if hi <= lo {
                    return;
                }
                let u: f64 = self.rng.random();
                let delta = if u < 0.5 {
                    (2.0 * u).powf(1.0 / (eta + 1.0)) - 1.0
                } else {
                    1.0 - (2.0 * (1.0 - u)).powf(1.0 / (eta + 1.0))
                };
                let step = delta * (hi - lo);
                // integers must move by at least one
                let step = if matches!(gene, Gene::Int { .. }) && step.abs() < 1.0 {
                    step.signum()
                } else {
                    step
                };
                g[k] += step;
            }
        }
    }

    /// Environmental selection: whole fronts, then the most crowded-out members of the last.
    fn select(&self, all: Vec<Individual>, n: usize) -> Vec<Individual> {
        let objs: Vec<Vec<f64>> = all.iter().map(|i| i.objectives.clone()).collect();
        let viol: Vec<f64> = all.iter().map(|i| i.violation).collect();
        let mut chosen = Vec::with_capacity(n);
        for front in non_dominated_sort(&objs, &viol) {
            if chosen.len() + front.len() <= n {
                chosen.extend(front);
            } else if self.config.truncation == Truncation::Hypervolume
                && front.iter().all(|&k| viol[k] <= 0.0)
            {
                chosen.extend(hv_truncate(&objs, &front, n - chosen.len()));
                break;
            } else {
                let d = crowding(&objs, &front);
                let mut order: Vec<usize> = (0..front.len()).collect();
                order.sort_by(|&a, &b| d[b].total_cmp(&d[a]).then(front[a].cmp(&front[b])));
                chosen.extend(order.into_iter().take(n - chosen.len()).map(|k| front[k]));
                break;
            }
            if chosen.len() == n {
                break;
            }
        }
        chosen.into_iter().map(|k| all[k].clone()).collect()
    }
}

/// Removes the member of `front` with the smallest exclusive hypervolume contribution until
/// `keep` remain (objectives normalised over the front, reference point 1.1 in each).
fn hv_truncate(objs: &[Vec<f64>], front: &[usize], keep: usize) -> Vec<usize> {
    let m = objs[front[0]].len();
    let lo: Vec<f64> = (0..m)
        .map(|k| {
            front
                .iter()
                .map(|&i| objs[i][k])
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let hi: Vec<f64> = (0..m)
        .map(|k| {
            front
                .iter()
                .map(|&i| objs[i][k])
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    let norm = |i: usize| -> Vec<f64> {
        (0..m)
            .map(|k| {
                if hi[k] > lo[k] {
                    (objs[i][k] - lo[k]) / (hi[k] - lo[k])
                } else {
                    0.0
                }
            })
            .collect()
    };
    let reference = vec![1.1; m];
    let mut members: Vec<(usize, Vec<f64>)> = front.iter().map(|&i| (i, norm(i))).collect();
    while members.len() > keep {
        let pts: Vec<Vec<f64>> = members.iter().map(|x| x.1.clone()).collect();
        let total = hypervolume(&pts, &reference);
        let worst = (0..members.len())
            .map(|j| {
                let rest: Vec<Vec<f64>> = pts
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != j)
                    .map(|(_, p)| p.clone())
                    .collect();
                (j, total - hypervolume(&rest, &reference))
            })
            // smallest contribution; among equals the later individual goes
            .min_by(|a, b| {
                a.1.total_cmp(&b.1)
                    .then(members[b.0].0.cmp(&members[a.0].0))
            })
            .map(|x| x.0)
            .expect("members is not empty");
        members.remove(worst);
    }
    members.into_iter().map(|x| x.0).collect()
}
