//! Dense products through the `gemm` crate: `Y = W·X` for convolutions (weights times the
//! im2col matrix) and `Y = X·Wᵀ` for fully connected layers without transposing anything,
//! followed by the bias/activation epilogue; and fully connected layers at batch 1 on AVX-512
//! as a vector-matrix product over weights packed in column blocks (one sequential stream).

use super::epilogue::Epilogue;
use crate::team::parallel_for;
use gemm::{Parallelism, gemm};

/// `dst = lhs · rhs` on this thread through the gemm crate: sizes `(rows, cols, k)`, the
/// destination with its row stride (columns adjacent), each operand with its column and row
/// strides.
///
/// # Safety
/// Every element the sizes and strides address lies inside its operand's allocation, and
/// `dst` aliases neither operand.
unsafe fn gemm_block(
    (rows, cols, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm(
            rows,
            cols,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Rows or columns of a product below which it is not split over threads.
const SPLIT_MIN: usize = 32;

/// `y[M×N] = epilogue(w[M×K] · x[K×N])`, all row-major; with `threads > 1` the rows (or,
/// when there are few, the columns) are split over the running team (`crate::team`), each
/// piece one single-threaded product.
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
    let (wp, xp, yp) = (
        w.as_ptr() as usize,
        x.as_ptr() as usize,
        y.as_mut_ptr() as usize,
    );
    for_pieces(threads, m, n, |rows, cols| {
        let (w, x, y) = (wp as *const f32, xp as *const f32, yp as *mut f32);
        // SAFETY: the slices hold at least the m×k, k×n and m×n elements the strides address
        // (checked above), `y` does not alias the inputs (distinct borrows), and each piece
        // writes only its own block of `y`.
        unsafe {
            gemm_block(
                (rows.len(), cols.len(), k),
                (y.add(rows.start * n + cols.start), n as isize),
                (w.add(rows.start * k), 1, k as isize),
                (x.add(cols.start), 1, n as isize),
            );
        }
    });
    ep.apply_rows(&mut y[..m * n], n, 0);
}

/// Calls `piece(rows, cols)` for blocks covering a `rows × cols` product, split along the
/// longer side into up to `threads` pieces on the running team (whole, below `2·SPLIT_MIN`).
fn for_pieces(
    threads: usize,
    rows: usize,
    cols: usize,
    piece: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
) {
    let len = rows.max(cols);
    let pieces = if len >= 2 * SPLIT_MIN {
        threads.clamp(1, len / SPLIT_MIN)
    } else {
        1
    };
    let per = len.div_ceil(pieces).next_multiple_of(16);
    parallel_for(pieces, len.div_ceil(per), |i| {
        let part = i * per..((i + 1) * per).min(len);
        if rows >= cols {
            piece(part, 0..cols)
        } else {
            piece(0..rows, part)
        }
    });
}

/// Independent products `y[l] = a[l]·b[l]` of row-major `M×K` and `K×N` matrices read at the
/// given offsets (broadcast operands repeat an offset), written consecutively to `y`; the
/// matrices are split over the running team (`crate::team`) when `threads > 1`.
#[allow(clippy::too_many_arguments)]
pub fn batch_matmul(
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
    (m, k, n): (usize, usize, usize),
    a_offsets: &[usize],
    b_offsets: &[usize],
    threads: usize,
) {
    let count = a_offsets.len();
    assert!(
        b_offsets.len() == count
            && y.len() >= count * m * n
            && a_offsets.iter().all(|&o| o + m * k <= a.len())
            && b_offsets.iter().all(|&o| o + k * n <= b.len()),
        "batched matmul: buffer sizes do not match {count} x {m}x{k}x{n}"
    );
    let one = |l: usize, out: &mut [f32]| {
        // SAFETY: every operand matrix lies inside its slice (checked above) and `out` is the
        // m×n chunk of `y` owned by this product.
        unsafe {
            gemm_block(
                (m, n, k),
                (out.as_mut_ptr(), n as isize),
                (a.as_ptr().add(a_offsets[l]), 1, k as isize),
                (b.as_ptr().add(b_offsets[l]), 1, n as isize),
            );
        }
    };
    crate::team::parallel_chunks(threads, &mut y[..count * m * n], (m * n).max(1), one);
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
    let (wp, xp, yp) = (
        w.as_ptr() as usize,
        x.as_ptr() as usize,
        y.as_mut_ptr() as usize,
    );
    for_pieces(threads, n, m, |rows, cols| {
        let (w, x, y) = (wp as *const f32, xp as *const f32, yp as *mut f32);
        // SAFETY: as above; Wᵀ is addressed with row stride 1 and column stride k inside `w`;
        // each piece writes only its own block of `y`.
        unsafe {
            gemm_block(
                (rows.len(), cols.len(), k),
                (y.add(rows.start * m + cols.start), m as isize),
                (x.add(rows.start * k), 1, k as isize),
                (w.add(cols.start * k), k as isize, 1),
            );
        }
    });
    if ep.bias.is_some() || ep.act != super::Activation::None {
        for row in y[..m * n].chunks_mut(m) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ep.act.apply(*v + ep.bias(j));
            }
        }
    }
}

