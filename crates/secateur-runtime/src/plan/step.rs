//! The steps of an execution plan and how each runs: convolutions (im2col + a weight kernel per
//! group, direct or sparse direct), depthwise convolutions, linear layers, pooling, broadcasting
//! binary and element-wise functions, concatenation, softmax, activation fake quantization, and
//! any other operator through its reference evaluation. Steps read activation buffers or
//! constants and write one output buffer.

use super::err;
use crate::error::Result;
use crate::kernels::direct_conv::DirectConv;
use crate::kernels::elementwise::{self, Broadcast};
use crate::kernels::layout;
use crate::kernels::nhwc_bf16::NhwcBf16Conv;
use crate::kernels::nhwc_conv::NhwcConv;
use crate::kernels::nhwc_int8::NhwcInt8Conv;
use crate::kernels::nhwc_ops::{self, NhwcDepthwise};
use crate::kernels::nhwc_stem::{NhwcStemConv, StemInput};
use crate::kernels::sparse_conv::SparseConv;
use crate::kernels::winograd::NhwcWinograd;
use crate::kernels::{Activation, Epilogue, Isa, Tail, WeightKernel, dense};
use crate::ops;
use crate::team::{available_threads, parallel_chunks, parallel_chunks_with};
use secateur_graph::{ActQuant, BinaryFn, Conv, Op, Pointwise, PoolGeometry, Tensor};

#[derive(Clone)]
pub(super) struct Linear {
    pub(super) kernel: WeightKernel,
    /// Dense copy for the `X·Wᵀ` path without transposes.
    pub(super) bias: Vec<f32>,
    pub(super) act: Activation,
    /// What the chain applies beyond `act` (see [`Tail`]).
    pub(super) tail: Tail,
    pub(super) k: usize,
    pub(super) m: usize,
    pub(super) rows: usize,
    pub(super) threads: usize,
    pub(super) xt: Vec<f32>,
    pub(super) yt: Vec<f32>,
    /// The weights of the dense path (`None` for sparse kernels).
    pub(super) dense: Option<dense::FullyConnected>,
}

#[derive(Clone)]
pub(super) struct ConvStep {
    pub(super) conv: Conv,
    pub(super) kernels: Vec<WeightKernel>,
    pub(super) bias: Vec<f32>,
    pub(super) act: Activation,
    /// What the chain applies beyond `act` (see [`Tail`]).
    pub(super) tail: Tail,
    pub(super) c_in: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    pub(super) direct: bool,
    pub(super) direct_conv: Option<DirectConv>,
    pub(super) sparse_conv: Option<SparseConv>,
    pub(super) kernel_threads: usize,
    pub(super) scratch: Vec<Vec<f32>>,
}

/// A convolution on channels-last activations (dense implicit GEMM, Winograd or depthwise).
#[derive(Clone)]
pub(super) struct NhwcConvStep {
    pub(super) kernel: NhwcKernel,
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    /// Threads splitting one sample (1 when samples run in parallel).
    pub(super) threads: usize,
    /// Padded-input scratch per worker.
    pub(super) scratch: Vec<Vec<f32>>,
    /// Where the output goes when the layer writes its channels straight into a wider
    /// channels-last buffer (its part of a concatenation); `None`: a buffer of its own.
    pub(super) placement: Option<Placement>,
}

/// A layer's channels inside a wider channels-last output: each output pixel has `pixel`
/// values, of which the layer writes `offset .. offset + c_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) offset: usize,
    pub(super) pixel: usize,
}

impl NhwcConvStep {
    /// Whether the kernel can write into a wider buffer (see [`Placement`]): the f32 implicit
    /// GEMM without a residual, or Winograd whose tail is applied as it stores.
    pub(super) fn can_be_placed(&self) -> bool {
        match &self.kernel {
            NhwcKernel::Gemm(k) => !k.tail.residual,
            NhwcKernel::Winograd(k) => k.writes_strided(),
            _ => false,
        }
    }
}

