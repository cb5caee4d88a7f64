//! The kernels: dense products (gemm crate), CSR, block-sparse and N:M sparse-weight ×
//! dense-activation products with AVX-512 / AVX2 / portable paths, and a naive reference that
//! every kernel is tested against. [`WeightKernel`] puts one layer's weight in one format.

// Kernels take many scalar arguments and index fixed-size register tiles by position; the
// tile loops `while c + T <= n` read more clearly than their rewrites.
#![allow(
    clippy::too_many_arguments,
    clippy::needless_range_loop,
    clippy::int_plus_one
)]

#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod bf16;
pub mod block;
pub mod csr;
pub mod dense;
pub mod direct_conv;
pub mod elementwise;
pub mod epilogue;
pub mod isa;
pub mod layernorm;
pub mod layout;
pub mod nhwc_bf16;
#[cfg(target_arch = "x86_64")]
mod nhwc_bf16_avx512;
pub mod nhwc_conv;
pub mod nhwc_int8;
#[cfg(target_arch = "x86_64")]
mod nhwc_int8_vnni;
#[cfg(target_arch = "x86_64")]
mod nhwc_maxpool512;
pub mod nhwc_ops;
#[cfg(target_arch = "x86_64")]
mod nhwc_span512;
pub mod nhwc_stem;
pub mod nm;
mod packed_conv;
pub mod padding;
pub mod quantize;
pub mod reduce;
pub mod select;
pub mod softmax;
pub mod sparse_conv;
pub mod vmath;
pub mod winograd;

pub use block::BlockSparse;
pub use csr::{Csr, Indices};
pub use epilogue::{Activation, Epilogue, Tail};
pub use isa::Isa;
pub use nm::NmSparse;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The storage format of a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    Dense,
    Csr,
    Block { r: usize, c: usize },
    Nm { n: usize, m: usize },
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Dense => f.write_str("dense"),
            Format::Csr => f.write_str("csr"),
            Format::Block { r, c } => write!(f, "block{r}x{c}"),
            Format::Nm { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// One layer's weight matrix `[M×K]` in a chosen format.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightKernel {
    Dense {
        rows: usize,
        cols: usize,
        w: Vec<f32>,
    },
    Csr(Csr),
    Block(BlockSparse),
    Nm(NmSparse),
}

impl WeightKernel {
    /// Builds `format` from a dense row-major `[rows×cols]` matrix; `None` if the matrix does
    /// not fit the format (an N:M format on a matrix that breaks the pattern).
    pub fn build(format: Format, rows: usize, cols: usize, w: &[f32]) -> Option<Self> {
        Self::build_for(format, rows, cols, w, 64)
    }

    /// Like [`WeightKernel::build`], laid out for products with `n` columns.
    pub fn build_for(
        format: Format,
        rows: usize,
        cols: usize,
        w: &[f32],
        n: usize,
    ) -> Option<Self> {
        Some(match format {
            Format::Dense => WeightKernel::Dense {
                rows,
                cols,
                w: w.to_vec(),
            },
            Format::Csr => WeightKernel::Csr(Csr::for_columns(rows, cols, w, n)),
            Format::Block { r, c } => {
                WeightKernel::Block(BlockSparse::for_columns(rows, cols, w, r, c, n))
            }
            Format::Nm { n, m } => WeightKernel::Nm(NmSparse::from_dense(rows, cols, w, n, m)?),
        })
    }

    pub fn format(&self) -> Format {
        match self {
            WeightKernel::Dense { .. } => Format::Dense,
            WeightKernel::Csr(_) => Format::Csr,
            WeightKernel::Block(b) => Format::Block { r: b.r, c: b.c },
            WeightKernel::Nm(x) => Format::Nm { n: x.n, m: x.m },
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            WeightKernel::Dense { rows, .. } => *rows,
            WeightKernel::Csr(c) => c.rows,
            WeightKernel::Block(b) => b.rows,
            WeightKernel::Nm(x) => x.rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            WeightKernel::Dense { cols, .. } => *cols,
            WeightKernel::Csr(c) => c.cols,
            WeightKernel::Block(b) => b.cols,
            WeightKernel::Nm(x) => x.cols,
        }
    }

    /// Bytes of weight storage in this format.
    pub fn bytes(&self) -> usize {
        match self {
            WeightKernel::Dense { w, .. } => w.len() * 4,
            WeightKernel::Csr(c) => c.bytes(),
            WeightKernel::Block(b) => b.bytes(),
            WeightKernel::Nm(x) => x.bytes(),
        }
    }

    /// Multiply-accumulates this format executes per output column.
    pub fn macs_per_column(&self) -> usize {
        match self {
            WeightKernel::Dense { rows, cols, .. } => rows * cols,
            WeightKernel::Csr(c) => c.nnz(),
            WeightKernel::Block(b) => b.values.len(),
            WeightKernel::Nm(x) => x.values.len(),
        }
    }

    /// `y[M×N] = epilogue(W · x[K×N])` on `threads` threads (split over rows).
    pub fn matmul(
        &self,
        isa: Isa,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        ep: &Epilogue,
        threads: usize,
    ) {
        let m = self.rows();
        if let WeightKernel::Dense { rows, cols, w } = self {
            dense::matmul(w, x, y, *rows, *cols, n, ep, threads);
            return;
        }
        let align = match self {
            WeightKernel::Block(b) => b.r,
            _ => 1,
        };
        let run = |y: &mut [f32], r0: usize, r1: usize| match self {
            WeightKernel::Csr(c) => c.matmul_rows(isa, x, n, y, r0, r1, ep),
            WeightKernel::Block(b) => b.matmul_rows(isa, x, n, y, r0, r1, ep),
            WeightKernel::Nm(s) => s.matmul_rows(isa, x, n, y, r0, r1, ep),
            WeightKernel::Dense { .. } => unreachable!("handled above"),
        };
        if threads <= 1 || m < 2 * align {
            run(&mut y[..m * n], 0, m);
            return;
        }
        let chunk = m.div_ceil(threads).div_ceil(align) * align;
        crate::team::parallel_chunks(threads, &mut y[..m * n], chunk * n, |i, ys| {
            let r0 = i * chunk;
            let r1 = (r0 + chunk).min(m);
            run(ys, r0, r1);
        });
    }
}

/// The obvious triple loop: the reference every kernel is tested against.
pub fn reference_matmul(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    ep: &Epilogue,
) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * n];
    for r in 0..rows {
        for c in 0..n {
            let mut acc = 0.0f64;
            for k in 0..cols {
                acc += w[r * cols + k] as f64 * x[k * n + c] as f64;
            }
            y[r * n + c] = ep.act.apply(acc as f32 + ep.bias(r));
        }
    }
    y
}
