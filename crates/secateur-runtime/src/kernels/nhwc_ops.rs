//! Channels-last (NHWC) kernels besides the dense convolution: depthwise convolution (16
//! channels per vector, the valid taps of each output pixel computed once per row and column
//! so that no padded copy is needed; 5×5 kernels on a window of output pixels sliding along
//! the row with the weights in registers), max and average pooling, global average pooling, and the
//! layout conversions between NCHW and NHWC at the edges of a channels-last region. Bodies are
//! written once over contiguous channel runs and compiled per instruction set, so the inner
//! loops vectorise to AVX-512 where it is present.

use super::epilogue::Tail;
use super::isa::{Isa, dispatch};
use secateur_graph::{Conv, PoolGeometry};

/// Valid kernel taps `lo..hi` along one axis for output index `o`: those whose input index
/// `o·stride − pad + k·dilation` lies in `0..n`.
#[inline(always)]
fn taps(o: usize, stride: usize, pad: usize, dil: usize, k: usize, n: usize) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let mut lo = 0;
    while lo < k && start + ((lo * dil) as isize) < 0 {
        lo += 1;
    }
    let mut hi = k;
    while hi > lo && start + ((hi - 1) * dil) as isize >= n as isize {
        hi -= 1;
    }
    (lo, hi)
}

/// A depthwise convolution (one filter per channel) with its weights as `[kh·kw][c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcDepthwise {
    pub conv: Conv,
    pub c: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
    pub tail: Tail,
}

impl NhwcDepthwise {
    /// From the `[c × kh·kw]` weight rows of a depthwise convolution and one bias per channel.
    pub fn new(conv: &Conv, c: usize, w: &[f32], bias: &[f32], tail: Tail) -> Self {
        let taps = conv.kernel[0] * conv.kernel[1];
        let mut weights = vec![0.0f32; taps * c];
        for ch in 0..c {
            for t in 0..taps {
                weights[t * c + ch] = w[ch * taps + t];
            }
        }
        NhwcDepthwise {
            conv: conv.clone(),
            c,
            weights,
            bias: bias.to_vec(),
            tail,
        }
    }

    pub fn bytes(&self) -> usize {
        (self.weights.len() + self.bias.len()) * 4
    }

    /// One sample `[h][w][c]` into `[ho][wo][c]` (`residual` laid out like `y`), over the rows
    /// in parallel when `threads > 1`.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        isa: Isa,
        x: &[f32],
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        y: &mut [f32],
        residual: Option<&[f32]>,
        threads: usize,
    ) {
        let row = wo * self.c;
        let body = |oy: usize, yr: &mut [f32]| {
            let res = residual
                .filter(|_| self.tail.residual)
                .map(|r| &r[oy * row..(oy + 1) * row]);
            depthwise_row(isa, self, x, h, w, oy, wo, yr, res);
        };
        // one contiguous band of rows per thread: interleaved rows made both cores read every
        // input row (each output row reads `kh` of them) and left the next layer reading
        // rows from the other core's cache
        let band = ho.div_ceil(threads.max(1)).max(1);
        crate::team::parallel_chunks(threads, &mut y[..ho * row], band * row, |i, ys| {
            for (r, yr) in ys.chunks_mut(row).enumerate() {
                body(i * band + r, yr)
            }
        });
    }
}

