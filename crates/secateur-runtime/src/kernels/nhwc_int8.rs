//! Int8 convolution on channels-last activations: the arithmetic of an ONNX QDQ layer (uint8
//! activations with a zero point, int8 weights with a scale per output channel) executed in
//! integers instead of simulated in f32. The input is quantized once per call into a padded
//! `[H][W][C₄]` byte copy (`C₄` = channels rounded up to 4; the border and the extra channels
//! hold the zero point, so padding means 0.0 as in f32). Like the f32 implicit GEMM
//! (`nhwc_conv`), a tile of output pixels each reads its own contiguous filter rows, here
//! against blocks of 16 or 32 output channels packed `[K/4][channels][4]`: one AVX-512 VNNI
//! `vpdpbusd` multiplies 4 input bytes by 4 weights for 16 channels and adds them to 32-bit
//! sums, four times the multiply-adds of an f32 FMA. The accumulators start at
//! `−zp · Σ weights` of their channel (the zero point's contribution), and the epilogue turns
//! them into f32 (`sum · scale_x · scale_w[c] + bias[c]`, a batch norm's factor folded into
//! `scale_w`) before the fused tail. The whole reduction stays in the accumulators (no partial
//! sums): a tile of 12 pixels reads at most `12·K` input bytes. Ungrouped convolutions only;
//! without VNNI a portable loop computes the same integers (tests), and plans keep the f32
//! simulation ([`int8_runs_fast`]).

use super::epilogue::Tail;
use super::isa::Isa;
use super::nhwc_conv::{SendPtr, for_each_unit};
use super::quantize::quantize;
use secateur_graph::{ActQuant, Conv};

/// Output channels per panel: one vector of 16 `i32` sums.
const NR: usize = 16;
/// Panels per block: the tile computes two panels (32 channels) at once.
const NB: usize = 2;
/// Output pixels per tile: 12 × 2 panels = 24 of the 32 vector registers hold sums.
pub const MR: usize = 12;
/// Bytes of packed weights a set of blocks may hold (a quarter of a 2 MiB L2 cache).
const L2_WEIGHT_BYTES: usize = 512 * 1024;

/// Whether this CPU runs the int8 kernel faster than the f32 simulation (AVX-512 VNNI).
pub fn int8_runs_fast(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512bw");
    }
    let _ = isa;
    false
}

/// One block of packed weights: output channels `first .. first + valid` in `panels` panels.
#[derive(Clone, Debug, PartialEq)]
struct Block {
    first: usize,
    panels: usize,
    valid: usize,
    /// Byte offset of the block's `[K/4][panels·16][4]` weights in `packed`.
    offset: usize,
}

/// A quantized convolution's weights packed for the int8 kernel, with its requantization.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcInt8Conv {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub c_in: usize,
    pub c_out: usize,
    /// Input channels rounded up to 4 (the byte copy's pixel stride).
    cp: usize,
    /// Reduction bytes per output channel: `kh · kw · cp`.
    k: usize,
    quant: ActQuant,
    blocks: Vec<Block>,
    packed: Vec<i8>,
    /// Per output channel (padded to whole blocks): the sums' start, `−zp · Σ weights`.
    start: Vec<i32>,
    /// Per output channel: `scale_x · scale_w`, the f32 value of one unit of the sum.
    unit: Vec<f32>,
    bias: Vec<f32>,
    pub tail: Tail,
    isa: Isa,
    vnni: bool,
}

