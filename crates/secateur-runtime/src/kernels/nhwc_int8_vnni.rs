//! The AVX-512 VNNI register tile of the int8 convolution: 12 (or 8, 4) output pixels × one or
//! two panels of 16 output channels, up to 24 `i32` accumulators. Each step of the reduction
//! loads one weight vector per panel (16 channels × 4 consecutive reduction bytes) and
//! broadcasts 4 input bytes per pixel into `vpdpbusd` (u8 × i8, four products summed into each
//! lane; no saturation, the sum of four products fits easily). The epilogue converts the sums
//! to f32 (`sum · unit + bias`), applies the fused tail on 16-lane vectors and stores with a
//! lane mask where the panel is partial.

#![cfg(target_arch = "x86_64")]

use super::nhwc_int8::{MR, Tile};
use std::arch::x86_64::*;

/// The tile's products and epilogue for `NP` panels and its `m` pixels: a tile of 4, 8 or 12
/// pixel rows, the fewest that hold them (a 7 × 7 layer's 49 pixels end in a tile of one).
///
/// # Safety
/// AVX-512 F/BW/VNNI must be available; every pointer of `t` reaches what its fields describe.
pub(super) unsafe fn tile<const NP: usize>(t: &Tile) {
    unsafe {
        match t.out.m {
            0..=4 => rows::<NP, 4>(t),
            5..=8 => rows::<NP, 8>(t),
            _ => rows::<NP, MR>(t),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn rows<const NP: usize, const MP: usize>(t: &Tile) {
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); NP]; MP];
        for j in 0..NP {
            let s = _mm512_loadu_si512(t.start.add(16 * j) as *const _);
            for row in acc.iter_mut() {
                row[j] = s;
            }
        }
        let mut bp = t.b;
        for &(off, len) in t.pieces {
            let mut a = t.a;
            for p in a.iter_mut() {
                *p = p.add(off);
            }
            let mut kk = 0;
            while kk < len {
                let mut w = [_mm512_setzero_si512(); NP];
                for (j, v) in w.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(bp.add(64 * j) as *const _);
                }
                for p in 0..MP {
                    let x = _mm512_set1_epi32((a[p].add(kk) as *const i32).read_unaligned());
                    for j in 0..NP {
                        acc[p][j] = _mm512_dpbusd_epi32(acc[p][j], x, w[j]);
                    }
                }
                bp = bp.add(64 * NP);
                kk += 4;
            }
        }
        for j in 0..NP {
            let mut v = [_mm512_setzero_ps(); MP];
            for (p, v) in v.iter_mut().enumerate() {
                *v = _mm512_cvtepi32_ps(acc[p][j]);
            }
            t.out.store512(j, &mut v);
        }
    }
}