#[derive(Clone)]
pub(super) enum NhwcKernel {
    Gemm(NhwcConv),
    Winograd(NhwcWinograd),
    Depthwise(NhwcDepthwise),
    /// Reads the f32 input and quantizes it itself (no simulation step before it).
    Int8(NhwcInt8Conv),
    /// Rounds its f32 input to bf16 itself.
    Bf16(NhwcBf16Conv),
    /// Few input channels, vectorised over output pixels; reads NCHW or NHWC.
    Stem(NhwcStemConv),
}

/// Where a masked softmax step finds its mask: at its input 1 (an activation, such as a
/// padding mask), or in the step (a constant attention bias).
#[derive(Clone)]
pub(super) enum MaskValues {
    Input,
    Constant(Vec<f32>),
}

#[derive(Clone)]
pub(super) enum StepKind {
    Conv(Box<ConvStep>),
    NhwcConv(Box<NhwcConvStep>),
    /// Max or average pooling of channels-last samples.
    NhwcPool {
        geo: PoolGeometry,
        max: bool,
        include_pad: bool,
        c: usize,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
    },
    /// Global average pooling of channels-last samples `[p][c]`.
    NhwcGap {
        c: usize,
        p: usize,
    },
    /// A strided slice of the whole batch (dims and per-axis `(start, step, count)` in memory
    /// order).
    Slice {
        dims: Vec<usize>,
        ranges: Vec<(i64, i64, usize)>,
    },
    /// Constant padding of the whole batch (dims and pads in memory order).
    Pad {
        dims: Vec<usize>,
        before: Vec<usize>,
        after: Vec<usize>,
        fill: f32,
    },
    /// Blocks of `inner` values gathered along an axis of `n` at constant positions.
    GatherBlocks {
        outer: usize,
        n: usize,
        inner: usize,
        positions: Vec<usize>,
    },
    /// Blocks of `inner` values gathered along an axis of `n` at positions from input 1
    /// (token ids: an embedding lookup).
    GatherIndexed {
        outer: usize,
        n: usize,
        inner: usize,
        /// Number of positions (elements of the index input).
        count: usize,
    },
    /// Layer normalisation of `rows` rows of `n` (scale input 1, optional bias input 2).
    LayerNorm {
        rows: usize,
        n: usize,
        eps: f32,
        /// Whether inputs 1 (scale) and 2 (bias) are present.
        scale: bool,
        bias: bool,
    },
    /// Products of activation matrices (attention scores and their product with values).
    BatchMatMul {
        products: secateur_graph::MatrixProducts,
        threads: usize,
    },
    /// The whole batch with its axes permuted.
    Transpose {
        dims: Vec<usize>,
        perm: Vec<usize>,
    },
    /// Per sample, `[c][p]` to `[p][c]` (`to_nhwc`) or back.
    Relayout {
        to_nhwc: bool,
        c: usize,
        p: usize,
    },
    Depthwise {
        conv: Conv,
        weights: Vec<f32>,
        bias: Vec<f32>,
        act: Activation,
        tail: Tail,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        ho: usize,
        wo: usize,
    },
    Linear(Box<Linear>),
    Pool {
        geo: PoolGeometry,
        max: bool,
        include_pad: bool,
        planes: usize,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
    },
    Gap {
        planes: usize,
        inner: usize,
    },
    Binary {
        f: BinaryFn,
        bc: Broadcast,
        /// Elements of each operand.
        na: usize,
        nb: usize,
    },
    /// Rows of `total` values, input `k` copied into each row's `parts[k]` = (offset, length)
    /// (after elision, only the parts no producer writes in place; see `concat_elision`).
    Concat {
        outer: usize,
        total: usize,
        parts: Vec<(usize, usize)>,
    },
    /// Input 0 broadcast to the output (`Expand`): `bc` built with its dims for both
    /// operands; `n` elements of input 0.
    Expand {
        bc: Broadcast,
        n: usize,
    },
    /// A reduction over one run of adjacent axes of `[outer, red, inner]`.
    Reduce {
        kind: secateur_graph::ReduceKind,
        outer: usize,
        red: usize,
        inner: usize,
    },
    /// `Where(cond, x, y)`, each operand broadcast.
    Select {
        sel: crate::kernels::select::Select,
        /// Elements of each operand.
        lens: [usize; 3],
    },
    /// `softmax(scale·x + mask)` over the middle axis of `[outer, red, inner]`; a scaled or
    /// masked softmax (the graph's scaled-softmax rule) runs along the last axis (`inner` 1).
    Softmax {
        outer: usize,
        red: usize,
        inner: usize,
        scale: f32,
        mask: Option<(crate::kernels::softmax::MaskRows, MaskValues)>,
    },
    Pointwise(Pointwise),
    /// `x·scale[c] + shift[c]` over the first `n` values (channel `c` of value `i` is
    /// `i / inner % scale.len()`: `inner` 1 channels-last, the plane size channels-first),
    /// then `post` if set.
    ChannelAffine {
        scale: Vec<f32>,
        shift: Vec<f32>,
        inner: usize,
        post: Option<Pointwise>,
        n: usize,
    },
    /// An operator without a dedicated kernel, run by its reference evaluation on inputs of
    /// these shapes (correct, not fast).
    Reference {
        op: Op,
        shapes: Vec<Vec<usize>>,
    },
    /// Fake-quantizes the first `n` values (buffers may be larger than the value).
    Quant {
        q: ActQuant,
        n: usize,
    },
}

