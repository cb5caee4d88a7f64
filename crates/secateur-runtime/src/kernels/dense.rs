//! Dense products through the `gemm` crate: `Y = W·X` for convolutions (weights times the
//! im2col matrix) and `Y = X·Wᵀ` for fully connected layers without transposing anything,
//! followed by the bias/activation epilogue.

use super::epilogue::Epilogue;
use gemm::{Parallelism, gemm};

fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `y[M×N] = epilogue(w[M×K] · x[K×N])`, all row-major.
pub fn matmul(
    w: &[f32],
    x: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ep: &Epilogue,
    threads: usize,
) {
    assert!(
        w.len() >= m * k && x.len() >= k * n && y.len() >= m * n,
        "dense matmul: buffer sizes do not match {m}x{k}x{n}"
    );
    // SAFETY: the slices hold at least the m×k, k×n and m×n elements the strides address
    // (checked above), and `y` does not alias the inputs (distinct borrows).
    unsafe {
        gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            w.as_ptr(),
            1,
            k as isize,
            x.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(threads),
        );
    }
    ep.apply_rows(&mut y[..m * n], n, 0);
}

/// `y[N×M] = x[N×K] · w[M×K]ᵀ + bias (per column), activation`.
pub fn matmul_transposed(
    w: &[f32],
    x: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ep: &Epilogue,
    threads: usize,
) {
    assert!(
        w.len() >= m * k && x.len() >= k * n && y.len() >= m * n,
        "dense matmul: buffer sizes do not match {m}x{k}x{n}"
    );
    // SAFETY: as above; Wᵀ is addressed with row stride 1 and column stride k inside `w`.
    unsafe {
        gemm(
            n,
            m,
            k,
            y.as_mut_ptr(),
            1,
            m as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(threads),
        );
    }
    if ep.bias.is_some() || ep.act != super::Activation::None {
        for row in y[..m * n].chunks_mut(m) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ep.act.apply(*v + ep.bias(j));
            }
        }
    }
}

/// `y[N×M] = x[N×K] · wt[K×M] + bias (per column), activation`, with `wt = Wᵀ` stored
/// row-major (fully connected layers: no strided operand for the GEMM).
pub fn matmul_pretransposed(
    wt: &[f32],
    x: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ep: &Epilogue,
    threads: usize,
) {
    matmul(x, wt, y, n, k, m, &Epilogue::NONE, threads);
    if ep.bias.is_some() || ep.act != super::Activation::None {
        for row in y[..m * n].chunks_mut(m) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ep.act.apply(*v + ep.bias(j));
            }
        }
    }
}
