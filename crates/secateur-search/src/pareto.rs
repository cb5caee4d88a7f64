//! Pareto machinery for minimisation: constrained domination (a feasible point beats an
//! infeasible one; among infeasible points the smaller total violation wins; among feasible
//! points ordinary Pareto dominance), fast non-dominated sorting and crowding distance (Deb et
//! al. 2002), the hypervolume of a front with respect to a reference point (exact, by slicing
//! objectives), and the knee point (largest distance to the hyperplane through the extremes).

/// Whether `a` Pareto-dominates `b` (all ≤, one <).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut strictly = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            strictly = true;
        }
    }
    strictly
}

/// Constrained domination with total constraint violations `va`, `vb` (0 = feasible).
pub fn constrained_dominates(a: &[f64], va: f64, b: &[f64], vb: f64) -> bool {
    match (va > 0.0, vb > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => va < vb,
        (false, false) => dominates(a, b),
    }
}

/// Fronts of indices (first = non-dominated) under constrained domination.
pub fn non_dominated_sort(objs: &[Vec<f64>], viol: &[f64]) -> Vec<Vec<usize>> {
    let n = objs.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && constrained_dominates(&objs[i], viol[i], &objs[j], viol[j]) {
                dominates_list[i].push(j);
            } else if i != j && constrained_dominates(&objs[j], viol[j], &objs[i], viol[i]) {
                dominated_by[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(current);
        current = next;
    }
    fronts
}

/// Crowding distance of each member of a front (boundary points get infinity).
#[allow(clippy::needless_range_loop)] // one pass per objective, indices into the front
pub fn crowding(objs: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut d = vec![0.0f64; n];
    if n <= 2 {
        return vec![f64::INFINITY; n];
    }
    let m = objs[front[0]].len();
    for k in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            objs[front[a]][k]
                .total_cmp(&objs[front[b]][k])
                .then(a.cmp(&b))
        });
        let (lo, hi) = (objs[front[order[0]]][k], objs[front[order[n - 1]]][k]);
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        if hi - lo <= 0.0 {
            continue;
        }
        for w in 1..n - 1 {
            d[order[w]] +=
                (objs[front[order[w + 1]]][k] - objs[front[order[w - 1]]][k]) / (hi - lo);
        }
    }
    d
}

/// Indices of the non-dominated points among feasible ones.
pub fn pareto_front(objs: &[Vec<f64>], viol: &[f64]) -> Vec<usize> {
    (0..objs.len())
        .filter(|&i| {
            viol[i] <= 0.0
                && !(0..objs.len())
                    .any(|j| j != i && viol[j] <= 0.0 && dominates(&objs[j], &objs[i]))
        })
        .collect()
}

/// Hypervolume dominated by `points` and bounded by `reference` (minimisation). Points that do
/// not dominate the reference contribute nothing.
///
/// ```
/// use secateur_search::pareto::hypervolume;
/// let hv = hypervolume(&[vec![1.0, 2.0], vec![2.0, 1.0]], &[3.0, 3.0]);
/// assert!((hv - 3.0).abs() < 1e-12);
/// ```
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let pts: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .cloned()
        .collect();
    hv_rec(pts, reference)
}

fn hv_rec(mut pts: Vec<Vec<f64>>, r: &[f64]) -> f64 {
    let m = r.len();
    if pts.is_empty() {
        return 0.0;
    }
    if m == 1 {
        return r[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    }
    // slice along the last objective
    pts.sort_by(|a, b| a[m - 1].total_cmp(&b[m - 1]));
    let mut total = 0.0;
    for i in 0..pts.len() {
        let z = pts[i][m - 1];
        let next = if i + 1 < pts.len() {
            pts[i + 1][m - 1]
        } else {
            r[m - 1]
        };
        let h = next - z;
        if h <= 0.0 {
            continue;
        }
        let proj: Vec<Vec<f64>> = pts[..=i].iter().map(|p| p[..m - 1].to_vec()).collect();
        total += h * hv_rec(nondominated(proj), &r[..m - 1]);
    }
    total
}

fn nondominated(pts: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let keep: Vec<bool> = (0..pts.len())
        .map(|i| {
            !(0..pts.len())
                .any(|j| j != i && (dominates(&pts[j], &pts[i]) || (j < i && pts[j] == pts[i])))
        })
        .collect();
    pts.into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(p, _)| p)
        .collect()
}

/// The knee of a front: after normalising every objective to [0, 1] over the front, the point
/// farthest below the hyperplane through the front's extreme points (for two objectives, the
/// line joining the two ends). Falls back to the point nearest the ideal when the extremes do
/// not span a hyperplane.
pub fn knee(points: &[Vec<f64>]) -> Option<usize> {
    let n = points.len();
    if n == 0 {
        return None;
    }
    if n <= 2 {
        return Some(0);
    }
    let m = points[0].len();
    let lo: Vec<f64> = (0..m)
        .map(|k| points.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min))
        .collect();
    let hi: Vec<f64> = (0..m)
        .map(|k| {
            points
                .iter()
                .map(|p| p[k])
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    let norm: Vec<Vec<f64>> = points
        .iter()
        .map(|p| {
            (0..m)
                .map(|k| {
                    if hi[k] > lo[k] {
                        (p[k] - lo[k]) / (hi[k] - lo[k])
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    // extreme point of each objective: the one minimising it
    let extremes: Vec<usize> = (0..m)
        .map(|k| {
            (0..n)
                .min_by(|&a, &b| {
                    norm[a][k].total_cmp(&norm[b][k]).then(
                        norm[a]
                            .iter()
                            .sum::<f64>()
                            .total_cmp(&norm[b].iter().sum::<f64>()),
                    )
                })
                .expect("non-empty")
        })
        .collect();
    // hyperplane w·x = 1 through the extremes
    let a: Vec<Vec<f64>> = extremes.iter().map(|&e| norm[e].clone()).collect();
    if let Some(w) = solve(a, vec![1.0; m]) {
        let wn = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if wn > 0.0 {
            // distance below the plane (towards the ideal point)
            return (0..n).max_by(|&i, &j| {
                let di = (1.0 - norm[i].iter().zip(&w).map(|(x, y)| x * y).sum::<f64>()) / wn;
                let dj = (1.0 - norm[j].iter().zip(&w).map(|(x, y)| x * y).sum::<f64>()) / wn;
                di.total_cmp(&dj).then(j.cmp(&i))
            });
        }
    }
    (0..n).min_by(|&i, &j| {
        norm[i]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .total_cmp(&norm[j].iter().map(|x| x * x).sum::<f64>())
    })
}

/// Gaussian elimination with partial pivoting; `None` when singular.
#[allow(clippy::needless_range_loop)] // Gaussian elimination reads best with indices
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}
