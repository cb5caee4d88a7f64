//! Softmax along an axis. Along the last axis (attention scores, classifier outputs), rows
//! run vectorised: maximum, `e^(x − max)` with the vector exponential and its sum, then one
//! scaling by the reciprocal; other axes use the strided scalar loop of [`crate::ops`].
//! Attention's `softmax(s·x + mask)` (the graph's scaled-softmax fusion rule) computes the
//! scaled, masked scores in the first pass over each row, the mask broadcast to the scores by
//! [`MaskRows`].

use super::Isa;

/// `y = softmax(x)` over the middle axis of `[outer, red, inner]`.
pub fn softmax(isa: Isa, x: &[f32], outer: usize, red: usize, inner: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if inner == 1 && isa == Isa::Avx512 {
        let n = outer * red;
        // SAFETY: AVX-512F was detected; the rows' slices hold `outer · red` values each
        // (indexing panics otherwise).
        unsafe { scaled_rows_avx512(&x[..n], red, 1.0, None, 0, &mut y[..n]) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if inner == 1 && isa != Isa::Portable {
        // SAFETY: AVX2 and FMA are part of every non-portable instruction set detected here.
        unsafe { rows_avx2(x, outer, red, y) };
        return;
    }
    let _ = isa;
    crate::ops::softmax(x, outer, red, inner, y);
}

/// Where each row of scores `[.., n]` finds its additive mask, broadcast NumPy-style: the
/// mask's offset for a row index and its step along the row (1, or 0 when one value serves a
/// whole row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskRows {
    /// The scores' leading axes, outermost first: their size and the mask's stride along them.
    lead: Vec<(usize, usize)>,
    along: usize,
    len: usize,
}

impl MaskRows {
    /// The broadcast of a mask of dims `mask` to scores of dims `scores`, or `None` when it
    /// does not broadcast to them without enlarging them.
    pub fn new(mask: &[usize], scores: &[usize]) -> Option<Self> {
        let r = scores.len();
        if r == 0 || mask.len() > r {
            return None;
        }
        let mut m = vec![1; r - mask.len()];
        m.extend_from_slice(mask);
        if m.iter().zip(scores).any(|(&a, &b)| a != b && a != 1) {
            return None;
        }
        let mut strides = vec![0; r];
        let mut len = 1;
        for i in (0..r).rev() {
            if m[i] != 1 {
                strides[i] = len;
                len *= m[i];
            }
        }
        Some(MaskRows {
            lead: (0..r - 1).map(|i| (scores[i], strides[i])).collect(),
            along: strides[r - 1],
            len,
        })
    }

    /// The mask's offset for row `row` of the scores.
    pub fn offset(&self, row: usize) -> usize {
        let mut rest = row;
        let mut at = 0;
        for &(dim, stride) in self.lead.iter().rev() {
            at += rest % dim.max(1) * stride;
            rest /= dim.max(1);
        }
        at
    }

    /// Elements the mask holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Rows `first..` of `y = softmax(scale·x + mask)` along rows of `n` values (as many rows as
/// `y` holds; `x` holds the same rows), the mask's values for each row given by its
/// [`MaskRows`]. The scaled and masked scores round as the separate multiplication and
/// addition would.
pub fn scaled_softmax_rows(
    isa: Isa,
    x: &[f32],
    n: usize,
    scale: f32,
    mask: Option<(&[f32], &MaskRows)>,
    first: usize,
    y: &mut [f32],
) {
    let rows = y.len() / n.max(1);
    assert!(
        x.len() >= rows * n && mask.is_none_or(|(m, at)| m.len() >= at.len() && !at.is_empty()),
        "scaled softmax: {rows} rows of {n} do not fit the buffers"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512F was detected; every access stays in the rows checked above, and a
        // mask offset plus the row (or one value) stays below the mask's length.
        unsafe { scaled_rows_avx512(x, n, scale, mask, first, &mut y[..rows * n]) };
        return;
    }
    let mut t = vec![0.0; n];
    for (r, ys) in y.chunks_exact_mut(n.max(1)).take(rows).enumerate() {
        let xs = &x[r * n..(r + 1) * n];
        for (i, (v, &a)) in t.iter_mut().zip(xs).enumerate() {
            *v = a * scale;
            if let Some((m, at)) = mask {
                *v += m[at.offset(first + r) + i * at.along];
            }
        }
        softmax(isa, &t, 1, n, 1, ys);
    }
}

/// The AVX-512 rows of [`scaled_softmax_rows`]: pass one writes the scaled, masked scores
/// and finds their maximum, pass two their exponentials and sum, pass three scales by its
/// reciprocal; the last partial vector of a row is masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scaled_rows_avx512(
    x: &[f32],
    n: usize,
    scale: f32,
    mask: Option<(&[f32], &MaskRows)>,
    first: usize,
    y: &mut [f32],
) {
    use super::vmath::exp;
    use std::arch::x86_64::*;
    let rows = y.len() / n.max(1);
    let (full, rem) = (n / 16 * 16, n % 16);
    let tail = ((1u32 << rem) - 1) as __mmask16;
    let s = _mm512_set1_ps(scale);
    // SAFETY (whole body): row `r` spans `r·n .. (r + 1)·n` of `x` and `y`; vector accesses
    // end at `full ≤ n`, the masked ones touch only the `rem` lanes below `n`; the mask row
    // starts at its offset and runs `n` values when it steps along the row, else one.
    unsafe {
        for r in 0..rows {
            let (xp, yp) = (x.as_ptr().add(r * n), y.as_mut_ptr().add(r * n));
            let (mp, along) = match mask {
                Some((m, at)) => (m.as_ptr().add(at.offset(first + r)), at.along),
                None => (std::ptr::null(), 0),
            };
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i < n {
                let k = if i < full { u16::MAX } else { tail };
                let mut t = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xp.add(i)), s);
                if !mp.is_null() {
                    let m = if along == 1 {
                        _mm512_maskz_loadu_ps(k, mp.add(i))
                    } else {
                        _mm512_set1_ps(*mp)
                    };
                    t = _mm512_add_ps(t, m);
                }
                _mm512_mask_storeu_ps(yp.add(i), k, t);
                mx = _mm512_mask_max_ps(mx, k, mx, t);
                i += 16;
            }
            let top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i < n {
                let k = if i < full { u16::MAX } else { tail };
                let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, yp.add(i)), top));
                _mm512_mask_storeu_ps(yp.add(i), k, e);
                if i / 16 % 2 == 0 {
                    s0 = _mm512_mask_add_ps(s0, k, s0, e);
                } else {
                    s1 = _mm512_mask_add_ps(s1, k, s1, e);
                }
                i += 16;
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
            let mut i = 0;
            while i < n {
                let k = if i < full { u16::MAX } else { tail };
                let p = yp.add(i);
                _mm512_mask_storeu_ps(p, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p), inv));
                i += 16;
            }
        }
    }
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
            for isa in Isa::available() {
                let mut got = vec![0.0; n];
                softmax(isa, &x, outer, red, inner, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{isa}: {g} vs {w}");
                }
            }
        }

        /// `softmax(s·x + mask)` on any rows of the output equals the scaled and masked
        /// scores' softmax, on every instruction set, for masks broadcast along any axes
        /// (masked-out lanes the lowest float).
        #[test]
        fn scaled_masked_rows_match_the_reference(
            lead in proptest::collection::vec(1usize..4, 1..4),
            n in 1usize..70,
            keep in proptest::collection::vec(any::<bool>(), 4),
            scale in -2.0f32..2.0,
            first_row in 0usize..5,
            seed in 0u64..1000,
        ) {
            let mut dims = lead.clone();
            dims.push(n);
            let mask_dims: Vec<usize> =
                dims.iter().zip(&keep).map(|(&d, &k)| if k { d } else { 1 }).collect();
            let at = MaskRows::new(&mask_dims, &dims).expect("broadcasts");
            let value = |i: usize, salt: u64| {
                let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed ^ salt) >> 40;
                (h % 2000) as f32 / 100.0 - 10.0
            };
            let len: usize = dims.iter().product();
            let x: Vec<f32> = (0..len).map(|i| value(i, 0)).collect();
            let mask: Vec<f32> = (0..at.len())
                .map(|i| if value(i, 7) < -6.0 { f32::MIN } else { value(i, 3) })
                .collect();
            // the reference: the broadcast addition, then the row softmax
            let bc = crate::kernels::elementwise::Broadcast::new(&dims, &mask_dims, &dims);
            let scaled: Vec<f32> = x.iter().map(|v| v * scale).collect();
            let mut masked = vec![0.0; len];
            let add = secateur_graph::BinaryFn::Add;
            crate::kernels::elementwise::binary(Isa::Portable, add, &bc, &scaled, &mask, &mut masked);
            let mut want = vec![0.0; len];
            crate::ops::softmax(&masked, len / n, n, 1, &mut want);
            let rows = len / n;
            let first = first_row.min(rows - 1);
            for isa in Isa::available() {
                let mut got = vec![0.0; (rows - first) * n];
                let xs = &x[first * n..];
                scaled_softmax_rows(isa, xs, n, scale, Some((&mask, &at)), first, &mut got);
                for (g, w) in got.iter().zip(&want[first * n..]) {
                    prop_assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{isa}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn masks_that_enlarge_the_scores_do_not_broadcast() {
        assert!(MaskRows::new(&[2, 4], &[3, 4]).is_none());
        assert!(MaskRows::new(&[1, 2, 4], &[2, 4]).is_none());
        let at = MaskRows::new(&[2, 1, 4], &[2, 3, 4]).unwrap();
        assert_eq!(
            (at.offset(0), at.offset(2), at.offset(3), at.len()),
            (0, 0, 4, 8)
        );
    }
}
