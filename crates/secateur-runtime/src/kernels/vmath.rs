//! Element-wise functions on AVX-512 vectors of 16 floats, for kernel epilogues and the
//! vectorised element-wise steps: `exp` (Cephes' range reduction and degree-6 polynomial,
//! about 1 ulp, scaled by `vscalefps`), sigmoid and SiLU from a shorter `e^−x` (a degree-5 fit
//! of `2^f`, about 1e-6), tanh and GELU from `exp` (erf by
//! Abramowitz–Stegun 7.1.26, absolute error below 1.5e-7), their reciprocals by the hardware
//! estimate and one Newton step instead of a division; clamps, hard sigmoid / swish and
//! leaky ReLU are exact. [`apply`] evaluates any [`Pointwise`] on a vector, falling back to
//! the scalar definition lane by lane for the rare functions without a vector form.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use secateur_graph::Pointwise;

/// `e^x` for 16 lanes (inputs clamped to the finite range of f32 results).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-103.0)),
        _mm512_set1_ps(88.7),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    // r = x − n·ln 2 in two parts (Cody–Waite)
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let r2 = _mm512_mul_ps(r, r);
    let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(p, n)
}

/// `1 / (1 + e^−x)`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn sigmoid(x: __m512) -> __m512 {
    unsafe {
        // beyond ±87 the result is 0 or 1 to f32 precision (and 1 + e^87 stays finite)
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
            _mm512_set1_ps(87.0),
        );
        recip(_mm512_add_ps(_mm512_set1_ps(1.0), exp_neg_in_range(x)))
    }
}

/// `e^−x` for `x` already in [−87, 87], with fewer multiplications than [`exp`]: `t = −x ·
/// log2 e` split into `n = round(t)` and `f = t − n` (exact), then `2^f` by a degree-5 fit of
/// relative error 7.5e-8 on [−½, ½] and a scaling by `2^n`. Rounding `t` costs a relative error
/// of at most `|t| · 2^−24 · ln 2` (6.6e-7 for |x| ≤ 12, where the sigmoid is not yet 0 or 1).
/// SiLU and sigmoid epilogues cost as much as the depthwise convolutions before them; this
/// form has 6 operations on the multiply pipes where the Cody–Waite reduction and Cephes'
/// polynomial had 10.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn exp_neg_in_range(x: __m512) -> __m512 {
    let t = _mm512_mul_ps(x, _mm512_set1_ps(-std::f32::consts::LOG2_E));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    let mut p = _mm512_set1_ps(EXP2_FIT[5]);
    for &c in EXP2_FIT[..5].iter().rev() {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// `2^f ≈ Σ c_k f^k` on [−½, ½] (a least-maximum relative error fit, 7.5e-8).
#[cfg(target_arch = "x86_64")]
const EXP2_FIT: [f32; 6] = [
    1.000_000_1,
    0.693_146_94,
    0.240_221_2,
    0.055_507_13,
    0.009_675_54,
    0.001_327_65,
];

/// `1 / d` by the 14-bit hardware estimate and one Newton step (relative error about 1e-7;
/// `vdivps` on 16 lanes costs several times more).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn recip(d: __m512) -> __m512 {
    let r = _mm512_rcp14_ps(d);
    // r · (2 − d·r)
    _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
}

/// `tanh x = 1 − 2 / (e^{2x} + 1)`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn tanh(x: __m512) -> __m512 {
    unsafe {
        let one = _mm512_set1_ps(1.0);
        let e = exp(_mm512_add_ps(x, x));
        // (1 / (e + 1) is flushed to 0 where e + 1 ≥ 2^126, giving 1)
        _mm512_fnmadd_ps(_mm512_set1_ps(2.0), recip(_mm512_add_ps(e, one)), one)
    }
}

