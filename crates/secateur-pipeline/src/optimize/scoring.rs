//! Turning candidates' quantities into what the search compares: objective vectors in
//! minimisation form, total constraint violation, feasible Pareto fronts, and hypervolume in a
//! normalised frame (each objective scaled to [0, 1] over the points being compared, reference
//! point at 1.1), so that front and baseline are measured with the same yardstick.

use super::objectives::{Constraint, ObjectiveKind};
use secateur_search::pareto::{hypervolume, pareto_front};
use std::collections::BTreeMap;

/// Objectives and constraints of a run.
pub struct Scoring<'a> {
    pub objectives: &'a [ObjectiveKind],
    pub constraints: &'a [Constraint],
}

/// Margin of the hypervolume reference point beyond the worst value.
pub const REFERENCE: f64 = 1.1;

impl Scoring<'_> {
    /// The objective vector (minimised) of `values`.
    pub fn vector(&self, values: &BTreeMap<String, f64>) -> Vec<f64> {
        self.objectives
            .iter()
            .map(|k| k.minimized(values.get(k.key()).copied().unwrap_or(f64::NAN)))
            .map(|v| if v.is_nan() { f64::INFINITY } else { v })
            .collect()
    }

    /// Total relative violation of the constraints (0 = feasible).
    pub fn violation(&self, values: &BTreeMap<String, f64>) -> f64 {
        self.constraints.iter().map(|c| c.violation(values)).sum()
    }

    /// Indices of the feasible non-dominated members of `set`.
    pub fn front(&self, set: &[&BTreeMap<String, f64>]) -> Vec<usize> {
        let objs: Vec<Vec<f64>> = set.iter().map(|v| self.vector(v)).collect();
        let viol: Vec<f64> = set.iter().map(|v| self.violation(v)).collect();
        pareto_front(&objs, &viol)
    }
}

/// A normalisation of objective space for hypervolumes.
#[derive(Clone, Debug)]
pub struct HvFrame {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl HvFrame {
    /// The frame spanned by `points` (objective vectors).
    pub fn over(points: &[Vec<f64>], m: usize) -> Self {
        let finite = |k: usize| points.iter().map(move |p| p[k]).filter(|v| v.is_finite());
        let lo = (0..m)
            .map(|k| finite(k).fold(f64::INFINITY, f64::min))
            .collect();
        let hi = (0..m)
            .map(|k| finite(k).fold(f64::NEG_INFINITY, f64::max))
            .collect();
        HvFrame { lo, hi }
    }

    /// `p` scaled to the frame (0 = best value of the frame, 1 = worst).
    pub fn normalise(&self, p: &[f64]) -> Vec<f64> {
        p.iter()
            .enumerate()
            .map(|(k, v)| {
                let span = self.hi[k] - self.lo[k];
                if span > 0.0 {
                    (v - self.lo[k]) / span
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Hypervolume of `points` in this frame.
    pub fn hypervolume(&self, points: &[Vec<f64>]) -> f64 {
        let norm: Vec<Vec<f64>> = points.iter().map(|p| self.normalise(p)).collect();
        hypervolume(&norm, &vec![REFERENCE; self.lo.len()])
    }

    /// The reference point in objective units (minimisation form).
    pub fn reference(&self) -> Vec<f64> {
        self.lo
            .iter()
            .zip(&self.hi)
            .map(|(l, h)| l + REFERENCE * (h - l))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_respects_constraints_and_hypervolume_is_normalised() {
        let objectives = [ObjectiveKind::Accuracy, ObjectiveKind::Latency];
        let constraints = ["latency<=2ms".parse().unwrap()];
        let s = Scoring {
            objectives: &objectives,
            constraints: &constraints,
        };
        let v = |a: f64, l: f64| {
            BTreeMap::from([("accuracy".to_string(), a), ("latency_ms".to_string(), l)])
        };
        let pts = [v(0.9, 3.0), v(0.85, 1.5), v(0.8, 1.0), v(0.7, 1.2)];
        let refs: Vec<&BTreeMap<String, f64>> = pts.iter().collect();
        assert_eq!(s.front(&refs), vec![1, 2]);
        let vecs: Vec<Vec<f64>> = pts.iter().map(|p| s.vector(p)).collect();
        let frame = HvFrame::over(&vecs, 2);
        // the best point alone in both objectives would fill the whole normalised box
        let hv = frame.hypervolume(&[vec![-0.9, 1.0]]);
        assert!((hv - REFERENCE * REFERENCE).abs() < 1e-9);
        assert!(frame.hypervolume(&[vecs[1].clone(), vecs[2].clone()]) < hv);
    }
}
