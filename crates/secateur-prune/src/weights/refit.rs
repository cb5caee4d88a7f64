//! Least-squares refit of a pruned linear layer's kept weights. Once a mask is chosen (by
//! Wanda, which changes no weight, or by SparseGPT, whose column-by-column updates only move
//! the weights after the pruned one and are not the optimum for the final mask), each output
//! row's kept weights are set to the minimiser of its output error on the calibration inputs,
//! `min ‖(w − ŵ)ᵀX‖²` over `ŵ` zero outside the row's support `S`:
//! `ŵ_S = (H_SS + λI)⁻¹ (H w)_S` with `H = XXᵀ` (Boža, 2024, solves the same problem by ADMM;
//! here each row's system is factored exactly, rows in parallel). With `centred`, `H` is the
//! scatter about the inputs' mean, the objective when the layer's bias absorbs the shift of
//! its mean output (the bias correction of [`super::oneshot`]).

use super::calibration::Gram;
use super::sparsegpt::{cholesky, dot};
use rayon::prelude::*;

/// The quadratic form a refit minimises: `H` (`dim × dim`, full) and the dampening `λ`.
pub struct RefitSystem {
    dim: usize,
    h: Vec<f64>,
    lambda: f64,
}

impl RefitSystem {
    /// From a layer's input statistics: `XXᵀ`, or with `centred` the scatter about the mean
    /// `XXᵀ − n·μμᵀ`; `damp` scales the mean diagonal into `λ`.
    pub fn new(gram: &Gram, centred: bool, damp: f64) -> RefitSystem {
        let d = gram.dim;
        let mut h = gram.full();
        if centred && gram.rows > 0 {
            let n = gram.rows as f64;
            for i in 0..d {
                for j in 0..d {
                    h[i * d + j] -= gram.sum[i] * gram.sum[j] / n;
                }
            }
        }
        let mean_diag = (0..d).map(|i| h[i * d + i]).sum::<f64>() / d.max(1) as f64;
        RefitSystem {
            dim: d,
            h,
            lambda: damp * mean_diag.max(1e-12),
        }
    }

