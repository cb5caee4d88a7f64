//! Convolutions of few input channels (a network's first layer, reading three colour planes)
//! with a channels-last output, vectorised over output pixels instead of output channels.
//! The implicit GEMM's vectors run along output channels: a first layer of 8 or 12 channels
//! leaves half its lanes empty, and its reduction (27 values for 3×3 over three channels) is
//! too short to hide a tile's set-up. Here one vector holds 16 neighbouring output pixels of a
//! row: each of the `c_in · kh · kw` taps is one vector load, multiplied by one broadcast
//! weight per output channel (up to 16 accumulators), so every lane of every FMA is a real
//! product. The input is first copied into zero-bordered planes, one per channel and column
//! phase (a stride-2 row splits into its even and odd columns), so that each tap's 16 pixels
//! are contiguous; the copy reads NCHW (the graph's input: no layout conversion before the
//! layer) or NHWC. A 16 × 16 transposition in registers turns the pixel vectors into channel
//! vectors for the bias, the fused tail and the masked stores. AVX-512 only: elsewhere the
//! implicit GEMM runs these layers.

use super::epilogue::Tail;
use super::isa::Isa;
use secateur_graph::Conv;

/// The layout of the input a stem convolution reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StemInput {
    /// `[c][h][w]` per sample.
    Nchw,
    /// `[h][w][c]` per sample.
    Nhwc,
}

/// Most input channels a stem convolution takes: with more, the implicit GEMM's channel
/// vectors are full and its reduction long.
pub const MAX_INPUT_CHANNELS: usize = 4;
/// Most values one output channel reduces (`c_in · kh · kw`, 3 × 7 × 7 for ResNet's first
/// layer): the packed weights of a 16-channel panel (9 KiB) stay in the L1 cache.
pub const MAX_REDUCTION: usize = 147;

/// Output pixels (lanes) and channels per vector tile.
const LANES: usize = 16;

/// A convolution of few input channels with weights packed as 16-channel panels of `[k][16]`.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcStemConv {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub c_in: usize,
    pub c_out: usize,
    pub input: StemInput,
    pub tail: Tail,
    /// Reduction length: `c_in · kh · kw`, in ONNX order (channel, row, column).
    k: usize,
    packed: Vec<f32>,
    /// 16 per panel, zero past the layer's channels.
    bias: Vec<f32>,
}

/// Where the zero-bordered input planes lie in the scratch: `[c][hp][sw][wq]` (the row's
/// column phases `r`: padded columns `r, r + sw, r + 2·sw, …`).
#[derive(Clone, Copy, Debug)]
struct Planes {
    hp: usize,
    wq: usize,
    sw: usize,
}

impl Planes {
    fn row(&self, c: usize, yp: usize) -> usize {
        (c * self.hp + yp) * self.sw * self.wq
    }

    /// Values, with slack for the last tile's loads past the last plane (a tile reads up
    /// to four blocks of 16 pixels).
    fn len(&self, c_in: usize) -> usize {
        self.row(c_in, 0) + 5 * LANES
    }
}