/// The error function (Abramowitz–Stegun 7.1.26).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn erf(x: __m512) -> __m512 {
    unsafe {
        let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(
            _mm512_set1_epi32(i32::MIN),
            _mm512_castps_si512(x),
        ));
        let one = _mm512_set1_ps(1.0);
        let t = recip(_mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), a, one));
        let mut p = _mm512_set1_ps(1.061_405_4);
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453_152_1));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421_413_8));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284_496_72));
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254_829_6));
        p = _mm512_mul_ps(p, t);
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
        let y = _mm512_fnmadd_ps(p, e, one);
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign))
    }
}

/// `f` on 16 lanes.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn apply(f: Pointwise, x: __m512) -> __m512 {
    unsafe {
        let zero = _mm512_setzero_ps();
        match f {
            Pointwise::Relu => _mm512_max_ps(x, zero),
            Pointwise::Clip { min, max } => {
                _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(min)), _mm512_set1_ps(max))
            }
            Pointwise::Sigmoid => sigmoid(x),
            Pointwise::Silu => _mm512_mul_ps(x, sigmoid(x)),
            Pointwise::HardSigmoid { alpha, beta } => _mm512_min_ps(
                _mm512_max_ps(
                    _mm512_fmadd_ps(x, _mm512_set1_ps(alpha), _mm512_set1_ps(beta)),
                    zero,
                ),
                _mm512_set1_ps(1.0),
            ),
            Pointwise::HardSwish => {
                let gate = _mm512_min_ps(
                    _mm512_max_ps(
                        _mm512_fmadd_ps(x, _mm512_set1_ps(1.0 / 6.0), _mm512_set1_ps(0.5)),
                        zero,
                    ),
                    _mm512_set1_ps(1.0),
                );
                _mm512_mul_ps(x, gate)
            }
            Pointwise::LeakyRelu { alpha } => {
                let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, zero);
                _mm512_mask_mul_ps(x, neg, x, _mm512_set1_ps(alpha))
            }
            Pointwise::Tanh => tanh(x),
            Pointwise::Erf => erf(x),
            Pointwise::Gelu { tanh: false } => {
                let e = erf(_mm512_mul_ps(
                    x,
                    _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
                ));
                _mm512_mul_ps(
                    _mm512_mul_ps(x, _mm512_set1_ps(0.5)),
                    _mm512_add_ps(e, _mm512_set1_ps(1.0)),
                )
            }
            Pointwise::Gelu { tanh: true } => {
                let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
                let inner = _mm512_mul_ps(
                    _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044_715), x),
                    _mm512_set1_ps((2.0 / std::f32::consts::PI).sqrt()),
                );
                _mm512_mul_ps(
                    _mm512_mul_ps(x, _mm512_set1_ps(0.5)),
                    _mm512_add_ps(tanh(inner), _mm512_set1_ps(1.0)),
                )
            }
            Pointwise::Exp => exp(x),
            Pointwise::Neg => _mm512_sub_ps(zero, x),
            Pointwise::Abs => _mm512_abs_ps(x),
            Pointwise::Sqrt => _mm512_sqrt_ps(x),
            Pointwise::Reciprocal => _mm512_div_ps(_mm512_set1_ps(1.0), x),
            // the mask computations of exported attention: casts to BOOL and integers, logic
            Pointwise::NonZero => ones_where(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(x, zero)),
            Pointwise::Not => ones_where(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, zero)),
            Pointwise::IsNaN => ones_where(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x)),
            Pointwise::Trunc => {
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x)
            }
            Pointwise::Floor => {
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(x)
            }
            Pointwise::Ceil => {
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC }>(x)
            }
            Pointwise::Round => {
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
            }
            other => {
                let mut lanes = [0.0f32; 16];
                _mm512_storeu_ps(lanes.as_mut_ptr(), x);
                for v in &mut lanes {
                    *v = other.apply(*v);
                }
                _mm512_loadu_ps(lanes.as_ptr())
            }
        }
    }
}

/// 1 in the lanes of `m`, 0 elsewhere.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn ones_where(m: __mmask16) -> __m512 {
    _mm512_maskz_mov_ps(m, _mm512_set1_ps(1.0))
}

