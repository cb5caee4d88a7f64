//! The AVX-512 kernels of the sparse direct convolution for stride-1 layers with outputs at most
//! 64 wide: a block of output rows of one channel in up to 16 accumulator vectors (full, half or
//! mixed-width vectors by output width), reading each tap's row straight from the padded input.

use super::SparseConv;
use crate::kernels::epilogue::Epilogue;

impl SparseConv {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(
        &self,
        xp: &[f32],
        ho: usize,
        wo: usize,
        y: &mut [f32],
        ep: &Epilogue,
    ) {
        unsafe {
            let vpr = wo.div_ceil(16);
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
                crate::kernels::Activation::None => a,
                crate::kernels::Activation::Relu => _mm512_max_ps(a, _mm512_setzero_ps()),
                crate::kernels::Activation::Clip { min, max } => {
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
                        let base = xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wq);
                        for r in 0..RB {
                            let row = base.add(r * self.wq);
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
                        let row = xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wq);
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
                crate::kernels::Activation::None => a,
                crate::kernels::Activation::Relu => _mm256_max_ps(a, _mm256_setzero_ps()),
                crate::kernels::Activation::Clip { min, max } => {
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
                        let base = xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wq);
                        for (r, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(
                                v,
                                _mm256_maskz_loadu_ps(mask, base.add(r * self.wq)),
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
                                xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wq),
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
                crate::kernels::Activation::None => a,
                crate::kernels::Activation::Relu => _mm512_max_ps(a, _mm512_setzero_ps()),
                crate::kernels::Activation::Clip { min, max } => {
                    _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(min)), _mm512_set1_ps(max))
                }
            };
            let act8 = |a: __m256| match ep.act {
                crate::kernels::Activation::None => a,
                crate::kernels::Activation::Relu => _mm256_max_ps(a, _mm256_setzero_ps()),
                crate::kernels::Activation::Clip { min, max } => {
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
                                xb.add(*self.offsets.get_unchecked(j) as usize + oy0 * self.wq);
                            for r in 0..RB {
                                let row = base.add(r * self.wq);
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
                                    *self.offsets.get_unchecked(j) as usize + (oy0 + r) * self.wq,
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
