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
//! long run (positions past `wo` in a row are computed into a scratch row and dropped), and
//! tiles of 96 pixels × all channels keep the input they read in cache. A portable path
//! computes the same with plain loops; stride-1 layers up to 64 wide keep their AVX-512 row
//! kernels where the CPU has them.

mod avx2;
mod avx512;

use super::epilogue::Epilogue;
use secateur_graph::Conv;

/// A convolution's non-zero weights with their input offsets in the phase-split input.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseConv {
    pub c_in: usize,
    pub c_out: usize,
    pub pads: [usize; 4],
    strides: [usize; 2],
    row_ptr: Vec<u32>,
    offsets: Vec<u32>,
    values: Vec<f32>,
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
        let mut row_ptr = vec![0u32];
        let (mut offsets, mut values) = (Vec::new(), Vec::new());
        for o in 0..c_out {
            for ci in 0..c_in {
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
        Some(SparseConv {
            c_in,
            c_out,
            pads: conv.pads,
            strides: conv.strides,
            row_ptr,
            offsets,
            values,
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

    /// One sample: `x` is `[c_in, h, w]`, `y` is `[c_out, ho, wo]`; `threads > 1` splits the
    /// output channels over the running team (`crate::team`).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
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
        #[cfg(target_arch = "x86_64")]
        if threads <= 1
            && self.strides == [1, 1]
            && std::is_x86_feature_detected!("avx512f")
            && wo <= 64
        {
            // SAFETY: AVX-512F detected; every offset plus (ho-1)·wq + wo stays inside the
            // padded input because (ho, wo) are the convolution's output sizes.
            unsafe { self.avx512(xq, ho, wo, y, ep) };
            return;
        }
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
            self.run_channels(xq, bi * per_block, len, out, ep);
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

    /// Output channels `o0..` (as many as `out` holds runs of `len`) over the flat index.
    fn run_channels(&self, xq: &[f32], o0: usize, len: usize, out: &mut [f32], ep: &Epilogue) {
        let channels = o0..o0 + out.len() / len;
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected; every offset plus `len` stays inside `xq`
            // because the flat run ends at the last output pixel, whose taps are in range.
            unsafe { avx2::channels(self, xq, channels, len, out, ep) };
            return;
        }
        for (o, yo) in channels.zip(out.chunks_mut(len)) {
            yo.fill(ep.bias(o));
            let (s, e) = (self.row_ptr[o] as usize, self.row_ptr[o + 1] as usize);
            for j in s..e {
                let (off, v) = (self.offsets[j] as usize, self.values[j]);
                for (d, sv) in yo.iter_mut().zip(&xq[off..off + len]) {
                    *d += v * sv;
                }
            }
            yo.iter_mut().for_each(|v| *v = ep.act.apply(*v));
        }
    }

    /// The non-zeros of output channel `o`: (input offsets, values).
    fn channel(&self, o: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.row_ptr[o] as usize, self.row_ptr[o + 1] as usize);
        (&self.offsets[s..e], &self.values[s..e])
    }
}
