//! The AVX-512 kernels of the sparse direct convolution: a tile of up to 128 consecutive flat
//! output positions (eight accumulator vectors) of one output channel, one broadcast and one
//! fused multiply-add with a memory operand per vector and non-zero weight. Tiles of seven
//! vectors or fewer (short runs such as 7×7 or 14×14 outputs, and the end of a run) take two
//! output channels at once, so at least eight independent accumulator chains hide the
//! multiply-add latency. Masked loads and stores cover partial tiles exactly.

use super::{Pass, SparseConv};
use crate::kernels::epilogue::{Activation, Epilogue};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::Range;

/// Accumulator vectors of a full tile.
pub(super) const VECTORS: usize = 8;
/// Output positions of a full tile.
pub(super) const TILE: usize = 16 * VECTORS;

/// One output channel's side of a tile: its non-zeros in the chunk, its bias and its output.
#[derive(Clone, Copy)]
struct Lane<'a> {
    offs: &'a [u32],
    vals: &'a [f32],
    bias: f32,
    dst: *mut f32,
}

/// Positions `start..start + n` of the flat runs of output channels `channels` for the
/// non-zeros of input-channel chunk `chunk`; `out` holds the runs (of `len`) one after the other.
///
/// # Safety
/// The CPU has AVX-512F; `start + n ≤ len ≤ TILE`-aligned bounds hold as the driver computes
/// them, every offset of `sc` plus `start + n` is within `xq`, and `out` holds
/// `channels.len() · len` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
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
    let x = unsafe { xq.as_ptr().add(start) };
    let y = out.as_mut_ptr();
    let lane = |o: usize| {
        let (offs, vals) = sc.channel(chunk, o);
        Lane {
            offs,
            vals,
            bias: ep.bias(o),
            dst: y.wrapping_add((o - o0) * len + start),
        }
    };
    let vectors = n.div_ceil(16);
    unsafe {
        if vectors >= VECTORS {
            for o in channels {
                if n == TILE {
                    tile1::<VECTORS, false>(x, lane(o), ep.act, n, pass);
                } else {
                    tile1::<VECTORS, true>(x, lane(o), ep.act, n, pass);
                }
            }
            return;
        }
        let mut o = channels.start;
        while o + 2 <= channels.end {
            let (a, b) = (lane(o), lane(o + 1));
            match vectors {
                1 => tile2::<1>(x, a, b, ep.act, n, pass),
                2 => tile2::<2>(x, a, b, ep.act, n, pass),
                3 => tile2::<3>(x, a, b, ep.act, n, pass),
                4 => tile2::<4>(x, a, b, ep.act, n, pass),
                5 => tile2::<5>(x, a, b, ep.act, n, pass),
                6 => tile2::<6>(x, a, b, ep.act, n, pass),
                _ => tile2::<7>(x, a, b, ep.act, n, pass),
            }
            o += 2;
        }
        if o < channels.end {
            match vectors {
                1 => tile1::<1, true>(x, lane(o), ep.act, n, pass),
                2 => tile1::<2, true>(x, lane(o), ep.act, n, pass),
                3 => tile1::<3, true>(x, lane(o), ep.act, n, pass),
                4 => tile1::<4, true>(x, lane(o), ep.act, n, pass),
                5 => tile1::<5, true>(x, lane(o), ep.act, n, pass),
                6 => tile1::<6, true>(x, lane(o), ep.act, n, pass),
                _ => tile1::<7, true>(x, lane(o), ep.act, n, pass),
            }
        }
    }
}

/// The lane masks of `V` vectors covering `n` positions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks<const V: usize>(n: usize) -> [__mmask16; V] {
    std::array::from_fn(|t| {
        let left = n.saturating_sub(16 * t).min(16);
        ((1u32 << left) - 1) as __mmask16
    })
}

/// The starting accumulators of a lane: its bias on the first pass, its partial sums after.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn start<const V: usize, const MASKED: bool>(
    lane: &Lane,
    m: &[__mmask16; V],
    pass: Pass,
) -> [__m512; V] {
    unsafe {
        if pass.first {
            return [_mm512_set1_ps(lane.bias); V];
        }
        std::array::from_fn(|t| {
            if MASKED {
                _mm512_maskz_loadu_ps(m[t], lane.dst.wrapping_add(16 * t))
            } else {
                _mm512_loadu_ps(lane.dst.add(16 * t))
            }
        })
    }
}

