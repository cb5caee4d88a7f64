//! SparseGPT (Frantar & Alistarh, 2023): one-shot pruning of a linear layer `W` (outputs ×
//! inputs) that keeps its outputs on calibration inputs `X` close, `min ‖WX − ŴX‖²`. With the
//! upper Cholesky factor `U` of `H⁻¹` (`H = XXᵀ + λI`), columns are visited in order; in each
//! block of columns the weights with the smallest `w² / U_jj²` are chosen (unstructured: a
//! fraction of the block; N:M: N of every M consecutive inputs of a row), each column's
//! pruning error `e = (w − q) / U_jj` is pushed onto the later columns of the block
//! (`W[:, j:] −= e ⊗ U[j, j:]`), and the block's errors onto all later columns at once.

use super::calibration::Gram;
use crate::error::{PruneError, Result};

/// What SparseGPT removes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparseGptConfig {
    /// Fraction of weights removed (unstructured).
    pub sparsity: f64,
    /// `Some((n, m))`: keep `n` of every `m` consecutive inputs of each output (N:M; the
    /// sparsity is then `1 − n/m`).
    pub nm: Option<(usize, usize)>,
    /// Columns per lazy-update block.
    pub block: usize,
    /// Dampening added to the diagonal, relative to its mean.
    pub damp: f64,
}

impl Default for SparseGptConfig {
    fn default() -> Self {
        SparseGptConfig {
            sparsity: 0.5,
            nm: None,
            block: 128,
            damp: 0.01,
        }
    }
}

