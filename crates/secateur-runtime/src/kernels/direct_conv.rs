//! Direct (im2col-free) dense convolution for AVX-512: weights are rearranged once as
//! `Wt[k][c_out]` (k = input channel × kernel position, output channels padded to a multiple
//! of 16), and each step multiplies one weight row — up to 64 output channels in registers —
//! by broadcast input pixels for a block of output pixels, so `NV·PB = 12–16` accumulators
//! are FMA-bound and no im2col matrix is ever written. A portable fallback computes the same
//! thing with plain loops.

use super::epilogue::Epilogue;
use secateur_graph::Conv;

/// Which axis the AVX-512 kernel vectorises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectLayout {
    /// 16 output channels per vector, input pixels broadcast (many channels, any stride).
    Channels,
    /// 16 output pixels of a row per vector, weights broadcast (few input channels, stride 1):
    /// results are stored as whole vectors, with no transpose.
    Pixels,
}

/// A convolution's weights arranged for the direct kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectConv {
    pub conv: Conv,
    pub c_in: usize,
    pub c_out: usize,
    /// Output channels padded to a multiple of 16.
    pub c_pad: usize,
    /// `[c_in·kh·kw][c_pad]`.
    pub wt: Vec<f32>,
    pub layout: DirectLayout,
    /// Pixel layout: `[c_out][c_in·kh·kw]` (empty in the channel layout).
    pub w_rows: Vec<f32>,
}

impl DirectConv {
    /// From the row-major `[c_out × c_in·kh·kw]` weight matrix of an ungrouped convolution.
    pub fn new(conv: &Conv, c_in: usize, c_out: usize, w: &[f32]) -> Self {
        let k = c_in * conv.kernel[0] * conv.kernel[1];
        let c_pad = c_out.div_ceil(16) * 16;
        let mut wt = vec![0.0f32; k * c_pad];
        for o in 0..c_out {
            for kk in 0..k {
                wt[kk * c_pad + o] = w[o * k + kk];
            }
        }
        DirectConv {
            conv: conv.clone(),
            c_in,
            c_out,
            c_pad,
            wt,
            layout: DirectLayout::Channels,
            w_rows: Vec::new(),
        }
    }

    /// The pixel-vectorised variant, for unit strides and dilations (`None` otherwise).
    pub fn pixels(conv: &Conv, c_in: usize, c_out: usize, w: &[f32]) -> Option<Self> {
        if conv.strides != [1, 1] || conv.dilations != [1, 1] {
            return None;
        }
        let mut d = Self::new(conv, c_in, c_out, w);
        let k = c_in * conv.kernel[0] * conv.kernel[1];
        d.w_rows = w[..c_out * k].to_vec();
        d.layout = DirectLayout::Pixels;
        Some(d)
    }

    /// Name of this kernel in plans and reports.
    pub fn label(&self) -> &'static str {
        match self.layout {
            DirectLayout::Channels => "direct",
            DirectLayout::Pixels => "direct-pixels",
        }
    }

    pub fn bytes(&self) -> usize {
        match self.layout {
            DirectLayout::Channels => self.wt.len() * 4,
            DirectLayout::Pixels => self.w_rows.len() * 4,
        }
    }

    /// Size of the padded input copy this layer needs (0 when unpadded).
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        let p = &self.conv.pads;
        if p.iter().all(|&x| x == 0) {
            0
        } else {
            self.c_in * (h + p[0] + p[2]) * (w + p[1] + p[3])
        }
    }

    /// One sample: `x` is `[c_in, h, w]`, `y` is `[c_out, ho, wo]`, `scratch` holds
    /// [`DirectConv::scratch_len`] values.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        y: &mut [f32],
        ep: &Epilogue,
        scratch: &mut [f32],
    ) {
        let p = self.conv.pads;
        let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3]);
        let xp = super::padding::padded(x, self.c_in, h, w, p, scratch);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected; `xp` covers the padded input and every tap stays
            // inside it because (ho, wo) are the convolution's output sizes.
            unsafe {
                match self.layout {
                    DirectLayout::Channels => avx512_run(self, xp, hp, wp, ho, wo, y, ep),
                    DirectLayout::Pixels => avx512_pixels(self, xp, hp, wp, ho, wo, y, ep),
                }
            };
            return;
        }
        portable_run(self, xp, hp, wp, ho, wo, y, ep);
    }
}

