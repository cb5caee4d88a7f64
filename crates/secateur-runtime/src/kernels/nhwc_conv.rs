//! Dense convolution on channels-last (NHWC) activations as an implicit GEMM: no im2col
//! matrix, no transposes. With the input `[H][W][C]`, the `kw · C` values a filter row reads at
//! one output pixel are contiguous, so a tile of `MR` output pixels of one row times a panel of
//! `16·NV` output channels accumulates `MR × NV` vectors over `K = kh · kw · C/groups` steps,
//! each one broadcast input value per pixel against `NV` weight vectors (FMA-bound: the tiles
//! `24×1`, `14×2`, `8×3`, `6×4` keep 24–28 accumulators in registers). Weights are packed
//! once per panel as `[K][16·NV]` (zero-padded to whole vectors); bias, the element-wise
//! function, the residual addition and the function after it ([`Tail`]) are applied to the
//! accumulators before the (masked) store. Padding is a zero-bordered copy of the input.
//! Grouped convolutions run one GEMM per group on the group's channel range. Work splits over
//! (group, panel, output rows) for several threads on one sample.

use super::epilogue::Tail;
use rayon::prelude::*;
use secateur_graph::Conv;

/// One panel of packed weights: a group's output channels `first .. first + valid`.
#[derive(Clone, Debug, PartialEq)]
struct Panel {
    group: usize,
    /// First output channel of the panel within the whole layer.
    first: usize,
    /// Vectors per row of the panel (`16·nv` columns).
    nv: usize,
    /// Output channels that are real (the rest of the last vector is padding).
    valid: usize,
    /// Offset of the panel's `[K][16·nv]` weights in `packed`, and of its padded bias.
    offset: usize,
    bias_offset: usize,
}

/// A convolution's weights packed for the NHWC implicit-GEMM kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcConv {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub groups: usize,
    pub c_in: usize,
    pub c_out: usize,
    /// Reduction length per output channel: `kh · kw · c_in / groups`.
    k: usize,
    panels: Vec<Panel>,
    packed: Vec<f32>,
    bias: Vec<f32>,
    pub tail: Tail,
}

/// Panel widths (vectors) for `channels` output channels: panels of 4 vectors, then what
/// remains in one narrower panel.
fn panel_widths(channels: usize) -> Vec<usize> {
    let vecs = channels.div_ceil(16);
    let mut v = vec![4; vecs / 4];
    if !vecs.is_multiple_of(4) {
        v.push(vecs % 4);
    }
    v
}

/// Pixels per tile for a panel of `nv` vectors (accumulators `MR·NV` plus the weight vectors
/// and one broadcast fit the 32 vector registers).
pub const fn tile_pixels(nv: usize) -> usize {
    match nv {
        1 => 24,
        2 => 14,
        3 => 8,
        _ => 6,
    }
}

