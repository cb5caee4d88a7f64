//! Offspring screening: which of a generation's bred children are worth a fine-tune. Each
//! child's cheap objectives (latency from the lookup table, energy, bytes, memory) are computed
//! exactly; its accuracy is predicted by a surrogate fitted to the models already evaluated —
//! inverse-distance-weighted nearest neighbours over what the model keeps per layer, its
//! granularity and precision, plus the neighbours' spread as an optimism bonus (a lower
//! confidence bound on the error, so that unexplored regions are tried). Children are then
//! chosen greedily by the hypervolume their predicted point adds to the evaluated front (each
//! choice joins the front before the next, so a batch spreads out instead of piling onto one
//! gap); children predicted to add nothing come last, nearest to the front first, and children
//! predicted to break a constraint after them. Only the chosen are trained, so the search's
//! evaluations — the number the uniform-ratio baseline is given too — are spent where the
//! front can still move.

use super::candidate::EvalContext;
use super::scoring::{HvFrame, REFERENCE, Scoring};
use super::space::{Arithmetic, GRANULARITIES};
use super::store::Evaluation;
use crate::Result;
use secateur_search::pareto::{dominates, hypervolume};
use std::collections::BTreeMap;

/// Neighbours of the accuracy surrogate.
const NEIGHBOURS: usize = 5;

/// What the surrogate sees of a model: the fraction kept of every group's channels and every
/// layer's weights, the granularity (one-hot), int8, bf16, and each removed block.
pub fn features(
    layer_keep: &[(String, f64)],
    description: &BTreeMap<String, String>,
    arithmetic: Arithmetic,
) -> Vec<f64> {
    let mut f: Vec<f64> = layer_keep.iter().map(|(_, k)| *k).collect();
    let granularity = description.get("granularity").map(String::as_str);
    f.extend(
        GRANULARITIES
            .iter()
            .map(|g| if granularity == Some(*g) { 1.0 } else { 0.0 }),
    );
    for a in [Arithmetic::Int8, Arithmetic::Bf16] {
        f.push(if arithmetic == a { 1.0 } else { 0.0 });
    }
    f.extend(
        description
            .iter()
            .filter(|(k, _)| k.starts_with("remove:"))
            .map(|(_, v)| if v == "yes" { 1.0 } else { 0.0 }),
    );
    f
}

/// Nearest-neighbour accuracy surrogate over evaluated models.
pub struct Surrogate {
    points: Vec<(Vec<f64>, f64)>,
}

impl Surrogate {
    pub fn fit(evaluated: &[&Evaluation]) -> Self {
        Surrogate {
            points: evaluated
                .iter()
                .filter_map(|e| {
                    let acc = *e.values.get("accuracy")?;
                    acc.is_finite()
                        .then(|| (features(&e.layer_keep, &e.description, e.arithmetic()), acc))
                })
                .collect(),
        }
    }

    /// (predicted accuracy, spread) at `x`: the inverse-distance-weighted mean of the nearest
    /// evaluated models and their weighted standard deviation; `None` with nothing evaluated.
    pub fn predict(&self, x: &[f64]) -> Option<(f64, f64)> {
        let mut near: Vec<(f64, f64)> = self
            .points
            .iter()
            .filter(|(f, _)| f.len() == x.len())
            .map(|(f, a)| {
                let d2: f64 = f.iter().zip(x).map(|(p, q)| (p - q) * (p - q)).sum();
                (d2.sqrt(), *a)
            })
            .collect();
        if near.is_empty() {
            return None;
        }
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        near.truncate(NEIGHBOURS);
        if near[0].0 < 1e-9 {
            return Some((near[0].1, 0.0));
        }
        let w: Vec<f64> = near.iter().map(|(d, _)| 1.0 / d).collect();
        let total: f64 = w.iter().sum();
        let mean = near.iter().zip(&w).map(|((_, a), w)| w * a).sum::<f64>() / total;
        let var = near
            .iter()
            .zip(&w)
            .map(|((_, a), w)| w * (a - mean) * (a - mean))
            .sum::<f64>()
            / total;
        Some((mean, var.sqrt()))
    }
}

