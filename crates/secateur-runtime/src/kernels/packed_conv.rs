//! What the reduced-precision channels-last convolutions (`nhwc_int8`, `nhwc_bf16`) share.
//! Both convert the input once per call into a padded copy `[H][W][Cg]` (`Cg` = channels
//! rounded up to the group `g` of their dot-product instruction: 4 bytes for VNNI's
//! `vpdpbusd`, 2 bf16 values for `vdpbf16ps`), and multiply it by weights packed per block of
//! 32 output channels as `[K/g][channels][g]`: a tile of up to 12 output pixels, each reading
//! its own contiguous filter rows of the copy, runs through a block's whole reduction with its
//! sums in registers. An input of few channels that are not a multiple of the group (a first
//! layer's 3) would waste up to half the products on padding channels; it is copied as
//! filter-row windows instead (`[H][Wo][R]`: for every input row and output column, the
//! `kw · C` values the filter row reads there, padded once to the group), so a pixel's pieces
//! are its `kh` windows. Here: the geometry (copy dimensions, the pieces a pixel reads), the
//! packing, the row-parallel conversion into the copy, the walk of pixel tiles through the
//! blocks, and the per-channel epilogue of a finished tile (bias, fused tail, store).

use super::epilogue::Tail;
use super::nhwc_conv::{SendPtr, for_each_unit};
use secateur_graph::Conv;

/// Output channels per panel: one vector of 16 sums.
pub(super) const NR: usize = 16;
/// Panels per block: a tile computes two panels (32 channels) at once.
pub(super) const NB: usize = 2;
/// Output pixels per tile: 12 × 2 panels = 24 of the 32 vector registers hold sums.
pub const MR: usize = 12;
/// Bytes of packed weights a set of blocks may hold (a quarter of a 2 MiB L2 cache).
const L2_WEIGHT_BYTES: usize = 512 * 1024;

/// One block of packed weights: output channels `first .. first + valid` in `panels` panels.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Block {
    pub(super) first: usize,
    pub(super) panels: usize,
    pub(super) valid: usize,
    /// Element offset of the block's `[K/g][panels·16][g]` weights in the packed vector.
    pub(super) offset: usize,
}

/// The shape of one packed convolution.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PackedGeometry {
    pub(super) kernel: [usize; 2],
    pub(super) strides: [usize; 2],
    pub(super) dilations: [usize; 2],
    /// Top, left, bottom, right.
    pub(super) pads: [usize; 4],
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    /// Input channels rounded up to the group (the copy's pixel stride).
    pub(super) cp: usize,
    /// Reduction elements per output channel: `kh · kw · cp`, or `kh · window`.
    pub(super) k: usize,
    /// Reduction elements one instruction sums per lane.
    group: usize,
    /// With filter-row windows: `kw · c_in` rounded up to the group (the copy's column
    /// stride); 0 for a copy of pixels.
    window: usize,
}

impl PackedGeometry {
    pub(super) fn new(conv: &Conv, c_in: usize, c_out: usize, group: usize) -> Self {
        let [kh, kw] = conv.kernel;
        let cp = c_in.div_ceil(group) * group;
        // windows where they save at least 15 % of the products (a 7×7 first layer of three
        // channels: 22 instead of 28 bf16 values per filter row, 2.0 → 1.8 ms; for int8, 24
        // instead of 28 bytes did not pay for the larger copy)
        let window = (kw * c_in).div_ceil(group) * group;
        let windows = c_in < 16 && kw > 1 && window * 100 <= kw * cp * 85;
        let window = if windows { window } else { 0 };
        PackedGeometry {
            kernel: conv.kernel,
            strides: conv.strides,
            dilations: conv.dilations,
            pads: conv.pads,
            c_in,
            c_out,
            cp,
            k: if windows { kh * window } else { kh * kw * cp },
            group,
            window,
        }
    }

