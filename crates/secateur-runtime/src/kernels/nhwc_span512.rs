//! The AVX-512 register tiles of the NHWC implicit GEMM and of the Winograd products: a block
//! of output pixels (or Winograd tiles) runs through all of one group's panels inside one
//! call, each tile up to four 16-channel panels × 6–12 pixels (24 accumulators), chunk by
//! chunk of the reduction (partial sums wait in the output), the accumulators starting from
//! the bias, a clamp (ReLU, ReLU6, Clip) and the residual addition applied in registers before
//! a masked store after the last chunk; the first tiles of a panel set fetch the next set's
//! weights ahead. Building a tile description and calling an out-of-line epilogue per 6 × 32 tile
//! had cost as much as the products of a short reduction (16 → 64 channels at 55 × 55 ran at
//! 40–65 GFLOP/s against 140–180 for a bare loop) and 10–20 % on long ones; here only the
//! pixels' input offsets are computed per tile. Other element-wise functions run out of line
//! on the accumulators.

#![cfg(target_arch = "x86_64")]

use super::epilogue::Tail;
use super::nhwc_conv::NR;
use super::vmath;
use secateur_graph::Pointwise;
use std::arch::x86_64::*;

/// Output pixels per block (a multiple of every tile's rows): their input offsets are
/// computed once and reused by every panel set (with a reduction of at most 160 values, a
/// block's input is at most 30 KiB).
pub(super) const BLOCK_PIXELS: usize = 48;

/// Pixels a last block may hold beyond [`BLOCK_PIXELS`]: a remainder this short joins the
/// block before it instead of streaming every panel's weights again for a few pixels (a
/// layer of 7 × 7 = 49 pixels had a second block of one).
pub(super) const BLOCK_SLACK: usize = 12;

/// The pixels of the next block when `rest` remain.
pub(super) fn block_len(rest: usize) -> usize {
    if rest <= BLOCK_PIXELS + BLOCK_SLACK {
        rest
    } else {
        BLOCK_PIXELS
    }
}

/// One block of output pixels of one layer call, through `panels` consecutive panels.
pub(super) struct Span<'a> {
    /// The (padded) input; each pixel's first tap is `base + offsets[i]`.
    pub base: *const f32,
    pub offsets: &'a [usize],
    /// (offset, length) of the input pieces one pixel reads, in packed order.
    pub pieces: &'a [(usize, usize)],
    /// The first panel's packed weights (`[16]` per reduction value, in the pieces' order);
    /// the next panels' follow `w_panel` values apart.
    pub weights: *const f32,
    pub w_panel: usize,
    /// The first panel's padded bias; the next panels' follow 16 apart.
    pub bias: *const f32,
    pub panels: usize,
    /// Real channels of the last panel (16 unless the layer's channels are not a multiple).
    pub last_valid: usize,
    /// The first chunk of the reduction starts from the bias, later ones from the partial sums
    /// in `y`; only the last applies the tail.
    pub first: bool,
    pub last: bool,
    /// The output of the block's first pixel at the first panel's first channel, and the
    /// residual at the same place; pixels are `y_pix` apart, panels `y_panel`.
    pub y: *mut f32,
    pub res: Option<*const f32>,
    pub y_pix: usize,
    pub y_panel: usize,
    pub tail: &'a Tail,
}

/// What the epilogue does with one element-wise function.
#[derive(Clone, Copy)]
pub(super) enum Step {
    Nothing,
    Clamp(f32, f32),
    Other(Pointwise),
}

impl Step {
    pub(super) fn of(f: Option<Pointwise>) -> Step {
        match f {
            None => Step::Nothing,
            Some(f) => f
                .clamp_bounds()
                .map_or(Step::Other(f), |(lo, hi)| Step::Clamp(lo, hi)),
        }
    }
}

