//! Lowering of convolutions, with the batch norm and clamp activation the fusion rule absorbs
//! folded in: depthwise convolutions to their direct kernel; others to the fastest of im2col
//! with a dense / CSR / block / N:M weight kernel (per group), direct over channels or pixels,
//! and sparse direct, each timed on one sample at the plan's batch size.

use super::weights::{Choice, Prepared, candidates, choose, prepare};
use super::{ChannelsLast, LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::harness::{Budget, measure_interleaved, probe};
use crate::kernels::direct_conv::DirectConv;
use crate::kernels::sparse_conv::SparseConv;
use crate::kernels::{Epilogue, Format, Isa, WeightKernel};
use crate::ops;
use crate::plan::step::{ConvStep, StepKind};
use crate::plan::{FormatPolicy, LayerChoice, LayoutPolicy, err};
use secateur_graph::{Conv, Tensor};

impl RuntimeOp for Conv {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        if cx.in_shape(0).len() != 4 || runs_faster_sparse(self, cx) {
            ChannelsLast::No
        } else {
            ChannelsLast::Prefer
        }
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let prep = prepare(cx)?;
        let depthwise = self.is_depthwise(prep.xs[1]);
        let shell = Lowered::layer_shell(&prep);
        let (kind, choice) = if cx.nhwc {
            super::conv_nhwc::lower(self, prep, cx.data_nchw)
        } else if depthwise {
            lower_depthwise(self, prep)
        } else {
            lower_conv(self, prep)?
        };
        Ok(shell.with(kind, choice))
    }
}

/// Weight sparsity from which an ungrouped convolution stays on the NCHW sparse kernels inside
/// a mixed-layout plan (the sparse direct convolution runs at about 40 % of the dense NHWC
/// kernel's rate per multiply-accumulate on AVX2; the margin pays the layout conversions).
const SPARSE_IN_NHWC_PLAN: f64 = 0.7;

/// Whether convolution `c`'s NCHW sparse kernels beat the dense channels-last one.
fn runs_faster_sparse(c: &Conv, cx: &LowerCx) -> bool {
    let node = cx.node();
    let weight = node
        .inputs
        .get(1)
        .and_then(|w| cx.graph.initializers.get(w));
    cx.config.layout == LayoutPolicy::Mixed
        && cx.config.policy == FormatPolicy::Measure
        && c.groups == 1
        && weight
            .is_some_and(|w| w.count_zeros() as f64 >= SPARSE_IN_NHWC_PLAN * w.len().max(1) as f64)
}

/// A depthwise convolution on its direct kernel.
fn lower_depthwise(c: &Conv, prep: Prepared) -> (StepKind, LayerChoice) {
    let Prepared {
        name,
        config,
        xs,
        out_shape,
        fused,
        fused_names,
        sparsity,
        cols,
        ..
    } = prep;
    let b = config.batch;
    let (c_out, ho, wo) = (out_shape[1], out_shape[2], out_shape[3]);
    let macs = (b * c_out * ho * wo * cols) as u64;
    let choice = LayerChoice::unmeasured(
        name.clone(),
        "Conv (depthwise)",
        fused_names,
        "direct",
        config.threads,
        sparsity,
        macs,
        fused.weight.len() * 4,
    );
    let kind = StepKind::Depthwise {
        conv: c.clone(),
        weights: fused.weight.into_data(),
        bias: fused.bias,
        act: fused.act,
        tail: fused.tail,
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out,
        ho,
        wo,
    };
    (kind, choice)
}