impl NhwcInt8Conv {
    /// From the int8 weights as a row-major `[c_out × c_in·kh·kw]` matrix (ONNX order: input
    /// channel, then kernel row and column), each row's scale (`scale_w`, with any folded
    /// batch-norm factor), the bias, the quantization of the input and the tail. `None` for
    /// grouped convolutions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        isa: Isa,
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        q: &[i8],
        scales: &[f32],
        bias: &[f32],
        quant: ActQuant,
        tail: Tail,
    ) -> Option<Self> {
        if conv.groups > 1 {
            return None;
        }
        let [kh, kw] = conv.kernel;
        let cp = c_in.div_ceil(4) * 4;
        let k = kh * kw * cp;
        let row_len = c_in * kh * kw;
        let padded_out = c_out.div_ceil(NR * NB) * NR * NB;
        let mut packed = vec![0i8; padded_out * k + 64];
        let align = (packed.as_ptr() as usize).wrapping_neg() % 64;
        let mut blocks = Vec::new();
        let mut offset = align;
        for first in (0..c_out).step_by(NR * NB) {
            let valid = (NR * NB).min(c_out - first);
            let panels = valid.div_ceil(NR);
            let width = panels * NR;
            for j in 0..valid {
                let row = &q[(first + j) * row_len..(first + j + 1) * row_len];
                for ci in 0..c_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let kk = (ky * kw + kx) * cp + ci;
                            let at = offset + (kk / 4) * width * 4 + j * 4 + kk % 4;
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
            offset += k * width;
        }
        let zp = quant.zero_point as i32;
        let mut start = vec![0i32; padded_out];
        let mut unit = vec![0.0f32; padded_out];
        let mut padded_bias = vec![0.0f32; padded_out];
        for o in 0..c_out {
            let row = &q[o * row_len..(o + 1) * row_len];
            start[o] = -zp * row.iter().map(|&v| v as i32).sum::<i32>();
            unit[o] = quant.scale * scales[o];
            padded_bias[o] = bias[o];
        }
        Some(NhwcInt8Conv {
            kernel: conv.kernel,
            strides: conv.strides,
            dilations: conv.dilations,
            pads: conv.pads,
            c_in,
            c_out,
            cp,
            k,
            quant,
            blocks,
            packed,
            start,
            unit,
            bias: padded_bias,
            tail,
            isa,
            vnni: int8_runs_fast(isa),
        })
    }

    /// Bytes of the packed weights.
    pub fn bytes(&self) -> usize {
        self.packed.len() + self.start.len() * 12
    }

    /// Whether the byte copy holds only the pixels a strided 1×1 convolution reads (then the
    /// kernel runs on it at stride 1).
    fn subsampled(&self) -> bool {
        self.kernel == [1, 1] && self.pads == [0; 4] && self.strides != [1, 1]
    }

    /// Rows and columns of the byte copy of an `h × w` input.
    fn copy_dims(&self, h: usize, w: usize) -> (usize, usize) {
        let [sh, sw] = self.strides;
        if self.subsampled() {
            return ((h - 1) / sh + 1, (w - 1) / sw + 1);
        }
        let p = self.pads;
        (h + p[0] + p[2], w + p[1] + p[3])
    }

    /// The strides the tile walks the byte copy with.
    fn copy_strides(&self) -> [usize; 2] {
        if self.subsampled() {
            [1, 1]
        } else {
            self.strides
        }
    }

    /// Bytes of scratch a call needs: the quantized input copy.
    pub fn scratch_bytes(&self, h: usize, w: usize) -> usize {
        let (hp, wp) = self.copy_dims(h, w);
        hp * wp * self.cp
    }

    /// The input pieces one output pixel reads, as (byte offset from its first tap, length)
    /// in packed order: a filter row of `kw · cp` contiguous bytes when undilated, else one
    /// tap's `cp` bytes. Every length is a multiple of 4.
    fn pieces(&self, wp: usize) -> Vec<(usize, usize)> {
        let [kh, kw] = self.kernel;
        let [dh, dw] = self.dilations;
        let row = wp * self.cp;
        if dw == 1 {
            (0..kh).map(|ky| (ky * dh * row, kw * self.cp)).collect()
        } else {
            (0..kh)
                .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
                .map(|(ky, kx)| (ky * dh * row + kx * dw * self.cp, self.cp))
                .collect()
        }
    }

    /// Quantizes `x` (`[h][w][c_in]`) into the byte copy `xq` (padded, or subsampled), exactly
    /// as ONNX `QuantizeLinear` does (round half to even, saturation); borders and the extra
    /// channels hold the zero point. Rows in parallel when `threads > 1`.
    fn quantize_input(&self, x: &[f32], h: usize, w: usize, xq: &mut [u8], threads: usize) {
        let (_, wp) = self.copy_dims(h, w);
        let (cp, c) = (self.cp, self.c_in);
        let sub = self.subsampled();
        let [sh, sw] = self.strides;
        let (top, left) = (self.pads[0], self.pads[1]);
        let (zp, scale, isa) = (self.quant.zero_point, self.quant.scale, self.isa);
        let row = |r: usize, out: &mut [u8]| {
            let src_row = if sub {
                Some(r * sh)
            } else {
                r.checked_sub(top).filter(|&y| y < h)
            };
            let Some(yy) = src_row else {
                out.fill(zp);
                return;
            };
            // few channels (a first layer's 3): the whole row at once, then spread out
            let mut narrow = vec![0u8; if c < 16 && !sub { w * c } else { 0 }];
            if !narrow.is_empty() {
                quantize(
                    isa,
                    &x[yy * w * c..(yy + 1) * w * c],
                    scale,
                    zp,
                    &mut narrow,
                );
            }
            for (j, px) in out.chunks_exact_mut(cp).enumerate() {
                let src_col = if sub {
                    Some(j * sw)
                } else {
                    j.checked_sub(left).filter(|&v| v < w)
                };
                let Some(xx) = src_col else {
                    px.fill(zp);
                    continue;
                };
                if narrow.is_empty() {
                    let at = (yy * w + xx) * c;
                    quantize(isa, &x[at..at + c], scale, zp, &mut px[..c]);
                } else {
                    px[..c].copy_from_slice(&narrow[xx * c..(xx + 1) * c]);
                }
                px[c..].fill(zp);
            }
        };
        crate::team::parallel_chunks(threads, xq, wp * cp, row);
    }

    /// One sample: `x` is `[h][w][c_in]`, `y` is `[ho][wo][c_out]`, `residual` (when the tail
    /// adds one) is laid out like `y`; `scratch` holds [`NhwcInt8Conv::scratch_bytes`] bytes.
    /// `threads > 1` splits the work over the running team (`crate::team`).
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
        scratch: &mut [u8],
        threads: usize,
    ) {
        let (_, wp) = self.copy_dims(h, w);
        let xq = &mut scratch[..self.scratch_bytes(h, w)];
        self.quantize_input(x, h, w, xq, threads);
        let xq: &[u8] = xq;
        let pieces = self.pieces(wp);
        let pixels = ho * wo;
        let [sh, sw] = self.copy_strides();
        let job = Job {
            conv: self,
            xq,
            row_step: sh * wp * self.cp,
            col_step: sw * self.cp,
            wo,
            pieces: &pieces,
            y: SendPtr(y.as_mut_ptr()),
            res: residual
                .filter(|_| self.tail.residual)
                .map(|r| SendPtr(r.as_ptr() as *mut f32)),
        };
        // units of work: (block set, pixel range); a set's weights stay in the L2 cache while
        // every pixel tile of the range runs through its blocks
        let per_block = self.k * NR * NB;
        let set = (L2_WEIGHT_BYTES / per_block).clamp(1, self.blocks.len().max(1));
        for_each_unit(
            self.blocks.len(),
            set,
            pixels,
            MR,
            threads,
            |blocks, pixels| {
                // SAFETY: every unit writes its own blocks' channels of its own pixels of `y`,
                // inside the `[ho][wo][c_out]` the caller's shapes give.
                unsafe { job.range(&self.blocks[blocks], pixels) }
            },
        );
    }
}