    /// The position of weight `(ci, ky, kx)` in a reduction row.
    fn reduction_index(&self, ci: usize, ky: usize, kx: usize) -> usize {
        if self.window > 0 {
            ky * self.window + kx * self.c_in + ci
        } else {
            (ky * self.kernel[1] + kx) * self.cp + ci
        }
    }

    /// Elements of one column of the copy: a window, or a pixel's channels.
    fn column(&self) -> usize {
        if self.window > 0 {
            self.window
        } else {
            self.cp
        }
    }

    /// Output channels rounded up to whole blocks (the length of per-channel vectors).
    pub(super) fn padded_out(&self) -> usize {
        self.c_out.div_ceil(NR * NB) * NR * NB
    }

    /// Packs the weights, a row-major `[c_out × c_in·kh·kw]` matrix in ONNX order (input
    /// channel, then kernel row and column), block by block as `[K/g][panels·16][g]`, the
    /// first block 64-byte aligned; the padding channels and taps hold `T::default()`.
    pub(super) fn pack<T: Copy + Default>(&self, rows: &[T]) -> (Vec<Block>, Vec<T>) {
        let [kh, kw] = self.kernel;
        let g = self.group;
        let row_len = self.c_in * kh * kw;
        let size = std::mem::size_of::<T>();
        let mut packed = vec![T::default(); self.padded_out() * self.k + 64 / size];
        let mut offset = (packed.as_ptr() as usize).wrapping_neg() % 64 / size;
        let mut blocks = Vec::new();
        for first in (0..self.c_out).step_by(NR * NB) {
            let valid = (NR * NB).min(self.c_out - first);
            let panels = valid.div_ceil(NR);
            let width = panels * NR;
            for j in 0..valid {
                let row = &rows[(first + j) * row_len..(first + j + 1) * row_len];
                for ci in 0..self.c_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let kk = self.reduction_index(ci, ky, kx);
                            let at = offset + (kk / g) * width * g + j * g + kk % g;
                            packed[at] = row[(ci * kh + ky) * kw + kx];
                        }
                    }
                }
            }
            blocks.push(Block {
                first,
                panels,
                valid,
                offset,
            });
            offset += self.k * width;
        }
        (blocks, packed)
    }

    /// Whether the copy holds only the pixels a strided 1×1 convolution reads (then the
    /// tiles walk it at stride 1).
    fn subsampled(&self) -> bool {
        self.kernel == [1, 1] && self.pads == [0; 4] && self.strides != [1, 1]
    }

    /// Rows and columns of the copy of an `h × w` input (with windows, one column per output
    /// column).
    pub(super) fn copy_dims(&self, h: usize, w: usize) -> (usize, usize) {
        let [sh, sw] = self.strides;
        if self.subsampled() {
            return ((h - 1) / sh + 1, (w - 1) / sw + 1);
        }
        let p = self.pads;
        let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3]);
        if self.window > 0 {
            let span = (self.kernel[1] - 1) * self.dilations[1] + 1;
            return (hp, (wp - span) / sw + 1);
        }
        (hp, wp)
    }

    /// Elements of the copy of an `h × w` input.
    pub(super) fn copy_len(&self, h: usize, w: usize) -> usize {
        let (hp, wp) = self.copy_dims(h, w);
        hp * wp * self.column()
    }

    /// The input pieces one output pixel reads, as (element offset from its first tap,
    /// length) in packed order: its `kh` windows in a copy of windows, else a filter row of
    /// `kw · cp` contiguous elements when undilated, or one tap's `cp`. Every length is a
    /// multiple of the group.
    fn pieces(&self, wp: usize) -> Vec<(usize, usize)> {
        let [kh, kw] = self.kernel;
        let [dh, dw] = self.dilations;
        let row = wp * self.column();
        if self.window > 0 {
            (0..kh).map(|ky| (ky * dh * row, self.window)).collect()
        } else if dw == 1 {
            (0..kh).map(|ky| (ky * dh * row, kw * self.cp)).collect()
        } else {
            (0..kh)
                .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
                .map(|(ky, kx)| (ky * dh * row + kx * dw * self.cp, self.cp))
                .collect()
        }
    }

    /// Converts `x` (`[h][w][c_in]`) into the copy `out` (padded, subsampled, or windows) with
    /// `convert` (source values to as many elements); borders and the extra channels hold
    /// `pad`. Rows in parallel when `threads > 1`.
    pub(super) fn fill_copy<T: Copy + Send + Sync>(
        &self,
        x: &[f32],
        [h, w]: [usize; 2],
        out: &mut [T],
        pad: T,
        convert: impl Fn(&[f32], &mut [T]) + Sync,
        threads: usize,
    ) {
        if self.window > 0 {
            return self.fill_windows(x, [h, w], out, pad, convert, threads);
        }
        let (_, wp) = self.copy_dims(h, w);
        let (cp, c) = (self.cp, self.c_in);
        let sub = self.subsampled();
        let [sh, sw] = self.strides;
        let (top, left) = (self.pads[0], self.pads[1]);
        let row = |r: usize, out: &mut [T]| {
            let src_row = if sub {
                Some(r * sh)
            } else {
                r.checked_sub(top).filter(|&y| y < h)
            };
            let Some(yy) = src_row else {
                out.fill(pad);
                return;
            };
            // few channels (a first layer's 3): the whole row at once, then spread out
            if c < 16 && !sub {
                let mut narrow = vec![pad; w * c];
                convert(&x[yy * w * c..(yy + 1) * w * c], &mut narrow);
                let (before, rest) = out.split_at_mut(left * cp);
                let (row, after) = rest.split_at_mut(w * cp);
                before.fill(pad);
                after.fill(pad);
                spread(&narrow, row, c, cp, pad);
                return;
            }
            for (j, px) in out.chunks_exact_mut(cp).enumerate() {
                let src_col = if sub {
                    Some(j * sw)
                } else {
                    j.checked_sub(left).filter(|&v| v < w)
                };
                let Some(xx) = src_col else {
                    px.fill(pad);
                    continue;
                };
                let at = (yy * w + xx) * c;
                convert(&x[at..at + c], &mut px[..c]);
                px[c..].fill(pad);
            }
        };
        crate::team::parallel_chunks(threads, out, wp * cp, row);
    }

    /// [`Self::fill_copy`] for a copy of filter-row windows: each input row converted once,
    /// zero-bordered, then every output column's window copied out of it.
    fn fill_windows<T: Copy + Send + Sync>(
        &self,
        x: &[f32],
        [h, w]: [usize; 2],
        out: &mut [T],
        pad: T,
        convert: impl Fn(&[f32], &mut [T]) + Sync,
        threads: usize,
    ) {
        let (_, wo) = self.copy_dims(h, w);
        let (c, window) = (self.c_in, self.window);
        let [_, kw] = self.kernel;
        let ([_, sw], [_, dw]) = (self.strides, self.dilations);
        let [top, left, _, right] = self.pads;
        let row = |r: usize, out: &mut [T]| {
            let Some(yy) = r.checked_sub(top).filter(|&y| y < h) else {
                out.fill(pad);
                return;
            };
            let mut line = vec![pad; (left + w + right) * c];
            convert(
                &x[yy * w * c..(yy + 1) * w * c],
                &mut line[left * c..(left + w) * c],
            );
            for (ox, win) in out.chunks_exact_mut(window).enumerate() {
                let x0 = ox * sw;
                if dw == 1 {
                    win[..kw * c].copy_from_slice(&line[x0 * c..(x0 + kw) * c]);
                } else {
                    for kx in 0..kw {
                        let at = (x0 + kx * dw) * c;
                        win[kx * c..(kx + 1) * c].copy_from_slice(&line[at..at + c]);
                    }
                }
                win[kw * c..].fill(pad);
            }
        };
        crate::team::parallel_chunks(threads, out, wo * window, row);
    }

    /// Runs `tile` on every (tile of ≤ `MR` output pixels, block) of an `ho × wo` output whose
    /// input copy `copy` came from an `h × w` input: with the pixels' first elements (pixels
    /// past the tile's `m` repeat its last), `m`, the pieces, the block and the tile's first
    /// output element (`pixel · c_out + block.first`). Units of work are (set of blocks, pixel
    /// range): a set's weights stay in the L2 cache while every pixel tile of the range runs
    /// through its blocks; `threads > 1` splits them over the running team.
    pub(super) fn for_each_tile<T: Sync>(
        &self,
        copy: &[T],
        [h, w, ho, wo]: [usize; 4],
        blocks: &[Block],
        threads: usize,
        tile: impl Fn([*const T; MR], usize, &[(usize, usize)], &Block, usize) + Sync,
    ) {
        let (_, wp) = self.copy_dims(h, w);
        let pieces = self.pieces(wp);
        let [sh, sw] = if self.subsampled() {
            [1, 1]
        } else {
            self.strides
        };
        let column = self.column();
        // a window column already sits at its output column's stride
        let sw = if self.window > 0 { 1 } else { sw };
        let (row_step, col_step) = (sh * wp * column, sw * column);
        let base = SendConst(copy.as_ptr());
        let per_block = self.k * NR * NB * std::mem::size_of::<T>();
        let set = (L2_WEIGHT_BYTES / per_block).clamp(1, blocks.len().max(1));
        for_each_unit(blocks.len(), set, ho * wo, MR, threads, |set, pixels| {
            let base = base.get();
            let (mut oy, mut ox) = (pixels.start / wo, pixels.start % wo);
            let mut q = pixels.start;
            while q < pixels.end {
                let m = MR.min(pixels.end - q);
                let mut a = [base; MR];
                for i in 0..m {
                    // the pixel's first tap lies in the copy: offsets stay inside it
                    a[i] = base.wrapping_add(oy * row_step + ox * col_step);
                    ox += 1;
                    if ox == wo {
                        (ox, oy) = (0, oy + 1);
                    }
                }
                for i in m..MR {
                    a[i] = a[m - 1];
                }
                for b in &blocks[set.clone()] {
                    tile(a, m, &pieces, b, q * self.c_out + b.first);
                }
                q += m;
            }
        });
    }
}

