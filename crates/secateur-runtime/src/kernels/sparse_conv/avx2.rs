//! The AVX2 kernel of the sparse direct convolution: a tile of 96 consecutive output positions
//! (12 accumulator vectors) of one channel, one broadcast and twelve fused multiply-adds with
//! memory operands per non-zero weight, bias and clamp activation fused into the store of the
//! last input-channel chunk. Partial tiles use masked loads and stores.

use super::{Pass, SparseConv};
use crate::kernels::epilogue::{Activation, Epilogue};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::Range;

/// Accumulator vectors of a full tile.
const VECTORS: usize = 12;
/// Output positions of a full tile.
pub(super) const TILE: usize = 8 * VECTORS;

/// Positions `start..start + n` of the flat runs of output channels `channels` for the
/// non-zeros of input-channel chunk `chunk`; `out` holds the runs (of `len`) one after the other.
///
/// # Safety
/// The CPU has AVX2 and FMA; `start + n ≤ len`, every offset of `sc` plus `start + n` is within
/// `xq`, and `out` holds `channels.len() · len` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_channels(
    sc: &SparseConv,
    xq: &[f32],
    channels: Range<usize>,
    chunk: usize,
    start: usize,
    n: usize,
    len: usize,
    out: &mut [f32],
    ep: &Epilogue,
    pass: Pass,
) {
    let o0 = channels.start;
    unsafe {
        let x = xq.as_ptr().add(start);
        for o in channels {
            let (offs, vals) = sc.channel(chunk, o);
            let dst = out.as_mut_ptr().add((o - o0) * len + start);
            let b = ep.bias(o);
            match n.div_ceil(8) {
                VECTORS if n == TILE => {
                    tile::<VECTORS, false>(x, offs, vals, b, ep.act, dst, n, pass)
                }
                0..=4 => tile::<4, true>(x, offs, vals, b, ep.act, dst, n, pass),
                5..=8 => tile::<8, true>(x, offs, vals, b, ep.act, dst, n, pass),
                _ => tile::<VECTORS, true>(x, offs, vals, b, ep.act, dst, n, pass),
            }
        }
    }
}

/// `V` vectors of output at `dst` from the taps `offs` (relative to `x`) weighted by `vals`;
/// `MASKED` limits loads and stores to the first `len` positions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const V: usize, const MASKED: bool>(
    x: *const f32,
    offs: &[u32],
    vals: &[f32],
    bias: f32,
    act: Activation,
    dst: *mut f32,
    len: usize,
    pass: Pass,
) {
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let masks: [__m256i; V] = std::array::from_fn(|t| {
            let left = len.saturating_sub(8 * t).min(8) as i32;
            _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes)
        });
        let mut acc: [__m256; V] = if pass.first {
            [_mm256_set1_ps(bias); V]
        } else {
            std::array::from_fn(|t| {
                if MASKED {
                    _mm256_maskload_ps(dst.wrapping_add(8 * t), masks[t])
                } else {
                    _mm256_loadu_ps(dst.add(8 * t))
                }
            })
        };
        for (&off, &v) in offs.iter().zip(vals) {
            let w = _mm256_set1_ps(v);
            let p = x.add(off as usize);
            for t in 0..V {
                let xv = if MASKED {
                    _mm256_maskload_ps(p.wrapping_add(8 * t), masks[t])
                } else {
                    _mm256_loadu_ps(p.add(8 * t))
                };
                acc[t] = _mm256_fmadd_ps(w, xv, acc[t]);
            }
        }
        for t in 0..V {
            let r = match act {
                _ if !pass.last => acc[t],
                Activation::None => acc[t],
                Activation::Relu => _mm256_max_ps(acc[t], _mm256_setzero_ps()),
                Activation::Clip { min, max } => _mm256_min_ps(
                    _mm256_max_ps(acc[t], _mm256_set1_ps(min)),
                    _mm256_set1_ps(max),
                ),
            };
            if MASKED {
                _mm256_maskstore_ps(dst.wrapping_add(8 * t), masks[t], r);
            } else {
                _mm256_storeu_ps(dst.add(8 * t), r);
            }
        }
    }
}
