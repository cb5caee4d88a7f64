//! Hand-written AVX-512 kernels for the hot sparse formats: CSR, R×1 and 1×C blocks and N:M
//! with a tile of N columns kept in zmm registers (two interleaved accumulator sets for CSR
//! to hide FMA latency), masked loads/stores for ragged tails, and matrix-vector (N = 1) forms.
//! Callers check bounds once per call (`debug_assert!` here, validated formats upstream);
//! these functions are only called after `avx512f` was detected.

#![cfg(target_arch = "x86_64")]

use super::csr::Index;
use super::epilogue::{Activation, Epilogue};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn act512(v: __m512, a: Activation) -> __m512 {
    unsafe {
        match a {
            Activation::None => v,
            Activation::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
            Activation::Clip { min, max } => {
                _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(min)), _mm512_set1_ps(max))
            }
        }
    }
}

#[inline(always)]
fn tail_mask(len: usize) -> __mmask16 {
    if len >= 16 {
        0xFFFF
    } else {
        ((1u32 << len) - 1) as __mmask16
    }
}

/// CSR rows `r0..r1` of `Y = W·X` (X row-major `[K×n]`), over the column chunks of the
/// chunked CSR layout (`shape = (rows, chunks)`).
///
/// # Safety
/// AVX-512F must be available; `x` must hold `K·n` values with every stored index `< K`;
/// `y` must hold `(r1 − r0)·n` values.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn csr<I: Index>(
    shape: (usize, usize),
    ptr: &[u32],
    idx: &[I],
    vals: &[f32],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    unsafe {
        let (rows, chunks) = shape;
        let xp = x.as_ptr();
        let vp = vals.as_ptr();
        let ip = idx.as_ptr();
        let pp = ptr.as_ptr();
        let range = |ch: usize, m: usize| {
            (
                *pp.add(ch * (rows + 1) + m) as usize,
                *pp.add(ch * (rows + 1) + m + 1) as usize,
            )
        };
        if n == 1 {
            // matrix-vector: gather 16 inputs at a time, two accumulators
            for m in r0..r1 {
                let mut acc = [_mm512_setzero_ps(); 2];
                let mut s1 = 0.0f32;
                let mut u = 0;
                for ch in 0..chunks {
                    let (s, e) = range(ch, m);
                    let mut j = s;
                    while j + 16 <= e {
                        let mut ix = [0i32; 16];
                        for (t, v) in ix.iter_mut().enumerate() {
                            *v = (*ip.add(j + t)).get() as i32;
                        }
                        let g = _mm512_i32gather_ps::<4>(
                            _mm512_loadu_si512(ix.as_ptr() as *const _),
                            xp,
                        );
                        acc[u] = _mm512_fmadd_ps(_mm512_loadu_ps(vp.add(j)), g, acc[u]);
                        u ^= 1;
                        j += 16;
                    }
                    while j < e {
                        s1 += *vp.add(j) * *xp.add((*ip.add(j)).get());
                        j += 1;
                    }
                }
                s1 += _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
                *y.get_unchecked_mut(m - r0) = ep.act.apply(s1 + ep.bias(m));
            }
            return;
        }
        let mut c = 0;
        while c < n {
            let full = c + 64 <= n;
            let width = if full { 64 } else { (n - c).min(16) };
            let mask = tail_mask(width);
            for ch in 0..chunks {
                let first = ch == 0;
                let last = ch + 1 == chunks;
                for m in r0..r1 {
                    let (s, e) = range(ch, m);
                    if s == e && !first && !last {
                        continue;
                    }
                    let yp = y.as_mut_ptr().add((m - r0) * n + c);
                    if full {
                        let (mut a0, mut a1, mut a2, mut a3) = if first {
                            let b = _mm512_set1_ps(ep.bias(m));
                            (b, b, b, b)
                        } else {
                            (
                                _mm512_loadu_ps(yp),
                                _mm512_loadu_ps(yp.add(16)),
                                _mm512_loadu_ps(yp.add(32)),
                                _mm512_loadu_ps(yp.add(48)),
                            )
                        };
                        let z = _mm512_setzero_ps();
                        let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
                        let mut j = s;
                        while j + 2 <= e {
                            let v = _mm512_set1_ps(*vp.add(j));
                            let p = xp.add((*ip.add(j)).get() * n + c);
                            a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), a0);
                            a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(16)), a1);
                            a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(32)), a2);
                            a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(48)), a3);
                            let w = _mm512_set1_ps(*vp.add(j + 1));
                            let q = xp.add((*ip.add(j + 1)).get() * n + c);
                            b0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(q), b0);
                            b1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(q.add(16)), b1);
                            b2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(q.add(32)), b2);
                            b3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(q.add(48)), b3);
                            j += 2;
                        }
                        if j < e {
                            let v = _mm512_set1_ps(*vp.add(j));
                            let p = xp.add((*ip.add(j)).get() * n + c);
                            a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), a0);
                            a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(16)), a1);
                            a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(32)), a2);
                            a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(48)), a3);
                        }
                        let (r0v, r1v, r2v, r3v) = (
                            _mm512_add_ps(a0, b0),
                            _mm512_add_ps(a1, b1),
                            _mm512_add_ps(a2, b2),
                            _mm512_add_ps(a3, b3),
                        );
                        if last {
                            _mm512_storeu_ps(yp, act512(r0v, ep.act));
                            _mm512_storeu_ps(yp.add(16), act512(r1v, ep.act));
                            _mm512_storeu_ps(yp.add(32), act512(r2v, ep.act));
                            _mm512_storeu_ps(yp.add(48), act512(r3v, ep.act));
                        } else {
                            _mm512_storeu_ps(yp, r0v);
                            _mm512_storeu_ps(yp.add(16), r1v);
                            _mm512_storeu_ps(yp.add(32), r2v);
                            _mm512_storeu_ps(yp.add(48), r3v);
                        }
                    } else {
                        let mut a = if first {
                            _mm512_set1_ps(ep.bias(m))
                        } else {
                            _mm512_maskz_loadu_ps(mask, yp)
                        };
                        for j in s..e {
                            let v = _mm512_set1_ps(*vp.add(j));
                            a = _mm512_fmadd_ps(
                                v,
                                _mm512_maskz_loadu_ps(mask, xp.add((*ip.add(j)).get() * n + c)),
                                a,
                            );
                        }
                        let a = if last { act512(a, ep.act) } else { a };
                        _mm512_mask_storeu_ps(yp, mask, a);
                    }
                }
            }
            c += width;
        }
    }
}

