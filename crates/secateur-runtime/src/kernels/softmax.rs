//! Softmax along an axis. Along the last axis (attention scores, classifier outputs), rows
//! run vectorised: maximum, `e^(x − max)` with the vector exponential and its sum, then one
//! scaling by the reciprocal; other axes use the strided scalar loop of [`crate::ops`].

use super::Isa;

/// `y = softmax(x)` over the middle axis of `[outer, red, inner]`.
pub fn softmax(isa: Isa, x: &[f32], outer: usize, red: usize, inner: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if inner == 1 && isa != Isa::Portable {
        // SAFETY: AVX2 and FMA are part of every non-portable instruction set detected here.
        unsafe { rows_avx2(x, outer, red, y) };
        return;
    }
    let _ = isa;
    crate::ops::softmax(x, outer, red, inner, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(x: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    use super::vmath::v256;
    use std::arch::x86_64::*;
    let hsum = |v: __m256| {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes
    };
    for r in 0..rows {
        let xs = &x[r * n..(r + 1) * n];
        let ys = &mut y[r * n..(r + 1) * n];
        let full = n / 8 * 8;
        // SAFETY: every vector access reads or writes 8 floats at `i + 8 <= full <= n`.
        unsafe {
            let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
            for i in (0..full).step_by(8) {
                mv = _mm256_max_ps(mv, _mm256_loadu_ps(xs.as_ptr().add(i)));
            }
            let m = hsum(mv)
                .into_iter()
                .chain(xs[full..].iter().copied())
                .fold(f32::NEG_INFINITY, f32::max);
            let mb = _mm256_set1_ps(m);
            let mut sv = _mm256_setzero_ps();
            for i in (0..full).step_by(8) {
                let e = v256::exp(_mm256_sub_ps(_mm256_loadu_ps(xs.as_ptr().add(i)), mb));
                _mm256_storeu_ps(ys.as_mut_ptr().add(i), e);
                sv = _mm256_add_ps(sv, e);
            }
            let mut s: f32 = hsum(sv).iter().sum();
            for i in full..n {
                let e = (xs[i] - m).exp();
                ys[i] = e;
                s += e;
            }
            let inv = 1.0 / s;
            let ib = _mm256_set1_ps(inv);
            for i in (0..full).step_by(8) {
                let p = ys.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), ib));
            }
            for v in &mut ys[full..] {
                *v *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The vector rows equal the scalar definition, masked (very negative) scores included.
        #[test]
        fn rows_match_the_reference(outer in 1usize..6, red in 1usize..70, inner in 1usize..3, seed in 0u64..1000) {
            let n = outer * red * inner;
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed) >> 40;
                    if h.is_multiple_of(7) { -3.4e38 } else { (h % 2000) as f32 / 100.0 - 10.0 }
                })
                .collect();
            let mut want = vec![0.0; n];
            crate::ops::softmax(&x, outer, red, inner, &mut want);
            let mut got = vec![0.0; n];
            softmax(Isa::detect(), &x, outer, red, inner, &mut got);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{g} vs {w}");
            }
        }
    }
}