impl NhwcStemConv {
    /// From the row-major `[c_out × c_in·kh·kw]` weights and one bias per output channel;
    /// `None` where the kernel does not apply: no AVX-512, groups, dilation, more than
    /// [`MAX_INPUT_CHANNELS`] input channels or [`MAX_REDUCTION`] values per output.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        isa: Isa,
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        w: &[f32],
        bias: &[f32],
        tail: Tail,
        input: StemInput,
    ) -> Option<Self> {
        let k = c_in * conv.kernel[0] * conv.kernel[1];
        let applies = isa == Isa::Avx512
            && conv.groups == 1
            && conv.dilations == [1, 1]
            && conv.strides.iter().all(|&s| s >= 1)
            && (1..=MAX_INPUT_CHANNELS).contains(&c_in)
            && (1..=MAX_REDUCTION).contains(&k)
            && c_out > 0
            && w.len() == c_out * k
            && bias.len() == c_out;
        if !applies {
            return None;
        }
        let panels = c_out.div_ceil(LANES);
        let mut packed = vec![0.0f32; panels * k * LANES];
        let mut padded_bias = vec![0.0f32; panels * LANES];
        for co in 0..c_out {
            let (p, lane) = (co / LANES, co % LANES);
            for t in 0..k {
                packed[(p * k + t) * LANES + lane] = w[co * k + t];
            }
            padded_bias[co] = bias[co];
        }
        Some(NhwcStemConv {
            kernel: conv.kernel,
            strides: conv.strides,
            pads: conv.pads,
            c_in,
            c_out,
            input,
            tail,
            k,
            packed,
            bias: padded_bias,
        })
    }

    /// Bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        (self.packed.len() + self.bias.len()) * 4
    }

    fn planes(&self, h: usize, w: usize) -> Planes {
        let p = self.pads;
        let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3]);
        let sw = self.strides[1];
        Planes {
            hp,
            wq: wp.div_ceil(sw),
            sw,
        }
    }

    /// Scratch (floats) for the input planes of an `h × w` input.
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        self.planes(h, w).len(self.c_in)
    }

    /// One sample: `x` is `[c_in][h][w]` or `[h][w][c_in]` (as [`NhwcStemConv::input`] says),
    /// `y` is `[ho][wo][c_out]`, `residual` (when the tail adds one) is laid out like `y`;
    /// `scratch` holds [`NhwcStemConv::scratch_len`] values. `threads > 1` splits the output
    /// rows over the running team.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        y: &mut [f32],
        residual: Option<&[f32]>,
        scratch: &mut [f32],
        threads: usize,
    ) {
        let planes = self.planes(h, w);
        let scratch = &mut scratch[..planes.len(self.c_in)];
        self.fill_planes(x, h, w, planes, scratch);
        let taps = self.tap_offsets(planes);
        let row = wo * self.c_out;
        let rows_per = ho.div_ceil(threads.max(1) * 4).max(1);
        let scratch: &[f32] = scratch;
        let body = |i: usize, ys: &mut [f32]| {
            for (r, yr) in ys.chunks_mut(row).enumerate() {
                let oy = i * rows_per + r;
                let res = residual
                    .filter(|_| self.tail.residual)
                    .map(|rs| &rs[oy * row..(oy + 1) * row]);
                self.output_row(scratch, planes, &taps, oy, wo, yr, res);
            }
        };
        crate::team::parallel_chunks(threads, &mut y[..ho * row], rows_per * row, body);
    }

    /// The offset of each tap's first pixel in the planes, from the first pixel of output row
    /// 0 at column 0, in packed (ONNX) order.
    fn tap_offsets(&self, planes: Planes) -> Vec<usize> {
        let [kh, kw] = self.kernel;
        let mut taps = Vec::with_capacity(self.k);
        for c in 0..self.c_in {
            for ky in 0..kh {
                for kx in 0..kw {
                    let phase = kx % planes.sw;
                    taps.push(planes.row(c, ky) + phase * planes.wq + kx / planes.sw);
                }
            }
        }
        taps
    }

    /// Copies the input into the zero-bordered column-phase planes.
    fn fill_planes(&self, x: &[f32], h: usize, w: usize, planes: Planes, out: &mut [f32]) {
        let (top, left) = (self.pads[0], self.pads[1]);
        let Planes { hp, wq, sw, .. } = planes;
        for c in 0..self.c_in {
            for yp in 0..hp {
                let dst = &mut out[planes.row(c, yp)..planes.row(c, yp + 1)];
                let Some(iy) = yp.checked_sub(top).filter(|&iy| iy < h) else {
                    dst.fill(0.0);
                    continue;
                };
                for (r, phase) in dst.chunks_mut(wq).enumerate() {
                    // padded column `r + sw·j` holds input column `r + sw·j − left`
                    let first = (left.saturating_sub(r)).div_ceil(sw);
                    let last = (w + left).saturating_sub(r).div_ceil(sw).min(wq);
                    phase[..first.min(last)].fill(0.0);
                    if first < last {
                        phase[last..].fill(0.0);
                        let ix0 = r + sw * first - left;
                        let run = &mut phase[first..last];
                        match self.input {
                            StemInput::Nchw => {
                                let src = &x[(c * h + iy) * w..(c * h + iy + 1) * w];
                                strided_copy(&src[ix0..], sw, run);
                            }
                            StemInput::Nhwc => {
                                let src = &x[iy * w * self.c_in..(iy + 1) * w * self.c_in];
                                strided_copy(&src[ix0 * self.c_in + c..], sw * self.c_in, run);
                            }
                        }
                    } else {
                        phase.fill(0.0);
                    }
                }
            }
        }
        let tail = planes.row(self.c_in, 0);
        out[tail..].fill(0.0);
    }

    /// One output row `oy` (`y` and `residual` hold its `wo` pixels).
    #[allow(clippy::too_many_arguments)]
    fn output_row(
        &self,
        planes_data: &[f32],
        planes: Planes,
        taps: &[usize],
        oy: usize,
        wo: usize,
        y: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("stem convolutions are built only with AVX-512");
        #[cfg(target_arch = "x86_64")]
        {
            let base = oy * self.strides[0] * planes.sw * planes.wq;
            debug_assert!(
                taps.iter()
                    .all(|&t| base + t + wo.next_multiple_of(4 * LANES) <= planes_data.len())
            );
            for p in 0..self.c_out.div_ceil(LANES) {
                let valid = LANES.min(self.c_out - p * LANES);
                let job = avx512::Job {
                    x: planes_data[base..].as_ptr(),
                    taps,
                    weights: self.packed[p * self.k * LANES..].as_ptr(),
                    bias: self.bias[p * LANES..].as_ptr(),
                    valid,
                    wo,
                    y: y[p * LANES..].as_mut_ptr(),
                    res: residual.map(|r| r[p * LANES..].as_ptr()),
                    pix: self.c_out,
                    tail: &self.tail,
                };
                // SAFETY: `new` returns a kernel only where AVX-512 is present; every tap's
                // pixels of every tile lie in the planes (they end with slack for four blocks
                // of pixels), and the tile stores only the row's `wo` pixels' `valid` channels.
                unsafe {
                    match valid {
                        1..=4 => avx512::row::<4, 4>(&job),
                        5..=8 => avx512::row::<8, 2>(&job),
                        9..=12 => avx512::row::<12, 1>(&job),
                        _ => avx512::row::<16, 1>(&job),
                    }
                }
            }
        }
    }
}

