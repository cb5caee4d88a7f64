//! The AVX-512 BF16 register tile of the bf16 convolution: 12 (or 8, 4) output pixels × one or
//! two panels of 16 output channels, up to 24 f32 accumulators. Each step of the reduction
//! loads one weight vector per panel (16 channels × 2 consecutive reduction values) and
//! broadcasts 2 input values per pixel into `vdpbf16ps` (both products added to each lane's f32
//! sum). The epilogue adds the bias, applies the fused tail on 16-lane vectors and stores with
//! a lane mask where the panel is partial.

#![cfg(target_arch = "x86_64")]

use super::nhwc_bf16::Tile;
use super::packed_conv::MR;
use std::arch::x86_64::*;

/// The tile's products and epilogue for `NP` panels and its `m` pixels: a tile of 4, 8 or 12
/// pixel rows, the fewest that hold them.
///
/// # Safety
/// AVX-512 F/BW/BF16 must be available; every pointer of `t` reaches what its fields describe.
pub(super) unsafe fn tile<const NP: usize>(t: &Tile) {
    unsafe {
        match t.out.m {
            0..=4 => rows::<NP, 4>(t),
            5..=8 => rows::<NP, 8>(t),
            _ => rows::<NP, MR>(t),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn rows<const NP: usize, const MP: usize>(t: &Tile) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NP]; MP];
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
                    *v = _mm512_loadu_si512(bp.add(32 * j) as *const _);
                }
                for p in 0..MP {
                    let x = _mm512_set1_epi32((a[p].add(kk) as *const i32).read_unaligned());
                    let x: __m512bh = std::mem::transmute(x);
                    for j in 0..NP {
                        let wj: __m512bh = std::mem::transmute(w[j]);
                        acc[p][j] = _mm512_dpbf16_ps(acc[p][j], x, wj);
                    }
                }
                bp = bp.add(32 * NP);
                kk += 2;
            }
        }
        // (a copy per panel: indexing the accumulators in place here makes the compiler keep
        // them in memory through the loop above, 2.4× slower)
        for j in 0..NP {
            t.out.store512(j, &mut acc.map(|row| row[j]));
        }
    }
}