#[derive(Clone)]
pub(super) struct Step {
    pub(super) name: String,
    pub(super) kind: StepKind,
    pub(super) inputs: Vec<usize>,
    pub(super) output: usize,
    /// Constant inputs (weights read by element-wise ops), by input position.
    pub(super) consts: Vec<(usize, Vec<f32>)>,
    /// Images per sample of the batch that the step's per-image loops cover
    /// ([`StepKind::per_image_output`]): the factor of its output's leading axis when that is
    /// a multiple of the batch and the step's image is what follows it (TNT's pixel patches
    /// `[196·N, 3, 16, 16]` through a convolution), else 1.
    pub(super) images: usize,
}

/// A step running `op` by its reference evaluation, checked once on zeros of the input shapes
/// (what remains to fail at run time is data: an index out of range).
pub(super) fn reference_step(
    name: &str,
    op: &Op,
    shapes: impl Iterator<Item = Vec<usize>>,
) -> Result<StepKind> {
    let shapes: Vec<Vec<usize>> = shapes.collect();
    let zeros: Vec<Tensor> = shapes.iter().map(|s| Tensor::zeros(s.clone())).collect();
    let refs: Vec<&Tensor> = zeros.iter().collect();
    op.sem().eval(&refs).map_err(|e| {
        err(
            name,
            format!("{} cannot run on inputs {shapes:?}: {e}", op.op_type()),
        )
    })?;
    Ok(StepKind::Reference {
        op: op.clone(),
        shapes,
    })
}

/// Input `k` of a step: an activation buffer or a constant.
fn input_of<'a>(
    inputs: &[usize],
    consts: &'a [(usize, Vec<f32>)],
    buffers: &'a [Vec<f32>],
    k: usize,
) -> &'a [f32] {
    if inputs[k] == usize::MAX {
        &consts
            .iter()
            .find(|(i, _)| *i == k)
            .expect("constant input recorded")
            .1
    } else {
        &buffers[inputs[k]]
    }
}

