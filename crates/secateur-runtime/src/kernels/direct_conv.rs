//! Direct (im2col-free) dense convolution for AVX-512: weights are rearranged once as
//! `Wt[k][c_out]` (k = input channel × kernel position, output channels padded to a multiple
//! of 16), and each step multiplies one weight row — up to 64 output channels in registers —
//! by broadcast input pixels for a block of output pixels, so `NV·PB = 12–16` accumulators
//! are FMA-bound and no im2col matrix is ever written. A portable fallback computes the same
//! thing with plain loops.

use super::epilogue::Epilogue;
use secateur_graph::Conv;

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
        }
    }

    pub fn bytes(&self) -> usize {
        self.wt.len() * 4
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
        let xp: &[f32] = if p.iter().all(|&v| v == 0) {
            x
        } else {
            scratch[..self.c_in * hp * wp].fill(0.0);
            for c in 0..self.c_in {
                for r in 0..h {
                    let dst = (c * hp + r + p[0]) * wp + p[1];
                    scratch[dst..dst + w].copy_from_slice(&x[(c * h + r) * w..(c * h + r + 1) * w]);
                }
            }
            &scratch[..self.c_in * hp * wp]
        };
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected; `xp` covers the padded input and every tap stays
            // inside it because (ho, wo) are the convolution's output sizes.
            unsafe { avx512_run(self, xp, hp, wp, ho, wo, y, ep) };
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