/// `out[j] = src[j · step]`.
fn strided_copy(src: &[f32], step: usize, out: &mut [f32]) {
    if step == 1 {
        out.copy_from_slice(&src[..out.len()]);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if step == 2 && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: checked above; the helper reads only `src[..2·out.len() − 1]`.
        unsafe { avx512::every_second(src, out) };
        return;
    }
    for (j, o) in out.iter_mut().enumerate() {
        *o = src[j * step];
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LANES;
    use crate::kernels::epilogue::Tail;
    use crate::kernels::nhwc_span512::{Step, apply};
    use std::arch::x86_64::*;

    /// One panel of one output row.
    pub(super) struct Job<'a> {
        /// The planes at output row `oy`'s first tap row.
        pub x: *const f32,
        pub taps: &'a [usize],
        /// `[k][16]` packed weights and the panel's 16 biases.
        pub weights: *const f32,
        pub bias: *const f32,
        /// Real channels of the panel.
        pub valid: usize,
        pub wo: usize,
        /// The row's first pixel at the panel's first channel (and the residual's); pixels
        /// are `pix` apart.
        pub y: *mut f32,
        pub res: Option<*const f32>,
        pub pix: usize,
        pub tail: &'a Tail,
    }

    /// Every tile of `16 · G` output pixels of the row: `G` blocks of 16 pixels through `CB`
    /// (≥ the panel's real channels) accumulators each, `CB · G ≤ 16`, so that one
    /// transposition serves all blocks (a panel of 8 channels pairs two blocks).
    ///
    /// # Safety
    /// AVX-512F must be available; `x + tap + j0 .. + 16 · G` must be readable for every tap
    /// and tile, `weights` must hold `taps.len() · 16` values and `bias` 16, and `y` (and
    /// `res`) must hold `wo` pixels `pix` apart with `valid` channels each.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn row<const CB: usize, const G: usize>(job: &Job) {
        unsafe {
            let mut j0 = 0;
            while j0 < job.wo {
                let mut acc = [[_mm512_setzero_ps(); CB]; G];
                let x = job.x.add(j0);
                let mut wt = job.weights;
                for &t in job.taps {
                    let mut xv = [_mm512_setzero_ps(); G];
                    for (g, v) in xv.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(x.add(t + g * LANES));
                    }
                    for c in 0..CB {
                        let w = _mm512_set1_ps(*wt.add(c));
                        for g in 0..G {
                            acc[g][c] = _mm512_fmadd_ps(w, xv[g], acc[g][c]);
                        }
                    }
                    wt = wt.add(LANES);
                }
                finish::<CB, G>(job, j0, &acc);
                j0 += G * LANES;
            }
        }
    }

    /// Bias and first function on the tile's pixel vectors (whose lanes are all real
    /// outputs), the transposition and [`store`]. The functions run on a copy of the
    /// accumulators: taking the accumulators' own address made the compiler keep them in
    /// memory through the product loop (2× slower).
    #[inline(always)]
    unsafe fn finish<const CB: usize, const G: usize>(
        job: &Job,
        j0: usize,
        acc: &[[__m512; CB]; G],
    ) {
        unsafe {
            let mut pixels = [[_mm512_setzero_ps(); 1]; LANES];
            for c in 0..CB {
                let b = _mm512_set1_ps(*job.bias.add(c));
                for g in 0..G {
                    pixels[g * CB + c][0] = _mm512_add_ps(acc[g][c], b);
                }
            }
            apply(Step::of(job.tail.act), &mut pixels);
            transpose(&mut pixels);
            store::<CB, G>(job, j0, &pixels);
        }
    }

    /// The residual addition, the function after it and the masked stores of the tile's
    /// pixels: lanes `g · CB ..` of vector `i` are pixel `j0 + 16·g + i`.
    #[inline(always)]
    unsafe fn store<const CB: usize, const G: usize>(
        job: &Job,
        j0: usize,
        pixels: &[[__m512; 1]; LANES],
    ) {
        unsafe {
            let mask = ((1u32 << job.valid) - 1) as u16;
            let post = Step::of(job.tail.post);
            let res = job.res.filter(|_| job.tail.residual);
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            for g in 0..G {
                let first = j0 + g * LANES;
                let shift = _mm512_add_epi32(lanes, _mm512_set1_epi32((g * CB) as i32));
                for (i, p) in pixels.iter().enumerate().take(job.wo.saturating_sub(first)) {
                    let at = (first + i) * job.pix;
                    let mut v = [[if g == 0 {
                        p[0]
                    } else {
                        _mm512_permutexvar_ps(shift, p[0])
                    }]];
                    if let Some(r) = res {
                        v[0][0] = _mm512_add_ps(v[0][0], _mm512_maskz_loadu_ps(mask, r.add(at)));
                    }
                    apply(post, &mut v);
                    _mm512_mask_storeu_ps(job.y.add(at), mask, v[0][0]);
                }
            }
        }
    }

    /// Transposes 16 vectors of 16 lanes in place (`v[i][j]` becomes `v[j][i]`). Plain loops
    /// over arrays, no closures: a closure does not inherit the caller's target features, and
    /// its intrinsics would be calls.
    #[inline(always)]
    pub(super) unsafe fn transpose(v: &mut [[__m512; 1]; LANES]) {
        unsafe {
            let zero = _mm512_setzero_ps();
            // pairs of rows interleaved by lanes within 128-bit lanes
            let mut t = [zero; LANES];
            for i in (0..LANES).step_by(2) {
                t[i] = _mm512_unpacklo_ps(v[i][0], v[i + 1][0]);
                t[i + 1] = _mm512_unpackhi_ps(v[i][0], v[i + 1][0]);
            }
            // then by lane pairs: u[4q..4q + 4] from t[4q], t[4q + 2] and t[4q + 1], t[4q + 3]
            let mut u = [zero; LANES];
            for q in (0..LANES).step_by(4) {
                let (a, b) = (_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2]));
                let (c, d) = (_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3]));
                u[q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                u[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
                u[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
                u[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
            }
            // 128-bit quarters: rows 0–3 with 4–7 and 8–11 with 12–15 ...
            let mut s = [zero; LANES];
            for half in [0, 8] {
                for i in 0..4 {
                    let (a, b) = (u[half + i], u[half + 4 + i]);
                    s[half + i] = _mm512_shuffle_f32x4::<0x88>(a, b);
                    s[half + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(a, b);
                }
            }
            // ... then across the halves
            for i in 0..8 {
                v[i][0] = _mm512_shuffle_f32x4::<0x88>(s[i], s[8 + i]);
                v[8 + i][0] = _mm512_shuffle_f32x4::<0xdd>(s[i], s[8 + i]);
            }
        }
    }

    /// `out[j] = src[2j]`, 16 at a time from two loads and one permutation (the last 16 with
    /// masked loads and store).
    ///
    /// # Safety
    /// AVX-512F must be available; `src` holds at least `2 · out.len() − 1` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn every_second(src: &[f32], out: &mut [f32]) {
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let (s, o) = (src.as_ptr(), out.as_mut_ptr());
            let mut j = 0;
            while j < out.len() {
                let take = LANES.min(out.len() - j);
                let avail = src.len() - 2 * j;
                let v = if take == LANES && avail >= 2 * LANES {
                    let (a, b) = (
                        _mm512_loadu_ps(s.add(2 * j)),
                        _mm512_loadu_ps(s.add(2 * j + LANES)),
                    );
                    _mm512_permutex2var_ps(a, even, b)
                } else {
                    let lanes = |n: usize| ((1u32 << n.min(LANES)) - 1) as u16;
                    let a = _mm512_maskz_loadu_ps(lanes(avail), s.add(2 * j));
                    let b = if avail > LANES {
                        _mm512_maskz_loadu_ps(lanes(avail - LANES), s.add(2 * j + LANES))
                    } else {
                        _mm512_setzero_ps()
                    };
                    _mm512_permutex2var_ps(a, even, b)
                };
                _mm512_mask_storeu_ps(o.add(j), ((1u32 << take) - 1) as u16, v);
                j += LANES;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-register transposition moves lane `j` of vector `i` to lane `i` of vector `j`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transposition_swaps_vectors_and_lanes() {
        use std::arch::x86_64::*;
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let data: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut out = [0.0f32; 256];
        // SAFETY: AVX-512F checked above; 16 vectors of 16 values in and out.
        unsafe {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn run(data: &[f32], out: &mut [f32; 256]) {
                unsafe {
                    let mut v: [[__m512; 1]; 16] =
                        std::array::from_fn(|i| [_mm512_loadu_ps(data.as_ptr().add(16 * i))]);
                    avx512::transpose(&mut v);
                    for (i, r) in v.iter().enumerate() {
                        _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), r[0]);
                    }
                }
            }
            run(&data, &mut out);
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * j + i], data[16 * i + j], "vector {i} lane {j}");
            }
        }
    }

    #[test]
    fn strided_copies_take_every_step_th_value() {
        let src: Vec<f32> = (0..101).map(|i| i as f32).collect();
        for step in 1..=3 {
            for n in [0, 1, 15, 16, 17, 33, 101 / step] {
                if n > 0 && (n - 1) * step >= src.len() {
                    continue;
                }
                let mut out = vec![-1.0; n];
                strided_copy(&src, step, &mut out);
                let want: Vec<f32> = (0..n).map(|j| (j * step) as f32).collect();
                assert_eq!(out, want, "step {step}, {n} values");
            }
        }
    }
}