/// What every tile of one layer call shares.
struct Job<'a> {
    conv: &'a NhwcInt8Conv,
    xq: &'a [u8],
    row_step: usize,
    col_step: usize,
    wo: usize,
    pieces: &'a [(usize, usize)],
    y: SendPtr,
    res: Option<SendPtr>,
}

impl Job<'_> {
    /// Output pixels `pixels` (flat over rows) of `blocks`, `MR` pixels at a time, each tile
    /// through every block.
    unsafe fn range(&self, blocks: &[Block], pixels: std::ops::Range<usize>) {
        let c = self.conv;
        let (mut oy, mut ox) = (pixels.start / self.wo, pixels.start % self.wo);
        let base = self.xq.as_ptr();
        let mut q = pixels.start;
        while q < pixels.end {
            let m = MR.min(pixels.end - q);
            let mut a = [base; MR];
            for i in 0..MR {
                if i < m {
                    // SAFETY: the pixel's first tap lies in the padded input.
                    a[i] = unsafe { base.add(oy * self.row_step + ox * self.col_step) };
                    ox += 1;
                    if ox == self.wo {
                        (ox, oy) = (0, oy + 1);
                    }
                } else {
                    // pixels past the end repeat the last one; their results are not stored
                    a[i] = a[m - 1];
                }
            }
            for b in blocks {
                let out = q * c.c_out + b.first;
                // SAFETY: forwarded from the caller; the block's weights and per-channel
                // vectors are padded to whole panels.
                let tile = unsafe {
                    Tile {
                        a,
                        m,
                        pieces: self.pieces,
                        b: c.packed.as_ptr().add(b.offset),
                        panels: b.panels,
                        valid: b.valid,
                        start: c.start.as_ptr().add(b.first),
                        unit: c.unit.as_ptr().add(b.first),
                        bias: c.bias.as_ptr().add(b.first),
                        y: self.y.0.add(out),
                        res: self.res.map(|p| p.0.add(out) as *const f32),
                        y_pix: c.c_out,
                        tail: &c.tail,
                    }
                };
                // SAFETY: as above.
                unsafe { tile.run(c.vnni) };
            }
            q += m;
        }
    }
}