/// Dot product with four independent partial sums (vectorisable, unlike a sequential sum).
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Lower Cholesky factor of a symmetric positive-definite `d × d` matrix, or `None`.
pub(crate) fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s = dot(&l[i * d..i * d + j], &l[j * d..j * d + j]);
            if i == j {
                let v = a[i * d + i] - s;
                if !(v > 0.0) {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular matrix (lower-triangular).
fn invert_lower(l: &[f64], d: usize) -> Vec<f64> {
    let mut inv = vec![0.0; d * d];
    for j in 0..d {
        inv[j * d + j] = 1.0 / l[j * d + j];
        for i in j + 1..d {
            let s: f64 = (j..i).map(|k| l[i * d + k] * inv[k * d + j]).sum();
            inv[i * d + j] = -s / l[i * d + i];
        }
    }
    inv
}

/// The upper factor `U` with `H⁻¹ = UᵀU`, dampened until `H` is positive definite.
fn inverse_factor(h: &mut [f64], d: usize, damp: f64) -> Result<Vec<f64>> {
    let mean_diag = (0..d).map(|i| h[i * d + i]).sum::<f64>() / d.max(1) as f64;
    let mut lambda = damp * mean_diag.max(1e-12);
    for _ in 0..6 {
        let mut damped = h.to_vec();
        for i in 0..d {
            damped[i * d + i] += lambda;
        }
        if let Some(l) = cholesky(&damped, d) {
            let li = invert_lower(&l, d);
            // H⁻¹ = L⁻ᵀ L⁻¹
            let mut hinv = vec![0.0; d * d];
            for i in 0..d {
                for j in 0..=i {
                    let s: f64 = (i..d).map(|k| li[k * d + i] * li[k * d + j]).sum();
                    hinv[i * d + j] = s;
                    hinv[j * d + i] = s;
                }
            }
            if let Some(c) = cholesky(&hinv, d) {
                // U = Cᵀ (upper)
                let mut u = vec![0.0; d * d];
                for i in 0..d {
                    for j in i..d {
                        u[i * d + j] = c[j * d + i];
                    }
                }
                return Ok(u);
            }
        }
        lambda *= 10.0;
    }
    Err(PruneError::Invalid(
        "SparseGPT: the calibration Hessian is not positive definite even after dampening".into(),
    ))
}

/// Prunes `w` (row-major `rows × cols`: outputs × inputs) in place with the Gram matrix of its
/// inputs and returns the keep mask.
pub fn sparsegpt_matrix(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    gram: &Gram,
    cfg: &SparseGptConfig,
) -> Result<Vec<bool>> {
    if gram.dim != cols || w.len() != rows * cols {
        return Err(PruneError::Invalid(format!(
            "SparseGPT: a {rows}x{cols} weight and a Gram matrix of {} features",
            gram.dim
        )));
    }
    if let Some((n, m)) = cfg.nm
        && (n == 0 || n >= m || !cols.is_multiple_of(m))
    {
        return Err(PruneError::Invalid(format!(
            "SparseGPT: {n}:{m} needs 0 < n < m with m dividing the {cols} inputs"
        )));
    }
    let d = cols;
    let mut h = gram.full();
    let mut wf: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    // inputs never seen active carry no information: prune them, keep H invertible
    for j in 0..d {
        if h[j * d + j] == 0.0 {
            h[j * d + j] = 1.0;
            for r in 0..rows {
                wf[r * d + j] = 0.0;
            }
        }
    }
    let u = inverse_factor(&mut h, d, cfg.damp)?;
    let mut keep = vec![true; rows * cols];
    let bs = cfg.block.max(1);
    for i1 in (0..d).step_by(bs) {
        let i2 = (i1 + bs).min(d);
        let count = i2 - i1;
        let score = |wf: &[f64], r: usize, j: usize| {
            let v = wf[r * d + j] / u[j * d + j];
            v * v
        };
        if cfg.nm.is_none() {
            let mut scores: Vec<(f64, usize, usize)> = (0..rows)
                .flat_map(|r| (i1..i2).map(move |j| (r, j)))
                .map(|(r, j)| (score(&wf, r, j), r, j))
                .collect();
            let k = ((rows * count) as f64 * cfg.sparsity).floor() as usize;
            let nth = k.min(scores.len().saturating_sub(1));
            scores.select_nth_unstable_by(nth, |a, b| a.0.total_cmp(&b.0));
            for &(_, r, j) in scores.iter().take(k) {
                keep[r * d + j] = false;
            }
        }
        let mut err = vec![0.0f64; rows * count];
        for c in 0..count {
            let j = i1 + c;
            if let Some((n, m)) = cfg.nm
                && (j % m) == 0
            {
                for r in 0..rows {
                    let mut idx: Vec<usize> = (j..j + m).collect();
                    idx.sort_by(|&a, &b| score(&wf, r, a).total_cmp(&score(&wf, r, b)));
                    for &jj in &idx[..m - n] {
                        keep[r * d + jj] = false;
                    }
                }
            }
            let dj = u[j * d + j];
            for r in 0..rows {
                let wv = wf[r * d + j];
                let q = if keep[r * d + j] { wv } else { 0.0 };
                let e = (wv - q) / dj;
                err[r * count + c] = e;
                wf[r * d + j] = q;
                if e != 0.0 {
                    for jj in j + 1..i2 {
                        wf[r * d + jj] -= e * u[j * d + jj];
                    }
                }
            }
        }
        // lazy update of the later columns
        for r in 0..rows {
            let e = &err[r * count..(r + 1) * count];
            for jj in i2..d {
                let s: f64 = e
                    .iter()
                    .enumerate()
                    .map(|(c, ec)| ec * u[(i1 + c) * d + jj])
                    .sum();
                wf[r * d + jj] -= s;
            }
        }
    }
    for ((o, v), k) in w.iter_mut().zip(&wf).zip(&keep) {
        *o = if *k { *v as f32 } else { 0.0 };
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::weights::test_lcg as lcg;

    /// Correlated inputs (a low-rank mix plus noise), a random layer.
    fn layer(rows: usize, cols: usize, samples: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
        let mut s = 7;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut s)).collect();
        let basis: Vec<f32> = (0..4 * cols).map(|_| lcg(&mut s)).collect();
        let xs = (0..samples)
            .map(|_| {
                let z: Vec<f32> = (0..4).map(|_| 3.0 * lcg(&mut s)).collect();
                (0..cols)
                    .map(|j| {
                        (0..4).map(|k| z[k] * basis[k * cols + j]).sum::<f32>() + 0.1 * lcg(&mut s)
                    })
                    .collect()
            })
            .collect();
        (w, xs)
    }

    fn output_error(w: &[f32], q: &[f32], xs: &[Vec<f32>], rows: usize, cols: usize) -> f64 {
        xs.iter()
            .map(|x| {
                (0..rows)
                    .map(|r| {
                        let d: f32 = (0..cols)
                            .map(|j| (w[r * cols + j] - q[r * cols + j]) * x[j])
                            .sum();
                        (d as f64).powi(2)
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn reconstruction_beats_magnitude_and_meets_the_sparsity() {
        let (rows, cols) = (16, 64);
        let (w, xs) = layer(rows, cols, 256);
        let mut gram = Gram::new(cols);
        xs.iter().for_each(|x| gram.add_row(x));
        let mut q = w.clone();
        let keep = sparsegpt_matrix(
            &mut q,
            rows,
            cols,
            &gram,
            &SparseGptConfig {
                block: 16,
                ..Default::default()
            },
        )
        .unwrap();
        let pruned = keep.iter().filter(|k| !**k).count();
        assert_eq!(pruned, rows * cols / 2);
        assert!(q.iter().zip(&keep).all(|(v, k)| *k || *v == 0.0));
        // magnitude: the smallest half by |w|, other weights untouched
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()));
        let mut m = w.clone();
        order[..w.len() / 2].iter().for_each(|&i| m[i] = 0.0);
        let (e_gpt, e_mag) = (
            output_error(&w, &q, &xs, rows, cols),
            output_error(&w, &m, &xs, rows, cols),
        );
        assert!(
            e_gpt < 0.5 * e_mag,
            "SparseGPT {e_gpt} vs magnitude {e_mag}"
        );
    }

    #[test]
    fn n_m_keeps_n_of_every_m() {
        let (rows, cols) = (8, 32);
        let (w, xs) = layer(rows, cols, 128);
        let mut gram = Gram::new(cols);
        xs.iter().for_each(|x| gram.add_row(x));
        let mut q = w.clone();
        let cfg = SparseGptConfig {
            nm: Some((2, 4)),
            ..Default::default()
        };
        let keep = sparsegpt_matrix(&mut q, rows, cols, &gram, &cfg).unwrap();
        for r in 0..rows {
            for g in 0..cols / 4 {
                let kept = (0..4).filter(|&k| keep[r * cols + g * 4 + k]).count();
                assert!(kept <= 2, "row {r} group {g} keeps {kept}");
            }
        }
        assert!(
            sparsegpt_matrix(
                &mut q,
                rows,
                cols,
                &gram,
                &SparseGptConfig {
                    nm: Some((2, 3)),
                    ..Default::default()
                }
            )
            .is_err()
        );
    }

    #[test]
    fn cholesky_inverse_factor_is_exact() {
        let d = 3;
        let mut h = vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let u = inverse_factor(&mut h, d, 0.0).unwrap();
        // Uᵀ U H = I
        for i in 0..d {
            for j in 0..d {
                let uu =
                    |a: usize, b: usize| (0..d).map(|k| u[k * d + a] * u[k * d + b]).sum::<f64>();
                let v: f64 = (0..d).map(|k| uu(i, k) * h[k * d + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
    }
}