/// One output row of a depthwise convolution: each pixel's valid taps (computed once per row
/// and column, so no padded copy is needed) accumulated over channel vectors.
#[allow(clippy::too_many_arguments)]
fn depthwise_row(
    isa: Isa,
    d: &NhwcDepthwise,
    x: &[f32],
    h: usize,
    w: usize,
    oy: usize,
    wo: usize,
    y: &mut [f32],
    residual: Option<&[f32]>,
) {
    let c = d.c;
    let conv = &d.conv;
    let [kh, kw] = conv.kernel;
    let (ky0, ky1) = taps(oy, conv.strides[0], conv.pads[0], conv.dilations[0], kh, h);
    let iy0 = (oy * conv.strides[0]) as isize - conv.pads[0] as isize;
    // columns whose taps are all inside the input
    let sx = conv.strides[1];
    let lo = conv.pads[1].div_ceil(sx);
    let span = (kw - 1) * conv.dilations[1] + 1;
    let hi = match (w + conv.pads[1]).checked_sub(span) {
        Some(room) => (room / sx + 1).min(wo),
        None => 0,
    };
    // 5×5 kernels at stride 1 and 2 on AVX-512 run every column on the sliding window, which
    // skips the padding (with channels in whole vectors: the rest has no border path there)
    let whole_rows = isa == Isa::Avx512
        && sx <= 2
        && kw == 5
        && conv.dilations == [1, 1]
        && c.is_multiple_of(16)
        && ky0 < ky1;
    let (lo, hi) = if whole_rows { (0, wo) } else { (lo, hi) };
    #[cfg(target_arch = "x86_64")]
    let fast = isa != Isa::Portable
        && kw <= 8
        && conv.dilations == [1, 1]
        && ky0 < ky1
        && (c >= 8 || isa == Isa::Avx512)
        && lo < hi;
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    #[cfg(target_arch = "x86_64")]
    if fast {
        // the kernel rows whose input rows exist (all but in the first and last rows)
        let rows = KernelRows {
            input: (iy0 + ky0 as isize) as usize,
            taps: ky0..ky1,
        };
        // SAFETY: AVX2 and FMA are present (any detected vector Isa implies them); the input
        // rows of `rows` and the columns of pixels lo .. hi lie inside the input.
        unsafe {
            if isa == Isa::Avx512 {
                depthwise_interior_avx512(d, x, w, rows, lo..hi, y, residual);
            } else {
                depthwise_interior_avx2(d, x, w, rows, lo..hi, y, residual);
            }
        }
    }
    let mut acc = vec![0.0f32; c];
    for ox in 0..wo {
        if fast && (lo..hi).contains(&ox) {
            continue;
        }
        let (kx0, kx1) = taps(ox, conv.strides[1], conv.pads[1], conv.dilations[1], kw, w);
        let ix0 = (ox * conv.strides[1]) as isize - conv.pads[1] as isize;
        // (input offset, weight offset) of every valid tap
        let mut offsets = [(0usize, 0usize); 49];
        let mut n = 0;
        for ky in ky0..ky1 {
            let iy = (iy0 + (ky * conv.dilations[0]) as isize) as usize;
            for kx in kx0..kx1 {
                let ix = (ix0 + (kx * conv.dilations[1]) as isize) as usize;
                if n < offsets.len() {
                    offsets[n] = ((iy * w + ix) * c, (ky * kw + kx) * c);
                }
                n += 1;
            }
        }
        let out = &mut y[ox * c..(ox + 1) * c];
        let res = residual.map(|r| &r[ox * c..(ox + 1) * c]);
        if n > offsets.len() {
            // kernels above 7×7: the portable loop
            depthwise_pixel_portable(d, x, w, (iy0, ix0), (ky0, ky1, kx0, kx1), &mut acc);
            apply_tail(&d.tail, &acc, res, out);
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if isa != Isa::Portable {
            // SAFETY: AVX2 and FMA are present (any detected vector Isa implies them), AVX-512F
            // where detected; every offset lies inside `x` and `weights` (valid taps of this
            // pixel).
            unsafe {
                if isa == Isa::Avx512 {
                    depthwise_pixel_avx512(d, x, &offsets[..n], out, res)
                } else {
                    depthwise_pixel_avx2(d, x, &offsets[..n], out, res)
                }
            };
            continue;
        }
        let _ = isa;
        acc.copy_from_slice(&d.bias);
        for &(xo, wo_) in &offsets[..n] {
            let (src, wt) = (&x[xo..xo + c], &d.weights[wo_..wo_ + c]);
            for ((a, xv), wv) in acc.iter_mut().zip(src).zip(wt) {
                *a += xv * wv;
            }
        }
        apply_tail(&d.tail, &acc, res, out);
    }
}

/// One pixel of a depthwise convolution with any number of taps, with plain loops.
fn depthwise_pixel_portable(
    d: &NhwcDepthwise,
    x: &[f32],
    w: usize,
    (iy0, ix0): (isize, isize),
    (ky0, ky1, kx0, kx1): (usize, usize, usize, usize),
    acc: &mut [f32],
) {
    let (c, conv) = (d.c, &d.conv);
    let kw = conv.kernel[1];
    acc.copy_from_slice(&d.bias);
    for ky in ky0..ky1 {
        let iy = (iy0 + (ky * conv.dilations[0]) as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (ix0 + (kx * conv.dilations[1]) as isize) as usize;
            let xo = (iy * w + ix) * c;
            let wt = &d.weights[(ky * kw + kx) * c..(ky * kw + kx + 1) * c];
            for ((a, xv), wv) in acc.iter_mut().zip(&x[xo..xo + c]).zip(wt) {
                *a += xv * wv;
            }
        }
    }
}

/// Channel vectors the interior depthwise kernel computes together (independent chains).
const VECTORS: usize = 4;

/// `V` consecutive channel vectors of one pixel of a depthwise convolution: bias plus the
/// taps of `kernel` (`x` at the pixel's top-left tap, `w` at the taps' weights, both at the
/// first channel; `c` channels per pixel, `row` values per input row).
///
/// # Safety
/// AVX2 and FMA; the taps of the `8·V` channels lie inside `x` and `w`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pixel_taps<const V: usize>(
    x: *const f32,
    w: *const f32,
    bias: *const f32,
    c: usize,
    row: usize,
    [kh, kw]: [usize; 2],
) -> [std::arch::x86_64::__m256; V] {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(bias.add(8 * j)));
        for ky in 0..kh {
            for kx in 0..kw {
                let (xt, wt) = (x.add(ky * row + kx * c), w.add((ky * kw + kx) * c));
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = _mm256_loadu_ps(xt.add(8 * j));
                    *a = _mm256_fmadd_ps(v, _mm256_loadu_ps(wt.add(8 * j)), *a);
                }
            }
        }
        acc
    }
}

/// `acc` clamped to `[lo, hi]` into `8·V` values at `y`.
///
/// # Safety
/// AVX2; `8·V` values at `y`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_clamped<const V: usize>(
    y: *mut f32,
    acc: &[std::arch::x86_64::__m256; V],
    lo: std::arch::x86_64::__m256,
    hi: std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: forwarded from the caller.
        unsafe { _mm256_storeu_ps(y.add(8 * j), _mm256_min_ps(_mm256_max_ps(*a, lo), hi)) };
    }
}

/// `P` pixels (`step` values apart in the input) × `V` consecutive 16-channel vectors of a
/// depthwise convolution: bias plus the taps, each weight vector loaded once for the `P`
/// pixels, `P·V` independent chains.
///
/// # Safety
/// AVX-512F; every tap of every pixel and `16·V` channels from `x`, `w` and `bias` inside
/// their buffers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_taps512<const P: usize, const V: usize>(
    x: *const f32,
    step: usize,
    w: *const f32,
    bias: *const f32,
    c: usize,
    row: usize,
    [kh, kw]: [usize; 2],
) -> [[std::arch::x86_64::__m512; V]; P] {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        for pixel in acc.iter_mut() {
            for (j, a) in pixel.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(bias.add(16 * j));
            }
        }
        for ky in 0..kh {
            for kx in 0..kw {
                let (xt, wt) = (x.add(ky * row + kx * c), w.add((ky * kw + kx) * c));
                for j in 0..V {
                    let wv = _mm512_loadu_ps(wt.add(16 * j));
                    for (p, pixel) in acc.iter_mut().enumerate() {
                        let v = _mm512_loadu_ps(xt.add(p * step + 16 * j));
                        pixel[j] = _mm512_fmadd_ps(v, wv, pixel[j]);
                    }
                }
            }
        }
        acc
    }
}