/// One tile: `m ≤ MR` output pixels × one block × the whole reduction.
pub(super) struct Tile<'a> {
    /// Each pixel's first input byte (its first tap).
    pub(super) a: [*const u8; MR],
    pub(super) m: usize,
    /// (offset, length) of the input pieces, lengths multiples of 4.
    pub(super) pieces: &'a [(usize, usize)],
    /// The block's packed weights `[K/4][panels·16][4]`.
    pub(super) b: *const i8,
    pub(super) panels: usize,
    /// Output channels of the block that are real.
    pub(super) valid: usize,
    pub(super) start: *const i32,
    pub(super) unit: *const f32,
    pub(super) bias: *const f32,
    pub(super) y: *mut f32,
    pub(super) res: Option<*const f32>,
    pub(super) y_pix: usize,
    pub(super) tail: &'a Tail,
}

impl Tile<'_> {
    /// # Safety
    /// Every pointer reaches the values the fields describe; `vnni` only where detected.
    unsafe fn run(&self, vnni: bool) {
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if vnni {
                return match self.panels {
                    2 => super::nhwc_int8_vnni::tile::<2>(self),
                    _ => super::nhwc_int8_vnni::tile::<1>(self),
                };
            }
            let _ = vnni;
            self.portable();
        }
    }

    /// The same integers with plain loops.
    unsafe fn portable(&self) {
        unsafe {
            let width = self.panels * NR;
            let mut acc = [[0i32; NR * NB]; MR];
            for row in acc.iter_mut() {
                for (j, v) in row.iter_mut().enumerate().take(width) {
                    *v = *self.start.add(j);
                }
            }
            let mut bp = self.b;
            for &(off, len) in self.pieces {
                for kq in (0..len).step_by(4) {
                    for (p, row) in acc.iter_mut().enumerate() {
                        let x = self.a[p].add(off + kq);
                        for (j, v) in row.iter_mut().enumerate().take(width) {
                            for t in 0..4 {
                                *v += *x.add(t) as i32 * *bp.add(j * 4 + t) as i32;
                            }
                        }
                    }
                    bp = bp.add(width * 4);
                }
            }
            for (p, row) in acc.iter().enumerate().take(self.m) {
                for (j, &s) in row.iter().enumerate().take(self.valid) {
                    let mut v = s as f32 * *self.unit.add(j) + *self.bias.add(j);
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