#[allow(clippy::too_many_arguments)]
fn portable_run(
    d: &DirectConv,
    xp: &[f32],
    hp: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
    ep: &Epilogue,
) {
    let [kh, kw] = d.conv.kernel;
    let (s, dl) = (d.conv.strides, d.conv.dilations);
    let mut acc = vec![0.0f32; d.c_pad];
    for oy in 0..ho {
        for ox in 0..wo {
            acc.fill(0.0);
            for ci in 0..d.c_in {
                for ky in 0..kh {
                    let row = &xp[(ci * hp + oy * s[0] + ky * dl[0]) * wp..];
                    for kx in 0..kw {
                        let xv = row[ox * s[1] + kx * dl[1]];
                        let wrow = &d.wt[((ci * kh + ky) * kw + kx) * d.c_pad..][..d.c_pad];
                        for (a, wv) in acc.iter_mut().zip(wrow) {
                            *a += wv * xv;
                        }
                    }
                }
            }
            for o in 0..d.c_out {
                y[o * ho * wo + oy * wo + ox] = ep.act.apply(acc[o] + ep.bias(o));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_run(
    d: &DirectConv,
    xp: &[f32],
    hp: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
    ep: &Epilogue,
) {
    let vecs = d.c_pad / 16;
    let mut t0 = 0;
    while t0 < vecs {
        let nv = (vecs - t0).min(4);
        // SAFETY: forwarded from the caller.
        unsafe {
            match nv {
                4 => tile::<4, 4>(d, xp, hp, wp, ho, wo, y, ep, t0),
                3 => tile::<3, 4>(d, xp, hp, wp, ho, wo, y, ep, t0),
                2 => tile::<2, 8>(d, xp, hp, wp, ho, wo, y, ep, t0),
                _ => tile::<1, 8>(d, xp, hp, wp, ho, wo, y, ep, t0),
            }
        }
        t0 += nv;
    }
}

/// Pixel-vectorised direct convolution (unit stride and dilation): for each block of up to 8
/// output channels, 32 consecutive output pixels (two vectors, the tail masked) accumulate
/// `input segment × broadcast weight` over every tap; bias and activation are applied on the
/// vectors before they are stored. Suits layers with few input channels (a network's first
/// conv), where the channel-vectorised kernel has too little to put in its lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_pixels(
    d: &DirectConv,
    xp: &[f32],
    hp: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
    ep: &Epilogue,
) {
    // blocks of exactly the remaining channels where possible, so no lane of work is wasted
    // on padding channels (LeNet's 6-channel first layer runs as one block of 6)
    let mut o0 = 0;
    while o0 < d.c_out {
        let rem = d.c_out - o0;
        // SAFETY: forwarded from the caller.
        let n = unsafe {
            match rem {
                8.. => pixels_block::<8>(d, xp, hp, wp, ho, wo, y, ep, o0),
                6 | 7 => pixels_block::<6>(d, xp, hp, wp, ho, wo, y, ep, o0),
                4 | 5 => pixels_block::<4>(d, xp, hp, wp, ho, wo, y, ep, o0),
                2 | 3 => pixels_block::<2>(d, xp, hp, wp, ho, wo, y, ep, o0),
                _ => pixels_block::<1>(d, xp, hp, wp, ho, wo, y, ep, o0),
            }
        };
        o0 += n;
    }
}

/// Output channels `o0 .. o0+NO` for all pixels, 32 output pixels at a time; returns `NO`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn pixels_block<const NO: usize>(
    d: &DirectConv,
    xp: &[f32],
    hp: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
    ep: &Epilogue,
    o0: usize,
) -> usize {
    use std::arch::x86_64::*;
    unsafe {
        let [kh, kw] = d.conv.kernel;
        let k = d.c_in * kh * kw;
        let p = ho * wo;
        let xb = xp.as_ptr();
        let yb = y.as_mut_ptr();
        let zero = _mm512_setzero_ps();
        let (lo, hi, clip) = match ep.act {
            super::epilogue::Activation::None => (f32::NEG_INFINITY, f32::INFINITY, false),
            super::epilogue::Activation::Relu => (0.0, f32::INFINITY, true),
            super::epilogue::Activation::Clip { min, max } => (min, max, true),
        };
        let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let mask_of = |n: usize| -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as __mmask16
            }
        };
        let wb = d.w_rows.as_ptr().add(o0 * k);
        let bias: [f32; NO] = std::array::from_fn(|o| ep.bias(o0 + o));
        // One 16-lane vector covers 16 consecutive output pixels of the flattened
        // `[ho, wo]` plane, so no lane is wasted on a row end; when it crosses into the next
        // row, a second masked load fetches those lanes from the next input row (`wo ≥ 16`
        // guarantees at most one crossing). Narrower outputs run row by row.
        let flat = wo >= 16;
        let units = if flat {
            p.div_ceil(32)
        } else {
            ho * wo.div_ceil(32)
        };
        for u in 0..units {
            // (input offset of lanes in the first row, their mask, offset for the rest,
            //  their mask, output offset, store mask) for each of the two vectors
            let mut lane = [(
                0usize,
                0 as __mmask16,
                0usize,
                0 as __mmask16,
                0usize,
                0 as __mmask16,
            ); 2];
            for (v, l) in lane.iter_mut().enumerate() {
                let (f, n, row, col) = if flat {
                    let f = u * 32 + 16 * v;
                    let n = p.saturating_sub(f).min(16);
                    (f, n, f / wo.max(1), f % wo.max(1))
                } else {
                    let per_row = wo.div_ceil(32);
                    let (oy, c) = (u / per_row, (u % per_row) * 32 + 16 * v);
                    let n = wo.saturating_sub(c).min(16);
                    (oy * wo + c, n, oy, c)
                };
                if n == 0 {
                    continue;
                }
                let first = n.min(wo - col);
                let m_all = mask_of(n);
                let m_first = mask_of(first);
                *l = (
                    row * wp + col,
                    m_first,
                    (row + 1) * wp - first,
                    m_all & !m_first,
                    f,
                    m_all,
                );
            }
            let mut acc = [[zero; 2]; NO];
            for ci in 0..d.c_in {
                for ky in 0..kh {
                    let tap_row = (ci * hp + ky) * wp;
                    let wrow = wb.add((ci * kh + ky) * kw);
                    for kx in 0..kw {
                        let t = tap_row + kx;
                        let mut xv = [zero; 2];
                        for v in 0..2 {
                            let (a, ma, b, mb, _, _) = lane[v];
                            let lo_part = _mm512_maskz_loadu_ps(ma, xb.add(a + t));
                            xv[v] = if mb == 0 {
                                lo_part
                            } else {
                                _mm512_mask_loadu_ps(lo_part, mb, xb.add(b + t))
                            };
                        }
                        for o in 0..NO {
                            let wv = _mm512_set1_ps(*wrow.add(o * k + kx));
                            acc[o][0] = _mm512_fmadd_ps(wv, xv[0], acc[o][0]);
                            acc[o][1] = _mm512_fmadd_ps(wv, xv[1], acc[o][1]);
                        }
                    }
                }
            }
            for o in 0..NO {
                let bv = _mm512_set1_ps(bias[o]);
                for v in 0..2 {
                    let (_, _, _, _, f, m) = lane[v];
                    if m == 0 {
                        continue;
                    }
                    let mut r = _mm512_add_ps(acc[o][v], bv);
                    if clip {
                        r = _mm512_min_ps(_mm512_max_ps(r, vlo), vhi);
                    }
                    _mm512_mask_storeu_ps(yb.add((o0 + o) * p + f), m, r);
                }
            }
        }
    }
    NO
}

