//! bfloat16 values: f32's sign and exponent with a 7-bit fraction, what AVX-512 BF16's
//! `vdpbf16ps` multiplies. f32 → bf16 rounds to nearest, ties to even, and flushes subnormal
//! inputs to (signed) zero, as the hardware conversion `vcvtneps2bf16` does, so the portable
//! conversion and the AVX-512 BF16 one give the same bits; bf16 → f32 is exact.

use super::isa::Isa;

/// Whether this CPU converts and multiplies bf16 in hardware (AVX-512 BF16 and BW).
pub fn bf16_runs_fast(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return std::is_x86_feature_detected!("avx512bf16")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl");
    }
    let _ = isa;
    false
}

/// The bf16 nearest to `v` (ties to even; subnormals flush to zero, NaN stays NaN).
pub fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `v` rounded to bf16 and back (the value a bf16 layer sees).
pub fn round_bf16(v: f32) -> f32 {
    from_bf16(to_bf16(v))
}

/// `src` rounded to bf16 into `dst` (the shorter length), in hardware where `isa` is AVX-512
/// and the CPU has BF16.
pub fn round_into(isa: Isa, src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if bf16_runs_fast(isa) {
        // SAFETY: AVX-512 F/BW/VL/BF16 were detected; lengths are bounded inside.
        return unsafe { avx512::round_into(src, dst) };
    }
    let _ = isa;
    for (o, v) in dst.iter_mut().zip(src) {
        *o = to_bf16(*v);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// 16 values per `vcvtneps2bf16`, the last ones under a mask.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn round_into(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        unsafe {
            while i + 16 <= n {
                let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.add(i)));
                _mm256_storeu_si256(
                    d.add(i) as *mut __m256i,
                    std::mem::transmute::<__m256bh, __m256i>(v),
                );
                i += 16;
            }
            if i < n {
                let mask: __mmask16 = (1u16 << (n - i)) - 1;
                let v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, s.add(i)));
                _mm256_mask_storeu_epi16(
                    d.add(i) as *mut i16,
                    mask,
                    std::mem::transmute::<__m256bh, __m256i>(v),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_flushes_subnormals() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to the even 1.0
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: ties to the even upper one
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1e-6), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert_eq!(to_bf16(f32::from_bits(1)), 0);
        assert_eq!(to_bf16(-f32::from_bits(1)), 0x8000);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
    }

    #[test]
    fn every_path_converts_to_the_same_bits() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut src: Vec<f32> = (0..1000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f32::from_bits((state >> 32) as u32)
            })
            .filter(|v| !v.is_nan())
            .collect();
        src.extend([0.0, -0.0, 1.0 + 1.0 / 256.0, f32::MAX, f32::MIN_POSITIVE]);
        let want: Vec<u16> = src.iter().map(|&v| to_bf16(v)).collect();
        for isa in Isa::available() {
            for len in [src.len(), 37, 16, 3] {
                let mut got = vec![0u16; len];
                round_into(isa, &src[..len], &mut got);
                assert_eq!(got, want[..len], "{isa}, {len} values");
            }
        }
    }
}
