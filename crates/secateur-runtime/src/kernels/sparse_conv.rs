//! Sparse direct convolution (stride 1): the non-zero weights of each output channel, each
//! stored with the offset of its input tap in the zero-padded input, are applied to whole
//! output rows at once — `y[o, oy, :] += w · x_pad[tap + oy·w_pad + :]` — so no im2col matrix
//! is built and the work is proportional to the non-zeros. Up to 16 accumulator vectors hold a
//! block of output rows of one channel. A portable path computes the same with plain loops.

use super::epilogue::Epilogue;
use secateur_graph::Conv;

/// A stride-1 convolution's non-zero weights with their input offsets.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseConv {
    pub c_in: usize,
    pub c_out: usize,
    pub pads: [usize; 4],
    row_ptr: Vec<u32>,
    offsets: Vec<u32>,
    values: Vec<f32>,
    /// Padded input width the offsets were computed for.
    wp: usize,
    hp: usize,
}

impl SparseConv {
    /// From the row-major `[c_out × c_in·kh·kw]` weight of an ungrouped, stride-1 convolution
    /// on `h×w` inputs; `None` for other convolutions.
    pub fn new(
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        h: usize,
        w: usize,
        weight: &[f32],
    ) -> Option<Self> {
        if conv.strides != [1, 1] || conv.groups != 1 {
            return None;
        }
        let [kh, kw] = conv.kernel;
        let (hp, wp) = (
            h + conv.pads[0] + conv.pads[2],
            w + conv.pads[1] + conv.pads[3],
        );
        let k = c_in * kh * kw;
        let mut row_ptr = vec![0u32];
        let (mut offsets, mut values) = (Vec::new(), Vec::new());
        for o in 0..c_out {
            for ci in 0..c_in {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let v = weight[o * k + (ci * kh + ky) * kw + kx];
                        if v != 0.0 {
                            offsets.push(
                                ((ci * hp + ky * conv.dilations[0]) * wp + kx * conv.dilations[1])
                                    as u32,
                            );
                            values.push(v);
                        }
                    }
                }
            }
            row_ptr.push(values.len() as u32);
        }
        Some(SparseConv {
            c_in,
            c_out,
            pads: conv.pads,
            row_ptr,
            offsets,
            values,
            wp,
            hp,
        })
    }

    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * 8 + self.row_ptr.len() * 4
    }

    /// Size of the padded input copy (0 when unpadded).
    pub fn scratch_len(&self) -> usize {
        if self.pads.iter().all(|&p| p == 0) {
            0
        } else {
            self.c_in * self.hp * self.wp
        }
    }

    /// One sample: `x` is `[c_in, h, w]`, `y` is `[c_out, ho, wo]`.
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
        let xp = super::padding::padded(x, self.c_in, h, w, self.pads, scratch);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && wo <= 64 {
            // SAFETY: AVX-512F detected; every offset plus (ho-1)·wp + wo stays inside the
            // padded input because (ho, wo) are the convolution's output sizes.
            unsafe { self.avx512(xp, ho, wo, y, ep) };
            return;
        }
        for o in 0..self.c_out {
            let (s, e) = (self.row_ptr[o] as usize, self.row_ptr[o + 1] as usize);
            let yo = &mut y[o * ho * wo..(o + 1) * ho * wo];
            yo.fill(ep.bias(o));
            for j in s..e {
                let (off, v) = (self.offsets[j] as usize, self.values[j]);
                for oy in 0..ho {
                    let src = &xp[off + oy * self.wp..off + oy * self.wp + wo];
                    for (d, sv) in yo[oy * wo..(oy + 1) * wo].iter_mut().zip(src) {
                        *d += v * sv;
                    }
                }
            }
            yo.iter_mut().for_each(|v| *v = ep.act.apply(*v));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(&self, xp: &[f32], ho: usize, wo: usize, y: &mut [f32], ep: &Epilogue) {
        unsafe {
            let vpr = wo.div_ceil(16);
            // rows per block so that rows × vectors-per-row ≤ 16 accumulators
            let rb = (16 / vpr).max(1);
            let _ = rb;
            if wo <= 8 {
                // half vectors: Zen 4 runs two 256-bit FMAs per cycle, one 512-bit
                return self.half_rows_kernel(xp, ho, wo, y, ep);
            }
            if wo > 16 && wo <= 24 {
                // one full vector and one half vector per row (e.g. 24-wide outputs)
                return self.mixed_rows_kernel(xp, ho, wo, y, ep);
            }
            match vpr {
                1 => self.rows_kernel::<1, 8>(xp, ho, wo, y, ep),
                2 => self.rows_kernel::<2, 8>(xp, ho, wo, y, ep),
                3 => self.rows_kernel::<3, 4>(xp, ho, wo, y, ep),
                _ => self.rows_kernel::<4, 4>(xp, ho, wo, y, ep),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn rows_kernel<const V: usize, const RB: usize>(
        &self,
        xp: &[f32],
        ho: usize,
        wo: usize,
        y: &mut [f32],
        ep: &Epilogue,
    ) {
        use std::arch::x86_64::*;
        unsafe {
            let xb = xp.as_ptr();
            let mut masks = [0u16; V];
            for (t, m) in masks.iter_mut().enumerate() {
                let left = wo.saturating_sub(16 * t).min(16);
                *m = if left >= 16 {
                    0xFFFF
                } else {
                    ((1u32 << left) - 1) as u16
                };
            }
            let act = |a: __m512| match ep.act {
                super::Activation::None => a,
                super::Activation::Relu => _mm512_max_ps(a, _mm512_setzero_ps()),
                super::Activation::Clip { min, max } => {
                    _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(min)), _mm512_set1_ps(max))
                }
            };
            for o in 0..self.c_out {
                let (s, e) = (self.row_ptr[o] as usize, self.row_ptr[o + 1] as usize);
                let b = _mm512_set1_ps(ep.bias(o));
                let mut oy0 = 0;
                // full blocks of RB rows: fixed-size accumulators stay in registers
                while oy0 + RB <= ho {
                    let mut acc = [[b; V]; RB];
                    for j in s..e {
                        let v = _mm512_set1_ps(*self.values.get_unchecked(j));
                        let base = xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wp);
                        for r in 0..RB {
                            let row = base.add(r * self.wp);
                            for t in 0..V {
                                acc[r][t] = _mm512_fmadd_ps(
                                    v,
                                    _mm512_maskz_loadu_ps(masks[t], row.add(16 * t)),
                                    acc[r][t],
                                );
                            }
                        }
                    }
                    for r in 0..RB {
                        let dst = y.as_mut_ptr().add((o * ho + oy0 + r) * wo);
                        for t in 0..V {
                            _mm512_mask_storeu_ps(dst.add(16 * t), masks[t], act(acc[r][t]));
                        }
                    }
                    oy0 += RB;
                }
                // remaining rows one at a time
                while oy0 < ho {
                    let mut acc = [b; V];
                    for j in s..e {
                        let v = _mm512_set1_ps(*self.values.get_unchecked(j));
                        let row = xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wp);
                        for t in 0..V {
                            acc[t] = _mm512_fmadd_ps(
                                v,
                                _mm512_maskz_loadu_ps(masks[t], row.add(16 * t)),
                                acc[t],
                            );
                        }
                    }
                    let dst = y.as_mut_ptr().add((o * ho + oy0) * wo);
                    for t in 0..V {
                        _mm512_mask_storeu_ps(dst.add(16 * t), masks[t], act(acc[t]));
                    }
                    oy0 += 1;
                }
            }
        }
    }

    /// Outputs at most 8 wide: one masked 256-bit vector per output row, 16 rows in registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn half_rows_kernel(
        &self,
        xp: &[f32],
        ho: usize,
        wo: usize,
        y: &mut [f32],
        ep: &Epilogue,
    ) {
        use std::arch::x86_64::*;
        const RB: usize = 8;
        unsafe {
            let xb = xp.as_ptr();
            let mask = ((1u32 << wo) - 1) as u8;
            let act = |a: __m256| match ep.act {
                super::Activation::None => a,
                super::Activation::Relu => _mm256_max_ps(a, _mm256_setzero_ps()),
                super::Activation::Clip { min, max } => {
                    _mm256_min_ps(_mm256_max_ps(a, _mm256_set1_ps(min)), _mm256_set1_ps(max))
                }
            };
            for o in 0..self.c_out {
                let (s, e) = (self.row_ptr[o] as usize, self.row_ptr[o + 1] as usize);
                let b = _mm256_set1_ps(ep.bias(o));
                let mut oy0 = 0;
                while oy0 + RB <= ho {
                    let mut acc = [b; RB];
                    for j in s..e {
                        let v = _mm256_set1_ps(*self.values.get_unchecked(j));
                        let base = xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wp);
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(
                                v,
                                _mm256_maskz_loadu_ps(mask, base.add(r * self.wp)),
                                *a,
                            );
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        _mm256_mask_storeu_ps(
                            y.as_mut_ptr().add((o * ho + oy0 + r) * wo),
                            mask,
                            act(*a),
                        );
                    }
                    oy0 += RB;
                }
                while oy0 < ho {
                    let mut a = b;
                    for j in s..e {
                        let v = _mm256_set1_ps(*self.values.get_unchecked(j));
                        a = _mm256_fmadd_ps(
                            v,
                            _mm256_maskz_loadu_ps(
                                mask,
                                xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wp),
                            ),
                            a,
                        );
                    }
                    _mm256_mask_storeu_ps(y.as_mut_ptr().add((o * ho + oy0) * wo), mask, act(a));
                    oy0 += 1;
                }
            }
        }
    }

    /// Outputs 17–24 wide: a full 512-bit vector plus a masked 256-bit vector per row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl")]
    unsafe fn mixed_rows_kernel(
        &self,
        xp: &[f32],
        ho: usize,
        wo: usize,
        y: &mut [f32],
        ep: &Epilogue,
    ) {
        use std::arch::x86_64::*;
        const RB: usize = 6;
        unsafe {
            let xb = xp.as_ptr();
            let mask = ((1u32 << (wo - 16)) - 1) as u8;
            let act16 = |a: __m512| match ep.act {
                super::Activation::None => a,
                super::Activation::Relu => _mm512_max_ps(a, _mm512_setzero_ps()),
                super::Activation::Clip { min, max } => {
                    _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(min)), _mm512_set1_ps(max))
                }
            };
            let act8 = |a: __m256| match ep.act {
                super::Activation::None => a,
                super::Activation::Relu => _mm256_max_ps(a, _mm256_setzero_ps()),
                super::Activation::Clip { min, max } => {
                    _mm256_min_ps(_mm256_max_ps(a, _mm256_set1_ps(min)), _mm256_set1_ps(max))
                }
            };
            for o in 0..self.c_out {
                let (s, e) = (self.row_ptr[o] as usize, self.row_ptr[o + 1] as usize);
                let b16 = _mm512_set1_ps(ep.bias(o));
                let b8 = _mm256_set1_ps(ep.bias(o));
                let mut oy0 = 0;
                while oy0 < ho {
                    let rows = (ho - oy0).min(RB);
                    if rows == RB {
                        let mut a = [b16; RB];
                        let mut h = [b8; RB];
                        for j in s..e {
                            let v16 = _mm512_set1_ps(*self.values.get_unchecked(j));
                            let v8 = _mm256_set1_ps(*self.values.get_unchecked(j));
                            let base =
                                xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wp);
                            for r in 0..RB {
                                let row = base.add(r * self.wp);
                                a[r] = _mm512_fmadd_ps(v16, _mm512_loadu_ps(row), a[r]);
                                h[r] = _mm256_fmadd_ps(
                                    v8,
                                    _mm256_maskz_loadu_ps(mask, row.add(16)),
                                    h[r],
                                );
                            }
                        }
                        for r in 0..RB {
                            let dst = y.as_mut_ptr().add((o * ho + oy0 + r) * wo);
                            _mm512_storeu_ps(dst, act16(a[r]));
                            _mm256_mask_storeu_ps(dst.add(16), mask, act8(h[r]));
                        }
                    } else {
                        for r in 0..rows {
                            let mut a = b16;
                            let mut h = b8;
                            for j in s..e {
                                let v = *self.values.get_unchecked(j);
                                let row = xb.add(
                                    *self.offsets.get_unchecked(j) as usize + (oy0 + r) * self.wp,
                                );
                                a = _mm512_fmadd_ps(_mm512_set1_ps(v), _mm512_loadu_ps(row), a);
                                h = _mm256_fmadd_ps(
                                    _mm256_set1_ps(v),
                                    _mm256_maskz_loadu_ps(mask, row.add(16)),
                                    h,
                                );
                            }
                            let dst = y.as_mut_ptr().add((o * ho + oy0 + r) * wo);
                            _mm512_storeu_ps(dst, act16(a));
                            _mm256_mask_storeu_ps(dst.add(16), mask, act8(h));
                        }
                    }
                    oy0 += rows;
                }
            }
        }
    }
}