/// Exclusive hypervolume `p` adds to `front` (normalised points, reference [`REFERENCE`]).
fn contribution(p: &[f64], front: &[Vec<f64>]) -> f64 {
    let reference = vec![REFERENCE; p.len()];
    if p.iter().any(|&v| v >= REFERENCE) {
        return 0.0;
    }
    let own: f64 = p.iter().map(|v| REFERENCE - v).product();
    let limited: Vec<Vec<f64>> = front
        .iter()
        .map(|q| q.iter().zip(p).map(|(a, b)| a.max(*b)).collect())
        .collect();
    (own - hypervolume(&limited, &reference)).max(0.0)
}

/// How far `p` must move (the same amount in every normalised objective) to leave the region
/// `front` dominates: 0 when it is not dominated.
fn distance_to_front(p: &[f64], front: &[Vec<f64>]) -> f64 {
    front
        .iter()
        .map(|q| {
            p.iter()
                .zip(q)
                .map(|(a, b)| a - b)
                .fold(f64::INFINITY, f64::min)
        })
        .fold(0.0, f64::max)
}

/// Greedy order of candidates given as (normalised objective vector, constraint violation)
/// against the normalised feasible `archive`: largest hypervolume contribution first, each
/// chosen candidate joining the front; then candidates that add nothing, nearest the front
/// first; then infeasible ones, least violation first. Ties keep the candidates' order.
pub fn greedy_order(candidates: &[(Vec<f64>, f64)], archive: &[Vec<f64>]) -> Vec<usize> {
    let usable = |p: &[f64], v: f64| v <= 0.0 && p.iter().all(|x| x.is_finite());
    let mut front: Vec<Vec<f64>> = archive
        .iter()
        .filter(|p| p.iter().all(|x| x.is_finite()))
        .cloned()
        .collect();
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    let mut order = Vec::with_capacity(candidates.len());
    while !left.is_empty() {
        let gain = |i: usize| {
            let (p, v) = &candidates[i];
            if !usable(p, *v) {
                (2, if v.is_finite() { *v } else { f64::INFINITY })
            } else {
                let c = contribution(p, &front);
                if c > 0.0 {
                    (0, -c)
                } else {
                    (1, distance_to_front(p, &front))
                }
            }
        };
        let gains: Vec<(u8, f64)> = left.iter().map(|&i| gain(i)).collect();
        let pos = (0..left.len())
            .min_by(|&a, &b| {
                gains[a]
                    .0
                    .cmp(&gains[b].0)
                    .then(gains[a].1.total_cmp(&gains[b].1))
                    .then(left[a].cmp(&left[b]))
            })
            .expect("left is not empty");
        let best = left.remove(pos);
        order.push(best);
        let (p, v) = &candidates[best];
        if usable(p, *v) {
            front.retain(|q| !dominates(p, q));
            front.push(p.clone());
        }
    }
    order
}