/// R×1 block rows covering `r0..r1` (R = 4 or 8; `r0` a multiple of R), over the column
/// chunks of the layout, with a tile of `NV` vectors of 16 columns per row (`R·NV = 16`
/// accumulators).
///
/// # Safety
/// As for [`csr`]; block columns index rows of `x`, block rows may extend past `rows` (padding).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn blocks_rx1<I: Index, const R: usize, const NV: usize>(
    shape: super::block::Shape,
    ptr: &[u32],
    bidx: &[I],
    vals: &[f32],
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    unsafe {
        let super::block::Shape {
            rows,
            brows,
            chunks,
            ..
        } = shape;
        let xp = x.as_ptr();
        let vp = vals.as_ptr();
        let ip = bidx.as_ptr();
        let pp = ptr.as_ptr();
        let range = |ch: usize, br: usize| {
            (
                *pp.add(ch * (brows + 1) + br) as usize,
                *pp.add(ch * (brows + 1) + br + 1) as usize,
            )
        };
        let end = r1.min(rows);
        for br in r0 / R..r1.div_ceil(R) {
            let rows_here = end.saturating_sub(br * R).min(R);
            let mut bias = [0.0f32; R];
            for (i, b) in bias.iter_mut().enumerate().take(rows_here) {
                *b = ep.bias(br * R + i);
            }
            if n == 1 {
                // matrix-vector: four independent R-wide accumulators hide the FMA latency
                let mut acc = [0.0f32; 8];
                if R == 4 {
                    let mut a = [_mm_setzero_ps(); 4];
                    for ch in 0..chunks {
                        let (s, e) = range(ch, br);
                        let mut blk = s;
                        while blk + 4 <= e {
                            for (u, au) in a.iter_mut().enumerate() {
                                let xv = _mm_set1_ps(*xp.add((*ip.add(blk + u)).get()));
                                *au = _mm_fmadd_ps(_mm_loadu_ps(vp.add((blk + u) * 4)), xv, *au);
                            }
                            blk += 4;
                        }
                        while blk < e {
                            let xv = _mm_set1_ps(*xp.add((*ip.add(blk)).get()));
                            a[0] = _mm_fmadd_ps(_mm_loadu_ps(vp.add(blk * 4)), xv, a[0]);
                            blk += 1;
                        }
                    }
                    _mm_storeu_ps(
                        acc.as_mut_ptr(),
                        _mm_add_ps(_mm_add_ps(a[0], a[1]), _mm_add_ps(a[2], a[3])),
                    );
                } else {
                    let mut a = [_mm256_setzero_ps(); 4];
                    for ch in 0..chunks {
                        let (s, e) = range(ch, br);
                        let mut blk = s;
                        while blk + 4 <= e {
                            for (u, au) in a.iter_mut().enumerate() {
                                let xv = _mm256_set1_ps(*xp.add((*ip.add(blk + u)).get()));
                                *au = _mm256_fmadd_ps(
                                    _mm256_loadu_ps(vp.add((blk + u) * 8)),
                                    xv,
                                    *au,
                                );
                            }
                            blk += 4;
                        }
                        while blk < e {
                            let xv = _mm256_set1_ps(*xp.add((*ip.add(blk)).get()));
                            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(vp.add(blk * 8)), xv, a[0]);
                            blk += 1;
                        }
                    }
                    _mm256_storeu_ps(
                        acc.as_mut_ptr(),
                        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
                    );
                }
                for i in 0..rows_here {
                    *y.get_unchecked_mut(br * R + i - r0) = ep.act.apply(acc[i] + bias[i]);
                }
            }
        }
        if n == 1 {
            return;
        }
        let mut c = 0;
        while c < n {
            let full = c + 16 * NV <= n;
            let width = if full { 16 * NV } else { (n - c).min(16) };
            let mask = tail_mask(width);
            for ch in 0..chunks {
                let (first, last) = (ch == 0, ch + 1 == chunks);
                for br in r0 / R..r1.div_ceil(R) {
                    let (s, e) = range(ch, br);
                    if s == e && !first && !last {
                        continue;
                    }
                    let rows_here = end.saturating_sub(br * R).min(R);
                    if full {
                        let mut acc = [[_mm512_setzero_ps(); NV]; R];
                        for i in 0..R {
                            if i >= rows_here {
                                break;
                            }
                            let yp = y.as_ptr().add((br * R + i - r0) * n + c);
                            for t in 0..NV {
                                acc[i][t] = if first {
                                    _mm512_set1_ps(ep.bias(br * R + i))
                                } else {
                                    _mm512_loadu_ps(yp.add(16 * t))
                                };
                            }
                        }
                        for blk in s..e {
                            let p = xp.add((*ip.add(blk)).get() * n + c);
                            let w = vp.add(blk * R);
                            let mut xs = [_mm512_setzero_ps(); NV];
                            for (t, xv) in xs.iter_mut().enumerate() {
                                *xv = _mm512_loadu_ps(p.add(16 * t));
                            }
                            for (i, row_acc) in acc.iter_mut().enumerate() {
                                let v = _mm512_set1_ps(*w.add(i));
                                for t in 0..NV {
                                    row_acc[t] = _mm512_fmadd_ps(v, xs[t], row_acc[t]);
                                }
                            }
                        }
                        for (i, row_acc) in acc.iter().enumerate().take(rows_here) {
                            let yp = y.as_mut_ptr().add((br * R + i - r0) * n + c);
                            for (t, a) in row_acc.iter().enumerate() {
                                _mm512_storeu_ps(
                                    yp.add(16 * t),
                                    if last { act512(*a, ep.act) } else { *a },
                                );
                            }
                        }
                    } else {
                        let mut acc = [_mm512_setzero_ps(); R];
                        for (i, a) in acc.iter_mut().enumerate().take(rows_here) {
                            let yp = y.as_ptr().add((br * R + i - r0) * n + c);
                            *a = if first {
                                _mm512_set1_ps(ep.bias(br * R + i))
                            } else {
                                _mm512_maskz_loadu_ps(mask, yp)
                            };
                        }
                        for blk in s..e {
                            let xv =
                                _mm512_maskz_loadu_ps(mask, xp.add((*ip.add(blk)).get() * n + c));
                            let w = vp.add(blk * R);
                            for (i, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(i)), xv, *a);
                            }
                        }
                        for (i, a) in acc.iter().enumerate().take(rows_here) {
                            let v = if last { act512(*a, ep.act) } else { *a };
                            _mm512_mask_storeu_ps(
                                y.as_mut_ptr().add((br * R + i - r0) * n + c),
                                mask,
                                v,
                            );
                        }
                    }
                }
            }
            c += width;
        }
    }
}

