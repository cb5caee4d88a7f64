//! Compressed sparse rows with compact column indices (u16 when the reduction dimension fits,
//! u32 otherwise), and the sparse-weight × dense-activation product `Y[M×N] = W[M×K]·X[K×N]`.
//! Each row keeps a tile of N in registers (64 columns with AVX-512) and streams its non-zeros:
//! one broadcast weight times one contiguous row of X per non-zero, so the work is
//! proportional to the non-zeros and memory access stays sequential in X.

use super::epilogue::{Epilogue, fma};
use super::isa::dispatch;
use serde::{Deserialize, Serialize};

/// A column index type.
pub trait Index: Copy + Send + Sync + 'static {
    fn get(self) -> usize;
}
impl Index for u16 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }
}
impl Index for u32 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }
}

/// Column indices in the narrowest type that holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Indices {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Indices {
    pub fn from_usize(v: Vec<usize>, max: usize) -> Self {
        if max <= u16::MAX as usize + 1 {
            Indices::U16(v.into_iter().map(|x| x as u16).collect())
        } else {
            Indices::U32(v.into_iter().map(|x| x as u32).collect())
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            Indices::U16(v) => v.len() * 2,
            Indices::U32(v) => v.len() * 4,
        }
    }
}

/// Columns per chunk: a chunk of X rows times a 64-column tile (32 KiB) stays in L1 while
/// every row's non-zeros in that chunk stream through it.
pub const CHUNK_COLS: usize = 128;

/// A sparse matrix in CSR form (built only by [`Csr::from_dense`], so its indices are valid).
/// Non-zeros are ordered by column chunk, then row, then column; `ptr[ch·(rows+1) + r]` is the
/// start of row `r` in chunk `ch`. With one chunk this is plain CSR.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    pub(crate) chunks: usize,
    pub(crate) ptr: Vec<u32>,
    pub idx: Indices,
    pub(crate) values: Vec<f32>,
}

impl Csr {
    /// From a dense row-major matrix, keeping the non-zeros.
    pub fn from_dense(rows: usize, cols: usize, w: &[f32]) -> Self {
        Self::for_columns(rows, cols, w, 64)
    }

    /// Like [`Csr::from_dense`], laid out for products with `n` columns: column chunks (for L1
    /// reuse of X) only pay off when a row tile is wide, so matrix-vector layouts stay plain.
    pub fn for_columns(rows: usize, cols: usize, w: &[f32], n: usize) -> Self {
        let chunk = if cols > 2 * CHUNK_COLS && n >= 16 {
            CHUNK_COLS
        } else {
            cols.max(1)
        };
        let chunks = cols.div_ceil(chunk).max(1);
        let mut ptr = Vec::with_capacity(chunks * (rows + 1));
        let mut idx = Vec::new();
        let mut values = Vec::new();
        for ch in 0..chunks {
            let (c0, c1) = (ch * chunk, ((ch + 1) * chunk).min(cols));
            ptr.push(values.len() as u32);
            for r in 0..rows {
                for c in c0..c1 {
                    let v = w[r * cols + c];
                    if v != 0.0 {
                        idx.push(c);
                        values.push(v);
                    }
                }
                ptr.push(values.len() as u32);
            }
        }
        Csr {
            rows,
            cols,
            chunks,
            ptr,
            idx: Indices::from_usize(idx, cols),
            values,
        }
    }

    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Storage in bytes (values, indices, row pointers).
    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.idx.bytes() + self.ptr.len() * 4
    }

    /// `y[r0..r1] = epilogue(W[r0..r1] · x)`; `y` holds rows `r0..r1` only.
    pub fn matmul_rows(
        &self,
        isa: super::Isa,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        r0: usize,
        r1: usize,
        ep: &Epilogue,
    ) {
        assert!(
            x.len() >= self.cols * n && y.len() >= (r1 - r0) * n && r1 <= self.rows,
            "csr matmul: buffers do not match {}x{}x{n}",
            self.rows,
            self.cols
        );
        let shape = (self.rows, self.chunks);
        #[cfg(target_arch = "x86_64")]
        if isa == super::Isa::Avx512 && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected; indices are < cols by construction (from_dense) and
            // the buffer sizes were checked above.
            unsafe {
                match &self.idx {
                    Indices::U16(i) => {
                        super::avx512::csr(shape, &self.ptr, i, &self.values, x, n, y, r0, r1, ep)
                    }
                    Indices::U32(i) => {
                        super::avx512::csr(shape, &self.ptr, i, &self.values, x, n, y, r0, r1, ep)
                    }
                }
            }
            return;
        }
        match &self.idx {
            Indices::U16(i) => {
                csr_kernel(isa, shape, &self.ptr, i, &self.values, x, n, y, r0, r1, ep)
            }
            Indices::U32(i) => {
                csr_kernel(isa, shape, &self.ptr, i, &self.values, x, n, y, r0, r1, ep)
            }
        }
    }
}

/// Accumulates one tile of `T` columns starting at `c` for the non-zeros `s..e`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<I: Index, const T: usize, const FMA: bool>(
    idx: &[I],
    vals: &[f32],
    s: usize,
    e: usize,
    x: &[f32],
    n: usize,
    c: usize,
    mut acc: [f32; T],
) -> [f32; T] {
    for j in s..e {
        let v = vals[j];
        let base = idx[j].get() * n + c;
        let xr: &[f32; T] = x[base..base + T].try_into().expect("tile in bounds");
        for t in 0..T {
            acc[t] = fma::<FMA>(v, xr[t], acc[t]);
        }
    }
    acc
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn csr_body<I: Index, const FMA: bool>(
    shape: (usize, usize),
    ptr: &[u32],
    idx: &[I],
    vals: &[f32],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    let (rows, chunks) = shape;
    let range = |ch: usize, m: usize| {
        (
            ptr[ch * (rows + 1) + m] as usize,
            ptr[ch * (rows + 1) + m + 1] as usize,
        )
    };
    let mut c = 0;
    macro_rules! run {
        ($T:literal) => {
            while c + $T <= n {
                for ch in 0..chunks {
                    let last = ch + 1 == chunks;
                    for m in r0..r1 {
                        let (s, e) = range(ch, m);
                        let yr = &mut y[(m - r0) * n + c..(m - r0) * n + c + $T];
                        let init: [f32; $T] = if ch == 0 {
                            [ep.bias(m); $T]
                        } else {
                            (&*yr).try_into().expect("tile")
                        };
                        let acc = tile::<I, $T, FMA>(idx, vals, s, e, x, n, c, init);
                        for t in 0..$T {
                            yr[t] = if last { ep.act.apply(acc[t]) } else { acc[t] };
                        }
                    }
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

dispatch!(
    #[allow(clippy::too_many_arguments)]
    fn csr_kernel [I: Index] [I,] (shape: (usize, usize), ptr: &[u32], idx: &[I], vals: &[f32], x: &[f32], n: usize, y: &mut [f32], r0: usize, r1: usize, ep: &Epilogue) => csr_body
);
