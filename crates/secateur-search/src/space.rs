//! The search space: a list of genes, each a bounded real, a bounded integer or a choice among
//! `n` options. Genomes are vectors of f64 (integers and choices are stored as whole numbers).

use rand::Rng;
use serde::{Deserialize, Serialize};

/// One gene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Gene {
    Real { name: String, lo: f64, hi: f64 },
    Int { name: String, lo: i64, hi: i64 },
    Choice { name: String, options: Vec<String> },
}

impl Gene {
    pub fn name(&self) -> &str {
        match self {
            Gene::Real { name, .. } | Gene::Int { name, .. } | Gene::Choice { name, .. } => name,
        }
    }

    /// Bounds as reals.
    pub fn bounds(&self) -> (f64, f64) {
        match self {
            Gene::Real { lo, hi, .. } => (*lo, *hi),
            Gene::Int { lo, hi, .. } => (*lo as f64, *hi as f64),
            Gene::Choice { options, .. } => (0.0, options.len().saturating_sub(1) as f64),
        }
    }

    /// Clamps (and rounds, for discrete genes) a value into the gene's domain.
    pub fn repair(&self, v: f64) -> f64 {
        let (lo, hi) = self.bounds();
        let v = if v.is_nan() { lo } else { v.clamp(lo, hi) };
        match self {
            Gene::Real { .. } => v,
            _ => v.round(),
        }
    }

    pub fn random(&self, rng: &mut impl Rng) -> f64 {
        let (lo, hi) = self.bounds();
        match self {
            Gene::Real { .. } => rng.random_range(lo..=hi),
            _ => rng.random_range(lo as i64..=hi as i64) as f64,
        }
    }
}

/// All genes of a search.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub genes: Vec<Gene>,
}

impl Space {
    pub fn len(&self) -> usize {
        self.genes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.genes.is_empty()
    }

    pub fn repair(&self, g: &mut [f64]) {
        for (v, gene) in g.iter_mut().zip(&self.genes) {
            *v = gene.repair(*v);
        }
    }

    pub fn random(&self, rng: &mut impl Rng) -> Vec<f64> {
        self.genes.iter().map(|g| g.random(rng)).collect()
    }

    /// A stable textual key of a genome (for caches): reals at 1e-6 resolution.
    pub fn key(&self, g: &[f64]) -> String {
        g.iter()
            .zip(&self.genes)
            .map(|(v, gene)| match gene {
                Gene::Real { .. } => format!("{:.6}", v),
                _ => format!("{}", *v as i64),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
