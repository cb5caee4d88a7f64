//! Dense convolution on channels-last (NHWC) activations as an implicit GEMM: no im2col
//! matrix, no transposes. With the input `[H][W][C]`, the `kw · C` values a filter row reads at
//! one output pixel are contiguous, so a tile of 6 output pixels (any pixels: each has its own
//! input pointer, so tiles run across row ends) times a panel of 16 output channels
//! accumulates 12 vectors over `K = kh · kw · C/groups` steps, each one broadcast input value
//! per pixel against two weight vectors (FMA-bound). Weights are packed once per panel as
//! `[K][16]` (zero-padded); bias, the element-wise function, the residual addition and the
//! function after it ([`Tail`]) are applied to the accumulators before the store. Padding is a
//! zero-bordered copy of the input. Grouped convolutions run one GEMM per group on the
//! group's channel range. Work splits over (panel, pixel range) for several threads on one
//! sample. The vector kernel is AVX2 + FMA; with AVX-512 a block of pixels runs through all
//! of a group's panels in one call with tiles of up to four panels (`nhwc_span512`);
//! elsewhere a portable loop computes the same. [`NhwcConv::rounded_to_bf16`] makes the same
//! kernel compute a bf16 convolution's values (weights and input rounded to bf16, products
//! exact in f32, sums in f32) on CPUs without AVX-512 BF16.

use super::epilogue::Tail;
use super::isa::Isa;
use secateur_graph::Conv;

/// Bytes of packed weights a set of panels may hold (about a quarter of a 1 MiB L2 cache).
const L2_WEIGHT_BYTES: usize = 256 * 1024;

/// Reduction values per chunk: a chunk of one panel's weights is `KC · 16` floats (32 KiB).
const KC: usize = 512;

/// Reduction values per chunk on `isa`: the AVX-512 tile reads four panels at once, so its
/// chunks are a quarter as long to keep the same 32 KiB of weights in the L1 cache (measured
/// 3–9 % faster than half as long on 3×3 layers of 128–512 channels).
pub(super) fn chunk_len(isa: Isa) -> usize {
    if isa == Isa::Avx512 { KC / 4 } else { KC }
}

/// Output channels per panel (two 8-lane vectors).
pub(super) const NR: usize = 16;
/// Output pixels per tile (12 accumulators, 2 weight vectors and a broadcast in the 16
/// vector registers of AVX2).
pub const MR: usize = 6;

/// One panel of packed weights: a group's output channels `first .. first + valid`.
#[derive(Clone, Debug, PartialEq)]
struct Panel {
    group: usize,
    /// First output channel of the panel within the whole layer.
    first: usize,
    /// Output channels that are real (the rest of the panel is zero padding).
    valid: usize,
    /// Offset of the panel's `[K][NR]` weights in `packed`, and of its padded bias.
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
    isa: Isa,
    /// Whether each call rounds its input to bf16 (the weights were rounded when packed).
    bf16_input: bool,
}

impl NhwcConv {
    /// The kernel computing a bf16 convolution's values (`nhwc_bf16`) in f32 arithmetic: the
    /// weights rounded to bf16 here, the input rounded on every call. Each product of two
    /// bf16 values is exact in f32, so only the order of the f32 sums differs from the
    /// AVX-512 BF16 kernel.
    pub fn rounded_to_bf16(
        isa: Isa,
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        w: &[f32],
        bias: &[f32],
        tail: Tail,
    ) -> Self {
        let rounded: Vec<f32> = w.iter().map(|&v| super::bf16::round_bf16(v)).collect();
        NhwcConv {
            bf16_input: true,
            ..NhwcConv::new(isa, conv, c_in, c_out, &rounded, bias, tail)
        }
    }