/// Stores a lane's accumulators, activated on the last pass.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn finish<const V: usize, const MASKED: bool>(
    lane: &Lane,
    acc: &[__m512; V],
    m: &[__mmask16; V],
    act: Activation,
    pass: Pass,
) {
    unsafe {
        for t in 0..V {
            let r = if pass.last {
                match act {
                    Activation::None => acc[t],
                    Activation::Relu => _mm512_max_ps(acc[t], _mm512_setzero_ps()),
                    Activation::Clip { min, max } => _mm512_min_ps(
                        _mm512_max_ps(acc[t], _mm512_set1_ps(min)),
                        _mm512_set1_ps(max),
                    ),
                }
            } else {
                acc[t]
            };
            if MASKED {
                _mm512_mask_storeu_ps(lane.dst.wrapping_add(16 * t), m[t], r);
            } else {
                _mm512_storeu_ps(lane.dst.add(16 * t), r);
            }
        }
    }
}

/// `V` vectors of one output channel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile1<const V: usize, const MASKED: bool>(
    x: *const f32,
    lane: Lane,
    act: Activation,
    n: usize,
    pass: Pass,
) {
    unsafe {
        let m = masks::<V>(n);
        let mut acc = start::<V, MASKED>(&lane, &m, pass);
        accumulate::<V, MASKED>(x, lane.offs, lane.vals, &m, &mut acc);
        finish::<V, MASKED>(&lane, &acc, &m, act, pass);
    }
}

/// Adds each non-zero `vals[j]` times the `V` vectors at `x + offs[j]` to `acc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn accumulate<const V: usize, const MASKED: bool>(
    x: *const f32,
    offs: &[u32],
    vals: &[f32],
    m: &[__mmask16; V],
    acc: &mut [__m512; V],
) {
    unsafe {
        for (&off, &v) in offs.iter().zip(vals) {
            let w = _mm512_set1_ps(v);
            let p = x.wrapping_add(off as usize);
            for t in 0..V {
                let xv = if MASKED {
                    _mm512_maskz_loadu_ps(m[t], p.wrapping_add(16 * t))
                } else {
                    _mm512_loadu_ps(p.add(16 * t))
                };
                acc[t] = _mm512_fmadd_ps(w, xv, acc[t]);
            }
        }
    }
}

/// `V` vectors of two output channels at once: their non-zeros are interleaved while both
/// have some, so the two sets of accumulators form independent chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile2<const V: usize>(
    x: *const f32,
    a: Lane,
    b: Lane,
    act: Activation,
    n: usize,
    pass: Pass,
) {
    unsafe {
        let m = masks::<V>(n);
        let mut acc_a = start::<V, true>(&a, &m, pass);
        let mut acc_b = start::<V, true>(&b, &m, pass);
        let common = a.offs.len().min(b.offs.len());
        for j in 0..common {
            let (wa, wb) = (
                _mm512_set1_ps(*a.vals.get_unchecked(j)),
                _mm512_set1_ps(*b.vals.get_unchecked(j)),
            );
            let pa = x.wrapping_add(*a.offs.get_unchecked(j) as usize);
            let pb = x.wrapping_add(*b.offs.get_unchecked(j) as usize);
            for t in 0..V {
                let xa = _mm512_maskz_loadu_ps(m[t], pa.wrapping_add(16 * t));
                let xb = _mm512_maskz_loadu_ps(m[t], pb.wrapping_add(16 * t));
                acc_a[t] = _mm512_fmadd_ps(wa, xa, acc_a[t]);
                acc_b[t] = _mm512_fmadd_ps(wb, xb, acc_b[t]);
            }
        }
        // the longer list's remaining non-zeros
        accumulate::<V, true>(x, &a.offs[common..], &a.vals[common..], &m, &mut acc_a);
        accumulate::<V, true>(x, &b.offs[common..], &b.vals[common..], &m, &mut acc_b);
        finish::<V, true>(&a, &acc_a, &m, act, pass);
        finish::<V, true>(&b, &acc_b, &m, act, pass);
    }
}