    /// `Σ_jk (a − b)_j H_jk (a − b)_k`: the output error of weights `b` for a row `a`.
    pub fn error(&self, a: &[f32], b: &[f32]) -> f64 {
        let d = self.dim;
        let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y) as f64).collect();
        (0..d)
            .map(|i| diff[i] * dot(&self.h[i * d..(i + 1) * d], &diff))
            .sum()
    }

    /// The refitted row for dense weights `dense` and support `keep`, or `None` when the
    /// row's system is not positive definite (the caller keeps its weights).
    fn row(&self, dense: &[f32], keep: &[bool]) -> Option<Vec<f32>> {
        let d = self.dim;
        let support: Vec<usize> = (0..d).filter(|&j| keep[j]).collect();
        let s = support.len();
        let mut out = vec![0.0f32; d];
        if s == 0 {
            return Some(out);
        }
        let w: Vec<f64> = dense.iter().map(|&v| v as f64).collect();
        let mut a = vec![0.0f64; s * s];
        let mut rhs = vec![0.0f64; s];
        for (p, &i) in support.iter().enumerate() {
            let hi = &self.h[i * d..(i + 1) * d];
            rhs[p] = dot(hi, &w);
            for (q, &j) in support.iter().enumerate() {
                a[p * s + q] = hi[j];
            }
            a[p * s + p] += self.lambda;
        }
        let l = cholesky(&a, s)?;
        // L y = rhs, then Lᵀ x = y
        let mut y = vec![0.0f64; s];
        for i in 0..s {
            y[i] = (rhs[i] - dot(&l[i * s..i * s + i], &y[..i])) / l[i * s + i];
        }
        let mut x = vec![0.0f64; s];
        for i in (0..s).rev() {
            let tail: f64 = (i + 1..s).map(|k| l[k * s + i] * x[k]).sum();
            x[i] = (y[i] - tail) / l[i * s + i];
        }
        if x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        for (&j, v) in support.iter().zip(x) {
            out[j] = v as f32;
        }
        Some(out)
    }

    /// Refits `pruned` (row-major `rows × dim`, zero outside `keep`) towards `dense`: each row
    /// whose refit lowers its output error is replaced. Returns how many rows were.
    pub fn refit(&self, dense: &[f32], keep: &[bool], pruned: &mut [f32]) -> usize {
        let d = self.dim;
        pruned
            .par_chunks_mut(d)
            .zip(dense.par_chunks(d).zip(keep.par_chunks(d)))
            .map(|(p, (w, k))| match self.row(w, k) {
                Some(r) if self.error(w, &r) < self.error(w, p) => {
                    p.copy_from_slice(&r);
                    1
                }
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::weights::test_lcg as lcg;

    /// Correlated inputs with a non-zero mean, a random layer, a random half kept per row.
    fn case(rows: usize, cols: usize, n: usize) -> (Vec<f32>, Gram, Vec<bool>, Vec<Vec<f32>>) {
        let mut s = 11;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let basis: Vec<f32> = (0..3 * cols).map(|_| lcg(&mut s)).collect();
        let mut gram = Gram::new(cols);
        let mut xs = Vec::new();
        for _ in 0..n {
            let z: Vec<f32> = (0..3).map(|_| 2.0 * lcg(&mut s)).collect();
            let x: Vec<f32> = (0..cols)
                .map(|j| {
                    0.7 + (0..3).map(|k| z[k] * basis[k * cols + j]).sum::<f32>()
                        + 0.2 * lcg(&mut s)
                })
                .collect();
            gram.add_row(&x);
            xs.push(x);
        }
        let keep: Vec<bool> = (0..rows * cols).map(|_| lcg(&mut s) > 0.0).collect();
        (w, gram, keep, xs)
    }

    /// The squared output error of `b` against `a` on the inputs, with the best intercept
    /// (`centred`) or none.
    fn measured(a: &[f32], b: &[f32], xs: &[Vec<f32>], cols: usize, centred: bool) -> f64 {
        let mut total = 0.0;
        for (ra, rb) in a.chunks(cols).zip(b.chunks(cols)) {
            let e: Vec<f64> = xs
                .iter()
                .map(|x| (0..cols).map(|j| ((ra[j] - rb[j]) * x[j]) as f64).sum())
                .collect();
            let mean = if centred {
                e.iter().sum::<f64>() / e.len() as f64
            } else {
                0.0
            };
            total += e.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        }
        total
    }

    #[test]
    fn the_refit_keeps_the_support_and_minimises_the_output_error() {
        let (rows, cols) = (6, 24);
        let (w, gram, keep, xs) = case(rows, cols, 200);
        for centred in [false, true] {
            let sys = RefitSystem::new(&gram, centred, 1e-9);
            let masked: Vec<f32> = w
                .iter()
                .zip(&keep)
                .map(|(v, k)| if *k { *v } else { 0.0 })
                .collect();
            let mut fitted = masked.clone();
            assert_eq!(sys.refit(&w, &keep, &mut fitted), rows);
            assert!(fitted.iter().zip(&keep).all(|(v, k)| *k || *v == 0.0));
            let e_fit = measured(&w, &fitted, &xs, cols, centred);
            let e_mask = measured(&w, &masked, &xs, cols, centred);
            assert!(e_fit < 0.2 * e_mask, "{centred}: {e_fit} vs {e_mask}");
            // no kept weight can move without raising the error (first-order optimality)
            for r in 0..rows {
                for j in (0..cols).filter(|&j| keep[r * cols + j]) {
                    for step in [1e-3f32, -1e-3] {
                        let mut moved = fitted.clone();
                        moved[r * cols + j] += step;
                        let e = measured(&w, &moved, &xs, cols, centred);
                        assert!(
                            e >= e_fit * (1.0 - 1e-6),
                            "row {r} input {j}: {e} < {e_fit}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_quadratic_form_is_the_measured_error() {
        let (rows, cols) = (3, 16);
        let (w, gram, keep, xs) = case(rows, cols, 120);
        let masked: Vec<f32> = w
            .iter()
            .zip(&keep)
            .map(|(v, k)| if *k { *v } else { 0.0 })
            .collect();
        for centred in [false, true] {
            let sys = RefitSystem::new(&gram, centred, 0.0);
            let form: f64 = (0..rows)
                .map(|r| {
                    sys.error(
                        &w[r * cols..(r + 1) * cols],
                        &masked[r * cols..(r + 1) * cols],
                    )
                })
                .sum();
            let direct = measured(&w, &masked, &xs, cols, centred);
            assert!(
                (form - direct).abs() <= 1e-6 * direct,
                "{centred}: {form} vs {direct}"
            );
        }
    }
}