/// N:M rows `r0..r1`: every row stores `keep` values per group of `m` inputs; groups are
/// processed in chunks of `chunk` groups so the matching rows of X stay in L1.
///
/// # Safety
/// AVX-512F must be available; `x` must hold `cols·n` values; offsets are `< m`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn nm(
    vals: &[f32],
    offs: &[u8],
    cols: usize,
    keep: usize,
    m: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    r0: usize,
    r1: usize,
    ep: &Epilogue,
) {
    unsafe {
        let groups = cols / m;
        let per_row = groups * keep;
        let chunk = if n >= 16 {
            (128 / m).max(1)
        } else {
            groups.max(1)
        };
        let chunks = groups.div_ceil(chunk).max(1);
        let xp = x.as_ptr();
        let vp = vals.as_ptr();
        let op = offs.as_ptr();
        let mut c = 0;
        while c < n {
            let full = c + 64 <= n;
            let width = if full { 64 } else { (n - c).min(16) };
            let mask = tail_mask(width);
            for ch in 0..chunks {
                let (first, last) = (ch == 0, ch + 1 == chunks);
                let (g0, g1) = (ch * chunk, ((ch + 1) * chunk).min(groups));
                for row in r0..r1 {
                    let yp = y.as_mut_ptr().add((row - r0) * n + c);
                    let base = row * per_row;
                    if full {
                        let (mut a0, mut a1, mut a2, mut a3) = if first {
                            let b = _mm512_set1_ps(ep.bias(row));
                            (b, b, b, b)
                        } else {
                            (
                                _mm512_loadu_ps(yp),
                                _mm512_loadu_ps(yp.add(16)),
                                _mm512_loadu_ps(yp.add(32)),
                                _mm512_loadu_ps(yp.add(48)),
                            )
                        };
                        let z = _mm512_setzero_ps();
                        let (mut b0, mut b1, mut b2, mut b3) = (z, z, z, z);
                        // two accumulator sets: value t of a group goes to set t % 2
                        for g in g0..g1 {
                            let q0 = base + g * keep;
                            let mut t = 0;
                            while t + 2 <= keep {
                                let v = _mm512_set1_ps(*vp.add(q0 + t));
                                let p = xp.add((g * m + *op.add(q0 + t) as usize) * n + c);
                                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), a0);
                                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(16)), a1);
                                a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(32)), a2);
                                a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(48)), a3);
                                let w = _mm512_set1_ps(*vp.add(q0 + t + 1));
                                let r = xp.add((g * m + *op.add(q0 + t + 1) as usize) * n + c);
                                b0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(r), b0);
                                b1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(r.add(16)), b1);
                                b2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(r.add(32)), b2);
                                b3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(r.add(48)), b3);
                                t += 2;
                            }
                            if t < keep {
                                let v = _mm512_set1_ps(*vp.add(q0 + t));
                                let p = xp.add((g * m + *op.add(q0 + t) as usize) * n + c);
                                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p), a0);
                                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(16)), a1);
                                a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(32)), a2);
                                a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p.add(48)), a3);
                            }
                        }
                        let out = [
                            _mm512_add_ps(a0, b0),
                            _mm512_add_ps(a1, b1),
                            _mm512_add_ps(a2, b2),
                            _mm512_add_ps(a3, b3),
                        ];
                        for (i, r) in out.into_iter().enumerate() {
                            _mm512_storeu_ps(
                                yp.add(16 * i),
                                if last { act512(r, ep.act) } else { r },
                            );
                        }
                    } else {
                        let mut a = if first {
                            _mm512_set1_ps(ep.bias(row))
                        } else {
                            _mm512_maskz_loadu_ps(mask, yp)
                        };
                        for g in g0..g1 {
                            for t in 0..keep {
                                let q = base + g * keep + t;
                                let k = g * m + *op.add(q) as usize;
                                a = _mm512_fmadd_ps(
                                    _mm512_set1_ps(*vp.add(q)),
                                    _mm512_maskz_loadu_ps(mask, xp.add(k * n + c)),
                                    a,
                                );
                            }
                        }
                        _mm512_mask_storeu_ps(yp, mask, if last { act512(a, ep.act) } else { a });
                    }
                }
            }
            c += width;
        }
    }
}
