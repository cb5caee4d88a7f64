//! Lowering of convolutions on channels-last activations: depthwise convolutions to the NHWC
//! depthwise kernel, 3×3 stride-1 convolutions with enough channels and pixels to the Winograd
//! kernel, a quantized ungrouped convolution to the int8 kernel where the CPU has VNNI and
//! (in measured plans) it times faster than the f32 kernel (it then quantizes its own input), every other convolution (grouped ones included) to the
//! implicit-GEMM kernel, each with the whole fused tail (element-wise function, residual
//! addition, function after it) in its epilogue. In a bf16 plan an ungrouped convolution runs
//! on the bf16 kernel, unless a measured plan times an f32 kernel faster, or, without AVX-512
//! BF16, on the f32 kernel with bf16-rounded operands (the same values). Weights run dense here: a convolution pruned far enough to gain
//! from sparse kernels is lowered on NCHW instead (`conv.rs`) in a mixed-layout plan.

use super::weights::Prepared;
use crate::harness::{Budget, measure_interleaved, probe};
use crate::kernels::bf16::bf16_runs_fast;
use crate::kernels::epilogue::Tail;
use crate::kernels::nhwc_bf16::NhwcBf16Conv;
use crate::kernels::nhwc_conv::NhwcConv;
use crate::kernels::nhwc_int8::{NhwcInt8Conv, int8_runs_fast};
use crate::kernels::nhwc_ops::NhwcDepthwise;
use crate::kernels::nhwc_stem::{NhwcStemConv, StemInput};
use crate::kernels::winograd::NhwcWinograd;
use crate::plan::step::{NhwcConvStep, NhwcKernel, StepKind};
use crate::plan::{FormatPolicy, LayerChoice, PlanConfig, Precision};
use secateur_graph::Conv;

/// Multiply-adds per sample below which one sample's layer runs on one thread: splitting it
/// costs more in waking and joining threads (several microseconds) than it saves.
const SPLIT_MIN_MACS: usize = 400_000;