impl NhwcConv {
    /// From the row-major `[c_out × (c_in/groups)·kh·kw]` weight matrix (ONNX order: input
    /// channel, then kernel row and column), one bias per output channel and the tail.
    pub fn new(
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        w: &[f32],
        bias: &[f32],
        tail: Tail,
    ) -> Self {
        let [kh, kw] = conv.kernel;
        let g = conv.groups.max(1);
        let (cin_g, cout_g) = (c_in / g, c_out / g);
        let k = kh * kw * cin_g;
        let mut panels = Vec::new();
        let mut packed = Vec::new();
        let mut padded_bias = Vec::new();
        for group in 0..g {
            let mut first = group * cout_g;
            let end = first + cout_g;
            for nv in panel_widths(cout_g) {
                let width = 16 * nv;
                let valid = width.min(end - first);
                let offset = packed.len();
                packed.resize(offset + k * width, 0.0);
                for j in 0..valid {
                    let row = &w[(first + j) * k..(first + j + 1) * k];
                    for ci in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let kk = (ky * kw + kx) * cin_g + ci;
                                packed[offset + kk * width + j] = row[(ci * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                let bias_offset = padded_bias.len();
                padded_bias.resize(bias_offset + width, 0.0);
                padded_bias[bias_offset..bias_offset + valid]
                    .copy_from_slice(&bias[first..first + valid]);
                panels.push(Panel {
                    group,
                    first,
                    nv,
                    valid,
                    offset,
                    bias_offset,
                });
                first += valid;
            }
        }
        NhwcConv {
            kernel: conv.kernel,
            strides: conv.strides,
            dilations: conv.dilations,
            pads: conv.pads,
            groups: g,
            c_in,
            c_out,
            k,
            panels,
            packed,
            bias: padded_bias,
            tail,
        }
    }

    /// Bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        self.packed.len() * 4
    }

    fn padded_dims(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.pads;
        (h + p[0] + p[2], w + p[1] + p[3])
    }

    /// Scratch for the zero-bordered input copy (0 without padding).
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        if self.pads.iter().all(|&p| p == 0) {
            return 0;
        }
        let (hp, wp) = self.padded_dims(h, w);
        hp * wp * self.c_in
    }

    /// The input segments one output pixel reads, as offsets from its first tap and one
    /// length: a filter row of `kw · C` contiguous values when ungrouped and undilated, else
    /// one tap's `C/groups` channels.
    fn segments(&self, wp: usize) -> (Vec<usize>, usize) {
        let [kh, kw] = self.kernel;
        let [dh, dw] = self.dilations;
        let cin_g = self.c_in / self.groups;
        let row = wp * self.c_in;
        if self.groups == 1 && dw == 1 {
            ((0..kh).map(|ky| ky * dh * row).collect(), kw * self.c_in)
        } else {
            let offs = (0..kh)
                .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
                .map(|(ky, kx)| ky * dh * row + kx * dw * self.c_in)
                .collect();
            (offs, cin_g)
        }
    }

    /// One sample: `x` is `[h][w][c_in]`, `y` is `[ho][wo][c_out]`, `residual` (when the tail
    /// adds one) is laid out like `y`; `scratch` holds [`NhwcConv::scratch_len`] values.
    /// `threads > 1` splits the work on the current rayon pool.
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
        let (hp, wp) = self.padded_dims(h, w);
        let xp: &[f32] = if self.scratch_len(h, w) == 0 {
            x
        } else {
            pad_nhwc(
                x,
                h,
                w,
                self.c_in,
                self.pads,
                &mut scratch[..hp * wp * self.c_in],
            );
            &scratch[..hp * wp * self.c_in]
        };
        let (segs, seg_len) = self.segments(wp);
        // a 1×1 unit-stride layer without padding is one long row of pixels
        let flat = self.kernel == [1, 1] && self.strides == [1, 1] && self.scratch_len(h, w) == 0;
        let (rows, cols) = if flat { (1, ho * wo) } else { (ho, wo) };
        let job = Job {
            conv: self,
            xp,
            wp,
            segs: &segs,
            seg_len,
            cols,
            y: SendPtr(y.as_mut_ptr()),
            res: residual
                .filter(|_| self.tail.residual)
                .map(|r| SendPtr(r.as_ptr() as *mut f32)),
        };
        // units of work: (panel, rows, columns); one sample is split over rows, or over
        // columns for a flat layer, so that every thread gets several units
        let blocks = if threads > 1 {
            (threads * 4).div_ceil(self.panels.len())
        } else {
            1
        };
        let (row_step, col_step) = if flat {
            let mr = 168; // a multiple of every tile width
            (1, cols.div_ceil(blocks).div_ceil(mr).max(1) * mr)
        } else {
            (rows.div_ceil(blocks.clamp(1, rows)), cols)
        };
        let units: Vec<(usize, usize, usize)> = (0..self.panels.len())
            .flat_map(|p| {
                (0..rows)
                    .step_by(row_step)
                    .flat_map(move |r| (0..cols).step_by(col_step).map(move |c| (p, r, c)))
            })
            .collect();
        let run = |&(p, r0, c0): &(usize, usize, usize)| {
            let (r1, c1) = ((r0 + row_step).min(rows), (c0 + col_step).min(cols));
            // SAFETY: every unit writes its own panel's channels of its own pixels of `y`,
            // within the bounds the caller's shapes give.
            unsafe { job.block(&self.panels[p], r0..r1, c0..c1) }
        };
        if threads > 1 && units.len() > 1 {
            units.par_iter().for_each(run);
        } else {
            units.iter().for_each(run);
        }
    }
}

/// A raw pointer shared by the workers of one layer, each writing disjoint elements.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the workers of a layer write disjoint elements (see `NhwcConv::run`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// What every tile of one layer call shares.
struct Job<'a> {
    conv: &'a NhwcConv,
    xp: &'a [f32],
    wp: usize,
    segs: &'a [usize],
    seg_len: usize,
    /// Output pixels per row (all of them for a flat 1×1 layer).
    cols: usize,
    y: SendPtr,
    res: Option<SendPtr>,
}

impl Job<'_> {
    /// Output pixels `rows × cols` of one panel.
    unsafe fn block(
        &self,
        panel: &Panel,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        unsafe {
            let c = self.conv;
            let cin_g = c.c_in / c.groups;
            let pix_in = c.strides[1] * c.c_in;
            let b = &c.packed[panel.offset..panel.offset + c.k * 16 * panel.nv];
            let bias = &c.bias[panel.bias_offset..panel.bias_offset + 16 * panel.nv];
            let mr = tile_pixels(panel.nv);
            for r in rows {
                let in_row = r * c.strides[0] * self.wp * c.c_in + panel.group * cin_g;
                let out_row = r * self.cols * c.c_out + panel.first;
                let mut x0 = cols.start;
                while x0 < cols.end {
                    let m = mr.min(cols.end - x0);
                    let tile = Tile {
                        a: self.xp.as_ptr().add(in_row + x0 * pix_in),
                        a_pix: pix_in,
                        segs: self.segs,
                        seg_len: self.seg_len,
                        b: b.as_ptr(),
                        y: self.y.0.add(out_row + x0 * c.c_out),
                        res: self
                            .res
                            .map(|p| p.0.add(out_row + x0 * c.c_out) as *const f32),
                        y_pix: c.c_out,
                        valid: panel.valid,
                        bias: bias.as_ptr(),
                        tail: &c.tail,
                    };
                    tile.run(m, panel.nv);
                    x0 += m;
                }
            }
        }
    }
}

