//! Block-sparse matrices: non-zero `R×C` blocks (4×1, 1×4, 8×1, or any user shape) stored
//! per block row with one index per block, and their product with a dense activation. An R×1
//! block reuses one row of X for R output rows (R× fewer loads per multiply than CSR); a 1×C
//! block shares one index among C weights. Like CSR, blocks are grouped by column chunk so a
//! chunk of X stays in L1 while every block row streams through it. Ragged edges (rows or
//! columns not multiples of the block) are padded with zeros in storage and never written or
//! read beyond the matrix.

use super::csr::{CHUNK_COLS, Index, Indices};
use super::epilogue::{Epilogue, fma};
use super::isa::{Isa, dispatch};

/// A block-sparse matrix (built only by [`BlockSparse::from_dense`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockSparse {
    pub rows: usize,
    pub cols: usize,
    pub r: usize,
    pub c: usize,
    pub(crate) chunks: usize,
    /// `ptr[ch·(brows+1) + br]`: first block of block row `br` in column chunk `ch`.
    pub(crate) ptr: Vec<u32>,
    /// Block column of each block (in units of `c`).
    pub(crate) bcol: Indices,
    /// `r·c` values per block, row-major within the block.
    pub(crate) values: Vec<f32>,
}

impl BlockSparse {
    /// From a dense row-major matrix: every block with a non-zero is stored (zeros inside a
    /// stored block are kept as fill-in).
    pub fn from_dense(rows: usize, cols: usize, w: &[f32], r: usize, c: usize) -> Self {
        Self::for_columns(rows, cols, w, r, c, 64)
    }

    /// Like [`BlockSparse::from_dense`], laid out for products with `n` columns.
    pub fn for_columns(rows: usize, cols: usize, w: &[f32], r: usize, c: usize, n: usize) -> Self {
        let brows = rows.div_ceil(r);
        let bcols = cols.div_ceil(c);
        // R×1 blocks already reuse each row of X for R outputs and run at the FMA limit; chunking
        // only pays for blocks with one row
        let chunk_b = if cols > 2 * CHUNK_COLS && n >= 16 && r < 4 {
            (CHUNK_COLS / c).max(1)
        } else {
            bcols.max(1)
        };
        let chunks = bcols.div_ceil(chunk_b).max(1);
        let at = |i: usize, j: usize| {
            if i < rows && j < cols {
                w[i * cols + j]
            } else {
                0.0
            }
        };
        let mut ptr = Vec::with_capacity(chunks * (brows + 1));
        let mut bcol = Vec::new();
        let mut values = Vec::new();
        for ch in 0..chunks {
            ptr.push(bcol.len() as u32);
            for br in 0..brows {
                for bc in ch * chunk_b..((ch + 1) * chunk_b).min(bcols) {
                    let nonzero = (0..r).any(|i| (0..c).any(|j| at(br * r + i, bc * c + j) != 0.0));
                    if nonzero {
                        bcol.push(bc);
                        for i in 0..r {
                            for j in 0..c {
                                values.push(at(br * r + i, bc * c + j));
                            }
                        }
                    }
                }
                ptr.push(bcol.len() as u32);
            }
        }
        BlockSparse {
            rows,
            cols,
            r,
            c,
            chunks,
            ptr,
            bcol: Indices::from_usize(bcol, bcols),
            values,
        }
    }

    pub fn blocks(&self) -> usize {
        self.values.len() / (self.r * self.c).max(1)
    }

    /// Fraction of stored values that are zero fill-in.
    pub fn fill_in(&self) -> f64 {
        let z = self.values.iter().filter(|v| **v == 0.0).count();
        z as f64 / self.values.len().max(1) as f64
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.bcol.bytes() + self.ptr.len() * 4
    }

    /// `y = epilogue(W · x)` for block rows covering rows `r0..r1` (`r0` a multiple of `r`).
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
            x.len() >= self.cols * n
                && y.len() >= (r1 - r0) * n
                && r1 <= self.rows
                && r0.is_multiple_of(self.r),
            "block matmul: buffers do not match {}x{}x{n}",
            self.rows,
            self.cols
        );
        let shape = Shape {
            rows: self.rows,
            cols: self.cols,
            brows: self.rows.div_ceil(self.r),
            chunks: self.chunks,
        };
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512
            && std::is_x86_feature_detected!("avx512f")
            && self.c == 1
            && (self.r == 4 || self.r == 8)
        {
            // SAFETY: AVX-512F detected; block columns are < cols by construction and the
            // buffer sizes were checked above.
            unsafe {
                match (&self.bcol, self.r) {
                    (Indices::U16(i), 4) => super::avx512::blocks_rx1::<_, 4, 4>(
                        shape,
                        &self.ptr,
                        i,
                        &self.values,
                        x,
                        n,
                        y,
                        r0,
                        r1,
                        ep,
                    ),
                    (Indices::U16(i), _) => super::avx512::blocks_rx1::<_, 8, 2>(
                        shape,
                        &self.ptr,
                        i,
                        &self.values,
                        x,
                        n,
                        y,
                        r0,
                        r1,
                        ep,
                    ),
                    (Indices::U32(i), 4) => super::avx512::blocks_rx1::<_, 4, 4>(
                        shape,
                        &self.ptr,
                        i,
                        &self.values,
                        x,
                        n,
                        y,
                        r0,
                        r1,
                        ep,
                    ),
                    (Indices::U32(i), _) => super::avx512::blocks_rx1::<_, 8, 2>(
                        shape,
                        &self.ptr,
                        i,
                        &self.values,
                        x,
                        n,
                        y,
                        r0,
                        r1,
                        ep,
                    ),
                }
            }
            return;
        }
        macro_rules! go {
            ($R:literal, $C:literal, $idx:expr) => {
                block_kernel::<_, $R, $C>(
                    isa,
                    shape,
                    &self.ptr,
                    $idx,
                    &self.values,
                    x,
                    n,
                    y,
                    r0,
                    r1,
                    ep,
                )
            };
        }
        match (&self.bcol, self.r, self.c) {
            (Indices::U16(i), 4, 1) => go!(4, 1, i),
            (Indices::U16(i), 1, 4) => go!(1, 4, i),
            (Indices::U16(i), 8, 1) => go!(8, 1, i),
            (Indices::U32(i), 4, 1) => go!(4, 1, i),
            (Indices::U32(i), 1, 4) => go!(1, 4, i),
            (Indices::U32(i), 8, 1) => go!(8, 1, i),
            _ => generic_blocks(self, shape, x, n, y, r0, r1, ep),
        }
    }
}

