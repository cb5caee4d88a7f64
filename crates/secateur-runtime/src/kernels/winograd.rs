//! Winograd F(4×4, 3×3) convolution on channels-last (NHWC) activations (Lavin and Gray, 2016),
//! for ungrouped 3×3 convolutions with stride and dilation 1. Each 4×4 block of output pixels
//! reads a 6×6 input tile; in the transformed domain the convolution becomes 36 independent
//! matrix products `[tiles × C_in] · [C_in × C_out]`, so it costs 36/16 = 2.25 multiplications
//! per output value and input channel instead of 9 (4× fewer). The input transform `Bᵀ d B` and
//! the output transform `Aᵀ m A` run on 8 channels at a time (NHWC keeps a pixel's channels
//! contiguous); the 36 products reuse the 6×16 register tile of the implicit-GEMM kernel
//! ([`super::nhwc_conv`]; with AVX-512 its 6×32 tile over two panels) on weights transformed once (`G g Gᵀ`, in f64) and packed per panel
//! of 16 output channels. Tiles are processed in blocks whose transformed inputs fit in the L2
//! cache; blocks (and panel ranges when one sample is split) run on several threads. The bias
//! is added in the output transform, a clamp activation too; any other tail runs as one pass
//! over the layer's output. Rounding differs from the direct sum by a few ulp of the partial
//! sums (the transforms scale by at most 8 and 1/24).

use super::elementwise::pointwise_in_place;
use super::epilogue::Tail;
use super::isa::Isa;
use super::nhwc_conv::{MR, NR, Tile, check_strided_output, chunk_len, pad_nhwc};
use secateur_graph::Conv;
use std::cell::RefCell;

/// Output pixels per tile side.
const M: usize = 4;
/// Input pixels per tile side (`M + 3 − 1`).
const ALPHA: usize = 6;
/// Points of the transformed domain.
const POINTS: usize = ALPHA * ALPHA;
/// Bytes the transformed inputs of one block of tiles may hold.
const BLOCK_BYTES: usize = 192 * 1024;
/// At most this many tiles per block.
const MAX_BLOCK_TILES: usize = 60;
/// Channels per transform step.
const LANES: usize = 8;
type Lanes = [f32; LANES];

thread_local! {
    /// Each worker's transformed inputs and products of one block (reused across calls).
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A 3×3 convolution's weights transformed and packed for the Winograd kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct NhwcWinograd {
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    pub c_in: usize,
    pub c_out: usize,
    panels: usize,
    /// Panel `p`, point `e`: `[c_in][NR]` at `offset + (p · POINTS + e) · c_in · NR`.
    packed: Vec<f32>,
    offset: usize,
    /// One bias per output channel, zero-padded to whole panels.
    bias: Vec<f32>,
    pub tail: Tail,
    isa: Isa,
}

impl NhwcWinograd {
    /// Whether the kernel computes `conv`: 3×3, stride 1, dilation 1, one group.
    pub fn applies(conv: &Conv) -> bool {
        conv.kernel == [3, 3]
            && conv.strides == [1, 1]
            && conv.dilations == [1, 1]
            && conv.groups <= 1
    }

    /// Whether it is expected to beat the implicit GEMM on this layer: enough channels for the
    /// products to dominate the transforms, and enough tiles for the 4× larger transformed
    /// weights to be reused. On AVX-512 (measured with `examples/nhwc_speed`, `COLD_COPIES`
    /// keeping the weights out of the caches as inside a model, and whole models, see
    /// BENCHMARKS.md): from 28 × 28 outputs on, 24 input channels, or 16 with 64 outputs (32→32
    /// at 56 × 56: 0.39 against 0.53 ms; 16→16: 0.16 against 0.13); at 21–24 pixels a side, 48
    /// input channels, or 24 with 96 outputs (48→48 at 21 × 21: 0.139 against 0.168 ms; 32→32:
    /// level); at 9–20 pixels a side, 64 input channels, or 32 with 128 outputs (256→256 at
    /// 14 × 14: 1.58 against 2.18 ms; 48→48: level); at 7 × 7 its transformed weights cost
    /// more than it saves. Elsewhere the AVX2
    /// implicit GEMM, half as fast, lets it pay from 24 input channels and 9 tiles.
    pub fn pays(isa: Isa, conv: &Conv, c_in: usize, c_out: usize, ho: usize, wo: usize) -> bool {
        let tiles = ho.div_ceil(M) * wo.div_ceil(M);
        let enough = if isa != Isa::Avx512 {
            c_in >= 24 && tiles >= 9
        } else if tiles >= 49 {
            c_in >= 24 || (c_in >= 16 && c_out >= 64)
        } else if tiles >= 36 {
            c_in >= 48 || (c_in >= 24 && c_out >= 96)
        } else if tiles >= 9 {
            c_in >= 64 || (c_in >= 32 && c_out >= 128)
        } else {
            false
        };
        Self::applies(conv) && c_out >= 16 && enough
    }