/// The order in which `pool` should be evaluated (indices, best first), given the models
/// evaluated so far.
pub fn choose(
    ctx: &EvalContext,
    scoring: &Scoring,
    evaluated: &[&Evaluation],
    pool: &[Vec<f64>],
) -> Result<Vec<usize>> {
    let surrogate = Surrogate::fit(evaluated);
    let mut predicted = Vec::with_capacity(pool.len());
    for genome in pool {
        let d = ctx.space.decode(ctx.base, genome)?;
        let mut values = ctx.costing.cheap(&d.graph, d.int8())?;
        let x = features(&d.layer_keep, &d.description, d.arithmetic);
        if let Some((acc, spread)) = surrogate.predict(&x) {
            values.insert("accuracy".into(), (acc + spread).min(1.0));
        }
        predicted.push((scoring.vector(&values), scoring.violation(&values)));
    }
    let archive: Vec<Vec<f64>> = evaluated
        .iter()
        .filter(|e| scoring.violation(&e.values) <= 0.0)
        .map(|e| scoring.vector(&e.values))
        .collect();
    let in_frame: Vec<Vec<f64>> = archive
        .iter()
        .chain(predicted.iter().filter(|(_, v)| *v <= 0.0).map(|(p, _)| p))
        .cloned()
        .collect();
    let frame = HvFrame::over(&in_frame, scoring.objectives.len());
    let candidates: Vec<(Vec<f64>, f64)> = predicted
        .iter()
        .map(|(p, v)| (frame.normalise(p), *v))
        .collect();
    let archive: Vec<Vec<f64>> = archive.iter().map(|p| frame.normalise(p)).collect();
    Ok(greedy_order(&candidates, &archive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(keep: f64, acc: f64) -> Evaluation {
        Evaluation {
            key: format!("{keep}"),
            genome: vec![],
            values: BTreeMap::from([("accuracy".to_string(), acc)]),
            description: BTreeMap::new(),
            layer_keep: vec![("a".into(), keep), ("b".into(), keep)],
            int8: false,
            bf16: false,
            finetuned: true,
            ran: None,
        }
    }

    #[test]
    fn surrogate_interpolates_between_neighbours_and_reports_their_spread() {
        let e = [eval(0.2, 0.70), eval(0.4, 0.80), eval(0.8, 0.90)];
        let refs: Vec<&Evaluation> = e.iter().collect();
        let s = Surrogate::fit(&refs);
        let x = features(&e[1].layer_keep, &e[1].description, Arithmetic::F32);
        assert_eq!(s.predict(&x), Some((0.80, 0.0)), "an evaluated model");
        let mid = features(
            &[("a".into(), 0.3), ("b".into(), 0.3)],
            &BTreeMap::new(),
            Arithmetic::F32,
        );
        let (acc, spread) = s.predict(&mid).unwrap();
        assert!(acc > 0.75 && acc < 0.82, "{acc}");
        assert!(spread > 0.0);
        assert_eq!(Surrogate::fit(&[]).predict(&mid), None);
    }

    #[test]
    fn contribution_is_the_exclusive_hypervolume() {
        let front = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        // the box [0.5, 1.1]² minus what the front already covers ([0.5,1.1]×[1,1.1] and
        // [1,1.1]×[0.5,1.1], overlapping in [1,1.1]²)
        let c = contribution(&[0.5, 0.5], &front);
        let expected = 0.6 * 0.6 - (0.6 * 0.1 + 0.1 * 0.6 - 0.1 * 0.1);
        assert!((c - expected).abs() < 1e-12, "{c} vs {expected}");
        assert_eq!(contribution(&[1.0, 1.0], &front), 0.0, "dominated");
        assert_eq!(distance_to_front(&[0.5, 0.5], &front), 0.0);
        assert!((distance_to_front(&[1.2, 1.5], &front) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn greedy_order_fills_gaps_first_and_spreads_the_batch() {
        let archive = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let candidates = vec![
            (vec![0.9, 0.9], 0.0),   // 0: dominated
            (vec![0.5, 0.5], 0.0),   // 1: fills the middle gap
            (vec![0.51, 0.5], 0.0),  // 2: near-duplicate of 1
            (vec![0.2, 0.8], 0.0),   // 3: a smaller gap elsewhere
            (vec![0.1, 0.1], 0.3),   // 4: would be best, but infeasible
            (vec![0.95, 0.95], 0.0), // 5: dominated, farther from the front than 0
        ];
        let order = greedy_order(&candidates, &archive);
        assert_eq!(order[0], 1, "{order:?}");
        // once 1 is on the front, its near-duplicate adds almost nothing; the other gap wins
        assert_eq!(order[1], 3, "{order:?}");
        assert_eq!(order[2], 2, "{order:?}");
        assert_eq!(
            &order[3..],
            &[0, 5, 4],
            "dominated by distance, infeasible last"
        );
        assert_eq!(greedy_order(&[], &archive), Vec::<usize>::new());
    }
}