/// Dimensions a block kernel needs.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub rows: usize,
    pub cols: usize,
    pub brows: usize,
    pub chunks: usize,
}

#[inline(always)]
fn block_tile<I: Index, const R: usize, const C: usize, const T: usize, const FMA: bool>(
    bidx: &[I],
    vals: &[f32],
    s: usize,
    e: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    c0: usize,
    acc: &mut [[f32; T]; R],
) {
    for b in s..e {
        let col0 = bidx[b].get() * C;
        let w = &vals[b * R * C..(b + 1) * R * C];
        let jmax = C.min(cols - col0);
        for j in 0..jmax {
            let base = (col0 + j) * n + c0;
            let xr: &[f32; T] = x[base..base + T].try_into().expect("tile in bounds");
            for i in 0..R {
                let v = w[i * C + j];
                for t in 0..T {
                    acc[i][t] = fma::<FMA>(v, xr[t], acc[i][t]);
                }
            }
        }
    }
}

#[inline(always)]
fn block_body<I: Index, const R: usize, const C: usize, const FMA: bool>(
    shape: Shape,
    ptr: &[u32],
    bidx: &[I],
    vals: &[f32],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    let Shape {
        rows,
        cols,
        brows,
        chunks,
    } = shape;
    let mut c = 0;
    macro_rules! run_tile {
        ($T:literal) => {
            while c + $T <= n {
                for ch in 0..chunks {
                    let (first, last) = (ch == 0, ch + 1 == chunks);
                    for br in r0 / R..r1.div_ceil(R) {
                        let (s, e) = (
                            ptr[ch * (brows + 1) + br] as usize,
                            ptr[ch * (brows + 1) + br + 1] as usize,
                        );
                        let mut acc = [[0.0f32; $T]; R];
                        for i in 0..R {
                            let row = br * R + i;
                            if row < r1.min(rows) {
                                acc[i] = if first {
                                    [ep.bias(row); $T]
                                } else {
                                    y[(row - r0) * n + c..(row - r0) * n + c + $T]
                                        .try_into()
                                        .expect("tile")
                                };
                            }
                        }
                        block_tile::<I, R, C, $T, FMA>(bidx, vals, s, e, cols, x, n, c, &mut acc);
                        for i in 0..R {
                            let row = br * R + i;
                            if row >= r1.min(rows) {
                                break;
                            }
                            let yr = &mut y[(row - r0) * n + c..(row - r0) * n + c + $T];
                            for t in 0..$T {
                                yr[t] = if last {
                                    ep.act.apply(acc[i][t])
                                } else {
                                    acc[i][t]
                                };
                            }
                        }
                    }
                }
                c += $T;
            }
        };
    }
    if R >= 8 {
        run_tile!(32);
    } else {
        run_tile!(64);
    }
    run_tile!(16);
    run_tile!(4);
    run_tile!(1);
}

dispatch!(
    fn block_kernel [I: Index, const R: usize, const C: usize] [I, R, C,] (shape: Shape, ptr: &[u32], bidx: &[I], vals: &[f32], x: &[f32], n: usize, y: &mut [f32], r0: usize, r1: usize, ep: &Epilogue) => block_body
);

/// Any block shape, scalar code (user-defined shapes other than the specialised ones).
fn generic_blocks(
    m: &BlockSparse,
    shape: Shape,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    let idx: Vec<usize> = match &m.bcol {
        Indices::U16(v) => v.iter().map(|&x| x as usize).collect(),
        Indices::U32(v) => v.iter().map(|&x| x as usize).collect(),
    };
    for row in r0..r1 {
        let b = ep.bias(row);
        y[(row - r0) * n..(row - r0 + 1) * n].fill(b);
    }
    let (r, c) = (m.r, m.c);
    for ch in 0..shape.chunks {
        for br in r0 / r..r1.div_ceil(r) {
            let base = ch * (shape.brows + 1) + br;
            for b in m.ptr[base] as usize..m.ptr[base + 1] as usize {
                for i in 0..r {
                    let row = br * r + i;
                    if row < r0 || row >= r1 || row >= m.rows {
                        continue;
                    }
                    for j in 0..c {
                        let col = idx[b] * c + j;
                        if col >= m.cols {
                            continue;
                        }
                        let v = m.values[b * r * c + i * c + j];
                        let yr = &mut y[(row - r0) * n..(row - r0 + 1) * n];
                        for (t, yv) in yr.iter_mut().enumerate() {
                            *yv += v * x[col * n + t];
                        }
                    }
                }
            }
        }
    }
    for row in r0..r1 {
        for v in &mut y[(row - r0) * n..(row - r0 + 1) * n] {
            *v = ep.act.apply(*v);
        }
    }
}