/// Runs one step; only data an operator cannot take (an out-of-range index) fails.
pub(super) fn run_step(
    step: &mut Step,
    buffers: &[Vec<f32>],
    out: &mut [f32],
    isa: Isa,
    batch: usize,
) -> std::result::Result<(), String> {
    let Step {
        kind,
        inputs,
        consts,
        ..
    } = step;
    let x = input_of(inputs, consts, buffers, 0);
    let tail = match &*kind {
        StepKind::Conv(c) => Some((c.tail, c.c_out * c.ho * c.wo)),
        StepKind::Depthwise {
            tail,
            c_out,
            ho,
            wo,
            ..
        } => Some((*tail, c_out * ho * wo)),
        StepKind::Linear(l) => Some((l.tail, l.m * l.rows)),
        _ => None,
    };
    match kind {
        StepKind::Conv(c) => {
            let per_in = c.c_in * c.h * c.w;
            let p = c.ho * c.wo;
            let per_out = c.c_out * p;
            let g = c.conv.groups;
            let cg = c.c_in / g;
            let rows_g = c.c_out / g;
            let c = &mut **c;
            let sample = |s: usize, y: &mut [f32], scratch: &mut Vec<f32>| {
                let xs = &x[s * per_in..(s + 1) * per_in];
                if let Some(dc) = &c.direct_conv {
                    let ep = Epilogue {
                        bias: Some(&c.bias),
                        act: c.act,
                    };
                    dc.run(xs, c.h, c.w, c.ho, c.wo, y, &ep, scratch);
                    return;
                }
                if let Some(sc) = &c.sparse_conv {
                    let ep = Epilogue {
                        bias: Some(&c.bias),
                        act: c.act,
                    };
                    sc.run(
                        isa,
                        xs,
                        c.h,
                        c.w,
                        c.ho,
                        c.wo,
                        y,
                        &ep,
                        scratch,
                        c.kernel_threads,
                    );
                    return;
                }
                for gi in 0..g {
                    let xg = &xs[gi * cg * c.h * c.w..(gi + 1) * cg * c.h * c.w];
                    let cols: &[f32] = if c.direct {
                        xg
                    } else {
                        ops::im2col(xg, cg, c.h, c.w, &c.conv, c.ho, c.wo, scratch);
                        scratch
                    };
                    let ep = Epilogue {
                        bias: Some(&c.bias[gi * rows_g..(gi + 1) * rows_g]),
                        act: c.act,
                    };
                    c.kernels[gi].matmul(
                        isa,
                        cols,
                        p,
                        &mut y[gi * rows_g * p..(gi + 1) * rows_g * p],
                        &ep,
                        c.kernel_threads,
                    );
                }
            };
            if c.kernel_threads == 1 && c.scratch.len() > 1 {
                let workers = c.scratch.len();
                let per_worker = batch.div_ceil(workers);
                let ys = &mut out[..batch * per_out];
                let scratch = &mut c.scratch;
                parallel_chunks_with(workers, ys, per_worker * per_out, scratch, |wi, ys, sc| {
                    for (j, y) in ys.chunks_mut(per_out).enumerate() {
                        sample(wi * per_worker + j, y, sc);
                    }
                });
            } else {
                let mut scratch = c.scratch.pop().unwrap_or_default();
                for (s, y) in out[..batch * per_out].chunks_mut(per_out).enumerate() {
                    sample(s, y, &mut scratch);
                }
                c.scratch.push(scratch);
            }
        }
        StepKind::Depthwise {
            conv,
            weights,
            bias,
            act,
            c_in,
            h,
            w,
            c_out,
            ho,
            wo,
            ..
        } => {
            let per_in = *c_in * *h * *w;
            let per_out = *c_out * *ho * *wo;
            parallel_chunks(
                available_threads(),
                &mut out[..batch * per_out],
                per_out,
                |s, y| {
                    ops::depthwise(
                        &x[s * per_in..(s + 1) * per_in],
                        *c_in,
                        *h,
                        *w,
                        conv,
                        weights,
                        bias,
                        *act,
                        *c_out,
                        *ho,
                        *wo,
                        y,
                    );
                },
            );
        }
        StepKind::Linear(l) => {
            let ep = Epilogue {
                bias: Some(&l.bias),
                act: l.act,
            };
            let (k, m, n) = (l.k, l.m, l.rows);
            match &l.kernel {
                WeightKernel::Dense { .. } => {
                    let fc = l
                        .dense
                        .as_ref()
                        .expect("dense weights of a dense linear step");
                    fc.run(&x[..n * k], &mut out[..n * m], n, &ep, l.threads)
                }
                sparse if n == 1 => sparse.matmul(isa, &x[..k], 1, &mut out[..m], &ep, l.threads),
                sparse => {
                    for i in 0..n {
                        for j in 0..k {
                            l.xt[j * n + i] = x[i * k + j];
                        }
                    }
                    sparse.matmul(isa, &l.xt, n, &mut l.yt, &ep, l.threads);
                    for j in 0..m {
                        for i in 0..n {
                            out[i * m + j] = l.yt[j * n + i];
                        }
                    }
                }
            }
        }
        StepKind::Pool {
            geo,
            max,
            include_pad,
            planes,
            h,
            w,
            ho,
            wo,
        } => {
            let (h, w, ho, wo, planes) = (*h, *w, *ho, *wo, *planes);
            let (plane_in, plane_out) = (h * w, ho * wo);
            let out = &mut out[..planes * plane_out];
            for_row_pieces(out, plane_out, |first, ys| {
                let n = ys.len() / plane_out.max(1);
                let xs = &x[first * plane_in..(first + n) * plane_in];
                ops::pool(xs, n, h, w, geo, *max, *include_pad, ho, wo, ys)
            })
        }
        StepKind::Gap { planes, inner } => ops::global_avg_pool(x, *planes, *inner, out),
        StepKind::Binary { f, bc, na, nb } => {
            let b = input_of(inputs, consts, buffers, 1);
            let (a, b) = (&x[..*na], &b[..*nb]);
            for_row_pieces(&mut out[..bc.len()], bc.row(), |first, ys| {
                elementwise::binary_rows(isa, *f, bc, a, b, ys, first)
            });
        }
        StepKind::Expand { bc, n } => {
            let a = &x[..*n];
            for_row_pieces(&mut out[..bc.len()], bc.row(), |first, ys| {
                elementwise::broadcast_rows(bc, a, ys, first)
            });
        }
        StepKind::Reduce {
            kind,
            outer,
            red,
            inner,
        } => {
            let dims = (*outer, *red, *inner);
            crate::kernels::reduce::reduce(*kind, x, dims, &mut out[..*outer * *inner]);
        }
        StepKind::Select { sel, lens } => {
            let [c, a, b] = [0, 1, 2].map(|k| &input_of(inputs, consts, buffers, k)[..lens[k]]);
            for_row_pieces(&mut out[..sel.len()], sel.row(), |first, ys| {
                sel.rows(c, a, b, ys, first)
            });
        }
        StepKind::Concat {
            outer,
            total,
            parts,
        } => {
            let total = *total;
            let srcs: Vec<&[f32]> = (0..parts.len())
                .map(|k| input_of(inputs, consts, buffers, k))
                .collect();
            for_row_pieces(&mut out[..*outer * total], total, |first, ys| {
                for (r, y) in ys.chunks_mut(total).enumerate() {
                    let o = first + r;
                    for (src, &(offset, ch)) in srcs.iter().zip(parts.iter()) {
                        y[offset..offset + ch].copy_from_slice(&src[o * ch..(o + 1) * ch]);
                    }
                }
            });
        }
        StepKind::NhwcConv(c) => {
            let residual = c
                .kernel
                .tail()
                .residual
                .then(|| input_of(inputs, consts, buffers, 1));
            run_nhwc_conv(c, isa, x, residual, out, batch);
        }
        StepKind::NhwcPool {
            geo,
            max,
            include_pad,
            c,
            h,
            w,
            ho,
            wo,
        } => {
            let (per_in, per_out) = (*c * *h * *w, *c * *ho * *wo);
            let threads = available_threads();
            for (s, y) in out[..batch * per_out].chunks_mut(per_out).enumerate() {
                let xs = &x[s * per_in..(s + 1) * per_in];
                let (max, pad) = (*max, *include_pad);
                nhwc_ops::pool(isa, xs, *c, *h, *w, geo, max, pad, *ho, *wo, y, threads);
            }
        }
        StepKind::NhwcGap { c, p } => {
            let (c, p) = (*c, *p);
            let threads = split_threads(c * p);
            for s in 0..batch {
                let xs = &x[s * c * p..(s + 1) * c * p];
                let ys = &mut out[s * c..(s + 1) * c];
                nhwc_ops::global_avg_pool(isa, xs, p, c, ys, threads);
            }
        }
        StepKind::Slice { dims, ranges } => layout::slice(x, dims, ranges, out),
        StepKind::Pad {
            dims,
            before,
            after,
            fill,
        } => layout::pad_constant(x, dims, before, after, *fill, out),
        StepKind::GatherBlocks {
            outer,
            n,
            inner,
            positions,
        } => layout::gather_blocks(x, *outer, *n, *inner, positions, out),
        StepKind::GatherIndexed {
            outer,
            n,
            inner,
            count,
        } => {
            let indices = &input_of(inputs, consts, buffers, 1)[..*count];
            layout::gather_indexed(x, *outer, *n, *inner, indices, out)?;
        }
        StepKind::LayerNorm {
            rows,
            n,
            eps,
            scale,
            bias,
        } => {
            let scale = scale.then(|| input_of(inputs, consts, buffers, 1));
            let b = bias.then(|| input_of(inputs, consts, buffers, 2));
            for_row_pieces(&mut out[..*rows * *n], *n, |first, ys| {
                let xs = &x[first * *n..first * *n + ys.len()];
                let rows = ys.len() / *n;
                crate::kernels::layernorm::layer_norm(xs, rows, *n, *eps, scale, b, ys);
            });
        }
        StepKind::BatchMatMul {
            products: p,
            threads,
        } => {
            let b = input_of(inputs, consts, buffers, 1);
            crate::kernels::dense::batch_matmul(
                x,
                b,
                out,
                (p.m, p.k, p.n),
                &p.a_offsets,
                &p.b_offsets,
                *threads,
            );
        }
        StepKind::Transpose { dims, perm } => layout::transpose(x, dims, perm, out),
        StepKind::Relayout { to_nhwc, c, p } => {
            let n = *c * *p;
            for s in 0..batch {
                let (xs, ys) = (&x[s * n..(s + 1) * n], &mut out[s * n..(s + 1) * n]);
                if *to_nhwc {
                    nhwc_ops::to_nhwc(xs, *c, *p, ys);
                } else {
                    nhwc_ops::to_nchw(xs, *c, *p, ys);
                }
            }
        }
        StepKind::Softmax {
            outer,
            red,
            inner,
            scale,
            mask,
        } => {
            let slice = *red * *inner;
            let mask = mask.as_ref().map(|(rows, values)| match values {
                MaskValues::Input => (input_of(inputs, consts, buffers, 1), rows),
                MaskValues::Constant(v) => (v.as_slice(), rows),
            });
            let plain = *scale == 1.0 && mask.is_none();
            for_row_pieces(&mut out[..*outer * slice], slice, |first, ys| {
                let xs = &x[first * slice..first * slice + ys.len()];
                let (outer, red, inner) = (ys.len() / slice, *red, *inner);
                if plain {
                    crate::kernels::softmax::softmax(isa, xs, outer, red, inner, ys)
                } else {
                    let f = crate::kernels::softmax::scaled_softmax_rows;
                    f(isa, xs, red, *scale, mask, first, ys)
                }
            });
        }
        StepKind::Pointwise(f) => {
            // rows of 16: one vector each
            let n = x.len().min(out.len());
            for_row_pieces(&mut out[..n], 16, |first, ys| {
                elementwise::pointwise(isa, *f, &x[first * 16..], ys)
            });
        }
        StepKind::ChannelAffine {
            scale,
            shift,
            inner,
            post,
            n,
        } => {
            let (scale, shift, inner, post) = (&scale[..], &shift[..], *inner, *post);
            let row = scale.len() * inner;
            for_row_pieces(&mut out[..*n], row, |first, ys| {
                let xs = &x[first * row..first * row + ys.len()];
                match post {
                    Some(Pointwise::Relu) => {
                        elementwise::channel_affine::<true>(isa, scale, shift, inner, xs, ys)
                    }
                    _ => elementwise::channel_affine::<false>(isa, scale, shift, inner, xs, ys),
                }
                if let Some(f) = post.filter(|f| *f != Pointwise::Relu) {
                    elementwise::pointwise_in_place(isa, f, ys);
                }
            });
        }
        StepKind::Reference { op, shapes } => {
            let tensors: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let n = s.iter().product::<usize>();
                    let data = input_of(inputs, consts, buffers, k)[..n].to_vec();
                    Tensor::new(s.clone(), data).map_err(|e| e.to_string())
                })
                .collect::<std::result::Result<_, _>>()?;
            let refs: Vec<&Tensor> = tensors.iter().collect();
            let y = op.sem().eval(&refs).map_err(|e| e.to_string())?;
            out[..y[0].len()].copy_from_slice(y[0].data());
        }
        StepKind::Quant { q, n } => {
            crate::kernels::quantize::fake_quantize(
                isa,
                &x[..*n],
                q.scale,
                q.zero_point,
                &mut out[..*n],
            );
        }
    }
    if let Some((tail, per_sample)) = tail.filter(|t| t.0.has_rest()) {
        // a Linear's rows already span the batch
        let n = if matches!(kind, StepKind::Linear(_)) {
            per_sample
        } else {
            per_sample * batch
        };
        let residual = tail
            .residual
            .then(|| &input_of(inputs, consts, buffers, 1)[..n]);
        tail.apply_rest(isa, &mut out[..n], residual);
    }
    Ok(())
}

