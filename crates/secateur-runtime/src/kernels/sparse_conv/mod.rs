//! Sparse direct convolution: the non-zero weights of each output channel, each stored with the
//! offset of its input tap, are applied to runs of output pixels at once, so no im2col matrix is
//! built and the work is proportional to the non-zeros (the pixel-vectorised CHW scheme of
//! XNNPACK's sparse path, extended to k×k taps and strides).
//!
//! Strided convolutions read a *phase-split* copy of the zero-padded input: for stride
//! (sy, sx), phase (py, px) holds the padded pixels at rows ≡ py (mod sy) and columns ≡ px
//! (mod sx), so every tap of a strided layer reads consecutive values like a stride-1 one. Only
//! the phases some tap reads are built (one for a 1×1 stride-2 shortcut). Output pixel
//! (oy, ox) reads `tap offset + oy·wq + ox` of that copy (wq: width of a phase plane); the
//! kernels run over the *flat* index `oy·wq + ox` across row ends, which makes every layer one
//! long run (positions past `wo` in a row are computed into a scratch row and dropped).
//! Tiles of 128 positions (96 with AVX2) run outermost; inside a tile the non-zeros are taken
//! by *input-channel chunk*, each chunk small enough that the input the tile reads from it
//! stays in L1 while every output channel reads it (the tile's partial sums wait in the
//! output between chunks). Short tiles take two output channels at once so enough independent
//! accumulator chains hide the multiply-add latency. A portable path computes the same with
//! plain loops.

mod avx2;
mod avx512;

use super::epilogue::Epilogue;
use super::isa::Isa;
use secateur_graph::Conv;
use std::ops::Range;

/// A convolution's non-zero weights with their input offsets in the phase-split input.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseConv {
    pub c_in: usize,
    pub c_out: usize,
    pub pads: [usize; 4],
    strides: [usize; 2],
    /// Start of the non-zeros of (chunk `ch`, output channel `o`) at `row_ptr[ch·c_out + o]`
    /// (one more entry at the end): the non-zeros are grouped by input-channel chunk first.
    row_ptr: Vec<u32>,
    offsets: Vec<u32>,
    values: Vec<f32>,
    /// Input-channel chunks: a tile of output positions reads one chunk's input for every
    /// output channel before the next chunk, so what it reads stays in L1.
    chunks: usize,
    /// The phases (py, px) the taps read, in the order they are stored per input channel.
    phases: Vec<(usize, usize)>,
    /// Size of one phase plane.
    hq: usize,
    wq: usize,
}

