//! Plain CPU implementations of the non-GEMM operators used by execution plans: im2col,
//! depthwise convolution, pooling, broadcasting add/mul, concatenation, softmax and
//! element-wise activations. They mirror the reference evaluator's semantics exactly.

use crate::kernels::Activation;
use secateur_graph::{Conv, PoolGeometry};

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
    for ch in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (ch * kh + ky) * kw + kx;
                let dst = &mut cols[row * p..(row + 1) * p];
                for oy in 0..ho {
                    let iy = (oy * conv.strides[0] + ky * conv.dilations[0]) as isize
                        - conv.pads[0] as isize;
                    let d = &mut dst[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= h as isize {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &x[(ch * h + iy as usize) * w..(ch * h + iy as usize + 1) * w];
                    for (ox, dv) in d.iter_mut().enumerate() {
                        let ix = (ox * conv.strides[1] + kx * conv.dilations[1]) as isize
                            - conv.pads[1] as isize;
                        *dv = if ix >= 0 && (ix as usize) < w {
                            src[ix as usize]
                        } else {
                            0.0
                        };
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
    for pl in 0..planes {
        let src = &x[pl * h * w..(pl + 1) * h * w];
        let dst = &mut y[pl * ho * wo..(pl + 1) * ho * wo];
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                let mut taps = 0usize;
                let mut padded = 0usize;
                for ky in 0..g.kernel[0] {
                    let iy =
                        (oy * g.strides[0] + ky * g.dilations[0]) as isize - g.pads[0] as isize;
                    for kx in 0..g.kernel[1] {
                        let ix =
                            (ox * g.strides[1] + kx * g.dilations[1]) as isize - g.pads[1] as isize;
                        if iy < (h + g.pads[2]) as isize && ix < (w + g.pads[3]) as isize {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let v = src[iy as usize * w + ix as usize];
                            if max {
                                acc = acc.max(v);
                            } else {
                                acc += v;
                            }
                            taps += 1;
                        }
                    }
                }
                dst[oy * wo + ox] = if max {
                    acc
                } else {
                    let n = if count_include_pad { padded } else { taps };
                    if n == 0 { 0.0 } else { acc / n as f32 }
                };
            }
        }
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
