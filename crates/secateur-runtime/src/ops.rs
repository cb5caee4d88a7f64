//! Plain CPU implementations of the non-GEMM operators used by execution plans: im2col,
//! depthwise convolution, pooling, broadcasting add/mul, concatenation, softmax and
//! element-wise activations. They mirror the reference evaluator's semantics exactly.

use crate::kernels::Activation;
use secateur_graph::{Conv, Pointwise, PoolGeometry};

#[allow(clippy::too_many_arguments)]
/// Writes the im2col matrix of one sample `[C, H, W]` into `cols` (`[C·kh·kw, Ho·Wo]`).
pub fn im2col(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    conv: &Conv,
    ho: usize,
    wo: usize,
    cols: &mut [f32],
) {
    let [kh, kw] = conv.kernel;
    let p = ho * wo;
    let (sy, sx) = (conv.strides[0], conv.strides[1]);
    let (dy, dx) = (conv.dilations[0], conv.dilations[1]);
    let (py, px) = (conv.pads[0] as isize, conv.pads[1] as isize);
    for ch in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (ch * kh + ky) * kw + kx;
                let dst = &mut cols[row * p..(row + 1) * p];
                // output columns whose input column is inside the image: ox in [lo, hi)
                let off = (kx * dx) as isize - px;
                let lo = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(sx)
                };
                let hi = if (w as isize) <= off {
                    0
                } else {
                    ((w as isize - off) as usize).div_ceil(sx)
                };
                let hi = hi.min(wo).max(lo);
                for oy in 0..ho {
                    let iy = (oy * sy + ky * dy) as isize - py;
                    let d = &mut dst[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= h as isize {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &x[(ch * h + iy as usize) * w..(ch * h + iy as usize + 1) * w];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    if sx == 1 {
                        // short rows: an element loop beats a memcpy call per row
                        let start = (lo as isize + off) as usize;
                        for (dv, sv) in d[lo..hi].iter_mut().zip(&src[start..start + (hi - lo)]) {
                            *dv = *sv;
                        }
                    } else {
                        for (i, dv) in d[lo..hi].iter_mut().enumerate() {
                            *dv = src[(((lo + i) * sx) as isize + off) as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Depthwise convolution of one sample: output channel `o` reads input channel `o / mult`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    x: &[f32],
    c_in: usize,
    h: usize,
    w: usize,
    conv: &Conv,
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    c_out: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
) {
    let [kh, kw] = conv.kernel;
    let mult = c_out / c_in.max(1);
    for o in 0..c_out {
        let ci = o / mult.max(1);
        let src = &x[ci * h * w..(ci + 1) * h * w];
        let wk = &weights[o * kh * kw..(o + 1) * kh * kw];
        let dst = &mut y[o * ho * wo..(o + 1) * ho * wo];
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = bias[o];
                for ky in 0..kh {
                    let iy = (oy * conv.strides[0] + ky * conv.dilations[0]) as isize
                        - conv.pads[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let row = &src[iy as usize * w..(iy as usize + 1) * w];
                    for kx in 0..kw {
                        let ix = (ox * conv.strides[1] + kx * conv.dilations[1]) as isize
                            - conv.pads[1] as isize;
                        if ix >= 0 && (ix as usize) < w {
                            acc += wk[ky * kw + kx] * row[ix as usize];
                        }
                    }
                }
                dst[oy * wo + ox] = act.apply(acc);
            }
        }
    }
}

/// Max or average pooling of `planes` planes of `h×w`.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    g: &PoolGeometry,
    max: bool,
    count_include_pad: bool,
    ho: usize,
    wo: usize,
    y: &mut [f32],
) {
    // the common 2×2, stride-2, unpadded max pool without bounds checks per tap
    if max
        && g.kernel == [2, 2]
        && g.strides == [2, 2]
        && g.pads == [0; 4]
        && g.dilations == [1, 1]
        && ho * 2 <= h
        && wo * 2 <= w
    {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected; every row read is inside its plane (2·wo ≤ w, 2·ho ≤ h).
            unsafe { max_pool_2x2_avx512(x, planes, h, w, ho, wo, y) };
            return;
        }
        for pl in 0..planes {
            let src = &x[pl * h * w..(pl + 1) * h * w];
            let dst = &mut y[pl * ho * wo..(pl + 1) * ho * wo];
            let mut m = [0.0f32; 256];
            for oy in 0..ho {
                let (r0, r1) = (
                    &src[2 * oy * w..(2 * oy + 1) * w],
                    &src[(2 * oy + 1) * w..(2 * oy + 2) * w],
                );
                let d = &mut dst[oy * wo..(oy + 1) * wo];
                if w <= m.len() {
                    // vertical maxima first (vectorised), then pairs
                    for ((mv, a), b) in m[..w].iter_mut().zip(r0).zip(r1) {
                        *mv = a.max(*b);
                    }
                    for (dv, pair) in d.iter_mut().zip(m.chunks_exact(2)) {
                        *dv = pair[0].max(pair[1]);
                    }
                } else {
                    for (ox, dv) in d.iter_mut().enumerate() {
                        *dv = r0[2 * ox]
                            .max(r0[2 * ox + 1])
                            .max(r1[2 * ox])
                            .max(r1[2 * ox + 1]);
                    }
                }
            }
        }
        return;
    }
    if max {
        return max_pool_separable(x, planes, h, w, g, ho, wo, y);
    }
    // average pooling: the mean of the taps inside the input (or over the padded window)
    let [kh, kw] = g.kernel;
    let (h_padded, w_padded) = (h + g.pads[0] + g.pads[2], w + g.pads[1] + g.pads[3]);
    for pl in 0..planes {
        let src = &x[pl * h * w..(pl + 1) * h * w];
        let dst = &mut y[pl * ho * wo..(pl + 1) * ho * wo];
        for oy in 0..ho {
            let rows: Vec<usize> =
                valid_taps(oy, g.strides[0], g.dilations[0], g.pads[0], kh, h).collect();
            let rows_padded = (0..kh)
                .filter(|&k| oy * g.strides[0] + k * g.dilations[0] < h_padded)
                .count();
            for ox in 0..wo {
                let mut sum = 0.0f32;
                let mut taps = 0usize;
                for ix in valid_taps(ox, g.strides[1], g.dilations[1], g.pads[1], kw, w) {
                    for &iy in &rows {
                        sum += src[iy * w + ix];
                        taps += 1;
                    }
                }
                let cols_padded = (0..kw)
                    .filter(|&k| ox * g.strides[1] + k * g.dilations[1] < w_padded)
                    .count();
                let n = if count_include_pad {
                    rows_padded * cols_padded
                } else {
                    taps
                };
                dst[oy * wo + ox] = if n == 0 { 0.0 } else { sum / n as f32 };
            }
        }
    }
}

/// The taps `k·d - pad` (k < kernel) that land inside `0..n` for output `o` at stride `s`.
fn valid_taps(
    o: usize,
    s: usize,
    d: usize,
    pad: usize,
    kernel: usize,
    n: usize,
) -> impl Iterator<Item = usize> {
    (0..kernel).filter_map(move |k| (o * s + k * d).checked_sub(pad).filter(|&i| i < n))
}

/// Max pooling of any geometry as two passes per output row: the maxima of its taps' input
/// rows, whole rows at a time (vectorised), then the maxima along that row at each output
/// column's taps, which form a run `first, first + dx, …` of known length.
#[allow(clippy::too_many_arguments)]
fn max_pool_separable(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    g: &PoolGeometry,
    ho: usize,
    wo: usize,
    y: &mut [f32],
) {
    let [kh, kw] = g.kernel;
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let (top, left) = (g.pads[0], g.pads[1]);
    // (first input column, number of taps) of each output column, found once
    let cols: Vec<(usize, usize)> = (0..wo)
        .map(|ox| {
            let mut taps = valid_taps(ox, sx, dx, left, kw, w);
            let first = taps.next();
            (first.unwrap_or(0), first.map_or(0, |_| 1 + taps.count()))
        })
        .collect();
    let mut row = vec![0.0f32; w];
    for pl in 0..planes {
        let src = &x[pl * h * w..(pl + 1) * h * w];
        let dst = &mut y[pl * ho * wo..(pl + 1) * ho * wo];
        for (oy, d) in dst.chunks_exact_mut(wo).enumerate() {
            row.fill(f32::NEG_INFINITY);
            for iy in valid_taps(oy, sy, dy, top, kh, h) {
                for (m, v) in row.iter_mut().zip(&src[iy * w..(iy + 1) * w]) {
                    *m = m.max(*v);
                }
            }
            for (o, &(first, n)) in d.iter_mut().zip(&cols) {
                *o = match n {
                    0 => f32::NEG_INFINITY,
                    3 if dx == 1 => row[first].max(row[first + 1]).max(row[first + 2]),
                    _ => (1..n).fold(row[first], |m, k| m.max(row[first + k * dx])),
                };
            }
        }
    }
}

/// An element-wise function over `x` into `y` (as far as both reach; buffers may be longer
/// than the value). Clamps and simple arithmetic vectorise as written.
pub fn pointwise(f: Pointwise, x: &[f32], y: &mut [f32]) {
    let pairs = y.iter_mut().zip(x);
    match f {
        Pointwise::Relu => pairs.for_each(|(o, v)| *o = v.max(0.0)),
        Pointwise::Clip { min, max } => pairs.for_each(|(o, v)| *o = v.max(min).min(max)),
        Pointwise::HardSwish => pairs.for_each(|(o, v)| *o = v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        Pointwise::HardSigmoid { alpha, beta } => {
            pairs.for_each(|(o, v)| *o = (alpha * v + beta).clamp(0.0, 1.0))
        }
        Pointwise::Neg => pairs.for_each(|(o, v)| *o = -v),
        Pointwise::Abs => pairs.for_each(|(o, v)| *o = v.abs()),
        Pointwise::Reciprocal => pairs.for_each(|(o, v)| *o = 1.0 / v),
        Pointwise::Sqrt => pairs.for_each(|(o, v)| *o = v.sqrt()),
        other => pairs.for_each(|(o, v)| *o = other.apply(*v)),
    }
}

/// Mean of every plane of `inner` values.
pub fn global_avg_pool(x: &[f32], planes: usize, inner: usize, y: &mut [f32]) {
    for (p, v) in y.iter_mut().enumerate().take(planes) {
        *v = x[p * inner..(p + 1) * inner].iter().sum::<f32>() / inner as f32;
    }
}

/// NumPy-broadcasting binary op of `a` (shape `sa`) and `b` (shape `sb`) into `y` (shape `so`).
pub fn broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    so: &[usize],
    y: &mut [f32],
    f: impl Fn(f32, f32) -> f32,
) {
    if sa == so && sb == so {
        for ((o, x), z) in y.iter_mut().zip(a).zip(b) {
            *o = f(*x, *z);
        }
        return;
    }
    let r = so.len();
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut p = vec![1; r - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let st = |s: &[usize]| secateur_graph::strides(s);
    let (ta, tb, to) = (st(&pa), st(&pb), st(so));
    for (flat, o) in y.iter_mut().enumerate() {
        let (mut ia, mut ib) = (0, 0);
        for ax in 0..r {
            let i = (flat / to[ax]) % so[ax];
            if pa[ax] != 1 {
                ia += i * ta[ax];
            }
            if pb[ax] != 1 {
                ib += i * tb[ax];
            }
        }
        *o = f(a[ia], b[ib]);
    }
}

/// Softmax over `red` values at stride `inner`, for `outer` blocks.
pub fn softmax(x: &[f32], outer: usize, red: usize, inner: usize, y: &mut [f32]) {
    for o in 0..outer {
        for i in 0..inner {
            let at = |r: usize| (o * red + r) * inner + i;
            let m = (0..red).map(|r| x[at(r)]).fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            for r in 0..red {
                let e = (x[at(r)] - m).exp();
                y[at(r)] = e;
                s += e;
            }
            for r in 0..red {
                y[at(r)] /= s;
            }
        }
    }
}

/// 2×2 / stride 2 max pooling: 16 inputs of two rows give 8 outputs per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_2x2_avx512(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
) {
    use std::arch::x86_64::*;
    unsafe {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
        for pl in 0..planes {
            let src = x.as_ptr().add(pl * h * w);
            let dst = y.as_mut_ptr().add(pl * ho * wo);
            for oy in 0..ho {
                let r0 = src.add(2 * oy * w);
                let r1 = src.add((2 * oy + 1) * w);
                let d = dst.add(oy * wo);
                let mut ox = 0;
                while ox < wo {
                    let n_out = (wo - ox).min(8);
                    let m_in: __mmask16 = ((1u32 << (2 * n_out)) - 1) as __mmask16;
                    let a = _mm512_maskz_loadu_ps(m_in, r0.add(2 * ox));
                    let b = _mm512_maskz_loadu_ps(m_in, r1.add(2 * ox));
                    let v = _mm512_max_ps(a, b);
                    let m = _mm512_max_ps(
                        _mm512_permutexvar_ps(even, v),
                        _mm512_permutexvar_ps(odd, v),
                    );
                    _mm512_mask_storeu_ps(d.add(ox), ((1u32 << n_out) - 1) as __mmask16, m);
                    ox += n_out;
                }
            }
        }
    }
}