/// [`block_taps512`] for the last, partial vector of channels: one vector of the lanes in
/// `mask` for each of `P` pixels.
///
/// # Safety
/// AVX-512F; as [`block_taps512`], for the lanes in `mask`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn masked_taps512<const P: usize>(
    x: *const f32,
    step: usize,
    w: *const f32,
    bias: *const f32,
    (c, row): (usize, usize),
    [kh, kw]: [usize; 2],
    mask: u16,
) -> [std::arch::x86_64::__m512; P] {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller; masked lanes are not read.
    unsafe {
        let mut acc = [_mm512_maskz_loadu_ps(mask, bias); P];
        for ky in 0..kh {
            for kx in 0..kw {
                let (xt, wt) = (x.add(ky * row + kx * c), w.add((ky * kw + kx) * c));
                let wv = _mm512_maskz_loadu_ps(mask, wt);
                for (p, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_maskz_loadu_ps(mask, xt.add(p * step));
                    *a = _mm512_fmadd_ps(v, wv, *a);
                }
            }
        }
        acc
    }
}

/// `acc` clamped to the bounds of the 8-lane `lo` and `hi` into `16·V` values at `y`.
///
/// # Safety
/// AVX-512F; `16·V` values at `y`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_clamped512<const V: usize>(
    y: *mut f32,
    acc: &[std::arch::x86_64::__m512; V],
    lo: std::arch::x86_64::__m256,
    hi: std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller.
    unsafe {
        let (lo, hi) = (
            _mm512_broadcastss_ps(_mm256_castps256_ps128(lo)),
            _mm512_broadcastss_ps(_mm256_castps256_ps128(hi)),
        );
        for (j, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(y.add(16 * j), _mm512_min_ps(_mm512_max_ps(*a, lo), hi));
        }
    }
}

/// The pixels `cols` of one output row of a depthwise convolution whose taps are all inside
/// the input, pixel by pixel: all channels of a pixel before the next, so each input cache line
/// is read whole while it is in the L1 cache (sweeping a row per channel block missed the L1
/// cache on every load); [`VECTORS`] channel vectors at a time, whose chains and tails overlap;
/// weights come from the L1 cache. 3×3 kernels get a fully unrolled body. Channels past the
/// last whole vector go through plain loops.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_interior_avx2(
    d: &NhwcDepthwise,
    x: &[f32],
    w: usize,
    rows: KernelRows,
    cols: std::ops::Range<usize>,
    y: &mut [f32],
    res: Option<&[f32]>,
) {
    // SAFETY: forwarded from the caller.
    unsafe { depthwise_interior::<false>(d, x, w, rows, cols, y, res) }
}

/// [`depthwise_interior_avx2`] with 16-channel vectors first (AVX-512), then the 8-channel
/// ones for what is left.
///
/// # Safety
/// AVX-512F, AVX2 and FMA; as [`depthwise_interior_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn depthwise_interior_avx512(
    d: &NhwcDepthwise,
    x: &[f32],
    w: usize,
    rows: KernelRows,
    cols: std::ops::Range<usize>,
    y: &mut [f32],
    res: Option<&[f32]>,
) {
    // SAFETY: forwarded from the caller.
    unsafe { depthwise_interior::<true>(d, x, w, rows, cols, y, res) }
}

/// The kernel rows one output row of a depthwise convolution reads: `taps` (all of them but
/// next to the top and bottom edges), the first of them at input row `input`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Debug)]
struct KernelRows {
    input: usize,
    taps: std::ops::Range<usize>,
}

/// The body of the interior kernels; `WIDE` adds the 16-channel vectors.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn depthwise_interior<const WIDE: bool>(
    d: &NhwcDepthwise,
    x: &[f32],
    w: usize,
    rows: KernelRows,
    cols: std::ops::Range<usize>,
    y: &mut [f32],
    res: Option<&[f32]>,
) {
    let c = d.c;
    // a clamp (or nothing) is applied in registers; any other tail after the row's sums, as
    // vector passes over the row (still in the L1 cache)
    let clamp = match (d.tail.act, d.tail.post, res) {
        (None, None, None) => Some((f32::NEG_INFINITY, f32::INFINITY)),
        (Some(f), None, None) => f.clamp_bounds(),
        _ => None,
    };
    // SAFETY: forwarded from the caller (AVX2 and FMA present, taps inside `x`).
    unsafe {
        if d.conv.kernel == [3, 3] && rows.taps == (0..3) {
            interior_body::<WIDE>(d, x, w, &rows, cols.clone(), y, clamp, [3, 3]);
        } else {
            let kernel = [rows.taps.len(), d.conv.kernel[1]];
            interior_body::<WIDE>(d, x, w, &rows, cols.clone(), y, clamp, kernel);
        }
    }
    if clamp.is_none() {
        // (the channels past the last whole vector are overwritten below, with their tail)
        let span = cols.start * c..cols.end * c;
        let isa = if WIDE { Isa::Avx512 } else { Isa::Avx2 };
        d.tail
            .apply(isa, &mut y[span.clone()], res.map(|r| &r[span]));
    }
    if c.is_multiple_of(8) || WIDE {
        // (AVX-512 did the last partial vector with a mask)
        return;
    }
    let kw = d.conv.kernel[1];
    let (sx, pl) = (d.conv.strides[1], d.conv.pads[1]);
    for ox in cols {
        let ix = ox * sx - pl;
        for j in c - c % 8..c {
            let mut v = d.bias[j];
            for (r, ky) in rows.taps.clone().enumerate() {
                let iy = rows.input + r;
                for kx in 0..kw {
                    v += x[(iy * w + ix + kx) * c + j] * d.weights[(ky * kw + kx) * c + j];
                }
            }
            let mut v = d.tail.act.map_or(v, |f| f.apply(v));
            if let Some(r) = res {
                v += r[ox * c + j];
            }
            y[ox * c + j] = d.tail.post.map_or(v, |f| f.apply(v));
        }
    }
}