impl StepKind {
    /// Output values per image of the steps that loop over the images of the batch
    /// (convolutions, pools, layout conversions); `None` for steps that take the whole batch.
    pub(super) fn per_image_output(&self) -> Option<usize> {
        Some(match self {
            StepKind::Conv(c) => c.c_out * c.ho * c.wo,
            StepKind::Depthwise { c_out, ho, wo, .. } => c_out * ho * wo,
            StepKind::NhwcConv(c) => c.c_out * c.ho * c.wo,
            StepKind::NhwcPool { c, ho, wo, .. } => c * ho * wo,
            StepKind::NhwcGap { c, .. } => *c,
            StepKind::Relayout { c, p, .. } => c * p,
            _ => return None,
        })
    }

    /// Whether the step quantizes its data input itself (an int8 kernel).
    pub(super) fn quantizes_input(&self) -> bool {
        matches!(self, StepKind::NhwcConv(s) if matches!(s.kernel, NhwcKernel::Int8(_)))
    }

    /// Whether the step reads its data input channels-first (a stem convolution on NCHW).
    pub(super) fn reads_nchw(&self) -> bool {
        matches!(self, StepKind::NhwcConv(s)
            if matches!(&s.kernel, NhwcKernel::Stem(k) if k.input == StemInput::Nchw))
    }
}