/// One tile: `m` output pixels × one panel.
struct Tile<'a> {
    a: *const f32,
    a_pix: usize,
    segs: &'a [usize],
    seg_len: usize,
    b: *const f32,
    y: *mut f32,
    res: Option<*const f32>,
    y_pix: usize,
    valid: usize,
    bias: *const f32,
    tail: &'a Tail,
}

impl Tile<'_> {
    unsafe fn run(&self, m: usize, nv: usize) {
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") {
                avx512::dispatch(self, m, nv);
                return;
            }
            self.portable(m, nv);
        }
    }

    /// The same arithmetic with plain loops.
    unsafe fn portable(&self, m: usize, nv: usize) {
        unsafe {
            let width = 16 * nv;
            let mut acc = vec![0.0f32; m * width];
            let mut bp = self.b;
            for &off in self.segs {
                for kk in 0..self.seg_len {
                    for p in 0..m {
                        let a = *self.a.add(off + p * self.a_pix + kk);
                        for j in 0..width {
                            acc[p * width + j] += a * *bp.add(j);
                        }
                    }
                    bp = bp.add(width);
                }
            }
            for p in 0..m {
                for j in 0..self.valid {
                    let mut v = acc[p * width + j] + *self.bias.add(j);
                    if let Some(f) = self.tail.act {
                        v = f.apply(v);
                    }
                    if let Some(r) = self.res {
                        v += *r.add(p * self.y_pix + j);
                    }
                    if let Some(f) = self.tail.post {
                        v = f.apply(v);
                    }
                    *self.y.add(p * self.y_pix + j) = v;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Tile;
    use crate::kernels::vmath;
    use std::arch::x86_64::*;

    /// Runs `tile` with the register tile for `m` pixels and `nv` vectors.
    pub(super) unsafe fn dispatch(tile: &Tile, m: usize, nv: usize) {
        unsafe {
            macro_rules! arms {
                ($nv:literal; $($m:literal)*) => {
                    match m {
                        $($m => kernel::<$m, $nv>(tile),)*
                        _ => unreachable!("tile of {m} pixels"),
                    }
                };
            }
            match nv {
                1 => arms!(1; 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24),
                2 => arms!(2; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
                3 => arms!(3; 1 2 3 4 5 6 7 8),
                _ => arms!(4; 1 2 3 4 5 6),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const MR: usize, const NV: usize>(t: &Tile) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            let mut bp = t.b;
            for &off in t.segs {
                let a = t.a.add(off);
                for kk in 0..t.seg_len {
                    let mut bv = [_mm512_setzero_ps(); NV];
                    for v in 0..NV {
                        bv[v] = _mm512_loadu_ps(bp.add(16 * v));
                    }
                    for p in 0..MR {
                        let x = _mm512_set1_ps(*a.add(p * t.a_pix + kk));
                        for v in 0..NV {
                            acc[p][v] = _mm512_fmadd_ps(x, bv[v], acc[p][v]);
                        }
                    }
                    bp = bp.add(16 * NV);
                }
            }
            store::<MR, NV>(t, &acc);
        }
    }

    /// Bias, tail and the (masked) store of the accumulators.
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const MR: usize, const NV: usize>(t: &Tile, acc: &[[__m512; NV]; MR]) {
        unsafe {
            let mut masks = [0xffffu16; NV];
            for v in 0..NV {
                let left = t.valid.saturating_sub(16 * v).min(16);
                masks[v] = ((1u32 << left) - 1) as u16;
            }
            for v in 0..NV {
                if masks[v] == 0 {
                    continue;
                }
                let bias = _mm512_loadu_ps(t.bias.add(16 * v));
                for p in 0..MR {
                    let at = p * t.y_pix + 16 * v;
                    let mut x = _mm512_add_ps(acc[p][v], bias);
                    if let Some(f) = t.tail.act {
                        x = vmath::apply(f, x);
                    }
                    if let Some(r) = t.res {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], r.add(at)));
                    }
                    if let Some(f) = t.tail.post {
                        x = vmath::apply(f, x);
                    }
                    _mm512_mask_storeu_ps(t.y.add(at), masks[v], x);
                }
            }
        }
    }
}

/// Copies `[h][w][c]` into the interior of a zero-bordered `[h+pt+pb][w+pl+pr][c]`.
pub fn pad_nhwc(x: &[f32], h: usize, w: usize, c: usize, pads: [usize; 4], out: &mut [f32]) {
    let wp = w + pads[1] + pads[3];
    let row = wp * c;
    let (top, bottom) = (pads[0] * row, (pads[0] + h) * row);
    out[..top].fill(0.0);
    out[bottom..].fill(0.0);
    for r in 0..h {
        let dst = &mut out[top + r * row..top + (r + 1) * row];
        dst[..pads[1] * c].fill(0.0);
        dst[(pads[1] + w) * c..].fill(0.0);
        dst[pads[1] * c..(pads[1] + w) * c].copy_from_slice(&x[r * w * c..(r + 1) * w * c]);
    }
}
