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
use super::nhwc_conv::SendPtr;
use super::packed_conv::{Block, NR, PackedGeometry, TileOut};
use super::quantize::quantize;
use secateur_graph::{ActQuant, Conv};

pub use super::packed_conv::MR;

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

/// A quantized convolution's weights packed for the int8 kernel, with its requantization.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcInt8Conv {
    geo: PackedGeometry,
    pub c_in: usize,
    pub c_out: usize,
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
        let geo = PackedGeometry::new(conv, c_in, c_out, 4);
        let (blocks, packed) = geo.pack(q);
        let padded_out = geo.padded_out();
        let row_len = c_in * conv.kernel[0] * conv.kernel[1];
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
            geo,
            c_in,
            c_out,
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

    /// Bytes of scratch a call needs: the quantized input copy.
    pub fn scratch_bytes(&self, h: usize, w: usize) -> usize {
        self.geo.copy_len(h, w)
    }

    /// One sample: `x` is `[h][w][c_in]`, `y` is `[ho][wo][c_out]`, `residual` (when the tail
    /// adds one) is laid out like `y`; `scratch` holds [`NhwcInt8Conv::scratch_bytes`] bytes.
    /// The input is quantized into the copy exactly as ONNX `QuantizeLinear` does (round half
    /// to even, saturation; borders and extra channels hold the zero point, so padding means
    /// 0.0 as in f32). `threads > 1` splits the work over the running team (`crate::team`).
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
        let xq = &mut scratch[..self.scratch_bytes(h, w)];
        let (zp, scale, isa) = (self.quant.zero_point, self.quant.scale, self.isa);
        let convert = |src: &[f32], dst: &mut [u8]| quantize(isa, src, scale, zp, dst);
        self.geo.fill_copy(x, [h, w], xq, zp, convert, threads);
        let y = SendPtr(y.as_mut_ptr());
        let res = residual
            .filter(|_| self.tail.residual)
            .map(|r| SendPtr(r.as_ptr() as *mut f32));
        let dims = [h, w, ho, wo];
        self.geo
            .for_each_tile(xq, dims, &self.blocks, threads, |a, m, pieces, b, out| {
                // SAFETY: every tile writes its own block's channels of its own pixels of
                // `y`, inside the `[ho][wo][c_out]` the caller's shapes give; the block's
                // weights and per-channel vectors are padded to whole panels.
                unsafe {
                    let unit = Some(self.unit.as_ptr().add(b.first));
                    let bias = self.bias.as_ptr().add(b.first);
                    let tile = Tile {
                        a,
                        pieces,
                        b: self.packed.as_ptr().add(b.offset),
                        panels: b.panels,
                        start: self.start.as_ptr().add(b.first),
                        out: TileOut::at(
                            m,
                            b.valid,
                            (unit, bias),
                            (y, res),
                            out,
                            self.c_out,
                            &self.tail,
                        ),
                    };
                    tile.run(self.vnni)
                }
            });
    }
}

/// One tile: `m ≤ MR` output pixels × one block × the whole reduction.
pub(super) struct Tile<'a> {
    /// Each pixel's first input byte (its first tap).
    pub(super) a: [*const u8; MR],
    /// (offset, length) of the input pieces, lengths multiples of 4.
    pub(super) pieces: &'a [(usize, usize)],
    /// The block's packed weights `[K/4][panels·16][4]`.
    pub(super) b: *const i8,
    pub(super) panels: usize,
    pub(super) start: *const i32,
    pub(super) out: TileOut<'a>,
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
            let mut acc = [[0i32; 2 * NR]; MR];
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
            for (p, row) in acc.iter().enumerate().take(self.out.m) {
                for (j, &s) in row.iter().enumerate().take(self.out.valid) {
                    self.out.finish(p, j, s as f32);
                }
            }
        }
    }
}