    /// From the row-major `[c_out × c_in·3·3]` weights (ONNX order), one bias per output
    /// channel and the tail; `None` when [`NhwcWinograd::applies`] does not hold.
    pub fn new(
        isa: Isa,
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        w: &[f32],
        bias: &[f32],
        tail: Tail,
    ) -> Option<Self> {
        if !Self::applies(conv) || c_in == 0 || c_out == 0 {
            return None;
        }
        let panels = c_out.div_ceil(NR);
        let mut packed = vec![0.0f32; panels * POINTS * c_in * NR + NR];
        let offset = (packed.as_ptr() as usize / 4).wrapping_neg() % NR;
        for co in 0..c_out {
            let (p, j) = (co / NR, co % NR);
            for ci in 0..c_in {
                let g = &w[(co * c_in + ci) * 9..(co * c_in + ci + 1) * 9];
                for (e, u) in transform_weights(g).into_iter().enumerate() {
                    packed[offset + ((p * POINTS + e) * c_in + ci) * NR + j] = u;
                }
            }
        }
        let mut padded_bias = vec![0.0; panels * NR];
        padded_bias[..c_out].copy_from_slice(&bias[..c_out]);
        Some(NhwcWinograd {
            pads: conv.pads,
            c_in,
            c_out,
            panels,
            packed,
            offset,
            bias: padded_bias,
            tail,
            isa,
        })
    }

    /// Bytes of the transformed weights.
    pub fn bytes(&self) -> usize {
        self.packed.len() * 4
    }

    /// Output size and tile grid of an `h × w` input.
    fn geometry(&self, h: usize, w: usize) -> Geometry {
        let p = self.pads;
        let (ho, wo) = (h + p[0] + p[2] - 2, w + p[1] + p[3] - 2);
        let (th, tw) = (ho.div_ceil(M), wo.div_ceil(M));
        Geometry {
            ho,
            wo,
            tw,
            tiles: th * tw,
            hp: M * th + 2,
            wp: M * tw + 2,
        }
    }