    /// From the row-major `[c_out × (c_in/groups)·kh·kw]` weight matrix (ONNX order: input
    /// channel, then kernel row and column), one bias per output channel and the tail, for
    /// kernels of `isa`.
    pub fn new(
        isa: Isa,
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
        // every panel starts on a 64-byte boundary, so no weight vector straddles two cache
        // lines (the vector is never reallocated after this)
        let count = g * cout_g.div_ceil(NR);
        let mut packed = vec![0.0f32; count * k * NR + NR];
        let align = (packed.as_ptr() as usize / 4).wrapping_neg() % NR;
        let mut padded_bias = Vec::new();
        let mut next = align;
        for group in 0..g {
            for first in (group * cout_g..(group + 1) * cout_g).step_by(NR) {
                let valid = NR.min((group + 1) * cout_g - first);
                let offset = next;
                next += k * NR;
                for j in 0..valid {
                    let row = &w[(first + j) * k..(first + j + 1) * k];
                    for ci in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let kk = (ky * kw + kx) * cin_g + ci;
                                packed[offset + kk * NR + j] = row[(ci * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                let bias_offset = padded_bias.len();
                padded_bias.resize(bias_offset + NR, 0.0);
                padded_bias[bias_offset..bias_offset + valid]
                    .copy_from_slice(&bias[first..first + valid]);
                panels.push(Panel {
                    group,
                    first,
                    valid,
                    offset,
                    bias_offset,
                });
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
            isa,
            bf16_input: false,
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

    /// Scratch for the zero-bordered (or bf16-rounded) input copy (0 without padding or
    /// rounding).
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        if self.pads.iter().all(|&p| p == 0) && !self.bf16_input {
            return 0;
        }
        let (hp, wp) = self.padded_dims(h, w);
        hp * wp * self.c_in
    }

    /// The input pieces one output pixel reads, as (offset from its first tap, length) in
    /// packed order (a filter row of `kw · C` contiguous values when ungrouped and undilated,
    /// else one tap's `C/groups` channels), cut into chunks of the reduction: the ranges of
    /// pieces each chunk covers. See [`balanced_chunks`].
    fn pieces(&self, wp: usize) -> (Vec<(usize, usize)>, Vec<std::ops::Range<usize>>) {
        let [kh, kw] = self.kernel;
        let [dh, dw] = self.dilations;
        let cin_g = self.c_in / self.groups;
        let row = wp * self.c_in;
        let whole: Vec<(usize, usize)> = if self.groups == 1 && dw == 1 {
            (0..kh).map(|ky| (ky * dh * row, kw * self.c_in)).collect()
        } else {
            (0..kh)
                .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
                .map(|(ky, kx)| (ky * dh * row + kx * dw * self.c_in, cin_g))
                .collect()
        };
        balanced_chunks(&whole, chunk_len(self.isa))
    }

    /// One sample: `x` is `[h][w][c_in]`, `y` is `[ho][wo][c_out]`, `residual` (when the tail
    /// adds one) is laid out like `y`; `scratch` holds [`NhwcConv::scratch_len`] values.
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

    /// [`NhwcConv::run`] writing output pixel `p` at `y[p · y_pix ..]` (`y_pix ≥ c_out`: the
    /// layer's channels inside a wider channels-last buffer, such as its part of a
    /// concatenation). A tail adding a residual needs `y_pix = c_out` (the residual is read
    /// with the output's stride).
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
        let strided_ok = y_pix == self.c_out || residual.is_none();
        check_strided_output(y.len(), ho * wo, y_pix, self.c_out, strided_ok);
        let (hp, wp) = self.padded_dims(h, w);
        if let Some(rows) = self.band_rows(h, w, ho, threads) {
            let out = (y, y_pix);
            return self.run_banded(x, [h, w, ho, wo], rows, out, residual, scratch, threads);
        }
        let xp: &[f32] = if self.scratch_len(h, w) == 0 {
            x
        } else {
            let padded = &mut scratch[..hp * wp * self.c_in];
            pad_nhwc(x, h, w, self.c_in, self.pads, padded);
            if self.bf16_input {
                padded
                    .iter_mut()
                    .for_each(|v| *v = super::bf16::round_bf16(*v));
            }
            padded
        };
        let (pieces, chunks) = self.pieces(wp);
        let pixels = ho * wo;
        let job = Job {
            conv: self,
            xp,
            wp,
            wo,
            pieces: &pieces,
            chunks: &chunks,
            y: SendPtr(y.as_mut_ptr()),
            y_pix,
            res: self.residual_ptr(residual),
            row0: 0,
        };
        // units of work: (panel set, pixel range), several per thread. Each tile of pixels runs
        // through every panel of a set while its inputs are in the L1 cache; a set holds the
        // panels whose weights fit in the L2 cache together, so the input is read once per set.
        let set = self.panel_set_len();
        for_each_unit(
            self.panels.len(),
            set,
            pixels,
            MR,
            threads,
            |panels, pixels| {
                // SAFETY: every unit writes its own panels' channels of its own pixels of `y`,
                // inside the `[ho][wo][c_out]` the caller's shapes give.
                unsafe { job.block(&self.panels[panels], pixels) }
            },
        );
    }
}

/// The plan's invariant for a layer writing `pixels` output pixels of `c_out` channels
/// `y_pix` values apart into `len` values: the stride holds the channels, the output fits, and
/// `strided_ok` (what the kernel needs for a stride above `c_out`) holds.
pub(super) fn check_strided_output(
    len: usize,
    pixels: usize,
    y_pix: usize,
    c_out: usize,
    strided_ok: bool,
) {
    assert!(
        y_pix >= c_out && (y_pix == c_out || strided_ok),
        "output pixel stride {y_pix} for {c_out} channels"
    );
    assert!(
        pixels == 0 || len >= (pixels - 1) * y_pix + c_out,
        "output of {len} values too short for {pixels} pixels {y_pix} apart"
    );
}

/// Padded inputs larger than this are copied band by band (about half the L2 cache).
const BANDED_ABOVE_BYTES: usize = 512 * 1024;
/// Bytes of padded input rows per band (in the L2 cache while the band's outputs are made).
const BAND_BYTES: usize = 96 * 1024;

impl NhwcConv {
    /// Panels whose weights stay in the L2 cache together (a multiple of four on AVX-512,
    /// whose tiles take panels four or two at a time).
    fn panel_set_len(&self) -> usize {
        let per_panel = self.k * NR * 4;
        let set = (L2_WEIGHT_BYTES / per_panel).clamp(1, self.panels.len());
        if self.isa == Isa::Avx512 && set < self.panels.len() {
            set.next_multiple_of(4)
        } else {
            set
        }
    }

    /// The residual the tail adds, shared by the units of one call (read only).
    fn residual_ptr(&self, residual: Option<&[f32]>) -> Option<SendPtr> {
        residual
            .filter(|_| self.tail.residual)
            .map(|r| SendPtr(r.as_ptr() as *mut f32))
    }

    /// The vertical stride and the input rows one output row reads.
    fn row_window(&self) -> (usize, usize) {
        let span = (self.kernel[0] - 1) * self.dilations[0] + 1;
        (self.strides[0], span)
    }

    /// Output rows per band when the zero-bordered copy is made band by band: in f32, when the
    /// whole copy would not stay in the L2 cache. A whole copy of a large early layer's input
    /// (32 channels at 112 × 112: 1.7 MB) is written to memory and read back; a band's copy is
    /// read by the products while it is still cached. On several threads each thread copies
    /// and computes the bands of its own share of the rows (its core's L2 cache, and the copy
    /// itself split), which needs a band's copy per thread inside the scratch.
    fn band_rows(&self, h: usize, w: usize, ho: usize, threads: usize) -> Option<usize> {
        let (hp, wp) = self.padded_dims(h, w);
        let row_bytes = wp * self.c_in * 4;
        let whole = hp * row_bytes;
        if self.scratch_len(h, w) == 0 || self.bf16_input || ho == 0 {
            return None;
        }
        if whole <= BANDED_ABOVE_BYTES || self.packed.len() * 4 > L2_WEIGHT_BYTES {
            return None;
        }
        let (sh, span) = self.row_window();
        let in_rows = (BAND_BYTES / row_bytes).max(span);
        let share = ho.div_ceil(threads.max(1));
        let rows = ((in_rows - span) / sh + 1).clamp(1, share);
        let slot_rows = (rows - 1) * sh + span;
        let fits = threads.max(1) * slot_rows <= hp;
        (fits && (rows < ho || threads > 1)).then_some(rows)
    }

    /// [`NhwcConv::run`] band by band: `rows` output rows at a time, each band's padded input
    /// rows copied into a slot of `scratch` just before its products. With `threads > 1`, the
    /// output rows are split in as many contiguous shares, each with its own slot.
    #[allow(clippy::too_many_arguments)]
    fn run_banded(
        &self,
        x: &[f32],
        [h, w, ho, wo]: [usize; 4],
        rows: usize,
        (y, y_pix): (&mut [f32], usize),
        residual: Option<&[f32]>,
        scratch: &mut [f32],
        threads: usize,
    ) {
        let (_, wp) = self.padded_dims(h, w);
        let (sh, span) = self.row_window();
        let (pieces, chunks) = self.pieces(wp);
        let bands = Bands {
            conv: self,
            x,
            dims: [h, w, wo],
            rows,
            pieces: &pieces,
            chunks: &chunks,
            y: SendPtr(y.as_mut_ptr()),
            y_pix,
            res: self.residual_ptr(residual),
        };
        let threads = threads.max(1);
        let share = ho.div_ceil(threads);
        let slot = ((rows - 1) * sh + span) * wp * self.c_in;
        crate::team::parallel_chunks(threads, &mut scratch[..threads * slot], slot, |t, band| {
            bands.run(t * share..((t + 1) * share).min(ho), band)
        });
    }
}

/// What the bands of one banded layer call share.
struct Bands<'a> {
    conv: &'a NhwcConv,
    x: &'a [f32],
    /// Input height and width, output width.
    dims: [usize; 3],
    /// Output rows per band.
    rows: usize,
    pieces: &'a [(usize, usize)],
    chunks: &'a [std::ops::Range<usize>],
    y: SendPtr,
    /// Values from one output pixel to the next in `y`.
    y_pix: usize,
    res: Option<SendPtr>,
}

impl Bands<'_> {
    /// The bands of output rows `share`, one after the other, each copied into `slot`.
    fn run(&self, share: std::ops::Range<usize>, slot: &mut [f32]) {
        let conv = self.conv;
        let [h, w, wo] = self.dims;
        let (_, wp) = conv.padded_dims(h, w);
        let (sh, span) = conv.row_window();
        let set = conv.panel_set_len();
        for first in share.clone().step_by(self.rows) {
            let count = self.rows.min(share.end - first);
            let in_rows = (count - 1) * sh + span;
            let band = &mut slot[..in_rows * wp * conv.c_in];
            pad_nhwc_rows(self.x, [h, w, conv.c_in], conv.pads, first * sh, band);
            let job = Job {
                conv,
                xp: band,
                wp,
                wo,
                pieces: self.pieces,
                chunks: self.chunks,
                y: self.y,
                y_pix: self.y_pix,
                res: self.res,
                row0: first,
            };
            for panels in conv.panels.chunks(set) {
                // SAFETY: the band holds every tap of its output rows (its first row is padded
                // row `first · stride`); the pixels' outputs lie in `y`, and no other band or
                // share writes them.
                unsafe { job.block(panels, first * wo..(first + count) * wo) };
            }
        }
    }
}

/// Rows `first .. first + out.len() / (wp · c)` of `x` (`[h][w][c]`) zero-bordered by `pads`,
/// row indices counted in the padded image, into `out`.
fn pad_nhwc_rows(
    x: &[f32],
    [h, w, c]: [usize; 3],
    pads: [usize; 4],
    first: usize,
    out: &mut [f32],
) {
    let row = (w + pads[1] + pads[3]) * c;
    for (r, dst) in out.chunks_exact_mut(row).enumerate() {
        let source = (first + r).checked_sub(pads[0]).filter(|&i| i < h);
        match source {
            Some(i) => {
                dst[..pads[1] * c].fill(0.0);
                dst[(pads[1] + w) * c..].fill(0.0);
                dst[pads[1] * c..(pads[1] + w) * c].copy_from_slice(&x[i * w * c..(i + 1) * w * c]);
            }
            None => dst.fill(0.0),
        }
    }
}

/// Reduction chunks of equal length: as few as keep each within `kc` values (a quarter more
/// where that saves a chunk), the pieces cut where a chunk ends. Every chunk costs each tile
/// a pass over its partial sums, and a short chunk runs narrower tiles: cutting at `kc`
/// alone made a 3×3 layer of 64 channels (K = 576) alternate chunks of 128 and 64, and the
/// 7×7 stem (K = 147) run one chunk of 126 and one of 21.
fn balanced_chunks(
    whole: &[(usize, usize)],
    kc: usize,
) -> (Vec<(usize, usize)>, Vec<std::ops::Range<usize>>) {
    let total: usize = whole.iter().map(|p| p.1).sum();
    let count = total.div_ceil(kc + kc / 4).max(1);
    let target = total.div_ceil(count).max(1);
    let (mut pieces, mut chunks) = (Vec::new(), Vec::new());
    let (mut start, mut fill) = (0, 0);
    for &(mut off, mut len) in whole {
        while len > 0 {
            let take = len.min(target - fill);
            pieces.push((off, take));
            (off, len, fill) = (off + take, len - take, fill + take);
            if fill == target {
                chunks.push(start..pieces.len());
                (start, fill) = (pieces.len(), 0);
            }
        }
    }
    if start < pieces.len() {
        chunks.push(start..pieces.len());
    }
    (pieces, chunks)
}

/// Runs `unit(blocks, pixels)` over one layer's units of work: its weight blocks (panels) in
/// sets of `set` (whose weights stay in the L2 cache together, so each tile of pixels runs
/// through a whole set while its inputs are in the L1 cache) times ranges of output pixels,
/// multiples of `mr` long; with `threads > 1`, several units per thread on the current rayon
/// pool.
pub(super) fn for_each_unit(
    blocks: usize,
    set: usize,
    pixels: usize,
    mr: usize,
    threads: usize,
    unit: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
) {
    let sets = blocks.div_ceil(set.max(1));
    let parts = if threads > 1 {
        (threads * 4).div_ceil(sets.max(1))
    } else {
        1
    };
    let step = pixels.div_ceil(parts).div_ceil(mr).max(1) * mr;
    // pixel-major: a thread's share of the units (see `crate::team`) is a contiguous range
    // of pixels through every set, whose inputs stay in its core's cache and whose outputs
    // the next layer's share on that core reads
    let units: Vec<(usize, usize)> = (0..pixels)
        .step_by(step)
        .flat_map(|q| (0..sets).map(move |s| (s, q)))
        .collect();
    let run = |&(s, q): &(usize, usize)| {
        unit(
            s * set..((s + 1) * set).min(blocks),
            q..(q + step).min(pixels),
        )
    };
    crate::team::parallel_for(threads, units.len(), |i| run(&units[i]));
}

/// A raw pointer shared by the workers of one layer, each writing disjoint elements.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: the workers of a layer write disjoint elements (see `for_each_unit`'s callers).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// What every tile of one layer call shares.
struct Job<'a> {
    conv: &'a NhwcConv,
    xp: &'a [f32],
    wp: usize,
    wo: usize,
    pieces: &'a [(usize, usize)],
    chunks: &'a [std::ops::Range<usize>],
    y: SendPtr,
    /// Values from one output pixel to the next in `y`.
    y_pix: usize,
    res: Option<SendPtr>,
    /// The output row whose first tap is the first row of `xp` (a band's first row, or 0).
    row0: usize,
}

impl Job<'_> {
    /// Output pixels `pixels` (flat over rows) of `panels`: chunk by chunk of the reduction,
    /// `MR` pixels at a time, each tile through every panel.
    unsafe fn block(&self, panels: &[Panel], pixels: std::ops::Range<usize>) {
        let c = self.conv;
        #[cfg(target_arch = "x86_64")]
        if c.isa == Isa::Avx512 {
            // SAFETY: forwarded from the caller.
            return unsafe { self.spans(panels, pixels) };
        }
        let cin_g = c.c_in / c.groups;
        let (row_step, col_step) = (c.strides[0] * self.wp * c.c_in, c.strides[1] * c.c_in);
        let base = self.xp.as_ptr();
        let mut k0 = 0;
        for (ci, chunk) in self.chunks.iter().enumerate() {
            let pieces = &self.pieces[chunk.clone()];
            let (first, last) = (ci == 0, ci + 1 == self.chunks.len());
            // the input offset of each output pixel, stepping along rows without divisions
            let (mut oy, mut ox) = (pixels.start / self.wo - self.row0, pixels.start % self.wo);
            let mut next = || {
                let at = oy * row_step + ox * col_step;
                ox += 1;
                if ox == self.wo {
                    ox = 0;
                    oy += 1;
                }
                at
            };
            let mut q = pixels.start;
            while q < pixels.end {
                let m = MR.min(pixels.end - q);
                let mut at = [0usize; MR];
                for i in 0..MR {
                    // pixels past the end repeat the last one; their results are not stored
                    at[i] = if i < m { next() } else { at[m - 1] };
                }
                for panel in panels {
                    let out = q * self.y_pix + panel.first;
                    // SAFETY: forwarded from the caller: every pixel's taps lie in the padded
                    // input, its outputs in `y`, the chunk's weights in the panel.
                    unsafe {
                        Tile {
                            a: at.map(|o| base.add(o + panel.group * cin_g)),
                            m,
                            pieces,
                            b: c.packed.as_ptr().add(panel.offset + k0 * NR),
                            first,
                            last,
                            y: self.y.0.add(out),
                            res: self.res.map(|p| p.0.add(out) as *const f32),
                            y_pix: self.y_pix,
                            valid: panel.valid,
                            bias: c.bias.as_ptr().add(panel.bias_offset),
                            tail: &c.tail,
                        }
                        .run(c.isa)
                    };
                }
                q += m;
            }
            k0 += pieces.iter().map(|p| p.1).sum::<usize>();
        }
    }
}