impl SparseConv {
    /// From the row-major `[c_out × c_in·kh·kw]` weight of an ungrouped convolution on `h×w`
    /// inputs; `None` for grouped convolutions.
    pub fn new(
        conv: &Conv,
        c_in: usize,
        c_out: usize,
        h: usize,
        w: usize,
        weight: &[f32],
    ) -> Option<Self> {
        if conv.groups != 1 {
            return None;
        }
        let [kh, kw] = conv.kernel;
        let [sy, sx] = conv.strides;
        let [dy, dx] = conv.dilations;
        let (hp, wp) = (
            h + conv.pads[0] + conv.pads[2],
            w + conv.pads[1] + conv.pads[3],
        );
        let (hq, wq) = (hp.div_ceil(sy), wp.div_ceil(sx));
        let mut phases = Vec::new();
        for ky in 0..kh {
            for kx in 0..kw {
                let ph = ((ky * dy) % sy, (kx * dx) % sx);
                if !phases.contains(&ph) {
                    phases.push(ph);
                }
            }
        }
        let slot = |ph: (usize, usize)| phases.iter().position(|&p| p == ph).unwrap_or(0);
        let k = c_in * kh * kw;
        let density =
            weight.iter().filter(|v| **v != 0.0).count() as f64 / weight.len().max(1) as f64;
        let span = ((kh - 1) * dy / sy) * wq + (kw - 1) * dx / sx;
        let chunk_channels = chunk_channels(phases.len(), hq * wq, span, kh * kw, density, c_in);
        let chunks = c_in.div_ceil(chunk_channels);
        let mut row_ptr = vec![0u32];
        let (mut offsets, mut values) = (Vec::new(), Vec::new());
        for ch in 0..chunks {
            let cis = ch * chunk_channels..((ch + 1) * chunk_channels).min(c_in);
            for o in 0..c_out {
                for ci in cis.clone() {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let v = weight[o * k + (ci * kh + ky) * kw + kx];
                            if v != 0.0 {
                                let (ry, rx) = (ky * dy, kx * dx);
                                let plane = ci * phases.len() + slot((ry % sy, rx % sx));
                                offsets.push(((plane * hq + ry / sy) * wq + rx / sx) as u32);
                                values.push(v);
                            }
                        }
                    }
                }
                row_ptr.push(values.len() as u32);
            }
        }
        Some(SparseConv {
            c_in,
            c_out,
            pads: conv.pads,
            strides: conv.strides,
            row_ptr,
            offsets,
            values,
            chunks,
            phases,
            hq,
            wq,
        })
    }

    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * 8 + self.row_ptr.len() * 4
    }

    /// Whether the kernels read the caller's input as it is (stride 1, no padding).
    fn reads_input_in_place(&self) -> bool {
        self.strides == [1, 1] && self.pads.iter().all(|&p| p == 0)
    }

    fn phase_input_len(&self) -> usize {
        if self.reads_input_in_place() {
            0
        } else {
            self.c_in * self.phases.len() * self.hq * self.wq
        }
    }

    /// Length of one output channel's flat run: rows of `wq` pixels, the last one `wo` wide.
    fn flat_len(&self, ho: usize, wo: usize) -> usize {
        (ho - 1) * self.wq + wo
    }

    /// Scratch floats one sample needs with outputs `ho × wo`: the phase-split input and, when
    /// rows carry positions past `wo`, the flat outputs before they are compacted.
    pub fn scratch_len(&self, ho: usize, wo: usize) -> usize {
        let flat = if self.wq == wo || ho <= 1 {
            0
        } else {
            self.c_out * self.flat_len(ho, wo)
        };
        self.phase_input_len() + flat
    }

    /// The phase-split, zero-padded copy of `x` (`[c_in, h, w]`), or `x` itself at stride 1
    /// without padding.
    fn phase_input<'a>(&self, x: &'a [f32], h: usize, w: usize, out: &'a mut [f32]) -> &'a [f32] {
        if self.reads_input_in_place() {
            return x;
        }
        let [sy, sx] = self.strides;
        let (top, left) = (self.pads[0], self.pads[1]);
        let (hq, wq, np) = (self.hq, self.wq, self.phases.len());
        let out = &mut out[..self.c_in * np * hq * wq];
        out.fill(0.0);
        for ci in 0..self.c_in {
            for (s, &(py, px)) in self.phases.iter().enumerate() {
                let plane = &mut out[(ci * np + s) * hq * wq..(ci * np + s + 1) * hq * wq];
                // first phase column whose padded column is an input column
                let qx0 = left.saturating_sub(px).div_ceil(sx);
                for qy in 0..hq {
                    let Some(iy) = (qy * sy + py).checked_sub(top).filter(|&r| r < h) else {
                        continue;
                    };
                    let src = &x[(ci * h + iy) * w..(ci * h + iy + 1) * w];
                    let dst = &mut plane[qy * wq..(qy + 1) * wq];
                    if sx == 1 {
                        // consecutive columns: one copy of the row's part inside the input
                        let ix0 = qx0 + px - left;
                        let n = (w - ix0).min(wq - qx0);
                        dst[qx0..qx0 + n].copy_from_slice(&src[ix0..ix0 + n]);
                        continue;
                    }
                    for (qx, d) in dst.iter_mut().enumerate().skip(qx0) {
                        let ix = qx * sx + px - left;
                        if ix >= w {
                            break;
                        }
                        *d = src[ix];
                    }
                }
            }
        }
        out
    }

    /// One sample: `x` is `[c_in, h, w]`, `y` is `[c_out, ho, wo]`, with the kernels of `isa`
    /// (the portable ones where the CPU lacks it); `threads > 1` splits the output channels
    /// over the running team (`crate::team`).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        isa: Isa,
        x: &[f32],
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        y: &mut [f32],
        ep: &Epilogue,
        scratch: &mut [f32],
        threads: usize,
    ) {
        if ho == 0 || wo == 0 {
            return;
        }
        let (input_scratch, flat_scratch) = scratch.split_at_mut(self.phase_input_len());
        let xq = self.phase_input(x, h, w, input_scratch);
        let len = self.flat_len(ho, wo);
        let compact = self.wq != wo && ho > 1;
        let flat: &mut [f32] = if compact {
            &mut flat_scratch[..self.c_out * len]
        } else {
            &mut y[..self.c_out * len]
        };
        // one block keeps each input tile in cache for every channel; threads share blocks
        let per_block = if threads > 1 {
            self.c_out.div_ceil(threads * 4)
        } else {
            self.c_out
        };
        crate::team::parallel_chunks(threads, flat, per_block * len, |bi, out| {
            self.run_channels(isa, xq, bi * per_block, len, out, ep);
        });
        if compact {
            for o in 0..self.c_out {
                for oy in 0..ho {
                    let src = &flat_scratch[o * len + oy * self.wq..][..wo];
                    y[(o * ho + oy) * wo..][..wo].copy_from_slice(src);
                }
            }
        }
    }

    /// Output channels `o0..` (as many as `out` holds runs of `len`) over the flat index:
    /// tiles of positions outermost, then input-channel chunks, then channels, so the input a
    /// tile reads for one chunk stays in L1 while every channel reads it.
    fn run_channels(
        &self,
        isa: Isa,
        xq: &[f32],
        o0: usize,
        len: usize,
        out: &mut [f32],
        ep: &Epilogue,
    ) {
        let channels = o0..o0 + out.len() / len;
        let kernel = TileKernel::of(isa);
        let tile = kernel.tile();
        let full = len / tile * tile;
        let rest = len - full;
        let mut tiles: Vec<(usize, usize)> = (0..full).step_by(tile).map(|s| (s, tile)).collect();
        if rest > 0 {
            // a full tile overlapping the one before (recomputed from its bias) where partial
            // tiles cost more than the overlap
            tiles.push(
                if kernel.overlaps_rest() && full > 0 && rest > 2 * tile / 3 {
                    (len - tile, tile)
                } else {
                    (full, rest)
                },
            );
        }
        for (start, n) in tiles {
            for chunk in 0..self.chunks {
                let pass = Pass {
                    first: chunk == 0,
                    last: chunk + 1 == self.chunks,
                };
                let span = (chunk, start, n, len);
                kernel.tile_channels(self, xq, channels.clone(), span, out, ep, pass);
            }
        }
    }

    /// The non-zeros of output channel `o` in input-channel chunk `chunk`: (input offsets,
    /// values).
    fn channel(&self, chunk: usize, o: usize) -> (&[u32], &[f32]) {
        let i = chunk * self.c_out + o;
        let (s, e) = (self.row_ptr[i] as usize, self.row_ptr[i + 1] as usize);
        (&self.offsets[s..e], &self.values[s..e])
    }

    /// Input-channel chunks the non-zeros are grouped by.
    pub fn chunks(&self) -> usize {
        self.chunks
    }
}