/// The whole channel vectors of [`depthwise_interior_avx2`] for a `kernel` the caller may
/// pass as constants (inlined, so a literal 3×3 unrolls): the rows `rows.taps` of the
/// filter, `kernel[0]` of them.
///
/// # Safety
/// AVX2 and FMA; every tap of the pixels `cols` inside `x`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn interior_body<const WIDE: bool>(
    d: &NhwcDepthwise,
    x: &[f32],
    w: usize,
    rows: &KernelRows,
    cols: std::ops::Range<usize>,
    y: &mut [f32],
    clamp: Option<(f32, f32)>,
    kernel: [usize; 2],
) {
    use std::arch::x86_64::*;
    let c = d.c;
    let (sx, pl) = (d.conv.strides[1], d.conv.pads[1]);
    let row = w * c;
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (clamp_lo, clamp_hi) = (lo, hi);
    let c8 = c - c % 8;
    let c16 = c - c % 16;
    // SAFETY: every load reads one of the pixel's taps inside `x`, every store one of `cols`
    // in `y`; channel offsets stay below `c8 <= c`.
    unsafe {
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let (xp, bp) = (x.as_ptr(), d.bias.as_ptr());
        // the weights of the first kernel row read
        let wp = d
            .weights
            .as_ptr()
            .add(rows.taps.start * d.conv.kernel[1] * c);
        let iy0 = rows.input;
        let yp = y.as_mut_ptr();
        if WIDE {
            // blocks of pixels (four, or two at stride 2, where that measured faster), all
            // their 16-channel vectors before the next block (their input lines are read while
            // in the L1 cache): each weight load serves the block, and even one vector per
            // pixel makes independent chains (one pixel's lone vector waited on the latency of
            // its nine multiply-adds)
            let taps = |ox: usize, ch: usize| xp.add(iy0 * row + (ox * sx - pl) * c + ch);
            macro_rules! block {
                ($p:literal, $v:literal, $ox:expr, $ch:expr) => {{
                    let (ox, ch) = ($ox, $ch);
                    let (wc, bc) = (wp.add(ch), bp.add(ch));
                    let acc = block_taps512::<$p, $v>(taps(ox, ch), sx * c, wc, bc, c, row, kernel);
                    for (p, a) in acc.iter().enumerate() {
                        store_clamped512(yp.add((ox + p) * c + ch), a, lo, hi);
                    }
                }};
            }
            macro_rules! pixels {
                ($p:literal, $ox:expr) => {{
                    let mut ch = 0;
                    while ch + 16 * VECTORS <= c16 {
                        block!($p, 4, $ox, ch);
                        ch += 16 * VECTORS;
                    }
                    match (c16 - ch) / 16 {
                        1 => block!($p, 1, $ox, ch),
                        2 => block!($p, 2, $ox, ch),
                        3 => block!($p, 3, $ox, ch),
                        _ => {}
                    }
                }};
            }
            // 5×5 kernels at stride 1 and 2: the sliding window (on 3×3 kernels it measured
            // level with the blocks at stride 1 and up to 1.4× slower at stride 2)
            let window = kernel[1] == 5 && sx <= 2;
            let (x_row, dims) = (xp.add(iy0 * row), (c, w, row));
            macro_rules! window {
                ($s:literal, $big:literal) => {
                    window_row512::<5, $s, $big>(
                        x_row,
                        wp,
                        bp,
                        dims,
                        kernel[0],
                        cols.clone(),
                        pl,
                        yp,
                        (lo, hi),
                    )
                };
            }
            match (window, sx) {
                (false, _) => {}
                (true, 1) => window!(1, 16),
                (true, _) => window!(2, 8),
            }
            let mut ox = if window { cols.end } else { cols.start };
            while ox + 4 <= cols.end && sx == 1 {
                pixels!(4, ox);
                ox += 4;
            }
            while ox + 2 <= cols.end {
                pixels!(2, ox);
                ox += 2;
            }
            while ox < cols.end {
                pixels!(1, ox);
                ox += 1;
            }
        }
        // the channels past the last whole vector on one masked vector where they are not
        // exactly one 8-lane vector (pruned layers of 12 or 20 channels spent most of their
        // time in the scalar loop; a lone 8-lane rest runs faster on 256-bit vectors, which
        // cost half a 512-bit one on some cores)
        let masked = WIDE && !c.is_multiple_of(8);
        if masked {
            let mask = ((1u32 << (c - c16)) - 1) as u16;
            let taps = |ox: usize| xp.add(iy0 * row + (ox * sx - pl) * c + c16);
            let (wc, bc) = (wp.add(c16), bp.add(c16));
            let (lo, hi) = (_mm512_set1_ps(clamp_lo), _mm512_set1_ps(clamp_hi));
            macro_rules! pixels {
                ($p:literal, $ox:expr) => {{
                    let ox = $ox;
                    let acc =
                        masked_taps512::<$p>(taps(ox), sx * c, wc, bc, (c, row), kernel, mask);
                    for (p, a) in acc.iter().enumerate() {
                        let v = _mm512_min_ps(_mm512_max_ps(*a, lo), hi);
                        _mm512_mask_storeu_ps(yp.add((ox + p) * c + c16), mask, v);
                    }
                }};
            }
            let mut ox = cols.start;
            while ox + 4 <= cols.end {
                pixels!(4, ox);
                ox += 4;
            }
            for ox in ox..cols.end {
                pixels!(1, ox);
            }
        }
        // (AVX-512 did the whole 16-channel vectors above, and a masked rest; with nothing
        // left the loop is skipped: its empty iterations still stepped a pointer per channel
        // block, which cost 16 channels at 112 × 112 more than their products)
        let first = match (WIDE, masked) {
            (true, true) => c,
            (true, false) => c16,
            _ => 0,
        };
        let rest = if first < c8 { cols } else { 0..0 };
        for ox in rest {
            let p0 = xp.add(iy0 * row + (ox * sx - pl) * c);
            let at = ox * c;
            let mut ch = first;
            while ch + 8 * VECTORS <= c8 {
                let acc = pixel_taps::<VECTORS>(p0.add(ch), wp.add(ch), bp.add(ch), c, row, kernel);
                store_clamped(yp.add(at + ch), &acc, lo, hi);
                ch += 8 * VECTORS;
            }
            while ch < c8 {
                let acc = pixel_taps::<1>(p0.add(ch), wp.add(ch), bp.add(ch), c, row, kernel);
                store_clamped(yp.add(at + ch), &acc, lo, hi);
                ch += 8;
            }
        }
    }
}

