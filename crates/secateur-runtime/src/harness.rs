//! The latency harness: warm-up, repeated runs, median / p10 / p90, and interleaved
//! measurement of several variants (round-robin rounds, so that a noisy neighbour slows all
//! variants alike and ratios measured in one run stay meaningful).

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Summary of repeated timings, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub runs: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

impl Stats {
    pub fn from_samples(mut ms: Vec<f64>) -> Stats {
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if ms.is_empty() {
                return f64::NAN;
            }
            let i = ((ms.len() - 1) as f64 * p).round() as usize;
            ms[i]
        };
        Stats {
            runs: ms.len(),
            median_ms: q(0.5),
            p10_ms: q(0.1),
            p90_ms: q(0.9),
            min_ms: ms.first().copied().unwrap_or(f64::NAN),
        }
    }

    /// Relative spread (p90 − p10) / median.
    pub fn spread(&self) -> f64 {
        (self.p90_ms - self.p10_ms) / self.median_ms
    }
}

/// How long to measure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub warmup: usize,
    /// Rounds of the round-robin.
    pub rounds: usize,
    /// Runs of each variant per round.
    pub per_round: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            warmup: 3,
            rounds: 7,
            per_round: 5,
        }
    }
}

impl Budget {
    /// A budget that runs about `target_ms` per variant given one run's rough duration.
    pub fn for_duration(one_run_ms: f64, target_ms: f64) -> Budget {
        let runs = (target_ms / one_run_ms.max(1e-3)).clamp(10.0, 2000.0) as usize;
        let rounds = 7usize;
        Budget {
            warmup: (runs / 10).clamp(2, 50),
            rounds,
            per_round: runs.div_ceil(rounds),
        }
    }
}

/// Times every variant in round-robin order and returns their statistics.
pub fn measure_interleaved(variants: &mut [&mut dyn FnMut()], budget: Budget) -> Vec<Stats> {
    for v in variants.iter_mut() {
        for _ in 0..budget.warmup {
            v();
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..budget.rounds {
        for (i, v) in variants.iter_mut().enumerate() {
            for _ in 0..budget.per_round {
                let t = Instant::now();
                v();
                samples[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    samples.into_iter().map(Stats::from_samples).collect()
}

/// Times one closure.
pub fn measure(f: &mut dyn FnMut(), budget: Budget) -> Stats {
    measure_interleaved(&mut [f], budget).remove(0)
}

/// Rough duration of one run (for choosing a budget).
pub fn probe(f: &mut dyn FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}
