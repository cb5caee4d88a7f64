//! N:M semi-structured sparsity: every group of M consecutive inputs of a row keeps exactly N
//! weights, stored as N values and N in-group offsets (one byte each) per group, so no row
//! pointers and no wide indices are needed. The product streams X rows like CSR.

use super::epilogue::{Epilogue, fma};
use super::isa::{Isa, dispatch};

/// An N:M sparse matrix (built only by [`NmSparse::from_dense`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NmSparse {
    pub rows: usize,
    pub cols: usize,
    pub n: usize,
    pub m: usize,
    pub(crate) values: Vec<f32>,
    pub(crate) offsets: Vec<u8>,
}

impl NmSparse {
    /// From a dense row-major matrix that satisfies the N:M pattern (at most N non-zeros in
    /// every group of M; groups with fewer are padded with explicit zeros). `None` otherwise.
    pub fn from_dense(rows: usize, cols: usize, w: &[f32], n: usize, m: usize) -> Option<Self> {
        if m == 0 || n == 0 || n >= m || !cols.is_multiple_of(m) || m > 256 {
            return None;
        }
        let groups = cols / m;
        let mut values = Vec::with_capacity(rows * groups * n);
        let mut offsets = Vec::with_capacity(rows * groups * n);
        for r in 0..rows {
            for g in 0..groups {
                let base = r * cols + g * m;
                let nz: Vec<usize> = (0..m).filter(|&j| w[base + j] != 0.0).collect();
                if nz.len() > n {
                    return None;
                }
                let mut taken = nz.clone();
                let mut j = 0;
                while taken.len() < n {
                    if !taken.contains(&j) {
                        taken.push(j);
                    }
                    j += 1;
                }
                taken.sort_unstable();
                for j in taken {
                    values.push(w[base + j]);
                    offsets.push(j as u8);
                }
            }
        }
        Some(NmSparse {
            rows,
            cols,
            n,
            m,
            values,
            offsets,
        })
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.offsets.len()
    }

    pub fn matmul_rows(
        &self,
        isa: Isa,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        r0: usize,
        r1: usize,
        ep: &Epilogue,
    ) {
        assert!(
            x.len() >= self.cols * n && y.len() >= (r1 - r0) * n && r1 <= self.rows,
            "N:M matmul: buffers do not match"
        );
        {
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F detected; offsets are < m by construction and the buffer
                // sizes were checked above.
                unsafe {
                    super::avx512::nm(
                        &self.values,
                        &self.offsets,
                        self.cols,
                        self.n,
                        self.m,
                        x,
                        n,
                        y,
                        r0,
                        r1,
                        ep,
                    )
                };
                return;
            }
            nm_kernel(
                isa,
                &self.values,
                &self.offsets,
                self.cols,
                self.n,
                self.m,
                x,
                n,
                y,
                r0,
                r1,
                ep,
            )
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nm_tile<const T: usize, const FMA: bool>(
    vals: &[f32],
    offs: &[u8],
    row: usize,
    cols: usize,
    keep: usize,
    m: usize,
    x: &[f32],
    n: usize,
    c: usize,
    b: f32,
) -> [f32; T] {
    let mut acc = [b; T];
    let per_row = cols / m * keep;
    for q in row * per_row..(row + 1) * per_row {
        let g = (q - row * per_row) / keep;
        let k = g * m + offs[q] as usize;
        let v = vals[q];
        let base = k * n + c;
        let xr: &[f32; T] = x[base..base + T].try_into().expect("tile in bounds");
        for t in 0..T {
            acc[t] = fma::<FMA>(v, xr[t], acc[t]);
        }
    }
    acc
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn nm_body<const FMA: bool>(
    vals: &[f32],
    offs: &[u8],
    cols: usize,
    keep: usize,
    m: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    for row in r0..r1 {
        let b = ep.bias(row);
        let yr = &mut y[(row - r0) * n..(row - r0 + 1) * n];
        let mut c = 0;
        macro_rules! run {
            ($T:literal) => {
                while c + $T <= n {
                    let acc = nm_tile::<$T, FMA>(vals, offs, row, cols, keep, m, x, n, c, b);
                    for t in 0..$T {
                        yr[c + t] = ep.act.apply(acc[t]);
                    }
                    c += $T;
                }
            };
        }
        run!(64);
        run!(16);
        run!(4);
        run!(1);
    }
}

dispatch!(
    #[allow(clippy::too_many_arguments)]
    fn nm_kernel [] [] (vals: &[f32], offs: &[u8], cols: usize, keep: usize, m: usize, x: &[f32], n: usize, y: &mut [f32], r0: usize, r1: usize, ep: &Epilogue) => nm_body
);
