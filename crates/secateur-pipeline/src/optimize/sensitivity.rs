//! Sensitivity analysis: each channel group and each weight pruned alone at increasing ratios,
//! without fine-tuning, and the drop of validation accuracy recorded. A ratio whose drop exceeds
//! the threshold is a hopeless region: the search space stops before it (but always allows a
//! minimum, since fine-tuning recovers much). The curves go into the report.

use super::candidate::EvalContext;
use super::parallel::parallel_map;
use super::space::Ratios;
use secateur_report::SensitivityCurve;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Fractions of channels removed that are tried per group.
pub const CHANNEL_RATIOS: [f64; 4] = [0.25, 0.5, 0.75, 0.9];
/// Sparsities tried per weight.
pub const WEIGHT_RATIOS: [f64; 4] = [0.5, 0.75, 0.9, 0.95];
/// The search may always remove at least this much of a group / prune this much of a weight.
const MIN_REMOVED: f64 = 0.25;
const MIN_SPARSITY: f64 = 0.5;

/// Result of the analysis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sensitivity {
    pub dense_accuracy: f64,
    pub curves: Vec<SensitivityCurve>,
    /// Largest fraction of channels the search may remove, per group.
    pub max_removed: HashMap<String, f64>,
    /// Largest sparsity the search may use, per weight (node name).
    pub max_sparsity: HashMap<String, f64>,
}

/// The largest ratio reached before the first one whose drop exceeds `threshold`.
fn limit(points: &[(f64, f64)], threshold: f64, floor: f64) -> f64 {
    let mut best = floor;
    for &(r, drop) in points {
        if drop > threshold {
            break;
        }
        best = best.max(r);
    }
    best
}

/// Runs the analysis on `ctx` (whose space must span the full ranges).
pub fn analyse(
    ctx: &EvalContext,
    workers: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> crate::Result<Sensitivity> {
    let mut jobs: Vec<(String, &'static str, f64, Ratios)> = Vec::new();
    for g in &ctx.space.groups {
        for &r in &CHANNEL_RATIOS {
            let mut ratios = Ratios::default();
            ratios.removed.insert(g.name.clone(), r);
            jobs.push((g.name.clone(), "channels", r, ratios));
        }
    }
    for l in &ctx.space.layers {
        for &r in &WEIGHT_RATIOS {
            let mut ratios = Ratios::default();
            ratios.sparsity.insert(l.node.clone(), r);
            jobs.push((l.node.clone(), "weights", r, ratios));
        }
    }
    let total = jobs.len() + 1;
    let mut done = 0;
    let mut accs = parallel_map(
        &jobs,
        workers,
        &|_, (_, _, _, g)| ctx.accuracy_untrained(g),
        &mut |_, _| {
            done += 1;
            progress(done, total);
            Ok(())
        },
    )?;
    let dense_accuracy = ctx.accuracy_untrained(&Ratios::default())?;
    progress(total, total);
    let mut curves: Vec<SensitivityCurve> = Vec::new();
    for ((name, kind, r, _), acc) in jobs.iter().zip(accs.drain(..)) {
        let layer = name.clone();
        match curves
            .iter_mut()
            .find(|c| c.layer == layer && c.kind == *kind)
        {
            Some(c) => c.points.push((*r, dense_accuracy - acc)),
            None => curves.push(SensitivityCurve {
                layer,
                kind: kind.to_string(),
                points: vec![(*r, dense_accuracy - acc)],
            }),
        }
    }
    let threshold = ctx.config.sensitivity_drop;
    let mut max_removed = HashMap::new();
    let mut max_sparsity = HashMap::new();
    for c in &curves {
        if c.kind == "channels" {
            max_removed.insert(c.layer.clone(), limit(&c.points, threshold, MIN_REMOVED));
        } else {
            max_sparsity.insert(c.layer.clone(), limit(&c.points, threshold, MIN_SPARSITY));
        }
    }
    Ok(Sensitivity {
        dense_accuracy,
        curves,
        max_removed,
        max_sparsity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_stops_at_the_first_hopeless_ratio() {
        let pts = [(0.25, 0.01), (0.5, 0.05), (0.75, 0.4), (0.9, 0.1)];
        assert_eq!(limit(&pts, 0.3, 0.25), 0.5);
        assert_eq!(limit(&pts, 0.5, 0.25), 0.9);
        assert_eq!(limit(&[(0.25, 0.9)], 0.3, 0.25), 0.25);
    }
}
