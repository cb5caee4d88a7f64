//! The AVX-512 register tiles of the NHWC implicit GEMM: 6 output pixels × two adjacent
//! 16-channel panels of one group, or 12 pixels × one panel where a group has a single panel;
//! 12 zmm accumulators either way. Each reduction step loads one weight
//! vector per panel and broadcasts one input value per pixel into 12 multiply-adds, twice the
//! work per instruction of the AVX2 `6 × 16` tile on cores with two 512-bit FMA units. The
//! panels keep their `[K][16]` packing, so the same packed weights serve both tiles. The fused
//! tail (bias, function, residual, function) runs on the 16-lane accumulators of whole panels;
//! partial panels and partial sums go through the AVX2 tile's epilogue on the two halves of
//! each accumulator (the epilogue runs once per tile, the products `K` times).

#![cfg(target_arch = "x86_64")]

use super::nhwc_conv::{MR, Tile, avx2};
use super::vmath;
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn join([lo, hi]: [__m256; 2]) -> __m512 {
    unsafe {
        let lo = _mm512_castpd256_pd512(_mm256_castps_pd(lo));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_castps_pd(hi)))
    }
}

#[inline(always)]
unsafe fn halves(v: __m512) -> [__m256; 2] {
    unsafe {
        let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
        [_mm512_castps512_ps256(v), _mm256_castpd_ps(hi)]
    }
}

/// Two tiles that share their pixels (`a`, `m`, `pieces`, `first`, `last`) and differ in the
/// panel (`b`, `y`, `res`, `valid`, `bias`): `t0`'s panel is whole, `t1`'s is the next one
/// of the same group.
///
/// # Safety
/// AVX-512F must be available; every pointer of both tiles reaches what its fields describe.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn pair_kernel(t0: &Tile, t1: &Tile) {
    unsafe { two_tiles::<true>(t0, t1) }
}

/// Two tiles of one panel (`b`, `valid`, `bias`, `pieces`, `first`, `last` shared) over
/// consecutive pixel tiles (`a`, `m`, `y`, `res` differ): the kernel of a group with a single
/// panel (grouped convolutions of 16 channels per group, narrow layers), 12 accumulators over
/// one weight vector and 12 broadcasts per step.
///
/// # Safety
/// As [`pair_kernel`].
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn pixel_pair_kernel(t0: &Tile, t1: &Tile) {
    unsafe { two_tiles::<false>(t0, t1) }
}

/// The products of two tiles: with `SAME_PIXELS` the second tile's weights are loaded and the
/// broadcasts shared, else the weight vector is shared and each tile broadcasts its own
/// pixels. No closures here: they would not inherit the target features and stay calls.
#[inline(always)]
unsafe fn two_tiles<const SAME_PIXELS: bool>(t0: &Tile, t1: &Tile) {
    unsafe {
        let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5] = start(t0);
        let [mut d0, mut d1, mut d2, mut d3, mut d4, mut d5] = start(t1);
        let (mut b0, mut b1) = (t0.b, t1.b);
        for &(off, len) in t0.pieces {
            let (a, e) = (offset(&t0.a, off), offset(&t1.a, off));
            macro_rules! step {
                ($k:expr, $o:expr) => {
                    let w0 = _mm512_loadu_ps(b0.add($o));
                    let w1 = if SAME_PIXELS {
                        _mm512_loadu_ps(b1.add($o))
                    } else {
                        w0
                    };
                    macro_rules! pixel {
                        ($i:expr, $c:ident, $d:ident) => {
                            let x = _mm512_set1_ps(*a[$i].add($k));
                            $c = _mm512_fmadd_ps(x, w0, $c);
                            let x = if SAME_PIXELS {
                                x
                            } else {
                                _mm512_set1_ps(*e[$i].add($k))
                            };
                            $d = _mm512_fmadd_ps(x, w1, $d);
                        };
                    }
                    pixel!(0, c0, d0);
                    pixel!(1, c1, d1);
                    pixel!(2, c2, d2);
                    pixel!(3, c3, d3);
                    pixel!(4, c4, d4);
                    pixel!(5, c5, d5);
                };
            }
            let mut kk = 0;
            while kk + 4 <= len {
                step!(kk, 0);
                step!(kk + 1, 16);
                step!(kk + 2, 32);
                step!(kk + 3, 48);
                b0 = b0.add(64);
                b1 = b1.add(64);
                kk += 4;
            }
            while kk < len {
                step!(kk, 0);
                b0 = b0.add(16);
                b1 = b1.add(16);
                kk += 1;
            }
        }
        finish(t0, &[c0, c1, c2, c3, c4, c5]);
        finish(t1, &[d0, d1, d2, d3, d4, d5]);
    }
}

