//! The kernel comparison of the runtime issue, shared by `secateur bench-kernels` and the
//! criterion bench: `W[M×K] · X[K×N]` in each sparse format against the dense path at given
//! sparsities, measured interleaved in one run, single-threaded.

use crate::harness::{Budget, measure_interleaved};
use crate::kernels::{Epilogue, Format, Isa, WeightKernel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelCase {
    pub format: String,
    pub sparsity: f64,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub dense_ms: f64,
    pub sparse_ms: f64,
    pub speedup: f64,
    /// Relative spread (p90 − p10) / median of the sparse timings.
    pub spread: f64,
}

/// A random `[m×k]` matrix whose zeros follow `format` at `sparsity`.
pub fn sparse_weight(m: usize, k: usize, format: Format, sparsity: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    match format {
        Format::Dense => {}
        Format::Csr => w.iter_mut().for_each(|v| {
            if rng.random_bool(sparsity) {
                *v = 0.0;
            }
        }),
        Format::Block { r, c } => {
            for br in 0..m.div_ceil(r) {
                for bc in 0..k.div_ceil(c) {
                    if rng.random_bool(sparsity) {
                        for i in br * r..((br + 1) * r).min(m) {
                            for j in bc * c..((bc + 1) * c).min(k) {
                                w[i * k + j] = 0.0;
                            }
                        }
                    }
                }
            }
        }
        Format::Nm { n, m: mm } => {
            for r in 0..m {
                for g in 0..k / mm {
                    let base = r * k + g * mm;
                    let mut idx: Vec<usize> = (0..mm).collect();
                    idx.sort_by(|&a, &b| w[base + b].abs().total_cmp(&w[base + a].abs()));
                    for &j in &idx[n..] {
                        w[base + j] = 0.0;
                    }
                }
            }
        }
    }
    w
}

/// Times `format` at `sparsity` against dense for `[m×k]·[k×n]`, interleaved.
pub fn compare(
    m: usize,
    k: usize,
    n: usize,
    format: Format,
    sparsity: f64,
    budget: Budget,
) -> KernelCase {
    let isa = Isa::detect();
    let dense_w = sparse_weight(m, k, Format::Dense, 0.0, 1);
    let w = sparse_weight(m, k, format, sparsity, 2);
    let dense = WeightKernel::build_for(Format::Dense, m, k, &dense_w, n).expect("dense");
    let sparse = WeightKernel::build_for(format, m, k, &w, n).expect("format fits");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (mut y1, mut y2) = (vec![0.0; m * n], vec![0.0; m * n]);
    let mut a = || dense.matmul(isa, &x, n, &mut y1, &Epilogue::NONE, 1);
    let mut b = || sparse.matmul(isa, &x, n, &mut y2, &Epilogue::NONE, 1);
    let s = measure_interleaved(&mut [&mut a, &mut b], budget);
    KernelCase {
        format: format.to_string(),
        sparsity,
        m,
        k,
        n,
        dense_ms: s[0].median_ms,
        sparse_ms: s[1].median_ms,
        speedup: s[0].median_ms / s[1].median_ms,
        spread: s[1].spread(),
    }
}

/// The cases the runtime issue asks for, plus N:M and other block shapes.
pub fn standard_cases(budget: Budget) -> Vec<KernelCase> {
    let mut v = Vec::new();
    for (fmt, s) in [
        (Format::Csr, 0.75),
        (Format::Csr, 0.9),
        (Format::Csr, 0.95),
        (Format::Block { r: 4, c: 1 }, 0.9),
        (Format::Block { r: 8, c: 1 }, 0.9),
        (Format::Block { r: 1, c: 4 }, 0.9),
        (Format::Nm { n: 2, m: 4 }, 0.5),
    ] {
        v.push(compare(1024, 1024, 64, fmt, s, budget));
    }
    for (fmt, s) in [
        (Format::Csr, 0.9),
        (Format::Block { r: 4, c: 1 }, 0.9),
        (Format::Block { r: 8, c: 1 }, 0.9),
    ] {
        v.push(compare(1024, 1024, 1, fmt, s, budget));
    }
    v
}