/// The whole 16-channel vectors of the pixels `cols` of one output row at stride 1 with a
/// kernel `KW` wide: one vector of channels at a time, a window of output pixels slides along
/// the row, each input vector is loaded once per kernel row and multiplied by the `KW` weight
/// vectors held in registers into every output of the window it reaches. Per multiply-add
/// that is ≈ 0.3–0.45 loads (16 outputs), against 1.25 for the blocks of four pixels that
/// load a weight per tap and an input per product: 5×5 layers ran at a third of the core's
/// multiply-add rate. Input columns outside the row (`0 .. w`) are skipped, so the pixels
/// next to the left and right edges can run here too.
///
/// # Safety
/// AVX-512F; `x` is the input row read by the first kernel row (row stride `row`, pixel stride
/// `c`, `w` pixels) and the `rows` kernel rows' input rows lie inside the input; `wt` is the
/// weights of that kernel row, `y` the output row; `c` is a multiple of 16 or the pixels `cols`
/// have all their taps inside the row.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn window_row512<const KW: usize, const S: usize, const BIG: usize>(
    x: *const f32,
    wt: *const f32,
    bias: *const f32,
    (c, w, row): (usize, usize, usize),
    rows: usize,
    cols: std::ops::Range<usize>,
    pl: usize,
    y: *mut f32,
    (lo, hi): (std::arch::x86_64::__m256, std::arch::x86_64::__m256),
) {
    // SAFETY: forwarded from the caller; channel offsets stay below the last whole vector,
    // and only the input columns inside the row are read.
    unsafe {
        let mut ch = 0;
        while ch + 16 <= c {
            let (wc, bc) = (wt.add(ch), bias.add(ch));
            let mut ox = cols.start;
            macro_rules! window {
                ($p:expr) => {{
                    let ix = (ox * S) as isize - pl as isize;
                    let xc = x.wrapping_offset(ix * c as isize + ch as isize);
                    let inside = ((-ix).max(0) as usize, (w as isize - ix).max(0) as usize);
                    let acc = window512::<$p, KW, S>(xc, row, c, wc, rows, bc, inside);
                    for (p, a) in acc.iter().enumerate() {
                        store_clamped512::<1>(y.add((ox + p) * c + ch), &[*a], lo, hi);
                    }
                    ox += $p;
                }};
            }
            while ox + BIG <= cols.end {
                window!(BIG);
            }
            while BIG > 8 && ox + 8 <= cols.end {
                window!(8);
            }
            while ox + 4 <= cols.end {
                window!(4);
            }
            while ox < cols.end {
                window!(1);
            }
            ch += 16;
        }
    }
}

/// `P` output pixels (stride 1) of one 16-channel vector over `rows` kernel rows of `KW`
/// taps, from the bias: input vector `i` of a kernel row feeds outputs `i − kx` for every
/// weight `kx` (the same order of additions as the pixel-by-pixel kernels); only the inputs
/// `i` in `inside` exist (the others are the zero padding).
///
/// # Safety
/// AVX-512F; `x` (row stride `row`, pixel stride `c`) holds the pixels `inside` of the
/// `P + KW − 1` in each of the `rows` rows, `w` the `rows × KW` weight vectors `c` apart.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn window512<const P: usize, const KW: usize, const S: usize>(
    x: *const f32,
    row: usize,
    c: usize,
    w: *const f32,
    rows: usize,
    bias: *const f32,
    (first, end): (usize, usize),
) -> [std::arch::x86_64::__m512; P] {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias); P];
        // written out with constant indices (loops over `i` and `kx` were not unrolled and
        // kept the accumulators on the stack); `o` wraps past `P` where `i < kx`
        macro_rules! taps {
            ($v:ident, $wk:ident, $i:literal; $($kx:literal)*) => {$(
                let d = ($i as usize).wrapping_sub($kx);
                let o = d / S;
                if $kx < KW && d % S == 0 && o < P {
                    acc[o] = _mm512_fmadd_ps($v, $wk[$kx], acc[o]);
                }
            )*};
        }
        macro_rules! inputs {
            ($xr:ident, $wk:ident; $($i:literal)*) => {$(
                if $i < S * (P - 1) + KW && $i >= first && $i < end {
                    let v = _mm512_loadu_ps($xr.wrapping_add($i * c));
                    taps!(v, $wk, $i; 0 1 2 3 4);
                }
            )*};
        }
        const { assert!(KW <= 5 && S * (P - 1) + KW <= 20) };
        for r in 0..rows {
            let (xr, wr) = (x.wrapping_add(r * row), w.add(r * KW * c));
            let mut wk = [_mm512_setzero_ps(); KW];
            for (kx, wv) in wk.iter_mut().enumerate() {
                *wv = _mm512_loadu_ps(wr.add(kx * c));
            }
            inputs!(xr, wk; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
        }
        acc
    }
}