impl NhwcKernel {
    pub(super) fn tail(&self) -> &Tail {
        match self {
            NhwcKernel::Gemm(k) => &k.tail,
            NhwcKernel::Winograd(k) => &k.tail,
            NhwcKernel::Depthwise(k) => &k.tail,
            NhwcKernel::Int8(k) => &k.tail,
            NhwcKernel::Bf16(k) => &k.tail,
            NhwcKernel::Stem(k) => &k.tail,
        }
    }
}

/// Values below which a data-movement or element-wise step stays on one thread: waking the
/// team's helpers costs more than copying them.
const SPLIT_MIN_VALUES: usize = 32 * 1024;

/// Threads to split a step over `values` outputs on: the running team's, unless too few.
fn split_threads(values: usize) -> usize {
    if values < SPLIT_MIN_VALUES {
        1
    } else {
        available_threads()
    }
}

/// Calls `work(first_row, piece)` over pieces of whole `row`-long rows of `out` (the last row
/// may be shorter), a few pieces per thread of the running team when `out` is large enough.
fn for_row_pieces(out: &mut [f32], row: usize, work: impl Fn(usize, &mut [f32]) + Sync) {
    let row = row.max(1);
    let threads = split_threads(out.len());
    let rows = out.len().div_ceil(row).div_ceil(threads * 4).max(1);
    parallel_chunks(threads, out, rows * row, |i, ys| work(i * rows, ys));
}