impl Job<'_> {
    /// [`Job::block`] on AVX-512: chunk by chunk of the reduction, blocks of pixels through
    /// each group's panels of the set in one call (`nhwc_span512`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn spans(&self, panels: &[Panel], pixels: std::ops::Range<usize>) {
        use super::nhwc_span512::{BLOCK_PIXELS, BLOCK_SLACK, Span, block_len, run};
        let c = self.conv;
        let cin_g = c.c_in / c.groups;
        let (row_step, col_step) = (c.strides[0] * self.wp * c.c_in, c.strides[1] * c.c_in);
        let mut offsets = [0usize; BLOCK_PIXELS + BLOCK_SLACK];
        let mut k0 = 0;
        for (ci, chunk) in self.chunks.iter().enumerate() {
            let pieces = &self.pieces[chunk.clone()];
            let (mut oy, mut ox) = (pixels.start / self.wo - self.row0, pixels.start % self.wo);
            let mut q = pixels.start;
            while q < pixels.end {
                let n = block_len(pixels.end - q);
                for o in offsets[..n].iter_mut() {
                    *o = oy * row_step + ox * col_step;
                    ox += 1;
                    if ox == self.wo {
                        ox = 0;
                        oy += 1;
                    }
                }
                for run_of in panels.chunk_by(|a, b| a.group == b.group) {
                    let (head, last) = (&run_of[0], &run_of[run_of.len() - 1]);
                    let out = q * self.y_pix + head.first;
                    // SAFETY: the caller's contract: the pixels' taps lie in the padded
                    // input, their outputs (and residuals) in `y`; a group's panels are
                    // consecutive in `packed` and in the padded bias.
                    unsafe {
                        run(&Span {
                            base: self.xp.as_ptr().add(head.group * cin_g),
                            offsets: &offsets[..n],
                            pieces,
                            weights: c.packed.as_ptr().add(head.offset + k0 * NR),
                            w_panel: c.k * NR,
                            bias: c.bias.as_ptr().add(head.bias_offset),
                            panels: run_of.len(),
                            last_valid: last.valid,
                            first: ci == 0,
                            last: ci + 1 == self.chunks.len(),
                            y: self.y.0.add(out),
                            res: self.res.map(|p| p.0.add(out) as *const f32),
                            y_pix: self.y_pix,
                            y_panel: NR,
                            tail: &c.tail,
                        })
                    };
                }
                q += n;
            }
            k0 += pieces.iter().map(|p| p.1).sum::<usize>();
        }
    }
}