/// Runs the span: every panel set (four panels, then what is left) over every pixel tile.
///
/// # Safety
/// AVX-512F must be available; `base + offsets[i] + piece` reaches the input of every piece,
/// `weights` and `bias` hold `panels` panels, and `y` (and `res`) hold `offsets.len()` pixels
/// `y_pix` apart, each with the panels' channels.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn run(s: &Span) {
    unsafe {
        let mut p = 0;
        while p < s.panels {
            // tiles of 24 accumulators where the panels allow (12 for a single panel, whose
            // 12 broadcasts per weight vector already fill the load ports)
            p += match s.panels - p {
                1 => panel_set::<12, 6, 1>(s, p),
                2 => panel_set::<12, 6, 2>(s, p),
                3 => panel_set::<8, 4, 3>(s, p),
                _ => panel_set::<6, 3, 4>(s, p),
            };
        }
    }
}

/// Panels `first .. first + NP` over the block's pixels, `M` at a time (a last tile of at
/// most `H` pixels with `H` rows: computing rows past the end is wasted work, and layers of
/// 7 × 7 pixels or Winograd blocks of 4–16 tiles have few); returns `NP`.
#[inline(always)]
unsafe fn panel_set<const M: usize, const H: usize, const NP: usize>(
    s: &Span,
    first: usize,
) -> usize {
    unsafe {
        let mut q = 0;
        let mut index = 0;
        while q < s.offsets.len() {
            let m = M.min(s.offsets.len() - q);
            let ahead = ahead(s, first + NP, index);
            if m <= H {
                tile::<H, NP>(s, first, q, m, ahead);
            } else {
                tile::<M, NP>(s, first, q, m, ahead);
            }
            q += m;
            index += 1;
        }
        NP
    }
}

/// The weights the `index`-th tile of a panel set fetches ahead, one cache line per reduction
/// step: the first tiles each take one panel of the next set (or, after the last set, of the
/// first set's next chunk). Layers whose weights are not in the caches had run 10–15 % slower:
/// a chunk of a panel spans 8 KiB, two or three pages, and the hardware's stream prefetchers
/// stop at every page. Other tiles fetch their own weights again, which costs nothing.
#[inline(always)]
fn ahead(s: &Span, next: usize, index: usize) -> *const f32 {
    let own = s.weights;
    if next < s.panels {
        if index < (s.panels - next).min(4) {
            return s.weights.wrapping_add((next + index) * s.w_panel);
        }
    } else if !s.last && index < s.panels.min(4) {
        let chunk: usize = s.pieces.iter().map(|p| p.1).sum();
        return s.weights.wrapping_add(index * s.w_panel + chunk * NR);
    }
    own
}

/// Pixels `q .. q + m` (`m ≤ M`) of the block through panels `first .. first + NP`.
#[inline(always)]
unsafe fn tile<const M: usize, const NP: usize>(
    s: &Span,
    first: usize,
    q: usize,
    m: usize,
    ahead: *const f32,
) {
    unsafe {
        let mut a = [s.base; M];
        for (i, p) in a.iter_mut().enumerate() {
            // pixels past the end repeat the last one; their results are not stored
            *p = s.base.add(s.offsets[q + i.min(m - 1)]);
        }
        // the first chunk starts from the bias (one addition fewer per accumulator)
        let mut acc = [[_mm512_setzero_ps(); NP]; M];
        if s.first {
            for j in 0..NP {
                let b = _mm512_loadu_ps(s.bias.add((first + j) * NR));
                for row in acc.iter_mut() {
                    row[j] = b;
                }
            }
        } else {
            load_partial(s, first, q, m, &mut acc);
        }
        let weights = s.weights.add(first * s.w_panel);
        products::<M, NP>(&a, s.pieces, weights, s.w_panel, ahead, &mut acc);
        if s.last {
            store::<M, NP>(s, first, q, m, acc);
        } else {
            store_partial(s, first, q, m, &acc);
        }
    }
}

/// The products of one tile: `M` pixels × `NP` panels over the whole reduction.
#[inline(always)]
unsafe fn products<const M: usize, const NP: usize>(
    a: &[*const f32; M],
    pieces: &[(usize, usize)],
    weights: *const f32,
    w_panel: usize,
    ahead: *const f32,
    acc: &mut [[__m512; NP]; M],
) {
    unsafe {
        let mut bp = weights;
        let mut pf = ahead;
        for &(off, len) in pieces {
            for kk in off..off + len {
                // a hint: it never faults, whatever the address
                _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                pf = pf.wrapping_add(NR);
                let mut w = [_mm512_setzero_ps(); NP];
                for (j, v) in w.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(bp.add(j * w_panel));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a[i].add(kk));
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = _mm512_fmadd_ps(x, w[j], *v);
                    }
                }
                bp = bp.add(NR);
            }
        }
    }
}