/// A channels-last convolution over the batch: samples in parallel on the plan's workers, or
/// one sample at a time split over `threads`.
fn run_nhwc_conv(
    c: &mut NhwcConvStep,
    isa: Isa,
    x: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    batch: usize,
) {
    let place = c.placement.unwrap_or(Placement {
        offset: 0,
        pixel: c.c_out,
    });
    let (per_in, per_out) = (c.c_in * c.h * c.w, place.pixel * c.ho * c.wo);
    let (kernel, h, w, ho, wo, threads) = (&c.kernel, c.h, c.w, c.ho, c.wo, c.threads);
    let sample = |s: usize, y: &mut [f32], scratch: &mut Vec<f32>, threads: usize| {
        let xs = &x[s * per_in..(s + 1) * per_in];
        let rs = residual.map(|r| &r[s * per_out..(s + 1) * per_out]);
        let dims = [h, w, ho, wo];
        // only the GEMM and Winograd kernels are given a placement (`can_be_placed`)
        let (offset, pixel) = (place.offset, place.pixel);
        match kernel {
            NhwcKernel::Gemm(k) => {
                k.run_strided(xs, dims, &mut y[offset..], pixel, rs, scratch, threads)
            }
            NhwcKernel::Winograd(k) => {
                k.run_strided(xs, dims, &mut y[offset..], pixel, rs, scratch, threads)
            }
            NhwcKernel::Depthwise(k) => k.run(isa, xs, h, w, ho, wo, y, rs, threads),
            NhwcKernel::Stem(k) => k.run(xs, h, w, ho, wo, y, rs, scratch, threads),
            NhwcKernel::Int8(k) => {
                // SAFETY: any bytes are valid `u8`s, and the view covers the floats' memory.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast(), scratch.len() * 4)
                };
                k.run(xs, h, w, ho, wo, y, rs, bytes, threads)
            }
            NhwcKernel::Bf16(k) => {
                // SAFETY: any bits are valid `u16`s, and the view covers the floats' memory.
                let halves = unsafe {
                    std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast(), scratch.len() * 2)
                };
                k.run(xs, h, w, ho, wo, y, rs, halves, threads)
            }
        }
    };
    if threads == 1 && c.scratch.len() > 1 {
        let workers = c.scratch.len();
        let per_worker = batch.div_ceil(workers);
        let ys = &mut out[..batch * per_out];
        parallel_chunks_with(
            workers,
            ys,
            per_worker * per_out,
            &mut c.scratch,
            |wi, ys, sc| {
                for (j, y) in ys.chunks_mut(per_out).enumerate() {
                    sample(wi * per_worker + j, y, sc, 1);
                }
            },
        );
    } else {
        let mut scratch = c.scratch.pop().unwrap_or_default();
        for (s, y) in out[..batch * per_out].chunks_mut(per_out).enumerate() {
            sample(s, y, &mut scratch, threads);
        }
        c.scratch.push(scratch);
    }
}