/// Pixels of `c` values in `src` to pixels of `cp` in `dst`, the extra values `pad`: fixed-size
/// moves per pixel for up to four channels (a library copy and fill per pixel of three values
/// cost more than the values).
fn spread<T: Copy>(src: &[T], dst: &mut [T], c: usize, cp: usize, pad: T) {
    fn pixels<T: Copy, const C: usize, const CP: usize>(src: &[T], dst: &mut [T], pad: T) {
        for (s, d) in src.chunks_exact(C).zip(dst.chunks_exact_mut(CP)) {
            let mut px = [pad; CP];
            px[..C].copy_from_slice(s);
            d.copy_from_slice(&px);
        }
    }
    match (c, cp) {
        (1, 2) => pixels::<T, 1, 2>(src, dst, pad),
        (1, 4) => pixels::<T, 1, 4>(src, dst, pad),
        (2, 2) => pixels::<T, 2, 2>(src, dst, pad),
        (2, 4) => pixels::<T, 2, 4>(src, dst, pad),
        (3, 4) => pixels::<T, 3, 4>(src, dst, pad),
        (4, 4) => pixels::<T, 4, 4>(src, dst, pad),
        _ => {
            for (s, d) in src.chunks_exact(c).zip(dst.chunks_exact_mut(cp)) {
                d[..c].copy_from_slice(s);
                d[c..].fill(pad);
            }
        }
    }
}