    /// Scratch for the zero-bordered input, extended to whole tiles.
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        let g = self.geometry(h, w);
        g.hp * g.wp * self.c_in
    }

    /// One sample: `x` is `[h][w][c_in]`, `y` is `[ho][wo][c_out]`, `residual` (when the tail
    /// adds one) is laid out like `y`; `scratch` holds [`NhwcWinograd::scratch_len`] values.
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
        scratch: &mut [f32],
        threads: usize,
    ) {
        let dims = [h, w, ho, wo];
        self.run_strided(x, dims, y, self.c_out, residual, scratch, threads)
    }

    /// Whether [`NhwcWinograd::run_strided`] takes an output pixel stride above `c_out`: its
    /// tail is applied as the outputs are stored (no pass over the whole output after).
    pub fn writes_strided(&self) -> bool {
        self.in_store_clamp().is_some()
    }

    /// [`NhwcWinograd::run`] writing output pixel `p` at `y[p · y_pix ..]`; `y_pix > c_out`
    /// only where [`NhwcWinograd::writes_strided`].
    #[allow(clippy::too_many_arguments)]
    pub fn run_strided(
        &self,
        x: &[f32],
        [h, w, ho, wo]: [usize; 4],
        y: &mut [f32],
        y_pix: usize,
        residual: Option<&[f32]>,
        scratch: &mut [f32],
        threads: usize,
    ) {
        let strided_ok = self.writes_strided();
        check_strided_output(y.len(), ho * wo, y_pix, self.c_out, strided_ok);
        let g = self.geometry(h, w);
        debug_assert_eq!((g.ho, g.wo), (ho, wo));
        let xp = &mut scratch[..g.hp * g.wp * self.c_in];
        let p = self.pads;
        pad_nhwc(
            x,
            h,
            w,
            self.c_in,
            [p[0], p[1], g.hp - h - p[0], g.wp - w - p[1]],
            xp,
        );
        let xp: &[f32] = xp;
        let per_block = (BLOCK_BYTES / (POINTS * self.c_in * 4)) / MR * MR;
        let block = per_block.clamp(MR, MAX_BLOCK_TILES).min(g.tiles);
        let blocks = g.tiles.div_ceil(block);
        let splits = if threads > 1 {
            (threads * 2).div_ceil(blocks).min(self.panels)
        } else {
            1
        };
        let per_split = self.panels.div_ceil(splits);
        let units: Vec<(usize, usize)> = (0..blocks)
            .flat_map(|b| (0..self.panels).step_by(per_split).map(move |p| (b, p)))
            .collect();
        let clamp = self.in_store_clamp();
        let out = OutPtr(y.as_mut_ptr(), y_pix);
        let run = |&(b, p0): &(usize, usize)| {
            let tiles = b * block..((b + 1) * block).min(g.tiles);
            let panels = p0..(p0 + per_split).min(self.panels);
            // SAFETY: each unit writes the channels of its panels at the pixels of its tiles,
            // inside the `[ho][wo][c_out]` output.
            unsafe { self.unit(xp, &g, tiles, panels, clamp, out) };
        };
        crate::team::parallel_for(threads, units.len(), |i| run(&units[i]));
        if clamp.is_none() {
            self.finish(y, residual, threads);
        }
    }

    /// The tail's clamp when it is all of the tail (applied in the output transform).
    fn in_store_clamp(&self) -> Option<(f32, f32)> {
        match (self.tail.act, self.tail.residual, self.tail.post) {
            (None, false, None) => Some((f32::NEG_INFINITY, f32::INFINITY)),
            (Some(f), false, None) => f.clamp_bounds(),
            _ => None,
        }
    }

    /// The tail over the whole output: function, residual addition, function after it.
    fn finish(&self, y: &mut [f32], residual: Option<&[f32]>, threads: usize) {
        const CHUNK: usize = 16 * 1024;
        let tail = self.tail;
        let isa = self.isa;
        let rest = |i: usize, ys: &mut [f32]| {
            if let Some(f) = tail.act {
                pointwise_in_place(isa, f, ys);
            }
            if let Some(r) = residual.filter(|_| tail.residual) {
                let r = &r[i * CHUNK..i * CHUNK + ys.len()];
                ys.iter_mut().zip(r).for_each(|(v, r)| *v += r);
            }
            if let Some(f) = tail.post {
                pointwise_in_place(isa, f, ys);
            }
        };
        crate::team::parallel_chunks(threads, y, CHUNK, rest);
    }

    /// Tiles `tiles` through panels `panels`: input transform, 36 products per panel, output
    /// transform into `y`.
    unsafe fn unit(
        &self,
        xp: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        clamp: Option<(f32, f32)>,
        y: OutPtr,
    ) {
        let nt = tiles.len();
        let (v_len, m_len) = (POINTS * nt * self.c_in, POINTS * nt * NR);
        BLOCK.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < v_len + 2 * m_len {
                buf.resize(v_len + 2 * m_len, 0.0);
            }
            let (v, m) = buf.split_at_mut(v_len);
            self.transform_input(xp, g, tiles.clone(), v);
            let mut p = panels.start;
            while p < panels.end {
                // with AVX-512 two panels share the register tiles (see `nhwc_span512`)
                let count = if self.isa == Isa::Avx512 && p + 1 < panels.end {
                    2
                } else {
                    1
                };
                self.products(v, nt, p, count, &mut m[..count * m_len]);
                for (i, m) in m.chunks_exact(m_len).take(count).enumerate() {
                    // SAFETY: forwarded from the caller.
                    unsafe { self.transform_output(m, g, tiles.clone(), p + i, clamp, y) };
                }
                p += count;
            }
        });
    }

    /// `v[e][t][c] = (Bᵀ d B)[e]` for every tile `t` of the block and channel `c`.
    fn transform_input(
        &self,
        xp: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        v: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.isa != Isa::Portable {
            // SAFETY: `isa` was detected on this CPU, so AVX2 and FMA are present.
            return unsafe { self.transform_input_avx2(xp, g, tiles, v) };
        }
        self.transform_input_body(xp, g, tiles, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn transform_input_avx2(
        &self,
        xp: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        v: &mut [f32],
    ) {
        self.transform_input_body(xp, g, tiles, v)
    }

    #[inline(always)]
    fn transform_input_body(
        &self,
        xp: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        v: &mut [f32],
    ) {
        let (c_in, nt) = (self.c_in, tiles.len());
        for (t, tile) in tiles.enumerate() {
            let base = (M * (tile / g.tw) * g.wp + M * (tile % g.tw)) * c_in;
            for c0 in (0..c_in).step_by(LANES) {
                let n = LANES.min(c_in - c0);
                let mut d = [[[0.0f32; LANES]; ALPHA]; ALPHA];
                for (i, row) in d.iter_mut().enumerate() {
                    for (j, lanes) in row.iter_mut().enumerate() {
                        let at = base + (i * g.wp + j) * c_in + c0;
                        if n == LANES {
                            *lanes = lanes_at(xp, at);
                        } else {
                            lanes[..n].copy_from_slice(&xp[at..at + n]);
                        }
                    }
                }
                let u = input_transform_body(&d);
                for (e, lanes) in u.iter().flatten().enumerate() {
                    let at = (e * nt + t) * c_in + c0;
                    if n == LANES {
                        v[at..at + LANES].copy_from_slice(lanes);
                    } else {
                        v[at..at + n].copy_from_slice(&lanes[..n]);
                    }
                }
            }
        }
    }

    /// `m[e][t][j] = Σ_c v[e][t][c] · U[e][c][panel p's channel j]` with the register tile, for
    /// `count` (1 or 2, two only with AVX-512) consecutive panels from `p`, each panel's
    /// products in its own `POINTS · nt · NR` part of `m`.
    fn products(&self, v: &[f32], nt: usize, p: usize, count: usize, m: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512 {
            return self.products_avx512(v, nt, p, count, m);
        }
        // the products carry no bias or tail: both apply after the output transform
        let (zero_tail, zeros) = (Tail::default(), [0.0f32; NR]);
        let m_len = POINTS * nt * NR;
        let m = m.as_mut_ptr();
        let kc = chunk_len(self.isa);
        for e in 0..POINTS {
            for k0 in (0..self.c_in).step_by(kc) {
                let len = kc.min(self.c_in - k0);
                let pieces = [(k0, len)];
                for t0 in (0..nt).step_by(MR) {
                    let rows = MR.min(nt - t0);
                    let a = std::array::from_fn(|i| {
                        v[(e * nt + t0 + i.min(rows - 1)) * self.c_in..].as_ptr()
                    });
                    let tile = |panel: usize| {
                        let weights = self.offset + (panel * POINTS + e) * self.c_in * NR;
                        Tile {
                            a,
                            m: rows,
                            pieces: &pieces,
                            b: self.packed[weights + k0 * NR..].as_ptr(),
                            first: k0 == 0,
                            last: k0 + len == self.c_in,
                            // SAFETY: inside the `count · m_len` values of `m`
                            y: unsafe { m.add((panel - p) * m_len + (e * nt + t0) * NR) },
                            res: None,
                            y_pix: NR,
                            valid: NR,
                            bias: zeros.as_ptr(),
                            tail: &zero_tail,
                        }
                    };
                    // SAFETY: each pointer reaches `len` values of its row of `v`, the panel's
                    // `len × NR` weights and `rows` rows of `NR` products in its part of `m`.
                    unsafe { tile(p).run(self.isa) };
                }
            }
        }
    }

    /// [`NhwcWinograd::products`] on AVX-512: per point and chunk of the reduction, every
    /// tile of the block through the `count` panels in one call (`nhwc_span512`).
    #[cfg(target_arch = "x86_64")]
    fn products_avx512(&self, v: &[f32], nt: usize, p: usize, count: usize, m: &mut [f32]) {
        use super::nhwc_span512::{Span, run};
        let (zero_tail, zeros) = (Tail::default(), [0.0f32; 2 * NR]);
        let m_len = POINTS * nt * NR;
        assert!(count <= 2 && m.len() >= count * m_len && nt <= MAX_BLOCK_TILES);
        let kc = chunk_len(self.isa);
        let mut offsets = [0usize; MAX_BLOCK_TILES];
        for e in 0..POINTS {
            for (t, o) in offsets[..nt].iter_mut().enumerate() {
                *o = (e * nt + t) * self.c_in;
            }
            for k0 in (0..self.c_in).step_by(kc) {
                let len = kc.min(self.c_in - k0);
                let weights = self.offset + (p * POINTS + e) * self.c_in * NR + k0 * NR;
                // SAFETY: AVX-512 was detected; each tile's row of `v` holds `c_in` values, the
                // panels' weights lie in `packed` (`POINTS · c_in · NR` apart), and the
                // products of `nt` tiles × `count` panels in `m` (`m_len` apart).
                unsafe {
                    run(&Span {
                        base: v.as_ptr(),
                        offsets: &offsets[..nt],
                        pieces: &[(k0, len)],
                        weights: self.packed[weights..].as_ptr(),
                        w_panel: POINTS * self.c_in * NR,
                        bias: zeros.as_ptr(),
                        panels: count,
                        last_valid: NR,
                        first: k0 == 0,
                        last: k0 + len == self.c_in,
                        y: m.as_mut_ptr().add(e * nt * NR),
                        res: None,
                        y_pix: NR,
                        y_panel: m_len,
                        tail: &zero_tail,
                    })
                };
            }
        }
    }

    /// `y` at the tiles' pixels and panel `p`'s channels: `Aᵀ m A` plus bias (and clamp).
    unsafe fn transform_output(
        &self,
        m: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        p: usize,
        clamp: Option<(f32, f32)>,
        y: OutPtr,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.isa != Isa::Portable {
            // SAFETY: AVX2 and FMA as in `transform_input`; the rest is forwarded.
            return unsafe { self.transform_output_avx2(m, g, tiles, p, clamp, y) };
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.transform_output_body(m, g, tiles, p, clamp, y) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_output_avx2(
        &self,
        m: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        p: usize,
        clamp: Option<(f32, f32)>,
        y: OutPtr,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { self.transform_output_body(m, g, tiles, p, clamp, y) }
    }

    #[inline(always)]
    unsafe fn transform_output_body(
        &self,
        m: &[f32],
        g: &Geometry,
        tiles: std::ops::Range<usize>,
        p: usize,
        clamp: Option<(f32, f32)>,
        y: OutPtr,
    ) {
        let nt = tiles.len();
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        for (t, tile) in tiles.enumerate() {
            let (oy, ox) = (M * (tile / g.tw), M * (tile % g.tw));
            let (rows, cols) = (M.min(g.ho - oy), M.min(g.wo - ox));
            for half in 0..NR / LANES {
                let first = p * NR + half * LANES;
                if first >= self.c_out {
                    break;
                }
                let n = LANES.min(self.c_out - first);
                let mut s = [[[0.0f32; LANES]; ALPHA]; ALPHA];
                for (e, lanes) in s.iter_mut().flatten().enumerate() {
                    *lanes = lanes_at(m, (e * nt + t) * NR + half * LANES);
                }
                let out = output_transform_body(&s);
                let bias = lanes_at(&self.bias, first);
                for (r, row) in out.iter().enumerate().take(rows) {
                    for (c, lanes) in row.iter().enumerate().take(cols) {
                        let mut v = [0.0f32; LANES];
                        for l in 0..LANES {
                            v[l] = (lanes[l] + bias[l]).max(lo).min(hi);
                        }
                        let at = ((oy + r) * g.wo + ox + c) * y.1 + first;
                        // SAFETY: pixel (oy + r, ox + c) is inside the output and channels
                        // `first .. first + n` below c_out.
                        unsafe {
                            if n == LANES {
                                (y.0.add(at) as *mut Lanes).write_unaligned(v);
                            } else {
                                std::ptr::copy_nonoverlapping(v.as_ptr(), y.0.add(at), n);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Eight values of `x` from `at`.
#[inline(always)]
fn lanes_at(x: &[f32], at: usize) -> Lanes {
    x[at..at + LANES].try_into().expect("eight lanes")
}

/// Output size and tile grid of one call.
struct Geometry {
    ho: usize,
    wo: usize,
    /// Tiles per row.
    tw: usize,
    tiles: usize,
    /// The padded input, extended to whole tiles.
    hp: usize,
    wp: usize,
}

/// The output shared by the units of one call, each writing disjoint elements, and the
/// values from one output pixel to the next.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32, usize);
// SAFETY: the units of a call write disjoint elements (see `NhwcWinograd::run`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `U = G g Gᵀ` of one 3×3 filter, computed in f64, in row-major order of the 6×6 points.
fn transform_weights(g: &[f32]) -> [f32; POINTS] {
    const G: [[f64; 3]; ALPHA] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let mut u = [0.0f32; POINTS];
    for a in 0..ALPHA {
        for b in 0..ALPHA {
            let mut s = 0.0f64;
            for i in 0..3 {
                for j in 0..3 {
                    s += G[a][i] * g[i * 3 + j] as f64 * G[b][j];
                }
            }
            u[a * ALPHA + b] = s as f32;
        }
    }
    u
}

/// `Bᵀ d` along the first index of six lane vectors.
#[inline(always)]
fn bt(d: [&Lanes; ALPHA]) -> [Lanes; ALPHA] {
    let mut o = [[0.0f32; LANES]; ALPHA];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = d.map(|v| v[l]);
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        o[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        o[3][l] = -2.0 * (d1 - d3) - d2 + d4;
        o[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    o
}

/// `Aᵀ m` along the first index of six lane vectors.
#[inline(always)]
fn at(m: [&Lanes; ALPHA]) -> [Lanes; M] {
    let mut o = [[0.0f32; LANES]; M];
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = m.map(|v| v[l]);
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        o[0][l] = m0 + s12 + s34;
        o[1][l] = d12 + 2.0 * d34;
        o[2][l] = s12 + 4.0 * s34;
        o[3][l] = d12 + 8.0 * d34 + m5;
    }
    o
}

/// A separable 2-D transform `T d Tᵀ` of a 6×6 tile: the 1-D transform `t` on every column,
/// then on every row of the result.
#[inline(always)]
fn separable<const K: usize>(
    d: &[[Lanes; ALPHA]; ALPHA],
    t: impl Fn([&Lanes; ALPHA]) -> [Lanes; K],
) -> [[Lanes; K]; K] {
    let mut cols = [[[0.0f32; LANES]; ALPHA]; K];
    for j in 0..ALPHA {
        let c = t(std::array::from_fn(|i| &d[i][j]));
        for (row, v) in cols.iter_mut().zip(c) {
            row[j] = v;
        }
    }
    std::array::from_fn(|r| t(std::array::from_fn(|j| &cols[r][j])))
}

/// `Bᵀ d B` of one input tile.
#[inline(always)]
fn input_transform_body(d: &[[Lanes; ALPHA]; ALPHA]) -> [[Lanes; ALPHA]; ALPHA] {
    separable(d, bt)
}

/// `Aᵀ m A` of one tile's products.
#[inline(always)]
fn output_transform_body(s: &[[Lanes; ALPHA]; ALPHA]) -> [[Lanes; M]; M] {
    separable(s, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transforms of a 1-D tile reproduce the correlation `y_k = Σ_i d_{k+i} g_i` in 2-D.
    #[test]
    fn transforms_compose_to_the_correlation() {
        let d: Vec<f32> = (0..36).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let g: Vec<f32> = (0..9).map(|i| ((i * 5) % 7) as f32 * 0.5 - 1.0).collect();
        let mut tile = [[[0.0f32; LANES]; ALPHA]; ALPHA];
        for i in 0..ALPHA {
            for j in 0..ALPHA {
                tile[i][j] = [d[i * ALPHA + j]; LANES];
            }
        }
        let v = input_transform_body(&tile);
        let u = transform_weights(&g);
        let mut s = [[[0.0f32; LANES]; ALPHA]; ALPHA];
        for e in 0..POINTS {
            s[e / ALPHA][e % ALPHA] = v[e / ALPHA][e % ALPHA].map(|x| x * u[e]);
        }
        let y = output_transform_body(&s);
        for r in 0..M {
            for c in 0..M {
                let want: f32 = (0..9)
                    .map(|k| d[(r + k / 3) * ALPHA + c + k % 3] * g[k])
                    .sum();
                assert!(
                    (y[r][c][0] - want).abs() < 1e-4,
                    "({r},{c}): {} vs {want}",
                    y[r][c][0]
                );
            }
        }
    }
}