/// Expands `$each!(|v| expression)` for `f`: a match outside the loop that `$each` writes,
/// with constants hoisted and every function with a vector form inlined into its own loop (a
/// match on the function per vector, or a call per group of vectors, had cost as much as the
/// sigmoid itself: ReLU over a buffer ran at 8 cycles per vector).
#[cfg(target_arch = "x86_64")]
macro_rules! per_function {
    ($f:expr, $each:ident) => {{
        let (zero, one) = (_mm512_setzero_ps(), _mm512_set1_ps(1.0));
        match $f {
            Pointwise::Relu => $each!(|v| _mm512_max_ps(v, zero)),
            Pointwise::Clip { min, max } => {
                let (lo, hi) = (_mm512_set1_ps(min), _mm512_set1_ps(max));
                $each!(|v| _mm512_min_ps(_mm512_max_ps(v, lo), hi))
            }
            Pointwise::Sigmoid => $each!(|v| sigmoid(v)),
            Pointwise::Silu => $each!(|v| _mm512_mul_ps(v, sigmoid(v))),
            // the gates of MobileNetV3 (after most of its convolutions)
            Pointwise::HardSigmoid { alpha, beta } => {
                let (a, b) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
                $each!(|v| _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(v, a, b), zero), one))
            }
            Pointwise::HardSwish => {
                let (a, b) = (_mm512_set1_ps(1.0 / 6.0), _mm512_set1_ps(0.5));
                $each!(|v| _mm512_mul_ps(
                    v,
                    _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(v, a, b), zero), one)
                ))
            }
            Pointwise::Tanh => $each!(|v| tanh(v)),
            Pointwise::Erf => $each!(|v| erf(v)),
            Pointwise::Exp => $each!(|v| exp(v)),
            // (a constant function: `apply`'s match folds away)
            Pointwise::Gelu { tanh: false } => {
                $each!(|v| apply(Pointwise::Gelu { tanh: false }, v))
            }
            Pointwise::Gelu { tanh: true } => $each!(|v| apply(Pointwise::Gelu { tanh: true }, v)),
            other => $each!(|v| apply(other, v)),
        }
    }};
}

/// `f` on every vector of `xs`: the function is chosen once and the vectors are independent,
/// so their long dependency chains (exp, reciprocal) overlap.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn apply_all<const N: usize>(f: Pointwise, xs: &mut [__m512; N]) {
    macro_rules! each {
        (|$v:ident| $body:expr) => {
            for x in xs.iter_mut() {
                let $v = *x;
                *x = $body;
            }
        };
    }
    unsafe { per_function!(f, each) }
}

/// Vectors [`map`] computes together: the long chains of exp and the reciprocal overlap.
const MAP_VECTORS: usize = 4;

/// `f` over `x` into `y` ([`MAP_VECTORS`] vectors of 16 lanes at a time, then one, the tail
/// masked).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn map(f: Pointwise, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: both slices hold `n` values.
    unsafe { map_ptr(f, x.as_ptr(), y.as_mut_ptr(), n) }
}

/// [`map`] in place (no copy of the input: a tail applied after a kernel's sums).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn map_in_place(f: Pointwise, y: &mut [f32]) {
    // SAFETY: `y` holds its length; every step loads its values before it stores them.
    unsafe { map_ptr(f, y.as_ptr(), y.as_mut_ptr(), y.len()) }
}