/// The lanes of each panel of the set that are real channels.
#[inline(always)]
fn masks<const NP: usize>(s: &Span, first: usize) -> [u16; NP] {
    let mut masks = [0xffffu16; NP];
    if first + NP == s.panels {
        masks[NP - 1] = ((1u32 << s.last_valid) - 1) as u16;
    }
    masks
}

/// The partial sums an earlier chunk stored for the first `m` pixels of a tile.
#[inline(always)]
unsafe fn load_partial<const M: usize, const NP: usize>(
    s: &Span,
    first: usize,
    q: usize,
    m: usize,
    acc: &mut [[__m512; NP]; M],
) {
    let masks = masks::<NP>(s, first);
    for (i, row) in acc.iter_mut().enumerate().take(m) {
        for (j, v) in row.iter_mut().enumerate() {
            let at = (q + i) * s.y_pix + (first + j) * s.y_panel;
            // SAFETY: the span's contract: the pixel's outputs lie in `y`.
            *v = unsafe { _mm512_maskz_loadu_ps(masks[j], s.y.add(at)) };
        }
    }
}

/// The raw partial sums of the first `m` pixels of a tile, for the next chunk.
#[inline(always)]
unsafe fn store_partial<const M: usize, const NP: usize>(
    s: &Span,
    first: usize,
    q: usize,
    m: usize,
    acc: &[[__m512; NP]; M],
) {
    let masks = masks::<NP>(s, first);
    for (i, row) in acc.iter().enumerate().take(m) {
        for (j, v) in row.iter().enumerate() {
            let at = (q + i) * s.y_pix + (first + j) * s.y_panel;
            // SAFETY: as `load_partial`.
            unsafe { _mm512_mask_storeu_ps(s.y.add(at), masks[j], *v) };
        }
    }
}

/// Bias, tail and the masked store of the first `m` pixels of a tile.
#[inline(always)]
unsafe fn store<const M: usize, const NP: usize>(
    s: &Span,
    first: usize,
    q: usize,
    m: usize,
    mut acc: [[__m512; NP]; M],
) {
    unsafe {
        let masks = masks::<NP>(s, first);
        apply(Step::of(s.tail.act), &mut acc);
        let at = |i: usize, j: usize| (q + i) * s.y_pix + (first + j) * s.y_panel;
        if let Some(r) = s.res.filter(|_| s.tail.residual) {
            for (i, row) in acc.iter_mut().enumerate().take(m) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_add_ps(*v, _mm512_maskz_loadu_ps(masks[j], r.add(at(i, j))));
                }
            }
        }
        apply(Step::of(s.tail.post), &mut acc);
        for (i, row) in acc.iter().enumerate().take(m) {
            for (j, v) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(s.y.add(at(i, j)), masks[j], *v);
            }
        }
    }
}

/// One element-wise function over a tile's accumulators: a clamp in registers, anything
/// else out of line (inlined, the long functions made the compiler spill the product loop's
/// accumulators).
#[inline(always)]
pub(super) unsafe fn apply<const M: usize, const NP: usize>(
    step: Step,
    acc: &mut [[__m512; NP]; M],
) {
    unsafe {
        match step {
            Step::Nothing => {}
            Step::Clamp(lo, hi) => {
                let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
                for row in acc.iter_mut() {
                    for v in row.iter_mut() {
                        *v = _mm512_min_ps(_mm512_max_ps(*v, lo), hi);
                    }
                }
            }
            Step::Other(f) => {
                // through a copy: the accumulators' own address never escapes, so the common
                // steps keep them in registers (spilling all 24 and reloading each before its
                // store had cost a fifth of a tile of 16 reduction steps)
                let mut spilled = *acc;
                apply_out_of_line(f, &mut spilled);
                *acc = spilled;
            }
        }
    }
}

#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn apply_out_of_line<const M: usize, const NP: usize>(
    f: Pointwise,
    acc: &mut [[__m512; NP]; M],
) {
    unsafe {
        for row in acc.iter_mut() {
            vmath::apply_all(f, row);
        }
    }
}