/// One pixel over all channels: 32 channels (four vectors) at a time, then 8, then the rest,
/// with the tail applied in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_pixel_avx2(
    d: &NhwcDepthwise,
    x: &[f32],
    taps: &[(usize, usize)],
    out: &mut [f32],
    res: Option<&[f32]>,
) {
    use super::vmath::v256;
    use std::arch::x86_64::*;
    let c = d.c;
    let (xp, wp, bp) = (x.as_ptr(), d.weights.as_ptr(), d.bias.as_ptr());
    // a macro, not a closure: closures do not inherit the target features
    macro_rules! finish {
        ($v:expr, $at:expr, $out:expr) => {{
            let mut v = $v;
            if let Some(f) = d.tail.act {
                v = v256::apply(f, v);
            }
            if let Some(r) = res {
                v = _mm256_add_ps(v, _mm256_loadu_ps(r.as_ptr().add($at)));
            }
            if let Some(f) = d.tail.post {
                v = v256::apply(f, v);
            }
            _mm256_storeu_ps($out.as_mut_ptr().add($at), v);
        }};
    }
    let mut ch = 0;
    // SAFETY: all offsets plus `ch + 32 <= c` (or `+ 8`) stay inside `x` and the weights.
    unsafe {
        while ch + 32 <= c {
            let mut a0 = _mm256_loadu_ps(bp.add(ch));
            let mut a1 = _mm256_loadu_ps(bp.add(ch + 8));
            let mut a2 = _mm256_loadu_ps(bp.add(ch + 16));
            let mut a3 = _mm256_loadu_ps(bp.add(ch + 24));
            for &(xo, wo) in taps {
                let (xs, ws) = (xp.add(xo + ch), wp.add(wo + ch));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xs), _mm256_loadu_ps(ws), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xs.add(8)), _mm256_loadu_ps(ws.add(8)), a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(xs.add(16)), _mm256_loadu_ps(ws.add(16)), a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(xs.add(24)), _mm256_loadu_ps(ws.add(24)), a3);
            }
            finish!(a0, ch, out);
            finish!(a1, ch + 8, out);
            finish!(a2, ch + 16, out);
            finish!(a3, ch + 24, out);
            ch += 32;
        }
        while ch + 8 <= c {
            let mut a0 = _mm256_loadu_ps(bp.add(ch));
            for &(xo, wo) in taps {
                a0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(xp.add(xo + ch)),
                    _mm256_loadu_ps(wp.add(wo + ch)),
                    a0,
                );
            }
            finish!(a0, ch, out);
            ch += 8;
        }
    }
    for j in ch..c {
        let mut v = d.bias[j];
        for &(xo, wo) in taps {
            v += x[xo + j] * d.weights[wo + j];
        }
        let mut v = d.tail.act.map_or(v, |f| f.apply(v));
        if let Some(r) = res {
            v += r[j];
        }
        out[j] = d.tail.post.map_or(v, |f| f.apply(v));
    }
}

/// [`depthwise_pixel_avx2`] on 16-channel vectors: 64 channels at a time, then 16, the last
/// partial vector masked. Border pixels (the first and last rows and columns) take this path:
/// on 8-channel vectors they had cost 7 × 7 layers half their time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn depthwise_pixel_avx512(
    d: &NhwcDepthwise,
    x: &[f32],
    taps: &[(usize, usize)],
    out: &mut [f32],
    res: Option<&[f32]>,
) {
    use super::vmath;
    use std::arch::x86_64::*;
    let c = d.c;
    let (xp, wp, bp) = (x.as_ptr(), d.weights.as_ptr(), d.bias.as_ptr());
    // a macro, not a closure: closures do not inherit the target features
    macro_rules! finish {
        ($v:expr, $at:expr, $mask:expr) => {{
            let mut v = $v;
            if let Some(f) = d.tail.act {
                v = vmath::apply(f, v);
            }
            if let Some(r) = res {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps($mask, r.as_ptr().add($at)));
            }
            if let Some(f) = d.tail.post {
                v = vmath::apply(f, v);
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr().add($at), $mask, v);
        }};
    }
    let mut ch = 0;
    // SAFETY: all offsets plus `ch + 64 <= c` stay inside `x`, the weights, `out` and `res`;
    // the masked vectors touch only the channels below `c`.
    unsafe {
        while ch + 64 <= c {
            let mut acc: [__m512; 4] =
                std::array::from_fn(|j| _mm512_loadu_ps(bp.add(ch + 16 * j)));
            for &(xo, wo) in taps {
                let (xs, ws) = (xp.add(xo + ch), wp.add(wo + ch));
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_loadu_ps(xs.add(16 * j));
                    *a = _mm512_fmadd_ps(v, _mm512_loadu_ps(ws.add(16 * j)), *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                finish!(*a, ch + 16 * j, 0xffff);
            }
            ch += 64;
        }
        while ch < c {
            let mask = if c - ch >= 16 {
                0xffff
            } else {
                ((1u32 << (c - ch)) - 1) as u16
            };
            let mut a = _mm512_maskz_loadu_ps(mask, bp.add(ch));
            for &(xo, wo) in taps {
                let v = _mm512_maskz_loadu_ps(mask, xp.add(xo + ch));
                a = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(mask, wp.add(wo + ch)), a);
            }
            finish!(a, ch, mask);
            ch += 16;
        }
    }
}

/// `out = post(act(acc) + residual)`.
#[inline(always)]
fn apply_tail(tail: &Tail, acc: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
    match (tail.act, residual, tail.post) {
        (None, None, None) => out.copy_from_slice(acc),
        (Some(secateur_graph::Pointwise::Relu), None, None) => {
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a.max(0.0);
            }
        }
        (Some(secateur_graph::Pointwise::Clip { min, max }), None, None) => {
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a.max(min).min(max);
            }
        }
        _ => {
            for (i, (o, a)) in out.iter_mut().zip(acc).enumerate() {
                let mut v = tail.act.map_or(*a, |f| f.apply(*a));
                if let Some(r) = residual {
                    v += r[i];
                }
                *o = tail.post.map_or(v, |f| f.apply(v));
            }
        }
    }
}