/// [`map`] on `n` values at `xp` into `yp`, which may be the same place.
///
/// # Safety
/// AVX-512F; `n` values at `xp` and at `yp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn map_ptr(f: Pointwise, xp: *const f32, yp: *mut f32, n: usize) {
    macro_rules! each {
        (|$v:ident| $body:expr) => {{
            let mut i = 0;
            while i + 16 * MAP_VECTORS <= n {
                for j in 0..MAP_VECTORS {
                    let $v = _mm512_loadu_ps(xp.add(i + 16 * j));
                    _mm512_storeu_ps(yp.add(i + 16 * j), $body);
                }
                i += 16 * MAP_VECTORS;
            }
            while i + 16 <= n {
                let $v = _mm512_loadu_ps(xp.add(i));
                _mm512_storeu_ps(yp.add(i), $body);
                i += 16;
            }
            if i < n {
                let m: __mmask16 = (1u32 << (n - i)).wrapping_sub(1) as __mmask16;
                let $v = _mm512_maskz_loadu_ps(m, xp.add(i));
                _mm512_mask_storeu_ps(yp.add(i), m, $body);
            }
        }};
    }
    // SAFETY: the caller's contract: `n` values at `xp` and `yp`, each loaded before its store.
    unsafe { per_function!(f, each) }
}