/// Four tiles that share their pixels and cover four consecutive panels of one group: 6 pixels
/// × 64 channels, 24 accumulators; each reduction step loads four weight vectors and six
/// broadcasts for 24 multiply-adds (the pair's 8 loads fed 12), so the loads no longer
/// compete with the multiply-adds.
///
/// # Safety
/// As [`pair_kernel`], for all four tiles.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn quad_kernel(t0: &Tile, t1: &Tile, t2: &Tile, t3: &Tile) {
    unsafe {
        let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5] = start(t0);
        let [mut d0, mut d1, mut d2, mut d3, mut d4, mut d5] = start(t1);
        let [mut e0, mut e1, mut e2, mut e3, mut e4, mut e5] = start(t2);
        let [mut f0, mut f1, mut f2, mut f3, mut f4, mut f5] = start(t3);
        let (mut b0, mut b1, mut b2, mut b3) = (t0.b, t1.b, t2.b, t3.b);
        for &(off, len) in t0.pieces {
            let a = offset(&t0.a, off);
            macro_rules! step {
                ($k:expr, $o:expr) => {
                    let w0 = _mm512_loadu_ps(b0.add($o));
                    let w1 = _mm512_loadu_ps(b1.add($o));
                    let w2 = _mm512_loadu_ps(b2.add($o));
                    let w3 = _mm512_loadu_ps(b3.add($o));
                    macro_rules! pixel {
                        ($i:expr, $c:ident, $d:ident, $e:ident, $f:ident) => {
                            let x = _mm512_set1_ps(*a[$i].add($k));
                            $c = _mm512_fmadd_ps(x, w0, $c);
                            $d = _mm512_fmadd_ps(x, w1, $d);
                            $e = _mm512_fmadd_ps(x, w2, $e);
                            $f = _mm512_fmadd_ps(x, w3, $f);
                        };
                    }
                    pixel!(0, c0, d0, e0, f0);
                    pixel!(1, c1, d1, e1, f1);
                    pixel!(2, c2, d2, e2, f2);
                    pixel!(3, c3, d3, e3, f3);
                    pixel!(4, c4, d4, e4, f4);
                    pixel!(5, c5, d5, e5, f5);
                };
            }
            let mut kk = 0;
            while kk + 2 <= len {
                step!(kk, 0);
                step!(kk + 1, 16);
                b0 = b0.add(32);
                b1 = b1.add(32);
                b2 = b2.add(32);
                b3 = b3.add(32);
                kk += 2;
            }
            while kk < len {
                step!(kk, 0);
                b0 = b0.add(16);
                b1 = b1.add(16);
                b2 = b2.add(16);
                b3 = b3.add(16);
                kk += 1;
            }
        }
        finish(t0, &[c0, c1, c2, c3, c4, c5]);
        finish(t1, &[d0, d1, d2, d3, d4, d5]);
        finish(t2, &[e0, e1, e2, e3, e4, e5]);
        finish(t3, &[f0, f1, f2, f3, f4, f5]);
    }
}

/// A tile's accumulators in: zero for the first chunk, else (out of line, as [`finish`]) the
/// partial sums stored in its outputs.
#[inline(always)]
unsafe fn start(t: &Tile) -> [__m512; MR] {
    if t.first {
        // SAFETY: AVX-512F is enabled in every caller.
        unsafe { [_mm512_setzero_ps(); MR] }
    } else {
        // SAFETY: as the caller's contract.
        unsafe { partial_sums(t) }
    }
}

/// The partial sums a tile's earlier chunks stored in its outputs.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn partial_sums(t: &Tile) -> [__m512; MR] {
    unsafe {
        let i = avx2::load_partial(t);
        [
            join(i[0]),
            join(i[1]),
            join(i[2]),
            join(i[3]),
            join(i[4]),
            join(i[5]),
        ]
    }
}

/// A tile's accumulators out: the fused tail on whole 16-lane vectors after the last chunk,
/// else through the AVX2 tile's epilogue (partial panels, partial sums). Never inlined: the
/// tail's functions inlined into a tile kernel made the compiler spill the accumulators of
/// its product loop in some builds (the same source ran twice as slow, depending on how the
/// crate was split into codegen units); out of line, the loop keeps its registers in every
/// build.
#[inline(never)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn finish(t: &Tile, acc: &[__m512; MR]) {
    unsafe {
        if t.last && store_whole(t, *acc) {
            return;
        }
        let halves = [
            halves(acc[0]),
            halves(acc[1]),
            halves(acc[2]),
            halves(acc[3]),
            halves(acc[4]),
            halves(acc[5]),
        ];
        if t.last {
            avx2::store(t, &halves);
        } else {
            avx2::store_partial(t, &halves);
        }
    }
}

/// The last chunk's store of a tile whose panel is whole: bias, function, residual addition
/// and the function after it on the 16-lane accumulators, then one store per pixel. Returns
/// false, storing nothing, for a partial panel.
#[inline(always)]
unsafe fn store_whole(t: &Tile, mut acc: [__m512; MR]) -> bool {
    if t.valid != 16 {
        return false;
    }
    unsafe {
        let bias = _mm512_loadu_ps(t.bias);
        for v in acc.iter_mut() {
            *v = _mm512_add_ps(*v, bias);
        }
        if let Some(f) = t.tail.act {
            vmath::apply_all(f, &mut acc);
        }
        if let Some(r) = t.res {
            for (p, v) in acc.iter_mut().enumerate().take(t.m) {
                *v = _mm512_add_ps(*v, _mm512_loadu_ps(r.add(p * t.y_pix)));
            }
        }
        if let Some(f) = t.tail.post {
            vmath::apply_all(f, &mut acc);
        }
        for (p, v) in acc.iter().enumerate().take(t.m) {
            _mm512_storeu_ps(t.y.add(p * t.y_pix), *v);
        }
    }
    true
}

/// Every pixel's input pointer `off` values further (a loop, not `map`: its closure would not
/// inherit the target features).
#[inline(always)]
unsafe fn offset(a: &[*const f32; MR], off: usize) -> [*const f32; MR] {
    let mut out = *a;
    for p in out.iter_mut() {
        // SAFETY: the caller's pieces lie inside each pixel's input.
        *p = unsafe { p.add(off) };
    }
    out
}