/// Max or average pooling of one sample `[h][w][c]` into `[ho][wo][c]`; each row's pixels
/// whose window lies inside the row run on `nhwc_maxpool512` for max pooling on AVX-512, the
/// rest (`done`: the columns already computed) on the generic row below.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    isa: Isa,
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    geo: &PoolGeometry,
    max: bool,
    include_pad: bool,
    ho: usize,
    wo: usize,
    y: &mut [f32],
    threads: usize,
) {
    let row = wo * c;
    crate::team::parallel_chunks(threads, &mut y[..ho * row], row, |oy, yr| {
        // max pooling on AVX-512: the pixels whose window lies inside the row on 16-channel
        // vectors, the others below
        #[cfg(target_arch = "x86_64")]
        let inside = if max && isa == Isa::Avx512 {
            let (sy, pt, dh) = (geo.strides[0], geo.pads[0], geo.dilations[0]);
            let (ky0, ky1) = taps(oy, sy, pt, dh, geo.kernel[0], h);
            let cols = super::nhwc_maxpool512::inside_columns(geo, w, wo);
            let taps = (ky1 - ky0) * geo.kernel[1];
            if ky0 < ky1 && taps <= super::nhwc_maxpool512::MAX_TAPS && !cols.is_empty() {
                let iy = oy * sy + ky0 * dh - pt;
                // SAFETY: AVX-512F was detected (the only way to obtain `Isa::Avx512`); the
                // window has at most MAX_TAPS taps, its rows `ky0 .. ky1` exist from `iy` on,
                // and the columns `cols` have their windows inside the row.
                unsafe {
                    let (wc, rows) = ((w, c), ky0..ky1);
                    super::nhwc_maxpool512::max_row(x, wc, geo, rows, iy, cols.clone(), yr);
                }
                cols
            } else {
                0..0
            }
        } else {
            0..0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let inside = 0..0;
        pool_row(isa, x, c, h, w, geo, max, include_pad, oy, wo, inside, yr)
    });
}

dispatch!(
    #[allow(clippy::too_many_arguments)]
    fn pool_row[][](
        x: &[f32],
        c: usize,
        h: usize,
        w: usize,
        geo: &PoolGeometry,
        max: bool,
        include_pad: bool,
        oy: usize,
        wo: usize,
        done: std::ops::Range<usize>,
        y: &mut [f32],
    ) => pool_row_body
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pool_row_body<const FMA: bool>(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    geo: &PoolGeometry,
    max: bool,
    include_pad: bool,
    oy: usize,
    wo: usize,
    done: std::ops::Range<usize>,
    y: &mut [f32],
) {
    let [kh, kw] = geo.kernel;
    let (ky0, ky1) = taps(oy, geo.strides[0], geo.pads[0], geo.dilations[0], kh, h);
    let iy0 = (oy * geo.strides[0]) as isize - geo.pads[0] as isize;
    for ox in (0..wo).filter(|ox| !done.contains(ox)) {
        let (kx0, kx1) = taps(ox, geo.strides[1], geo.pads[1], geo.dilations[1], kw, w);
        let ix0 = (ox * geo.strides[1]) as isize - geo.pads[1] as isize;
        let out = &mut y[ox * c..(ox + 1) * c];
        if max {
            max_taps(
                x,
                w,
                c,
                (iy0, ix0),
                (ky0, ky1, kx0, kx1),
                geo.dilations,
                out,
            );
            continue;
        }
        out.fill(0.0);
        for ky in ky0..ky1 {
            let iy = (iy0 + (ky * geo.dilations[0]) as isize) as usize;
            for kx in kx0..kx1 {
                let ix = (ix0 + (kx * geo.dilations[1]) as isize) as usize;
                let src = &x[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                for (o, v) in out.iter_mut().zip(src) {
                    *o += v;
                }
            }
        }
        {
            let n = if include_pad {
                // taps inside the padded input (ONNX counts padding, not the ceil overhang)
                let span = |o: usize, ax: usize, k: usize, n: usize| {
                    (0..k)
                        .filter(|&t| {
                            o * geo.strides[ax] + t * geo.dilations[ax]
                                < n + geo.pads[ax] + geo.pads[ax + 2]
                        })
                        .count()
                };
                span(oy, 0, kh, h) * span(ox, 1, kw, w)
            } else {
                (ky1 - ky0) * (kx1 - kx0)
            };
            let inv = if n == 0 { 0.0 } else { 1.0 / n as f32 };
            for o in out.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// The maximum over one output pixel's taps (`iy0`, `ix0`: its first tap, possibly outside the
/// input; taps `ky0..ky1 × kx0..kx1` are inside): 32 channels at a time, then 8, in fixed-size
/// blocks the compiler keeps in vector registers across the taps, then the rest.
#[inline(always)]
fn max_taps(
    x: &[f32],
    w: usize,
    c: usize,
    (iy0, ix0): (isize, isize),
    (ky0, ky1, kx0, kx1): (usize, usize, usize, usize),
    [dh, dw]: [usize; 2],
    out: &mut [f32],
) {
    // the taps' offsets (a pool window of at most 8×8 without an allocation)
    let mut offsets = [0usize; 64];
    let mut n = 0;
    for ky in ky0..ky1 {
        let iy = (iy0 + (ky * dh) as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (ix0 + (kx * dw) as isize) as usize;
            if n == offsets.len() {
                let all: Vec<usize> = (ky0..ky1)
                    .flat_map(|ky| (kx0..kx1).map(move |kx| (ky, kx)))
                    .map(|(ky, kx)| {
                        let iy = (iy0 + (ky * dh) as isize) as usize;
                        ((iy * w) + (ix0 + (kx * dw) as isize) as usize) * c
                    })
                    .collect();
                return max_over(x, &all, c, out);
            }
            offsets[n] = (iy * w + ix) * c;
            n += 1;
        }
    }
    max_over(x, &offsets[..n], c, out)
}

/// The maximum over the pixels at `taps` (offsets in `x`) of each of `c` channels.
#[inline(always)]
fn max_over(x: &[f32], taps: &[usize], c: usize, out: &mut [f32]) {
    let mut ch = 0;
    while ch + 32 <= c {
        max_block::<32>(x, taps, ch, out);
        ch += 32;
    }
    while ch + 8 <= c {
        max_block::<8>(x, taps, ch, out);
        ch += 8;
    }
    for j in ch..c {
        out[j] = taps.iter().fold(f32::NEG_INFINITY, |m, &t| m.max(x[t + j]));
    }
}

/// Channels `ch .. ch + N` of [`max_taps`].
#[inline(always)]
fn max_block<const N: usize>(x: &[f32], taps: &[usize], ch: usize, out: &mut [f32]) {
    let mut acc = [f32::NEG_INFINITY; N];
    for &t in taps {
        let src: &[f32; N] = x[t + ch..t + ch + N].try_into().expect("a block");
        for (a, v) in acc.iter_mut().zip(src) {
            // (maxps semantics; the same as f32::max, as the accumulator is never NaN)
            *a = if *v > *a { *v } else { *a };
        }
    }
    out[ch..ch + N].copy_from_slice(&acc);
}

/// The mean over the `p` pixels of one sample `[p][c]`, into `[c]`; with `threads > 1`, each
/// thread sums a range of pixels and the partial sums are added at the end.
pub fn global_avg_pool(isa: Isa, x: &[f32], p: usize, c: usize, y: &mut [f32], threads: usize) {
    let y = &mut y[..c];
    let inv = 1.0 / p.max(1) as f32;
    if threads <= 1 || p < 2 {
        gap_sum(isa, &x[..p * c], c, y);
    } else {
        let per = p.div_ceil(threads);
        let mut partial = vec![0.0f32; p.div_ceil(per) * c];
        crate::team::parallel_chunks(threads, &mut partial, c, |i, sums| {
            let pixels = i * per..((i + 1) * per).min(p);
            gap_sum(isa, &x[pixels.start * c..pixels.end * c], c, sums)
        });
        y.copy_from_slice(&partial[..c]);
        for sums in partial[c..].chunks_exact(c) {
            y.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
        }
    }
    y.iter_mut().for_each(|o| *o *= inv);
}

dispatch!(
    /// `y[ch]` = the sum over the pixels of `x` (`[pixels][c]`) of channel `ch`.
    fn gap_sum[][](x: &[f32], c: usize, y: &mut [f32]) => gap_body
);

#[inline(always)]
fn gap_body<const FMA: bool>(x: &[f32], c: usize, y: &mut [f32]) {
    y.fill(0.0);
    for px in x.chunks_exact(c) {
        for (o, v) in y.iter_mut().zip(px) {
            *o += v;
        }
    }
}

/// `[c][p]` (NCHW, one sample) into `[p][c]` (NHWC), in 16×16 blocks.
pub fn to_nhwc(x: &[f32], c: usize, p: usize, y: &mut [f32]) {
    // images (3 channels) and other narrow inputs: pixel by pixel with the channel count known
    match c {
        1 => y[..p].copy_from_slice(&x[..p]),
        2 => interleave::<2>(x, p, y),
        3 => interleave::<3>(x, p, y),
        4 => interleave::<4>(x, p, y),
        _ => transpose_blocks(x, c, p, y),
    }
}

/// `y[j][i] = x[i][j]` for `C` planes of `p` values.
fn interleave<const C: usize>(x: &[f32], p: usize, y: &mut [f32]) {
    let planes: [&[f32]; C] = std::array::from_fn(|i| &x[i * p..(i + 1) * p]);
    for (j, px) in y[..C * p].chunks_exact_mut(C).enumerate() {
        for (v, plane) in px.iter_mut().zip(planes) {
            *v = plane[j];
        }
    }
}

/// `[p][c]` (NHWC, one sample) into `[c][p]` (NCHW).
pub fn to_nchw(x: &[f32], c: usize, p: usize, y: &mut [f32]) {
    transpose_blocks(x, p, c, y);
}

/// `y[j][i] = x[i][j]` for `x` of `rows × cols`.
fn transpose_blocks(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    const B: usize = 16;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for i in i0..(i0 + B).min(rows) {
                for j in j0..(j0 + B).min(cols) {
                    y[j * rows + i] = x[i * cols + j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_stay_inside_the_input() {
        // 3 taps, stride 2, pad 1 over 5 inputs: output 0 reads -1, 0, 1 -> taps 1..3
        assert_eq!(taps(0, 2, 1, 1, 3, 5), (1, 3));
        assert_eq!(taps(1, 2, 1, 1, 3, 5), (0, 3));
        // output 2 reads 3, 4, 5 -> 5 is outside
        assert_eq!(taps(2, 2, 1, 1, 3, 5), (0, 2));
        // dilation 2: output 0 reads -1, 1, 3
        assert_eq!(taps(0, 1, 1, 2, 3, 5), (1, 3));
    }

    #[test]
    fn layout_conversions_are_inverse_transposes() {
        // narrow inputs (1-4 channels) take their own path
        for (c, p) in [(19, 37), (1, 5), (2, 9), (3, 37), (4, 16), (5, 3)] {
            let x: Vec<f32> = (0..c * p).map(|i| i as f32).collect();
            let mut t = vec![0.0; c * p];
            let mut back = vec![0.0; c * p];
            to_nhwc(&x, c, p, &mut t);
            for (j, i) in (0..p).flat_map(|j| (0..c).map(move |i| (j, i))) {
                assert_eq!(t[j * c + i], x[i * p + j], "c {c}: pixel {j} channel {i}");
            }
            to_nchw(&t, c, p, &mut back);
            assert_eq!(back, x);
        }
    }
}
