//! `QuantizeLinear` on 16 lanes: f32 activations to uint8 levels
//! (`clamp(round_half_even(x / scale) + zp, 0, 255)`, the division and rounding ONNX specifies),
//! and the simulation's round trip back to f32 (`(level − zp) · scale`, what a QDQ pair
//! computes; a NaN stays NaN there, and is level 0 as a byte). AVX-512 where present, else a portable loop that computes the same values (round
//! half to even by the 1.5·2²³ trick, exact in the clamped range).

use super::isa::Isa;

/// Uint8 levels of `src` into `dst` (the shorter length), with `isa`'s kernel.
pub fn quantize(isa: Isa, src: &[f32], scale: f32, zp: u8, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected; lengths are bounded inside.
        return unsafe { avx512::levels(src, scale, zp, LevelsOut::Bytes(dst)) };
    }
    let _ = isa;
    for (o, v) in dst.iter_mut().zip(src) {
        *o = level(*v, scale, zp as f32) as u8;
    }
}

/// The values `src` takes through QuantizeLinear then DequantizeLinear, into `dst`, with
/// `isa`'s kernel.
pub fn fake_quantize(isa: Isa, src: &[f32], scale: f32, zp: u8, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected; lengths are bounded inside.
        return unsafe { avx512::levels(src, scale, zp, LevelsOut::Values(dst)) };
    }
    let _ = isa;
    let zpf = zp as f32;
    for (o, v) in dst.iter_mut().zip(src) {
        *o = (level(*v, scale, zpf) - zpf) * scale;
    }
}

/// The level of one value, as f32 (portable form).
#[inline]
fn level(v: f32, scale: f32, zp: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let y = (v / scale).clamp(-512.0, 512.0);
    ((y + MAGIC) - MAGIC + zp).clamp(0.0, 255.0)
}

/// Where levels go: bytes, or dequantized values.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum LevelsOut<'a> {
    Bytes(&'a mut [u8]),
    Values(&'a mut [f32]),
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LevelsOut;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn levels(src: &[f32], scale: f32, zp: u8, mut out: LevelsOut) {
        let n = src.len().min(match &out {
            LevelsOut::Bytes(d) => d.len(),
            LevelsOut::Values(d) => d.len(),
        });
        let s = _mm512_set1_ps(scale);
        let z = _mm512_set1_epi32(zp as i32);
        let (lo, hi) = (_mm512_set1_ps(-512.0), _mm512_set1_ps(512.0));
        let mut i = 0;
        while i < n {
            let lanes = (n - i).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xffff
            } else {
                (1u16 << lanes) - 1
            };
            // SAFETY: the mask keeps every load and store inside the slices.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(i));
                // round to nearest even, clamp as the portable form does (a NaN becomes level
                // 0, as `as u8` makes of it)
                let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_div_ps(x, s),
                );
                let r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(r), z);
                let q = _mm512_max_epi32(
                    _mm512_min_epi32(q, _mm512_set1_epi32(255)),
                    _mm512_setzero_si512(),
                );
                match &mut out {
                    LevelsOut::Bytes(d) => {
                        _mm512_mask_cvtepi32_storeu_epi8(d.as_mut_ptr().add(i).cast(), mask, q)
                    }
                    LevelsOut::Values(d) => {
                        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, z)), s);
                        // a NaN stays NaN through the simulation, as in the portable form
                        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
                        let v = _mm512_mask_mov_ps(v, nan, x);
                        _mm512_mask_storeu_ps(d.as_mut_ptr().add(i), mask, v)
                    }
                }
            }
            i += 16;
        }
    }
}