/// Any other convolution: the measured fastest algorithm and weight format.
fn lower_conv(c: &Conv, prep: Prepared) -> Result<(StepKind, LayerChoice)> {
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
        pattern,
        ..
    } = prep;
    let b = config.batch;
    let measure = config.policy == FormatPolicy::Measure;
    let (c_out, ho, wo) = (out_shape[1], out_shape[2], out_shape[3]);
    let p = ho * wo;
    let direct = c.kernel == [1, 1] && c.strides == [1, 1] && c.pads == [0; 4] && c.groups == 1;
    // the batch runs in parallel over samples when it can fill the threads
    let kernel_threads = if b >= config.threads {
        1
    } else {
        config.threads
    };
    let g = c.groups;
    let mut kernels = Vec::with_capacity(g);
    let mut cands = Vec::new();
    let (mut dense_ms, mut chosen_ms, mut kt) = (0.0, 0.0, kernel_threads);
    for gi in 0..g {
        let rows_g = rows / g;
        let wg = Tensor::new(
            vec![rows_g, cols],
            fused.weight.data()[gi * rows_g * cols..(gi + 1) * rows_g * cols].to_vec(),
        )
        .map_err(|e| err(&name, e.to_string()))?;
        let Choice {
            kernel: k,
            threads: t,
            candidates: c_res,
            dense_ms: d,
            chosen_ms: ch,
        } = choose(
            config.isa,
            &wg,
            p,
            kernel_threads,
            &candidates(sparsity, cols, pattern, config.policy),
            measure && gi == 0,
        );
        if gi == 0 {
            cands = c_res;
            dense_ms = d;
            chosen_ms = ch;
            kt = t;
        }
        // later groups use the first group's format
        let k = if gi == 0 {
            k
        } else {
            WeightKernel::build_for(
                kernels
                    .first()
                    .map_or(Format::Dense, |k0: &WeightKernel| k0.format()),
                rows_g,
                cols,
                wg.data(),
                p,
            )
            .unwrap_or(k)
        };
        kernels.push(k);
    }
    let executed: usize = kernels.iter().map(|k| k.macs_per_column()).sum::<usize>() * p * b;
    // a dense convolution may run faster without im2col: time both on one
    // sample, im2col included
    let mut direct_conv = None;
    let mut sparse_conv = None;
    let may_choose = matches!(config.policy, FormatPolicy::Measure | FormatPolicy::Dense);
    if g == 1 && may_choose {
        // whole-sample timings (im2col included) of every way to run this layer
        let dc = DirectConv::new(c, xs[1], c_out, fused.weight.data());
        let dcp = DirectConv::pixels(c, xs[1], c_out, fused.weight.data());
        let sc = if config.policy == FormatPolicy::Measure {
            SparseConv::new(c, xs[1], c_out, xs[2], xs[3], fused.weight.data())
        } else {
            None
        };
        let dense_kernel = if kernels[0].format() == Format::Dense {
            None
        } else {
            WeightKernel::build_for(Format::Dense, rows, cols, fused.weight.data(), p)
        };
        let mut variants = vec![ConvVariant::Im2col(&kernels[0])];
        let mut names = vec![format!("im2col+{}", kernels[0].format())];
        if let Some(dk) = &dense_kernel {
            variants.push(ConvVariant::Im2col(dk));
            names.push("im2col+dense".into());
        }
        if config.isa == Isa::Avx512 {
            variants.push(ConvVariant::Direct(&dc));
            names.push("direct".into());
            if let Some(d) = &dcp {
                variants.push(ConvVariant::Direct(d));
                names.push("direct-pixels".into());
            }
        }
        if let Some(s) = &sc {
            variants.push(ConvVariant::Sparse(s));
            names.push("sparse-direct".into());
        }
        let times = time_conv_variants(
            config.isa, c, &variants, xs[1], xs[2], xs[3], ho, wo, direct,
        );
        let per = |ms: f64| ms * b as f64 / config.threads.min(b).max(1) as f64;
        cands = names
            .iter()
            .zip(&times)
            .map(|(n, t)| (n.clone(), 1, per(*t)))
            .collect();
        dense_ms = names
            .iter()
            .zip(&times)
            .filter(|(n, _)| *n == "im2col+dense" || n.starts_with("direct"))
            .map(|(_, t)| per(*t))
            .fold(f64::INFINITY, f64::min);
        let best = (0..times.len())
            .min_by(|&a, &b| times[a].total_cmp(&times[b]))
            .unwrap_or(0);
        chosen_ms = per(times[best]);
        match names[best].as_str() {
            "direct" => direct_conv = Some(dc),
            "direct-pixels" => direct_conv = dcp,
            "sparse-direct" => sparse_conv = sc,
            "im2col+dense" => {
                if let Some(dk) = dense_kernel {
                    kernels[0] = dk;
                }
            }
            _ => {}
        }
    }
    let choice = LayerChoice {
        node: name.clone(),
        op: "Conv".into(),
        fused: fused_names,
        format: if let Some(d) = &direct_conv {
            d.label().to_string()
        } else if sparse_conv.is_some() {
            "sparse-direct".to_string()
        } else {
            kernels[0].format().to_string()
        },
        threads: if kernel_threads == 1 {
            config.threads
        } else {
            kt
        },
        sparsity,
        candidates: cands,
        dense_ms,
        chosen_ms,
        dense_macs: (rows * cols * p * b) as u64,
        executed_macs: executed as u64,
        weight_bytes: kernels.iter().map(|k| k.bytes()).sum(),
    };
    let workers = if kernel_threads == 1 {
        config.threads.min(b)
    } else {
        1
    };
    let scratch_len = match (&direct_conv, &sparse_conv) {
        (Some(dc), _) => dc.scratch_len(xs[2], xs[3]),
        (_, Some(sc)) => sc.scratch_len(ho, wo),
        _ if direct => 0,
        _ => cols * p,
    };
    let scratch = vec![vec![0.0f32; scratch_len]; workers];
    // the sparse kernel splits one sample's channels itself; weight kernels may decline threads
    let step_threads = if kernel_threads == 1 || sparse_conv.is_some() {
        kernel_threads
    } else {
        kt
    };
    let kind = StepKind::Conv(Box::new(ConvStep {
        conv: c.clone(),
        kernels,
        bias: fused.bias,
        act: fused.act,
        tail: fused.tail,
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out,
        ho,
        wo,
        direct,
        direct_conv,
        sparse_conv,
        kernel_threads: step_threads,
        scratch,
    }));
    Ok((kind, choice))
}