/// The weights of a fully connected layer `y[N×M] = x[N×K] · Wᵀ + bias, activation` for a
/// fixed number of rows `N`: `Wᵀ` row-major for the GEMM, or, for one row (batch 1) on
/// AVX-512, cut into column blocks of [`VM_BLOCK`] whose `K` rows are stored one after the
/// other, so that the product streams the weights in one sequential pass. Read row by row from
/// the full `Wᵀ`, a block jumps `M` floats between rows: every row of a 1024 → 1000 classifier
/// lands on another 4 KiB page, and with the weights coming from memory (they are read once per
/// inference) the layer ran at half the bandwidth ONNX Runtime reaches.
#[derive(Clone)]
pub struct FullyConnected {
    weights: Vec<f32>,
    k: usize,
    m: usize,
    blocked: bool,
}

impl FullyConnected {
    /// From `wt = Wᵀ` (`K×M` row-major), for products of `rows` rows on `isa`.
    pub fn new(isa: super::Isa, wt: Vec<f32>, k: usize, m: usize, rows: usize) -> Self {
        assert!(
            wt.len() == k * m,
            "fully connected weights: {} values for {k}x{m}",
            wt.len()
        );
        if rows != 1 || isa != super::Isa::Avx512 {
            return FullyConnected {
                weights: wt,
                k,
                m,
                blocked: false,
            };
        }
        let mut blocks = Vec::with_capacity(k * m);
        for j0 in (0..m).step_by(VM_BLOCK) {
            let width = VM_BLOCK.min(m - j0);
            for row in wt.chunks_exact(m) {
                blocks.extend_from_slice(&row[j0..j0 + width]);
            }
        }
        FullyConnected {
            weights: blocks,
            k,
            m,
            blocked: true,
        }
    }

    /// `y[rows×M] = x[rows×K] · Wᵀ + bias, activation`.
    pub fn run(&self, x: &[f32], y: &mut [f32], rows: usize, ep: &Epilogue, threads: usize) {
        let (k, m) = (self.k, self.m);
        if self.blocked && rows == 1 {
            vector_times_blocks(&self.weights, x, y, k, m, threads);
        } else {
            assert!(!self.blocked, "weights packed for one row, {rows} given");
            matmul(x, &self.weights, y, rows, k, m, &Epilogue::NONE, threads);
        }
        if ep.bias.is_some() || ep.act != super::Activation::None {
            for row in y[..m * rows].chunks_mut(m) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = ep.act.apply(*v + ep.bias(j));
                }
            }
        }
    }
}

/// Columns of `y` per register block of [`vector_times_blocks`] (eight 16-lane accumulators).
const VM_BLOCK: usize = 128;

/// `y[M] = x[K] · Wᵀ` for one row from the column blocks of [`FullyConnected`]: each block's
/// weights are streamed once into 128 column accumulators held in registers (no packing per
/// call, as the GEMM would do). Blocks are split over the running team (`crate::team`) when
/// `threads > 1`; without AVX-512 (weights packed on another machine's plan never reach here,
/// but the check is cheap) a portable loop computes the same sums.
fn vector_times_blocks(
    blocks: &[f32],
    x: &[f32],
    y: &mut [f32],
    k: usize,
    m: usize,
    threads: usize,
) {
    assert!(
        blocks.len() >= k * m && x.len() >= k && y.len() >= m,
        "vector-matrix product: buffer sizes do not match {k}x{m}"
    );
    let block = |b: usize, out: &mut [f32]| {
        let w = &blocks[b * VM_BLOCK * k..][..k * out.len()];
        #[cfg(target_arch = "x86_64")]
        if super::Isa::detect() == super::Isa::Avx512 {
            // SAFETY: AVX-512F was detected; `w` holds the block's `k` rows of `out.len()`
            // values and `x` holds `k` values (checked above).
            unsafe { vm_block_avx512(w, &x[..k], out) };
            return;
        }
        out.fill(0.0);
        for (row, &xv) in w.chunks_exact(out.len()).zip(x) {
            for (o, &wv) in out.iter_mut().zip(row) {
                *o += xv * wv;
            }
        }
    };
    crate::team::parallel_chunks(threads, &mut y[..m], VM_BLOCK, block);
}

/// One block of [`vector_times_blocks`]: `out[j] = Σ_kk x[kk] · w[kk·width + j]` with
/// `width = out.len() ≤ VM_BLOCK`; lanes past the width are masked off.
///
/// # Safety
/// AVX-512F; `w` holds `x.len()` rows of `out.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn vm_block_avx512(w: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let width = out.len();
    let mask = |v: usize| -> __mmask16 {
        let lanes = width.saturating_sub(16 * v).min(16);
        ((1u32 << lanes) - 1) as __mmask16
    };
    let masks: [__mmask16; 8] = std::array::from_fn(mask);
    // SAFETY: masked lanes are neither read nor written (their addresses, which may lie past
    // the buffers, are formed with wrapping arithmetic); the others lie inside row `kk` of
    // `w` and inside `out`.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut row = w.as_ptr();
        for &xv in x {
            let xv = _mm512_set1_ps(xv);
            for (v, a) in acc.iter_mut().enumerate() {
                let w = _mm512_maskz_loadu_ps(masks[v], row.wrapping_add(16 * v));
                *a = _mm512_fmadd_ps(xv, w, *a);
            }
            row = row.wrapping_add(width);
        }
        for (v, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(out.as_mut_ptr().wrapping_add(16 * v), masks[v], *a);
        }
    }
}
