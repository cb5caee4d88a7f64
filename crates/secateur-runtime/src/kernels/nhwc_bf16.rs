//! bf16 convolution on channels-last activations: bf16 as an execution precision, as
//! OpenVINO and oneDNN run it. The weights are rounded to bfloat16 once, when the plan is
//! built, and each call rounds its input into a padded `[H][W][C₂]` copy (`C₂` = channels
//! rounded up to 2; border and extra channel hold 0.0); products are summed in f32 and the
//! epilogue (bias, fused tail, residual) runs in f32, so only the two operands of each product
//! lose precision (a relative error of at most 2⁻⁹ each). The weights are packed per block of
//! 32 output channels as `[K/2][channels][2]` (`packed_conv`): one AVX-512 BF16 `vdpbf16ps`
//! multiplies 2 input values by 2 weights for 16 channels and adds both to f32 sums, twice the
//! multiply-adds of an f32 FMA. Without AVX-512 BF16 a portable loop computes the same rounded
//! products (each exact in f32), summed in f32. Ungrouped convolutions only: depthwise and
//! grouped ones, bound by memory rather than multiply-adds, stay in f32.

use super::bf16::{bf16_runs_fast, from_bf16, round_into, to_bf16};
use super::epilogue::Tail;
use super::isa::Isa;
use super::nhwc_conv::SendPtr;
use super::packed_conv::{Block, MR, NR, PackedGeometry, TileOut};
use secateur_graph::Conv;

/// A convolution's weights rounded to bf16 and packed for the bf16 kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcBf16Conv {
    geo: PackedGeometry,
    pub c_in: usize,
    pub c_out: usize,
    blocks: Vec<Block>,
    packed: Vec<u16>,
    /// Per output channel, padded to whole blocks.
    bias: Vec<f32>,
    pub tail: Tail,
    isa: Isa,
    fast: bool,
}

impl NhwcBf16Conv {
    /// From the f32 weights as a row-major `[c_out × c_in·kh·kw]` matrix (ONNX order: input
    /// channel, then kernel row and column, a batch norm already folded in), the bias and the
    /// tail. `None` for grouped convolutions.
    pub fn new(
        isa: Isa,
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        weight: &[f32],
        bias: &[f32],
        tail: Tail,
    ) -> Option<Self> {
        if conv.groups > 1 {
            return None;
        }
        let geo = PackedGeometry::new(conv, c_in, c_out, 2);
        let rounded: Vec<u16> = weight.iter().map(|&v| to_bf16(v)).collect();
        let (blocks, packed) = geo.pack(&rounded);
        let mut padded_bias = vec![0.0f32; geo.padded_out()];
        padded_bias[..c_out].copy_from_slice(&bias[..c_out]);
        Some(NhwcBf16Conv {
            geo,
            c_in,
            c_out,
            blocks,
            packed,
            bias: padded_bias,
            tail,
            isa,
            fast: bf16_runs_fast(isa),
        })
    }

    /// Bytes of the packed weights and bias.
    pub fn bytes(&self) -> usize {
        self.packed.len() * 2 + self.bias.len() * 4
    }

    /// bf16 values of scratch a call needs: the rounded input copy.
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        self.geo.copy_len(h, w)
    }

    /// One sample: `x` is `[h][w][c_in]`, `y` is `[ho][wo][c_out]`, `residual` (when the tail
    /// adds one) is laid out like `y`; `scratch` holds [`NhwcBf16Conv::scratch_len`] values.
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
        scratch: &mut [u16],
        threads: usize,
    ) {
        let xb = &mut scratch[..self.scratch_len(h, w)];
        let isa = self.isa;
        let convert = |src: &[f32], dst: &mut [u16]| round_into(isa, src, dst);
        self.geo.fill_copy(x, [h, w], xb, 0, convert, threads);
        let y = SendPtr(y.as_mut_ptr());
        let res = residual
            .filter(|_| self.tail.residual)
            .map(|r| SendPtr(r.as_ptr() as *mut f32));
        let dims = [h, w, ho, wo];
        self.geo
            .for_each_tile(xb, dims, &self.blocks, threads, |a, m, pieces, b, out| {
                // SAFETY: every tile writes its own block's channels of its own pixels of
                // `y`, inside the `[ho][wo][c_out]` the caller's shapes give; the block's
                // weights and bias are padded to whole panels.
                unsafe {
                    let bias = self.bias.as_ptr().add(b.first);
                    let tile = Tile {
                        a,
                        pieces,
                        b: self.packed.as_ptr().add(b.offset),
                        panels: b.panels,
                        out: TileOut::at(
                            m,
                            b.valid,
                            (None, bias),
                            (y, res),
                            out,
                            self.c_out,
                            &self.tail,
                        ),
                    };
                    tile.run(self.fast)
                }
            });
    }
}

/// One tile: `m ≤ MR` output pixels × one block × the whole reduction.
pub(super) struct Tile<'a> {
    /// Each pixel's first input value (its first tap).
    pub(super) a: [*const u16; MR],
    /// (offset, length) of the input pieces, lengths even.
    pub(super) pieces: &'a [(usize, usize)],
    /// The block's packed weights `[K/2][panels·16][2]`.
    pub(super) b: *const u16,
    pub(super) panels: usize,
    pub(super) out: TileOut<'a>,
}

impl Tile<'_> {
    /// # Safety
    /// Every pointer reaches the values the fields describe; `fast` only where AVX-512 BF16
    /// was detected.
    unsafe fn run(&self, fast: bool) {
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if fast {
                return match self.panels {
                    2 => super::nhwc_bf16_avx512::tile::<2>(self),
                    _ => super::nhwc_bf16_avx512::tile::<1>(self),
                };
            }
            let _ = fast;
            self.portable();
        }
    }

    /// The same products with plain loops: per pair, the odd product then the even one added
    /// to the f32 sum (the order of `vdpbf16ps`).
    unsafe fn portable(&self) {
        unsafe {
            let width = self.panels * NR;
            let mut acc = [[0.0f32; 2 * NR]; MR];
            let mut bp = self.b;
            for &(off, len) in self.pieces {
                for kq in (0..len).step_by(2) {
                    for (p, row) in acc.iter_mut().enumerate() {
                        let x = self.a[p].add(off + kq);
                        let (x0, x1) = (from_bf16(*x), from_bf16(*x.add(1)));
                        for (j, v) in row.iter_mut().enumerate().take(width) {
                            *v += x1 * from_bf16(*bp.add(j * 2 + 1));
                            *v += x0 * from_bf16(*bp.add(j * 2));
                        }
                    }
                    bp = bp.add(width * 2);
                }
            }
            for (p, row) in acc.iter().enumerate().take(self.out.m) {
                for (j, &s) in row.iter().enumerate().take(self.out.valid) {
                    self.out.finish(p, j, s);
                }
            }
        }
    }
}