/// A way to run one sample of a convolution.
enum ConvVariant<'a> {
    Im2col(&'a WeightKernel),
    Direct(&'a DirectConv),
    Sparse(&'a SparseConv),
}

/// Milliseconds per sample of each variant (im2col included where it is used), interleaved.
#[allow(clippy::too_many_arguments)]
fn time_conv_variants(
    isa: Isa,
    conv: &Conv,
    variants: &[ConvVariant],
    c_in: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    unit_1x1: bool,
) -> Vec<f64> {
    let x: Vec<f32> = (0..c_in * h * w)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let p = ho * wo;
    let ep = Epilogue::NONE;
    let mut runners: Vec<Box<dyn FnMut() + '_>> = Vec::new();
    for v in variants {
        let x = &x;
        match v {
            ConvVariant::Im2col(k) => {
                let mut cols = vec![0.0f32; k.cols() * p];
                let mut y = vec![0.0f32; k.rows() * p];
                runners.push(Box::new(move || {
                    if unit_1x1 {
                        k.matmul(isa, x, p, &mut y, &ep, 1);
                    } else {
                        ops::im2col(x, c_in, h, w, conv, ho, wo, &mut cols);
                        k.matmul(isa, &cols, p, &mut y, &ep, 1);
                    }
                }));
            }
            ConvVariant::Direct(d) => {
                let mut y = vec![0.0f32; d.c_out * p];
                let mut scratch = vec![0.0f32; d.scratch_len(h, w)];
                runners.push(Box::new(move || {
                    d.run(x, h, w, ho, wo, &mut y, &ep, &mut scratch)
                }));
            }
            ConvVariant::Sparse(sc) => {
                let mut y = vec![0.0f32; sc.c_out * p];
                let mut scratch = vec![0.0f32; sc.scratch_len(ho, wo)];
                runners.push(Box::new(move || {
                    sc.run(isa, x, h, w, ho, wo, &mut y, &ep, &mut scratch, 1)
                }));
            }
        }
    }
    let one = probe(&mut *runners[0]);
    let mut refs: Vec<&mut dyn FnMut()> = runners
        .iter_mut()
        .map(|r| &mut **r as &mut dyn FnMut())
        .collect();
    measure_interleaved(&mut refs, Budget::for_duration(one, 40.0))
        .into_iter()
        .map(|s| s.median_ms)
        .collect()
}