/// One tile: `m ≤ MR` output pixels × one panel × one chunk of the reduction.
pub(super) struct Tile<'a> {
    /// Each pixel's first input value (its first tap, the group's first channel).
    pub(super) a: [*const f32; MR],
    pub(super) m: usize,
    /// (offset, length) of the chunk's input pieces.
    pub(super) pieces: &'a [(usize, usize)],
    /// The chunk's packed weights.
    pub(super) b: *const f32,
    /// The first chunk starts from zero, later ones from the partial sums in `y`; only the
    /// last applies bias and tail.
    pub(super) first: bool,
    pub(super) last: bool,
    pub(super) y: *mut f32,
    pub(super) res: Option<*const f32>,
    pub(super) y_pix: usize,
    pub(super) valid: usize,
    pub(super) bias: *const f32,
    pub(super) tail: &'a Tail,
}

impl Tile<'_> {
    /// The tile's products on `isa`'s vector kernel (portable loops without AVX2).
    ///
    /// # Safety
    /// Every pointer reaches the values the fields' lengths describe.
    pub(super) unsafe fn run(&self, isa: Isa) {
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if isa != Isa::Portable {
                if self.valid <= 8 {
                    return avx2::kernel_half(self);
                }
                return avx2::kernel(self);
            }
            let _ = isa;
            self.portable();
        }
    }

    /// The same arithmetic with plain loops.
    unsafe fn portable(&self) {
        unsafe {
            let mut acc = [[0.0f32; NR]; MR];
            if !self.first {
                for (p, row) in acc.iter_mut().enumerate().take(self.m) {
                    for (j, v) in row.iter_mut().enumerate().take(self.valid) {
                        *v = *self.y.add(p * self.y_pix + j);
                    }
                }
            }
            let mut bp = self.b;
            for &(off, len) in self.pieces {
                for kk in 0..len {
                    for (p, row) in acc.iter_mut().enumerate() {
                        let a = *self.a[p].add(off + kk);
                        for (j, v) in row.iter_mut().enumerate() {
                            *v += a * *bp.add(j);
                        }
                    }
                    bp = bp.add(NR);
                }
            }
            for (p, row) in acc.iter().enumerate().take(self.m) {
                for j in 0..self.valid {
                    if !self.last {
                        *self.y.add(p * self.y_pix + j) = row[j];
                        continue;
                    }
                    let mut v = row[j] + *self.bias.add(j);
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
pub(super) mod avx2 {
    use super::{MR, Tile};
    use crate::kernels::vmath::v256;
    use std::arch::x86_64::*;

    /// The `6 × 16` register tile: twelve accumulators named one by one (an array indexed
    /// in loops is kept on the stack by the compiler).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel(t: &Tile) {
        unsafe {
            let init = if t.first {
                [[_mm256_setzero_ps(); 2]; MR]
            } else {
                load_partial(t)
            };
            let [[mut c00, mut c01], [mut c10, mut c11], [mut c20, mut c21]] =
                [init[0], init[1], init[2]];
            let [[mut c30, mut c31], [mut c40, mut c41], [mut c50, mut c51]] =
                [init[3], init[4], init[5]];
            let mut bp = t.b;
            for &(off, len) in t.pieces {
                let a0 = t.a[0].add(off);
                let a1 = t.a[1].add(off);
                let a2 = t.a[2].add(off);
                let a3 = t.a[3].add(off);
                let a4 = t.a[4].add(off);
                let a5 = t.a[5].add(off);
                macro_rules! step {
                    ($k:expr, $b:expr) => {
                        let b0 = _mm256_loadu_ps(bp.add($b));
                        let b1 = _mm256_loadu_ps(bp.add($b + 8));
                        let x = _mm256_broadcast_ss(&*a0.add($k));
                        c00 = _mm256_fmadd_ps(x, b0, c00);
                        c01 = _mm256_fmadd_ps(x, b1, c01);
                        let x = _mm256_broadcast_ss(&*a1.add($k));
                        c10 = _mm256_fmadd_ps(x, b0, c10);
                        c11 = _mm256_fmadd_ps(x, b1, c11);
                        let x = _mm256_broadcast_ss(&*a2.add($k));
                        c20 = _mm256_fmadd_ps(x, b0, c20);
                        c21 = _mm256_fmadd_ps(x, b1, c21);
                        let x = _mm256_broadcast_ss(&*a3.add($k));
                        c30 = _mm256_fmadd_ps(x, b0, c30);
                        c31 = _mm256_fmadd_ps(x, b1, c31);
                        let x = _mm256_broadcast_ss(&*a4.add($k));
                        c40 = _mm256_fmadd_ps(x, b0, c40);
                        c41 = _mm256_fmadd_ps(x, b1, c41);
                        let x = _mm256_broadcast_ss(&*a5.add($k));
                        c50 = _mm256_fmadd_ps(x, b0, c50);
                        c51 = _mm256_fmadd_ps(x, b1, c51);
                    };
                }
                // four steps per iteration (the loop overhead shows at one)
                let mut kk = 0;
                while kk + 4 <= len {
                    step!(kk, 0);
                    step!(kk + 1, 16);
                    step!(kk + 2, 32);
                    step!(kk + 3, 48);
                    bp = bp.add(64);
                    kk += 4;
                }
                while kk < len {
                    step!(kk, 0);
                    bp = bp.add(16);
                    kk += 1;
                }
            }
            let acc: [[__m256; 2]; MR] = [
                [c00, c01],
                [c10, c11],
                [c20, c21],
                [c30, c31],
                [c40, c41],
                [c50, c51],
            ];
            if t.last {
                store(t, &acc);
            } else {
                store_partial(t, &acc);
            }
        }
    }

    /// The `6 × 8` tile of a panel with at most 8 real channels (the last panel of a layer
    /// whose channel count is 8 more than a multiple of 16): half the multiply-adds of the full
    /// tile, none on padding lanes.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_half(t: &Tile) {
        unsafe {
            let init = if t.first {
                [[_mm256_setzero_ps(); 2]; MR]
            } else {
                load_partial(t)
            };
            let [mut c0, mut c1, mut c2, mut c3, mut c4, mut c5] = init.map(|r| r[0]);
            let mut bp = t.b;
            for &(off, len) in t.pieces {
                let a = t.a.map(|p| p.add(off));
                macro_rules! step {
                    ($k:expr, $b:expr) => {
                        let b0 = _mm256_loadu_ps(bp.add($b));
                        c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a[0].add($k)), b0, c0);
                        c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a[1].add($k)), b0, c1);
                        c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a[2].add($k)), b0, c2);
                        c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a[3].add($k)), b0, c3);
                        c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a[4].add($k)), b0, c4);
                        c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a[5].add($k)), b0, c5);
                    };
                }
                let mut kk = 0;
                while kk + 4 <= len {
                    step!(kk, 0);
                    step!(kk + 1, 16);
                    step!(kk + 2, 32);
                    step!(kk + 3, 48);
                    bp = bp.add(64);
                    kk += 4;
                }
                while kk < len {
                    step!(kk, 0);
                    bp = bp.add(16);
                    kk += 1;
                }
            }
            let z = _mm256_setzero_ps();
            let acc = [[c0, z], [c1, z], [c2, z], [c3, z], [c4, z], [c5, z]];
            if t.last {
                store(t, &acc);
            } else {
                store_partial(t, &acc);
            }
        }
    }

    /// The partial sums an earlier chunk left in `y` (zero for padding lanes and rows).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_partial(t: &Tile) -> [[__m256; 2]; MR] {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for (p, row) in acc.iter_mut().enumerate().take(t.m) {
                let y = t.y.add(p * t.y_pix);
                if t.valid == 16 {
                    row[0] = _mm256_loadu_ps(y);
                    row[1] = _mm256_loadu_ps(y.add(8));
                } else {
                    let mut lanes = [0.0f32; 16];
                    for (j, l) in lanes.iter_mut().enumerate().take(t.valid) {
                        *l = *y.add(j);
                    }
                    row[0] = _mm256_loadu_ps(lanes.as_ptr());
                    row[1] = _mm256_loadu_ps(lanes.as_ptr().add(8));
                }
            }
            acc
        }
    }

    /// The raw partial sums into `y`, for the next chunk.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_partial(t: &Tile, acc: &[[__m256; 2]; MR]) {
        unsafe {
            for (p, row) in acc.iter().enumerate().take(t.m) {
                let y = t.y.add(p * t.y_pix);
                if t.valid == 16 {
                    _mm256_storeu_ps(y, row[0]);
                    _mm256_storeu_ps(y.add(8), row[1]);
                } else {
                    let mut lanes = [0.0f32; 16];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), row[0]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), row[1]);
                    for (j, l) in lanes.iter().enumerate().take(t.valid) {
                        *y.add(j) = *l;
                    }
                }
            }
        }
    }

    /// Bias, tail and the store of the first `m` pixels (a partial vector through a lane
    /// buffer).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(t: &Tile, acc: &[[__m256; 2]; MR]) {
        unsafe {
            // the common case: at most a clamp, no residual, whole vectors
            let clamp = match (t.tail.act, t.tail.post, t.res) {
                (None, None, None) => Some((f32::NEG_INFINITY, f32::INFINITY)),
                (Some(f), None, None) => f.clamp_bounds(),
                _ => None,
            };
            if let (Some((lo, hi)), 16 | 8) = (clamp, t.valid) {
                let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
                let (b0, b1) = (_mm256_loadu_ps(t.bias), _mm256_loadu_ps(t.bias.add(8)));
                for (p, row) in acc.iter().enumerate() {
                    if p < t.m {
                        let y = t.y.add(p * t.y_pix);
                        let v0 = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(row[0], b0), lo), hi);
                        _mm256_storeu_ps(y, v0);
                        if t.valid == 16 {
                            let v1 =
                                _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(row[1], b1), lo), hi);
                            _mm256_storeu_ps(y.add(8), v1);
                        }
                    }
                }
                return;
            }
            // bias, then each part of the tail over all twelve vectors at once (independent
            // chains overlap)
            let (b0, b1) = (_mm256_loadu_ps(t.bias), _mm256_loadu_ps(t.bias.add(8)));
            let mut xs = [b0; 2 * MR];
            for (i, x) in xs.iter_mut().enumerate() {
                *x = _mm256_add_ps(acc[i / 2][i % 2], if i % 2 == 0 { b0 } else { b1 });
            }
            if let Some(f) = t.tail.act {
                v256::apply_all(f, &mut xs);
            }
            // a function alone on whole vectors: stored straight from the registers
            if t.res.is_none() && t.tail.post.is_none() && matches!(t.valid, 8 | 16) {
                for (p, pair) in xs.chunks_exact(2).enumerate().take(t.m) {
                    let y = t.y.add(p * t.y_pix);
                    _mm256_storeu_ps(y, pair[0]);
                    if t.valid == 16 {
                        _mm256_storeu_ps(y.add(8), pair[1]);
                    }
                }
                return;
            }
            let mut rows = [[0.0f32; 16]; MR];
            for (i, x) in xs.iter().enumerate() {
                _mm256_storeu_ps(rows[i / 2].as_mut_ptr().add(8 * (i % 2)), *x);
            }
            if let Some(r) = t.res {
                for (p, row) in rows.iter_mut().enumerate().take(t.m) {
                    for (j, v) in row.iter_mut().enumerate().take(t.valid) {
                        *v += *r.add(p * t.y_pix + j);
                    }
                }
            }
            if let Some(f) = t.tail.post {
                let mut xs = [b0; 2 * MR];
                for (i, x) in xs.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(rows[i / 2].as_ptr().add(8 * (i % 2)));
                }
                v256::apply_all(f, &mut xs);
                for (i, x) in xs.iter().enumerate() {
                    _mm256_storeu_ps(rows[i / 2].as_mut_ptr().add(8 * (i % 2)), *x);
                }
            }
            for (p, row) in rows.iter().enumerate().take(t.m) {
                let y = t.y.add(p * t.y_pix);
                if t.valid == 16 {
                    _mm256_storeu_ps(y, _mm256_loadu_ps(row.as_ptr()));
                    _mm256_storeu_ps(y.add(8), _mm256_loadu_ps(row.as_ptr().add(8)));
                } else {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), y, t.valid);
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