/// A read-only pointer shared by the workers of one layer.
struct SendConst<T>(*const T);
impl<T> SendConst<T> {
    fn get(&self) -> *const T {
        self.0
    }
}
// SAFETY: the workers only read through it, while the caller's borrow of the copy lasts.
unsafe impl<T: Sync> Send for SendConst<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for SendConst<T> {}

/// Where and how a finished tile's sums become outputs: `y = tail(sum · unit + bias)`, `unit`
/// per channel where the sums are in integer units (int8), 1 otherwise.
pub(super) struct TileOut<'a> {
    /// Output pixels of the tile that are real.
    pub(super) m: usize,
    /// Output channels of the block that are real.
    pub(super) valid: usize,
    pub(super) unit: Option<*const f32>,
    pub(super) bias: *const f32,
    pub(super) y: *mut f32,
    pub(super) res: Option<*const f32>,
    /// Elements between two output pixels (`c_out`).
    pub(super) y_pix: usize,
    pub(super) tail: &'a Tail,
}

impl TileOut<'_> {
    /// The tile's output pointers for the block whose first output element is `out`.
    ///
    /// # Safety
    /// `y` (and `res`) reach `[pixels][y_pix]` from `out` on; `bias` (and `unit`) the block.
    pub(super) unsafe fn at<'a>(
        m: usize,
        valid: usize,
        (unit, bias): (Option<*const f32>, *const f32),
        (y, res): (SendPtr, Option<SendPtr>),
        out: usize,
        y_pix: usize,
        tail: &'a Tail,
    ) -> TileOut<'a> {
        unsafe {
            TileOut {
                m,
                valid,
                unit,
                bias,
                y: y.0.add(out),
                res: res.map(|p| p.0.add(out) as *const f32),
                y_pix,
                tail,
            }
        }
    }

    /// Finishes and stores the sums of pixel `p`, channel `j` (portable paths).
    ///
    /// # Safety
    /// The pointers reach what [`TileOut::at`] asks.
    pub(super) unsafe fn finish(&self, p: usize, j: usize, sum: f32) {
        unsafe {
            let unit = self.unit.map_or(1.0, |u| *u.add(j));
            let mut v = sum * unit + *self.bias.add(j);
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

    /// Finishes and stores panel `j` of the tile (AVX-512): `v` holds one 16-channel vector
    /// of sums per pixel row.
    ///
    /// # Safety
    /// AVX-512 F must be available; the pointers reach what [`TileOut::at`] asks.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) unsafe fn store512<const MP: usize>(
        &self,
        j: usize,
        v: &mut [std::arch::x86_64::__m512; MP],
    ) {
        use std::arch::x86_64::*;
        unsafe {
            let lanes = self.valid.saturating_sub(16 * j).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xffff
            } else {
                (1u16 << lanes) - 1
            };
            let bias = _mm512_loadu_ps(self.bias.add(16 * j));
            if let Some(unit) = self.unit {
                let unit = _mm512_loadu_ps(unit.add(16 * j));
                for x in v.iter_mut() {
                    *x = _mm512_fmadd_ps(*x, unit, bias);
                }
            } else {
                for x in v.iter_mut() {
                    *x = _mm512_add_ps(*x, bias);
                }
            }
            if let Some(f) = self.tail.act {
                super::vmath::apply_all(f, v);
            }
            if let Some(r) = self.res {
                for (p, x) in v.iter_mut().enumerate().take(self.m) {
                    let r = _mm512_maskz_loadu_ps(mask, r.add(p * self.y_pix + 16 * j));
                    *x = _mm512_add_ps(*x, r);
                }
            }
            if let Some(f) = self.tail.post {
                super::vmath::apply_all(f, v);
            }
            for (p, x) in v.iter().enumerate().take(self.m) {
                _mm512_mask_storeu_ps(self.y.add(p * self.y_pix + 16 * j), mask, *x);
            }
        }
    }
}