/// Output channels `16·t0 .. 16·(t0+NV)` for all pixels, `PB` pixels of a row at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<const NV: usize, const PB: usize>(
    d: &DirectConv,
    xp: &[f32],
    hp: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    y: &mut [f32],
    ep: &Epilogue,
    t0: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let [kh, kw] = d.conv.kernel;
        let (s, dl) = (d.conv.strides, d.conv.dilations);
        let p = ho * wo;
        let xb = xp.as_ptr();
        let wb = d.wt.as_ptr().add(16 * t0);
        let o0 = 16 * t0;
        let mut out = [[0.0f32; 64]; PB];
        for oy in 0..ho {
            let mut ox = 0;
            while ox < wo {
                let pb = (wo - ox).min(PB);
                let mut acc = [[_mm512_setzero_ps(); NV]; PB];
                for ci in 0..d.c_in {
                    for ky in 0..kh {
                        let row = xb.add((ci * hp + oy * s[0] + ky * dl[0]) * wp + ox * s[1]);
                        for kx in 0..kw {
                            let wr = wb.add(((ci * kh + ky) * kw + kx) * d.c_pad);
                            let mut wv = [_mm512_setzero_ps(); NV];
                            for t in 0..NV {
                                wv[t] = _mm512_loadu_ps(wr.add(16 * t));
                            }
                            let xr = row.add(kx * dl[1]);
                            if pb == PB {
                                for q in 0..PB {
                                    let xv = _mm512_set1_ps(*xr.add(q * s[1]));
                                    for t in 0..NV {
                                        acc[q][t] = _mm512_fmadd_ps(wv[t], xv, acc[q][t]);
                                    }
                                }
                            } else {
                                for q in 0..pb {
                                    let xv = _mm512_set1_ps(*xr.add(q * s[1]));
                                    for t in 0..NV {
                                        acc[q][t] = _mm512_fmadd_ps(wv[t], xv, acc[q][t]);
                                    }
                                }
                            }
                        }
                    }
                }
                for q in 0..pb {
                    for t in 0..NV {
                        _mm512_storeu_ps(out[q].as_mut_ptr().add(16 * t), acc[q][t]);
                    }
                }
                for c in 0..16 * NV {
                    let o = o0 + c;
                    if o >= d.c_out {
                        break;
                    }
                    let b = ep.bias(o);
                    let dst = y.as_mut_ptr().add(o * p + oy * wo + ox);
                    for q in 0..pb {
                        *dst.add(q) = ep.act.apply(out[q][c] + b);
                    }
                }
                ox += pb;
            }
        }
    }
}