/// Whether `a` runs faster than `b` (interleaved, a budget of ten runs of `b`).
fn faster(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> bool {
    let (ta, tb) = median_times(a, b);
    ta < tb
}

/// The median times in ms of `a` and `b` (interleaved, a budget of ten runs of `b`).
fn median_times(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    let one = probe(&mut *b);
    let t = measure_interleaved(&mut [a, b], Budget::for_duration(one, 10.0));
    (t[0].median_ms, t[1].median_ms)
}

/// Bytes per millisecond at which a layer's weights come from memory inside a model (16 GB/s,
/// what one core of the machines in BENCHMARKS.md streams from DRAM). Timed alone, a kernel
/// runs with its weights in the caches; inside a model whose weights exceed them it reads
/// them from memory on every inference, so a kernel with larger weights is charged the
/// difference. Winograd's transformed weights are 4× the GEMM's: resnet18's 14 × 14 layers
/// (9.4 MB against 2.4 MB) ran 0.76 ms on Winograd and 0.95 ms on the GEMM alone on two
/// threads, but 1.25 and 0.89 ms inside the model.
const WEIGHT_BYTES_PER_MS: f64 = 16e6;

/// Whether the int8 kernel runs layer `k8` faster than the f32 kernel runs it (one sample of
/// zeros; the f32 simulation also quantizes its input, left out in its favour): a first
/// layer of one or three channels, padded to four, and few output channels can lose.
fn int8_pays(k8: &NhwcInt8Conv, f32k: &NhwcConv, [h, w, ho, wo]: [usize; 4]) -> bool {
    let x = vec![0.0f32; h * w * k8.c_in];
    let out_len = ho * wo * k8.c_out;
    let (mut y8, mut y32) = (vec![0.0f32; out_len], vec![0.0f32; out_len]);
    let mut s8 = vec![0u8; k8.scratch_bytes(h, w)];
    let mut s32 = vec![0.0f32; f32k.scratch_len(h, w)];
    let residual = k8.tail.residual.then(|| vec![0.0f32; out_len]);
    let r = residual.as_deref();
    faster(
        &mut || k8.run(&x, h, w, ho, wo, &mut y8, r, &mut s8, 1),
        &mut || f32k.run(&x, h, w, ho, wo, &mut y32, r, &mut s32, 1),
    )
}

/// Whether the f32 kernel `f32k` (implicit GEMM or Winograd, with `scratch` floats) runs a
/// layer faster than the bf16 kernel (as above).
fn f32_beats_bf16(
    f32k: &NhwcKernel,
    scratch: usize,
    kb: &NhwcBf16Conv,
    [h, w, ho, wo]: [usize; 4],
) -> bool {
    let x = vec![0.0f32; h * w * kb.c_in];
    let out_len = ho * wo * kb.c_out;
    let (mut yf, mut yb) = (vec![0.0f32; out_len], vec![0.0f32; out_len]);
    let mut sf = vec![0.0f32; scratch];
    let mut sb = vec![0u16; kb.scratch_len(h, w)];
    let residual = kb.tail.residual.then(|| vec![0.0f32; out_len]);
    let r = residual.as_deref();
    faster(
        &mut || match f32k {
            NhwcKernel::Winograd(k) => k.run(&x, h, w, ho, wo, &mut yf, r, &mut sf, 1),
            NhwcKernel::Gemm(k) => k.run(&x, h, w, ho, wo, &mut yf, r, &mut sf, 1),
            NhwcKernel::Stem(k) => k.run(&x, h, w, ho, wo, &mut yf, r, &mut sf, 1),
            NhwcKernel::Depthwise(_) | NhwcKernel::Int8(_) | NhwcKernel::Bf16(_) => {
                unreachable!("f32_kernel returns Winograd, stem or implicit-GEMM kernels")
            }
        },
        &mut || kb.run(&x, h, w, ho, wo, &mut yb, r, &mut sb, 1),
    )
}

/// Whether the Winograd kernel runs a layer faster than the implicit GEMM (as [`faster`]) on
/// the `threads` the layer will run on (inside the plan's team), its larger weights charged at
/// [`WEIGHT_BYTES_PER_MS`]. Its rule ([`NhwcWinograd::pays`]) was fitted on one Zen 4 core; on
/// a core with two 512-bit FMA units, and on two threads (the GEMM splits more evenly), the
/// GEMM gains on the transforms, so a measured plan times both.
fn winograd_pays(
    wk: &NhwcWinograd,
    gemm: &NhwcConv,
    [h, w, ho, wo]: [usize; 4],
    threads: usize,
) -> bool {
    let x = vec![0.0f32; h * w * gemm.c_in];
    let out_len = ho * wo * gemm.c_out;
    let (mut yw, mut yg) = (vec![0.0f32; out_len], vec![0.0f32; out_len]);
    let mut sw = vec![0.0f32; wk.scratch_len(h, w)];
    let mut sg = vec![0.0f32; gemm.scratch_len(h, w)];
    let residual = gemm.tail.residual.then(|| vec![0.0f32; out_len]);
    let r = residual.as_deref();
    let (tw, tg) = median_times(
        &mut || wk.run(&x, h, w, ho, wo, &mut yw, r, &mut sw, threads),
        &mut || gemm.run(&x, h, w, ho, wo, &mut yg, r, &mut sg, threads),
    );
    let extra = wk.bytes().saturating_sub(gemm.bytes()) as f64 / WEIGHT_BYTES_PER_MS;
    tw + extra < tg
}

/// Output channels up to which an unmeasured plan runs a convolution the stem kernel takes
/// on it. On 3×3 stride-2 first layers at 224 × 224 (`nhwc_speed`, one thread) the stem kernel
/// ran 8, 12 and 24 channels 1.41×, 1.28× and 1.14× faster than the implicit GEMM, whose
/// 16-channel panels they leave part empty, and 16 and 32 channels level (0.99×, 0.95×);
/// reading the input channels-first also saves the layout conversion before the layer (14 µs
/// alone, 1–3 % of a MobileNet inside a plan), so then it runs up to 32 channels.
const STEM_CHANNELS: [usize; 2] = [24, 32];

/// Whether an unmeasured plan runs the layer on the stem kernel.
fn stem_by_rule(stem: &NhwcStemConv) -> bool {
    match stem.input {
        StemInput::Nchw => stem.c_out <= STEM_CHANNELS[1],
        StemInput::Nhwc => stem.c_out <= STEM_CHANNELS[0] && !stem.c_out.is_multiple_of(16),
    }
}

/// Whether the stem kernel runs a layer faster than the implicit GEMM (as [`faster`]),
/// counting the layout conversion the GEMM needs when the stem reads channels-first input.
fn stem_pays(stem: &NhwcStemConv, gemm: &NhwcConv, [h, w, ho, wo]: [usize; 4]) -> bool {
    let x = vec![0.0f32; h * w * stem.c_in];
    let mut xt = x.clone();
    let out_len = ho * wo * stem.c_out;
    let (mut ys, mut yg) = (vec![0.0f32; out_len], vec![0.0f32; out_len]);
    let mut ss = vec![0.0f32; stem.scratch_len(h, w)];
    let mut sg = vec![0.0f32; gemm.scratch_len(h, w)];
    let residual = stem.tail.residual.then(|| vec![0.0f32; out_len]);
    let r = residual.as_deref();
    faster(
        &mut || stem.run(&x, h, w, ho, wo, &mut ys, r, &mut ss, 1),
        &mut || {
            if stem.input == StemInput::Nchw {
                crate::kernels::nhwc_ops::to_nhwc(&x, stem.c_in, h * w, &mut xt);
            }
            gemm.run(&xt, h, w, ho, wo, &mut yg, r, &mut sg, 1)
        },
    )
}

/// The f32 kernel of an ungrouped convolution: Winograd where it pays, the stem kernel for
/// few input channels (reading the input channels-first when it is so in memory) where it
/// pays, else the implicit GEMM; with its format name and scratch (in floats). One sample runs
/// on `threads`.
fn f32_kernel(
    config: &PlanConfig,
    c: &Conv,
    [c_in, c_out]: [usize; 2],
    (weight, bias, tail): (&[f32], &[f32], Tail),
    (dims @ [h, w, ho, wo], threads): ([usize; 4], usize),
    input: StemInput,
) -> (NhwcKernel, &'static str, usize) {
    let isa = config.isa;
    let k = NhwcConv::new(isa, c, c_in, c_out, weight, bias, tail);
    if let Some(wk) = NhwcWinograd::pays(isa, c, c_in, c_out, ho, wo)
        .then(|| NhwcWinograd::new(isa, c, c_in, c_out, weight, bias, tail))
        .flatten()
        .filter(|wk| config.policy != FormatPolicy::Measure || winograd_pays(wk, &k, dims, threads))
    {
        let scratch = wk.scratch_len(h, w);
        return (NhwcKernel::Winograd(wk), "nhwc-winograd", scratch);
    }
    if let Some(stem) = NhwcStemConv::new(isa, c, c_in, c_out, weight, bias, tail, input)
        && if config.policy == FormatPolicy::Measure {
            stem_pays(&stem, &k, dims)
        } else {
            stem_by_rule(&stem)
        }
    {
        let scratch = stem.scratch_len(h, w);
        return (NhwcKernel::Stem(stem), "nhwc-stem", scratch);
    }
    let scratch = k.scratch_len(h, w);
    (NhwcKernel::Gemm(k), "nhwc-gemm", scratch)
}

/// The kernel of an ungrouped convolution in a bf16 plan, its format name and scratch (in
/// floats): the AVX-512 BF16 kernel, or the f32 kernel where a measured plan times it faster
/// (Winograd, or a first layer of three channels); without AVX-512 BF16 the f32 implicit GEMM
/// on bf16-rounded operands, which computes the bf16 kernel's values (slower than f32: it
/// exists to give bf16's results, e.g. its accuracy, on any CPU).
fn bf16_kernel(
    config: &PlanConfig,
    c: &Conv,
    channels @ [c_in, c_out]: [usize; 2],
    params @ (weight, bias, tail): (&[f32], &[f32], Tail),
    (dims @ [h, w, _, _], threads): ([usize; 4], usize),
    input: StemInput,
) -> Option<(NhwcKernel, &'static str, usize)> {
    if config.precision != Precision::Bf16 || c.groups > 1 {
        return None;
    }
    let isa = config.isa;
    if !bf16_runs_fast(isa) {
        let k = NhwcConv::rounded_to_bf16(isa, c, c_in, c_out, weight, bias, tail);
        let scratch = k.scratch_len(h, w);
        return Some((NhwcKernel::Gemm(k), "nhwc-bf16-in-f32", scratch));
    }
    let kb = NhwcBf16Conv::new(isa, c, c_in, c_out, weight, bias, tail)?;
    if config.policy == FormatPolicy::Measure {
        let alt = f32_kernel(config, c, channels, params, (dims, threads), input);
        if f32_beats_bf16(&alt.0, alt.2, &kb, dims) {
            return Some(alt);
        }
    }
    let scratch = kb.scratch_len(h, w).div_ceil(2);
    Some((NhwcKernel::Bf16(kb), "nhwc-bf16", scratch))
}

/// The channels-last step of convolution `c` and its reported choice; `data_nchw` says
/// whether its input is channels-first in memory (a stem kernel may then read it as it is).
pub(super) fn lower(c: &Conv, prep: Prepared, data_nchw: bool) -> (StepKind, LayerChoice) {
    let Prepared {
        name,
        config,
        xs,
        out_shape,
        fused,
        fused_names,
        sparsity,
        rows,
        cols,
        int8,
        ..
    } = prep;
    let b = config.batch;
    let (c_in, h, w) = (xs[1], xs[2], xs[3]);
    let (c_out, ho, wo) = (out_shape[1], out_shape[2], out_shape[3]);
    let depthwise = c.is_depthwise(c_in) && c_out == c_in;
    let input = if data_nchw {
        StemInput::Nchw
    } else {
        StemInput::Nhwc
    };
    // samples run in parallel when the batch fills the threads; else one sample is split,
    // unless the layer is too small to pay for waking the other threads
    let per_sample = rows * cols * ho * wo;
    let (workers, threads) = if b >= config.threads {
        (config.threads, 1)
    } else if per_sample < SPLIT_MIN_MACS {
        (1, 1)
    } else {
        (1, config.threads)
    };
    let int8 = int8
        .filter(|_| int8_runs_fast(config.isa) && !depthwise)
        .and_then(|f| {
            let (bias, tail) = (&fused.bias, fused.tail);
            NhwcInt8Conv::new(
                config.isa, c, c_in, c_out, &f.q, &f.scales, bias, f.quant, tail,
            )
        })
        .filter(|k| {
            config.policy != FormatPolicy::Measure || {
                let (wt, b) = (fused.weight.data(), &fused.bias);
                let f32_kernel = NhwcConv::new(config.isa, c, c_in, c_out, wt, b, fused.tail);
                int8_pays(k, &f32_kernel, [h, w, ho, wo])
            }
        });
    let (kernel, format, scratch_len) = if let Some(k) = int8 {
        // the byte copy of the input in a scratch of floats
        let scratch = k.scratch_bytes(h, w).div_ceil(4);
        (NhwcKernel::Int8(k), "nhwc-int8", scratch)
    } else if depthwise {
        let k = NhwcDepthwise::new(c, c_in, fused.weight.data(), &fused.bias, fused.tail);
        (NhwcKernel::Depthwise(k), "nhwc-depthwise", 0)
    } else if let Some(chosen) = bf16_kernel(
        &config,
        c,
        [c_in, c_out],
        (fused.weight.data(), &fused.bias, fused.tail),
        ([h, w, ho, wo], threads),
        input,
    ) {
        chosen
    } else {
        f32_kernel(
            &config,
            c,
            [c_in, c_out],
            (fused.weight.data(), &fused.bias, fused.tail),
            ([h, w, ho, wo], threads),
            input,
        )
    };
    let weight_bytes = match &kernel {
        NhwcKernel::Gemm(k) => k.bytes(),
        NhwcKernel::Winograd(k) => k.bytes(),
        NhwcKernel::Depthwise(k) => k.bytes(),
        NhwcKernel::Int8(k) => k.bytes(),
        NhwcKernel::Bf16(k) => k.bytes(),
        NhwcKernel::Stem(k) => k.bytes(),
    };
    let macs = (per_sample * b) as u64;
    let op = if depthwise {
        "Conv (depthwise)"
    } else {
        "Conv"
    };
    let choice = LayerChoice::unmeasured(
        name,
        op,
        fused_names,
        format,
        config.threads,
        sparsity,
        macs,
        weight_bytes,
    );
    let kind = StepKind::NhwcConv(Box::new(NhwcConvStep {
        kernel,
        c_in,
        c_out,
        h,
        w,
        ho,
        wo,
        threads,
        scratch: vec![vec![0.0; scratch_len]; workers],
        placement: None,
    }));
    (kind, choice)
}
