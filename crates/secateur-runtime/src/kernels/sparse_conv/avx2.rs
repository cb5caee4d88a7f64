//! The AVX2 kernel of the sparse direct convolution: a tile of 96 consecutive output positions
//! (12 accumulator vectors) of one channel, one broadcast and twelve fused multiply-adds with
//! memory operands per non-zero weight, bias and clamp activation fused into the store. Tiles
//! run outermost and channels inside them, so the input a tile reads stays in cache for every
//! channel; the last tile of a run overlaps its predecessor instead of being partial, and only
//! runs shorter than one tile use masked loads and stores.

use super::SparseConv;
use crate::kernels::epilogue::{Activation, Epilogue};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::Range;

/// Accumulator vectors of a full tile.
const VECTORS: usize = 12;
/// Output positions of a full tile.
const TILE: usize = 8 * VECTORS;

/// Output channels `channels` of `sc` over flat runs of `len` positions; `out` holds their runs
/// one after the other.
///
/// # Safety
/// The CPU has AVX2 and FMA; every offset of `sc` plus `len` is within `xq`, and `out` holds
/// `channels.len() · len` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn channels(
    sc: &SparseConv,
    xq: &[f32],
    channels: Range<usize>,
    len: usize,
    out: &mut [f32],
    ep: &Epilogue,
) {
    let o0 = channels.start;
    let x = xq.as_ptr();
    let y = out.as_mut_ptr();
    unsafe {
        // full tiles first, input tile by input tile, every channel inside
        let full = len / TILE * TILE;
        for i0 in (0..full).step_by(TILE) {
            for o in channels.clone() {
                let (offs, vals) = sc.channel(o);
                let dst = y.add((o - o0) * len + i0);
                tile::<VECTORS, false>(x.add(i0), offs, vals, ep.bias(o), ep.act, dst, TILE);
            }
        }
        let rest = len - full;
        if rest == 0 {
            return;
        }
        // the rest: a full tile overlapping the previous one when that wastes little, else
        // the smallest masked tile that covers it
        let overlap = full > 0 && rest > 2 * TILE / 3;
        let start = if overlap { len - TILE } else { full };
        for o in channels {
            let (offs, vals) = sc.channel(o);
            let dst = y.add((o - o0) * len + start);
            let (b, xs) = (ep.bias(o), x.add(start));
            if overlap {
                tile::<VECTORS, false>(xs, offs, vals, b, ep.act, dst, TILE);
                continue;
            }
            match rest.div_ceil(8) {
                0..=4 => tile::<4, true>(xs, offs, vals, b, ep.act, dst, rest),
                5..=8 => tile::<8, true>(xs, offs, vals, b, ep.act, dst, rest),
                _ => tile::<VECTORS, true>(xs, offs, vals, b, ep.act, dst, rest),
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
) {
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let masks: [__m256i; V] = std::array::from_fn(|t| {
            let left = len.saturating_sub(8 * t).min(8) as i32;
            _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes)
        });
        let mut acc = [_mm256_set1_ps(bias); V];
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