#[cfg(test)]
mod tests {
    use super::{NhwcConv, balanced_chunks};
    use crate::kernels::{Isa, epilogue::Tail};
    use secateur_graph::Conv;

    /// Large padded inputs are copied band by band (the shapes of the banded reference test in
    /// `tests/nhwc_kernels.rs`); small ones, more threads than the scratch has room for bands
    /// and layers without padding keep one copy or none.
    #[test]
    fn bands_where_the_padded_input_leaves_the_l2_cache() {
        let conv = |stride: usize, pads: [usize; 4], groups: usize| Conv {
            kernel: [3, 3],
            strides: [stride, stride],
            pads,
            dilations: [1, 1],
            groups,
        };
        let kernel = |c: &Conv, c_in: usize, c_out: usize| {
            let w = vec![0.5; c_out * c_in / c.groups * 9];
            NhwcConv::new(
                Isa::detect(),
                c,
                c_in,
                c_out,
                &w,
                &vec![0.0; c_out],
                Tail::default(),
            )
        };
        let k = kernel(&conv(1, [1; 4], 1), 32, 20);
        let rows = k.band_rows(70, 72, 70, 1).expect("banded");
        assert!((1..70).contains(&rows), "{rows}");
        // two threads: bands of at most half the rows, a copy of each thread's band in scratch
        let two = k.band_rows(70, 72, 70, 2).expect("banded on two threads");
        assert!((1..=35).contains(&two), "{two}");
        assert_eq!(k.band_rows(70, 72, 70, 40), None);
        assert_eq!(k.band_rows(20, 20, 20, 1), None);
        let k = kernel(&conv(2, [1, 0, 1, 1], 2), 32, 32);
        assert!(k.band_rows(75, 71, 38, 1).is_some());
        assert_eq!(
            kernel(&conv(1, [0; 4], 1), 32, 20).band_rows(70, 72, 68, 1),
            None
        );
    }