/// The same functions on AVX2 vectors of 8 floats (`2^n` built in the exponent bits, as AVX2
/// has no `vscalefps`). They carry no `target_feature` of their own so that they inline
/// (`inline(always)`) into the kernels' epilogues, which are compiled for AVX2 and FMA.
pub mod v256 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    use secateur_graph::Pointwise;

    /// `e^x` for 8 lanes (inputs clamped to the finite range of f32 results).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn exp(x: __m256) -> __m256 {
        unsafe {
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-103.0)),
                _mm256_set1_ps(88.7),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            );
            // r = x − n·ln 2 in two parts (Cody–Waite)
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
            let p = exp_reduced(r);
            // p · 2^n in two factors, each a normal power of two (n ranges over [-149, 128])
            let n = _mm256_cvtps_epi32(n);
            let half = _mm256_srai_epi32::<1>(n);
            let pow2 = |e: __m256i| {
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                    e,
                    _mm256_set1_epi32(127),
                )))
            };
            _mm256_mul_ps(
                _mm256_mul_ps(p, pow2(half)),
                pow2(_mm256_sub_epi32(n, half)),
            )
        }
    }

    /// `e^r` for `|r| ≤ ln 2 / 2` (Cephes' polynomial), shared by [`exp`] and the sigmoid's
    /// exponential.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn exp_reduced(r: __m256) -> __m256 {
        unsafe {
            let mut p = _mm256_set1_ps(1.987_569_1e-4);
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
            let r2 = _mm256_mul_ps(r, r);
            _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)))
        }
    }

    /// `1 / (1 + e^−x)`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn sigmoid(x: __m256) -> __m256 {
        unsafe {
            // beyond ±87 the result is 0 or 1 to f32 precision (e^-87 is still a normal float)
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
                _mm256_set1_ps(87.0),
            );
            recip(_mm256_add_ps(_mm256_set1_ps(1.0), exp_neg_in_range(x)))
        }
    }

    /// `e^−x` for `x` in [−87, 87] (the caller clamps), with fewer operations than [`exp`]:
    /// `n = round(−x · log2 e)` by adding `1.5·2^23 + 127`, whose low bits then hold `n + 127`,
    /// the exponent field of `2^n` after a shift (one scaling, as `n` stays in [−126, 126]).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn exp_neg_in_range(x: __m256) -> __m256 {
        unsafe {
            let magic = _mm256_set1_ps(12_583_039.0);
            let t = _mm256_fmadd_ps(x, _mm256_set1_ps(-std::f32::consts::LOG2_E), magic);
            let n = _mm256_sub_ps(t, magic);
            // r = −x − n·ln 2 in two parts (Cody–Waite)
            let r = _mm256_fnmsub_ps(n, _mm256_set1_ps(0.693_359_4), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
            let p = exp_reduced(r);
            let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(t)));
            _mm256_mul_ps(p, pow2)
        }
    }

    /// `1 / d` by the hardware estimate and one Newton step (relative error about 1e-7; `vdivps`
    /// costs several times more).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn recip(d: __m256) -> __m256 {
        unsafe {
            let r = _mm256_rcp_ps(d);
            // r · (2 − d·r)
            _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0)))
        }
    }

    /// `tanh x = 1 − 2 / (e^{2x} + 1)`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn tanh(x: __m256) -> __m256 {
        unsafe {
            let one = _mm256_set1_ps(1.0);
            let e = exp(_mm256_add_ps(x, x));
            _mm256_sub_ps(
                one,
                _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
            )
        }
    }

    /// The error function (Abramowitz–Stegun 7.1.26).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn erf(x: __m256) -> __m256 {
        unsafe {
            let sign_bit = _mm256_set1_ps(-0.0);
            let sign = _mm256_and_ps(x, sign_bit);
            let a = _mm256_andnot_ps(sign_bit, x);
            let one = _mm256_set1_ps(1.0);
            let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.327_591_1), a, one));
            let mut p = _mm256_set1_ps(1.061_405_4);
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453_152_1));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421_413_8));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284_496_72));
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254_829_6));
            p = _mm256_mul_ps(p, t);
            let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
            let y = _mm256_fnmadd_ps(p, e, one);
            _mm256_or_ps(y, sign)
        }
    }

    /// `f` on 8 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn apply(f: Pointwise, x: __m256) -> __m256 {
        unsafe {
            let zero = _mm256_setzero_ps();
            match f {
                Pointwise::Relu => _mm256_max_ps(x, zero),
                Pointwise::Clip { min, max } => {
                    _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(min)), _mm256_set1_ps(max))
                }
                Pointwise::Sigmoid => sigmoid(x),
                Pointwise::Silu => _mm256_mul_ps(x, sigmoid(x)),
                Pointwise::HardSigmoid { alpha, beta } => _mm256_min_ps(
                    _mm256_max_ps(
                        _mm256_fmadd_ps(x, _mm256_set1_ps(alpha), _mm256_set1_ps(beta)),
                        zero,
                    ),
                    _mm256_set1_ps(1.0),
                ),
                Pointwise::HardSwish => {
                    let gate = _mm256_min_ps(
                        _mm256_max_ps(
                            _mm256_fmadd_ps(x, _mm256_set1_ps(1.0 / 6.0), _mm256_set1_ps(0.5)),
                            zero,
                        ),
                        _mm256_set1_ps(1.0),
                    );
                    _mm256_mul_ps(x, gate)
                }
                Pointwise::LeakyRelu { alpha } => {
                    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, zero);
                    _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(alpha)), neg)
                }
                Pointwise::Tanh => tanh(x),
                Pointwise::Erf => erf(x),
                Pointwise::Gelu { tanh: false } => {
                    let e = erf(_mm256_mul_ps(
                        x,
                        _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
                    ));
                    _mm256_mul_ps(
                        _mm256_mul_ps(x, _mm256_set1_ps(0.5)),
                        _mm256_add_ps(e, _mm256_set1_ps(1.0)),
                    )
                }
                Pointwise::Gelu { tanh: true } => {
                    let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                    let inner = _mm256_mul_ps(
                        _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044_715), x),
                        _mm256_set1_ps((2.0 / std::f32::consts::PI).sqrt()),
                    );
                    _mm256_mul_ps(
                        _mm256_mul_ps(x, _mm256_set1_ps(0.5)),
                        _mm256_add_ps(tanh(inner), _mm256_set1_ps(1.0)),
                    )
                }
                Pointwise::Exp => exp(x),
                Pointwise::Neg => _mm256_sub_ps(zero, x),
                Pointwise::Abs => _mm256_andnot_ps(_mm256_set1_ps(-0.0), x),
                Pointwise::Sqrt => _mm256_sqrt_ps(x),
                Pointwise::Reciprocal => _mm256_div_ps(_mm256_set1_ps(1.0), x),
                Pointwise::NonZero => ones_where(_mm256_cmp_ps::<_CMP_NEQ_UQ>(x, zero)),
                Pointwise::Not => ones_where(_mm256_cmp_ps::<_CMP_EQ_OQ>(x, zero)),
                Pointwise::IsNaN => ones_where(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x)),
                Pointwise::Trunc => {
                    _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x)
                }
                Pointwise::Floor => {
                    _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(x)
                }
                Pointwise::Ceil => {
                    _mm256_round_ps::<{ _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC }>(x)
                }
                Pointwise::Round => {
                    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
                }
                other => {
                    let mut lanes = [0.0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), x);
                    for v in &mut lanes {
                        *v = other.apply(*v);
                    }
                    _mm256_loadu_ps(lanes.as_ptr())
                }
            }
        }
    }

    /// 1 in the lanes set in the comparison result `m` (all bits), 0 elsewhere.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn ones_where(m: __m256) -> __m256 {
        unsafe { _mm256_and_ps(m, _mm256_set1_ps(1.0)) }
    }

    /// `f` on every vector of `xs`: the function is chosen once and the vectors are
    /// independent, so their long dependency chains (exp, division) overlap.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; inlined into a caller compiled with them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn apply_all<const N: usize>(f: Pointwise, xs: &mut [__m256; N]) {
        unsafe {
            // plain loops: a closure would not inherit the caller's target features
            match f {
                Pointwise::Sigmoid => {
                    for x in xs.iter_mut() {
                        *x = sigmoid(*x);
                    }
                }
                Pointwise::Silu => {
                    for x in xs.iter_mut() {
                        *x = _mm256_mul_ps(*x, sigmoid(*x));
                    }
                }
                Pointwise::Tanh => {
                    for x in xs.iter_mut() {
                        *x = tanh(*x);
                    }
                }
                Pointwise::HardSigmoid { alpha, beta } => {
                    let (a, b) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
                    let (zero, one) = (_mm256_setzero_ps(), _mm256_set1_ps(1.0));
                    for x in xs.iter_mut() {
                        *x = _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(*x, a, b), zero), one);
                    }
                }
                Pointwise::HardSwish => {
                    let (a, b) = (_mm256_set1_ps(1.0 / 6.0), _mm256_set1_ps(0.5));
                    let (zero, one) = (_mm256_setzero_ps(), _mm256_set1_ps(1.0));
                    for x in xs.iter_mut() {
                        let gate =
                            _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(*x, a, b), zero), one);
                        *x = _mm256_mul_ps(*x, gate);
                    }
                }
                other => {
                    for x in xs.iter_mut() {
                        *x = apply(other, *x);
                    }
                }
            }
        }
    }

    /// Vectors [`map`] computes together: the long chains of exp and division overlap.
    const MAP_VECTORS: usize = 8;

    /// `f` over `x` into `y` ([`MAP_VECTORS`] vectors at a time, then one, the tail through a
    /// lane buffer).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map(f: Pointwise, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: both slices hold `n` values.
        unsafe { map_ptr(f, x.as_ptr(), y.as_mut_ptr(), n) }
    }

    /// [`map`] in place.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map_in_place(f: Pointwise, y: &mut [f32]) {
        // SAFETY: `y` holds its length; every step loads its values before it stores them.
        unsafe { map_ptr(f, y.as_ptr(), y.as_mut_ptr(), y.len()) }
    }

    /// [`map`] on `n` values at `xp` into `yp`, which may be the same place.
    ///
    /// # Safety
    /// AVX2 and FMA; `n` values at `xp` and at `yp`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn map_ptr(f: Pointwise, xp: *const f32, yp: *mut f32, n: usize) {
        unsafe {
            let mut i = 0;
            // several vectors per step: their chains are independent and overlap
            while i + 8 * MAP_VECTORS <= n {
                let mut xs = [_mm256_setzero_ps(); MAP_VECTORS];
                for (j, v) in xs.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(xp.add(i + 8 * j));
                }
                apply_all(f, &mut xs);
                for (j, v) in xs.iter().enumerate() {
                    _mm256_storeu_ps(yp.add(i + 8 * j), *v);
                }
                i += 8 * MAP_VECTORS;
            }
            while i + 8 <= n {
                let v = _mm256_loadu_ps(xp.add(i));
                _mm256_storeu_ps(yp.add(i), apply(f, v));
                i += 8;
            }
            if i < n {
                let mut lanes = [0.0f32; 8];
                std::ptr::copy_nonoverlapping(xp.add(i), lanes.as_mut_ptr(), n - i);
                let v = apply(f, _mm256_loadu_ps(lanes.as_ptr()));
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), yp.add(i), n - i);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Every function with a vector form against its scalar definition, over [-12, 12] and at
    /// saturating magnitudes.
    #[test]
    fn vector_functions_match_their_scalar_definitions() {
        let avx512 = std::is_x86_feature_detected!("avx512f");
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let mut xs: Vec<f32> = (0..4801).map(|i| -12.0 + i as f32 * 0.005).collect();
        // saturated ranges (the sigmoid clamps its argument at ±87)
        xs.extend([
            -1e4, -300.0, -104.0, -88.0, -87.0, -86.9, -30.0, 30.0, 86.9, 87.0, 88.0, 1e4,
        ]);
        let fs = [
            Pointwise::Relu,
            Pointwise::Clip { min: 0.0, max: 6.0 },
            Pointwise::Sigmoid,
            Pointwise::Silu,
            Pointwise::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Pointwise::HardSwish,
            Pointwise::LeakyRelu { alpha: 0.1 },
            Pointwise::Tanh,
            Pointwise::Erf,
            Pointwise::Gelu { tanh: false },
            Pointwise::Gelu { tanh: true },
            Pointwise::Exp,
            Pointwise::Neg,
            Pointwise::Abs,
            Pointwise::Trunc,
        ];
        for f in fs {
            let mut y = xs.iter().map(|&x| f.apply(x)).collect::<Vec<_>>();
            let mut y256 = vec![0.0; xs.len()];
            // SAFETY: AVX2 and FMA detected above, AVX-512F where it is used.
            unsafe {
                if avx512 {
                    map(f, &xs, &mut y);
                }
                v256::map(f, &xs, &mut y256);
            }
            for ((&x, &v), &v2) in xs.iter().zip(&y).zip(&y256) {
                let want = f.apply(x);
                let tol = 2e-6 * want.abs().max(1.0);
                assert!(
                    v == want || (v - want).abs() <= tol,
                    "{f:?}({x}) = {v}, want {want}"
                );
                assert!(
                    v2 == want || (v2 - want).abs() <= tol,
                    "avx2 {f:?}({x}) = {v2}, want {want}"
                );
            }
        }
    }

    /// The casts, logic and rounding of exported mask computations: exact, NaN, signed zeros
    /// and rounding ties included.
    #[test]
    fn mask_and_rounding_functions_are_exact() {
        let avx512 = std::is_x86_feature_detected!("avx512f");
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let mut xs: Vec<f32> = (0..801).map(|i| -10.0 + i as f32 * 0.025).collect();
        xs.extend([
            f32::NAN,
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            1e9,
            -1e9,
            f32::INFINITY,
        ]);
        let fs = [
            Pointwise::NonZero,
            Pointwise::Not,
            Pointwise::IsNaN,
            Pointwise::Trunc,
            Pointwise::Floor,
            Pointwise::Ceil,
            Pointwise::Round,
        ];
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for f in fs {
            let (mut y, mut y256) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
            // SAFETY: AVX2 and FMA detected above, AVX-512F where it is used.
            unsafe {
                if avx512 {
                    map(f, &xs, &mut y);
                } else {
                    y = xs.iter().map(|&x| f.apply(x)).collect();
                }
                v256::map(f, &xs, &mut y256);
            }
            for ((&x, &v), &v2) in xs.iter().zip(&y).zip(&y256) {
                let want = f.apply(x);
                assert!(same(v, want), "{f:?}({x}) = {v}, want {want}");
                assert!(same(v2, want), "avx2 {f:?}({x}) = {v2}, want {want}");
            }
        }
    }
}
