//! Max pooling of one channels-last output row on AVX-512. The pixels whose window lies
//! inside the input along the row share one list of tap offsets (computed once per row, not
//! per pixel), and each pixel takes the maximum over its taps on 16-channel vectors, four at a
//! time, the last one masked: no scalar loop for channel counts that are not a multiple of 8
//! (pruned layers of 12 or 20 channels), no bounds check per tap. The pixels next to the left
//! and right edges take the generic path of `nhwc_ops`.

#![cfg(target_arch = "x86_64")]

use secateur_graph::PoolGeometry;
use std::arch::x86_64::*;

/// Taps a window may have on this path (larger windows take the generic one).
pub(super) const MAX_TAPS: usize = 64;

/// The output pixels of a row whose window lies inside the input along the row: `lo .. hi`
/// (empty when there are none).
pub(super) fn inside_columns(geo: &PoolGeometry, w: usize, wo: usize) -> std::ops::Range<usize> {
    let (sx, pl) = (geo.strides[1], geo.pads[1]);
    let span = (geo.kernel[1] - 1) * geo.dilations[1] + 1;
    let lo = pl.div_ceil(sx);
    let hi = match (w + pl).checked_sub(span) {
        Some(room) => (room / sx + 1).min(wo),
        None => 0,
    };
    lo..hi.max(lo)
}

/// The maximum over the taps of the pixels `cols` of one output row, whose windows lie inside
/// the input along the row: `rows` is the valid kernel rows of the output row (`ky0 .. ky1`)
/// and `iy` the input row of the first.
///
/// # Safety
/// AVX-512F must be available; `rows.len() · kw ≤ MAX_TAPS`; `x` is one sample `[h][w][c]`,
/// the input rows `iy ..` of the valid kernel rows exist, every pixel of `cols` has its window inside the row, and `y` is the
/// output row (`wo · c` values).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn max_row(
    x: &[f32],
    (w, c): (usize, usize),
    geo: &PoolGeometry,
    rows: std::ops::Range<usize>,
    iy: usize,
    cols: std::ops::Range<usize>,
    y: &mut [f32],
) {
    let (kw, [dh, dw]) = (geo.kernel[1], geo.dilations);
    // the taps relative to the window's first (at most MAX_TAPS, the caller's check)
    let mut taps = [0usize; MAX_TAPS];
    let mut n = 0;
    for r in 0..rows.len() {
        for kx in 0..kw {
            taps[n] = (r * dh * w + kx * dw) * c;
            n += 1;
        }
    }
    let (sx, pl) = (geo.strides[1], geo.pads[1]);
    for ox in cols {
        let first = (iy * w + ox * sx - pl) * c;
        assert!(
            first + taps[n - 1] + c <= x.len(),
            "max pool tap outside the input"
        );
        // SAFETY: every tap of the pixel lies inside `x` (its last, the largest offset, was
        // checked above) and the output pixel inside `y`.
        unsafe {
            max_pixel(
                x.as_ptr().add(first),
                &taps[..n],
                c,
                y[ox * c..][..c].as_mut_ptr(),
            )
        };
    }
}

/// The maximum over `taps` (offsets from `x`) of each of `c` channels into `out`; the same
/// result as `if v > m { v } else { m }` from −∞ (NaN inputs never win).
///
/// # Safety
/// AVX-512F; `c` values at `x + t` for every tap and at `out`.
#[inline(always)]
unsafe fn max_pixel(x: *const f32, taps: &[usize], c: usize, out: *mut f32) {
    // SAFETY: forwarded; masked lanes are neither read nor written.
    unsafe {
        let low = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut ch = 0;
        while ch + 64 <= c {
            let mut acc = [low; 4];
            for &t in taps {
                for (j, a) in acc.iter_mut().enumerate() {
                    // maxps returns its second operand when either is NaN
                    *a = _mm512_max_ps(_mm512_loadu_ps(x.add(t + ch + 16 * j)), *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add(ch + 16 * j), *a);
            }
            ch += 64;
        }
        while ch < c {
            let lanes = (c - ch).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            let mut acc = low;
            for &t in taps {
                acc = _mm512_max_ps(_mm512_maskz_loadu_ps(mask, x.add(t + ch)), acc);
            }
            _mm512_mask_storeu_ps(out.add(ch), mask, acc);
            ch += 16;
        }
    }
}