    /// The chunks cover the pieces in order without gaps or overlaps, each piece cut only
    /// where a chunk ends, with as few chunks as the slack allows and equal lengths but the last.
    #[test]
    fn chunks_are_balanced_and_cover_the_reduction() {
        let cases: [&[(usize, usize)]; 5] = [
            &[(0, 192), (1000, 192), (2000, 192)], // 3×3, 64 channels: K = 576
            &[
                (0, 21),
                (500, 21),
                (900, 21),
                (1300, 21),
                (1700, 21),
                (2100, 21),
                (2500, 21),
            ],
            &[(0, 48), (100, 48), (200, 48)], // K = 144: one chunk with the slack
            &[(0, 1536), (5000, 1536), (9000, 1536)],
            &[(0, 7)],
        ];
        for whole in cases {
            let (pieces, chunks) = balanced_chunks(whole, 128);
            let total: usize = whole.iter().map(|p| p.1).sum();
            assert_eq!(chunks.len(), total.div_ceil(160).max(1), "{whole:?}");
            // the pieces read the same input values, in the same order, as the whole ones
            let values = |ps: &[(usize, usize)]| -> Vec<usize> {
                ps.iter().flat_map(|&(off, len)| off..off + len).collect()
            };
            assert_eq!(values(&pieces), values(whole), "pieces cover the reduction");
            assert_eq!(chunks.first().map(|c| c.start), Some(0));
            assert_eq!(chunks.last().map(|c| c.end), Some(pieces.len()));
            let lens: Vec<usize> = chunks
                .iter()
                .map(|c| pieces[c.clone()].iter().map(|p| p.1).sum())
                .collect();
            let target = total.div_ceil(chunks.len());
            for (i, &l) in lens.iter().enumerate() {
                assert!(l <= 160, "{whole:?}: chunk of {l}");
                if i + 1 < lens.len() {
                    assert_eq!(l, target, "{whole:?}: {lens:?}");
                }
            }
            for w in chunks.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
    }
}