/// Which chunk of the reduction a tile's pass covers: the first starts from the bias, the
/// last applies the activation; passes between add to the partial sums in the output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    pub first: bool,
    pub last: bool,
}

/// Bytes of input one tile should read per chunk: most of a 48 KiB L1, the rest left to the
/// weights and the tile's output.
const TILE_INPUT_BYTES: usize = 24 * 1024;
/// Average non-zeros per output channel and chunk below which reloading a tile's partial sums
/// costs more than the cache misses chunks save.
const MIN_CHUNK_NONZEROS: f64 = 24.0;

/// Input channels per chunk: as many as keep a tile's input (its positions plus the taps'
/// reach, in every phase plane) within [`TILE_INPUT_BYTES`], but no fewer than give each
/// output channel [`MIN_CHUNK_NONZEROS`] non-zeros per chunk at this density.
fn chunk_channels(
    phases: usize,
    plane: usize,
    span: usize,
    taps: usize,
    density: f64,
    c_in: usize,
) -> usize {
    let positions = plane.min(avx512::TILE + span);
    let by_cache = TILE_INPUT_BYTES / (phases * positions * 4).max(1);
    let by_work = (MIN_CHUNK_NONZEROS / (taps as f64 * density.max(1e-6))).ceil() as usize;
    by_cache.max(by_work).clamp(1, c_in.max(1))
}

/// The tile kernel of an instruction set: the one asked for where the CPU has it, else the
/// portable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TileKernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl TileKernel {
    fn of(isa: Isa) -> Self {
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => return TileKernel::Avx512,
            Isa::Avx2
                if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma") =>
            {
                return TileKernel::Avx2;
            }
            _ => {}
        }
        let _ = isa;
        TileKernel::Portable
    }

    /// Output positions of a full tile.
    fn tile(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx512 => avx512::TILE,
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 => avx2::TILE,
            TileKernel::Portable => 64,
        }
    }

    /// Whether a run's last partial tile is better computed as a full one overlapping the
    /// tile before (AVX2's masked loads are slow; AVX-512's cost what plain ones do).
    fn overlaps_rest(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == TileKernel::Avx2 {
            return true;
        }
        false
    }

    /// Positions `start..start + n` of the runs (of `len`) of `channels`, for chunk `chunk`.
    fn tile_channels(
        self,
        sc: &SparseConv,
        xq: &[f32],
        channels: Range<usize>,
        (chunk, start, n, len): (usize, usize, usize, usize),
        out: &mut [f32],
        ep: &Epilogue,
        pass: Pass,
    ) {
        match self {
            // SAFETY (both): the feature was detected; `start + n ≤ len` and every offset plus
            // `len` stays inside `xq` because the flat run ends at the last output pixel,
            // whose taps are in range; `out` holds the channels' runs.
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx512 => unsafe {
                avx512::tile_channels(sc, xq, channels, chunk, start, n, len, out, ep, pass)
            },
            #[cfg(target_arch = "x86_64")]
            TileKernel::Avx2 => unsafe {
                avx2::tile_channels(sc, xq, channels, chunk, start, n, len, out, ep, pass)
            },
            TileKernel::Portable => {
                let o0 = channels.start;
                for o in channels {
                    let (offs, vals) = sc.channel(chunk, o);
                    let yo = &mut out[(o - o0) * len + start..][..n];
                    if pass.first {
                        yo.fill(ep.bias(o));
                    }
                    for (&off, &v) in offs.iter().zip(vals) {
                        let xs = &xq[start + off as usize..][..n];
                        for (d, sv) in yo.iter_mut().zip(xs) {
                            *d += v * sv;
                        }
                    }
                    if pass.last {
                        yo.iter_mut().for_each(|v| *v = ep.act.apply(*v));
                    }
                }
            }
        }
    }
}
