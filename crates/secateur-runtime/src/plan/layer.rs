//! Lowering of weighted layers (Conv, Gemm, MatMul with a constant weight) to steps: the weight
//! as a row-major matrix (fake-quantized when the graph quantizes it) with the batch norm and
//! clamp activation the fusion rule absorbs folded in, then the fastest way to run it on this
//! machine: for convolutions depthwise, im2col with a dense / CSR / block / N:M kernel, direct
//! over channels or pixels, or sparse direct; for linear layers a kernel format and a thread
//! count. Every candidate is timed at the plan's batch size and recorded in a [`LayerChoice`].

use super::step::{ConvStep, Linear, StepKind};
use super::{FormatPolicy, LayerChoice, PlanConfig, err};
use crate::error::Result;
use crate::fold::{FusedLayer, fuse_layer};
use crate::harness::{Budget, measure_interleaved, probe};
use crate::kernels::direct_conv::DirectConv;
use crate::kernels::sparse_conv::SparseConv;
use crate::kernels::{Epilogue, Format, Isa, WeightKernel};
use crate::ops;
use secateur_graph::{Conv, Graph, MaskPattern, Op, Shape, Tensor, fake_quant_weight};
use std::collections::HashMap;

/// The weight of a Conv/Gemm/MatMul as a row-major `[out × in]` matrix (fake-quantized when the
/// graph quantizes it), its bias, and the layer's mask pattern.
fn weight_matrix(graph: &Graph, ni: usize) -> Result<(Tensor, Vec<f32>, Option<MaskPattern>)> {
    let node = &graph.nodes[ni];
    let wname = &node.inputs[1];
    let w0 = graph
        .initializers
        .get(wname)
        .ok_or_else(|| err(&node.name, format!("weight '{wname}' is not a constant")))?;
    let w = match graph
        .quantization
        .as_ref()
        .and_then(|q| q.weights.get(wname))
    {
        Some(axis) => fake_quant_weight(w0, *axis),
        None => w0.clone(),
    };
    let pattern = graph.masks.get(wname).map(|m| m.pattern);
    let (mat, rows) = match &node.op {
        Op::Conv(_) => {
            let rows = w.shape()[0];
            (
                w.reshape(vec![rows, w0.len() / rows])
                    .map_err(|e| err(&node.name, e.to_string()))?,
                rows,
            )
        }
        Op::Gemm(g) => {
            if g.trans_a {
                return Err(err(
                    &node.name,
                    "Gemm with transA=1 is not supported by the runtime",
                ));
            }
            let mut m = if g.trans_b {
                w
            } else {
                w.transpose2().map_err(|e| err(&node.name, e.to_string()))?
            };
            if g.alpha != 1.0 {
                m.data_mut().iter_mut().for_each(|v| *v *= g.alpha);
            }
            let rows = m.shape()[0];
            (m, rows)
        }
        Op::MatMul(_) => {
            let m = w.transpose2().map_err(|e| err(&node.name, e.to_string()))?;
            let rows = m.shape()[0];
            (m, rows)
        }
        _ => return Err(err(&node.name, "not a weighted layer")),
    };
    let mut bias = vec![0.0f32; rows];
    if let Some(bn) = node.inputs.get(2) {
        let b = graph
            .initializers
            .get(bn)
            .ok_or_else(|| err(&node.name, "bias must be a constant"))?;
        let beta = if let Op::Gemm(g) = &node.op {
            g.beta
        } else {
            1.0
        };
        match b.len() {
            1 => bias.iter_mut().for_each(|v| *v = b.data()[0] * beta),
            n if n == rows => bias
                .iter_mut()
                .zip(b.data())
                .for_each(|(v, x)| *v = x * beta),
            _ => {
                return Err(err(
                    &node.name,
                    "only per-output-channel biases are supported",
                ));
            }
        }
    }
    Ok((mat, bias, pattern))
}

/// Candidate formats for a weight of this sparsity and mask pattern.
fn candidates(
    sparsity: f64,
    cols: usize,
    pattern: Option<MaskPattern>,
    policy: FormatPolicy,
) -> Vec<Format> {
    match policy {
        FormatPolicy::Dense => vec![Format::Dense],
        FormatPolicy::Force(f) => vec![f, Format::Dense],
        FormatPolicy::Measure => {
            let mut v = vec![Format::Dense];
            // CSR also competes on dense layers with a short reduction (e.g. a first convolution
            // with 25 inputs per filter), where a general GEMM is far from peak
            if sparsity >= 0.3 || cols <= 64 {
                v.push(Format::Csr);
            }
            if sparsity >= 0.5 {
                v.extend([Format::Block { r: 4, c: 1 }, Format::Block { r: 8, c: 1 }]);
            }
            match pattern {
                Some(MaskPattern::NM { n, m }) => v.push(Format::Nm { n, m }),
                Some(MaskPattern::Block { rows, cols })
                    if !v.contains(&Format::Block { r: rows, c: cols }) =>
                {
                    v.push(Format::Block { r: rows, c: cols })
                }
                _ => {}
            }
            v
        }
    }
}

/// The outcome of timing candidate formats for one layer.
struct Choice {
    kernel: WeightKernel,
    threads: usize,
    candidates: Vec<(String, usize, f64)>,
    dense_ms: f64,
    chosen_ms: f64,
}

/// Times candidate kernels for a product with `n` columns and keeps the fastest.
fn choose(
    isa: Isa,
    w: &Tensor,
    n: usize,
    threads: usize,
    formats: &[Format],
    measure: bool,
) -> Choice {
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let kernels: Vec<WeightKernel> = formats
        .iter()
        .filter_map(|f| WeightKernel::build_for(*f, rows, cols, w.data(), n))
        .collect();
    if !measure || kernels.len() == 1 && threads == 1 {
        let kernel = kernels.into_iter().next().expect("dense always builds");
        return Choice {
            kernel,
            threads,
            candidates: Vec::new(),
            dense_ms: f64::NAN,
            chosen_ms: f64::NAN,
        };
    }
    let x: Vec<f32> = (0..cols * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let thread_opts: Vec<usize> = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    let mut ys: Vec<Vec<f32>> = Vec::new();
    let mut combos = Vec::new();
    for (ki, _) in kernels.iter().enumerate() {
        for &t in &thread_opts {
            combos.push((ki, t));
            ys.push(vec![0.0; rows * n]);
        }
    }
    let ep = Epilogue::NONE;
    let one = {
        let k = &kernels[0];
        let mut y = vec![0.0; rows * n];
        probe(&mut || k.matmul(isa, &x, n, &mut y, &ep, 1))
    };
    let budget = Budget::for_duration(one, 40.0);
    let mut closures: Vec<Box<dyn FnMut()>> = Vec::new();
    for ((ki, t), y) in combos.iter().zip(ys.iter_mut()) {
        let k = &kernels[*ki];
        let x = &x;
        let t = *t;
        closures.push(Box::new(move || k.matmul(isa, x, n, y, &Epilogue::NONE, t)));
    }
    let mut refs: Vec<&mut dyn FnMut()> = closures
        .iter_mut()
        .map(|c| &mut **c as &mut dyn FnMut())
        .collect();
    let stats = measure_interleaved(&mut refs, budget);
    drop(refs);
    drop(closures);
    let results: Vec<(String, usize, f64)> = combos
        .iter()
        .zip(&stats)
        .map(|((ki, t), s)| (kernels[*ki].format().to_string(), *t, s.median_ms))
        .collect();
    let dense_ms = combos
        .iter()
        .zip(&stats)
        .filter(|((ki, _), _)| kernels[*ki].format() == Format::Dense)
        .map(|(_, s)| s.median_ms)
        .fold(f64::INFINITY, f64::min);
    let (best, _) = combos
        .iter()
        .zip(&stats)
        .min_by(|a, b| a.1.median_ms.total_cmp(&b.1.median_ms))
        .expect("at least one candidate");
    let chosen_ms = stats[combos.iter().position(|c| c == best).expect("present")].median_ms;
    let (ki, t) = *best;
    let kernel = kernels.into_iter().nth(ki).expect("index");
    Choice {
        kernel,
        threads: t,
        candidates: results,
        dense_ms,
        chosen_ms,
    }
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
                let mut scratch = vec![0.0f32; sc.scratch_len()];
                runners.push(Box::new(move || {
                    sc.run(x, h, w, ho, wo, &mut y, &ep, &mut scratch)
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

/// A weighted layer lowered to its step, with what it absorbed and the format chosen.
pub(super) struct LoweredLayer {
    pub kind: StepKind,
    pub choice: LayerChoice,
    pub absorbed: Vec<usize>,
    /// The value the fused layer produces.
    pub output: String,
    pub out_len: usize,
}

/// Lowers weighted layer `ni` with the batch norm and activation it absorbs: the conv
/// algorithm (depthwise, im2col + a weight format, direct over channels or pixels, sparse
/// direct) or the linear kernel, chosen by timing candidates when the policy measures.
pub(super) fn lower_layer(
    graph: &Graph,
    shapes: &HashMap<String, Shape>,
    ni: usize,
    config: PlanConfig,
) -> Result<LoweredLayer> {
    let node = &graph.nodes[ni];
    let name = node.name.clone();
    let b = config.batch;
    let measure = config.policy == FormatPolicy::Measure;
    let concrete = |v: &str| -> Vec<usize> { shapes[v].resolve(b) };
    let in_shape = |k: usize| concrete(&node.inputs[k]);
    let choice: Option<LayerChoice>;
    let (mat, bias, pattern) = weight_matrix(graph, ni)?;
    let depthwise = matches!(&node.op, Op::Conv(c) if c.is_depthwise(in_shape(0)[1]));
    let fused: FusedLayer = fuse_layer(graph, shapes, ni, mat, bias);
    let fused_names: Vec<String> = fused
        .absorbed
        .iter()
        .map(|&a| graph.nodes[a].name.clone())
        .collect();
    let out_shape = concrete(&fused.output);
    let out_len: usize = out_shape.iter().product();
    let zeros = fused.weight.count_zeros();
    let sparsity = zeros as f64 / fused.weight.len().max(1) as f64;
    let (rows, cols) = (fused.weight.shape()[0], fused.weight.shape()[1]);
    let kind = match &node.op {
        Op::Conv(c) if depthwise => {
            let xs = in_shape(0);
            let (c_out, ho, wo) = (out_shape[1], out_shape[2], out_shape[3]);
            choice = Some(LayerChoice {
                node: name.clone(),
                op: "Conv (depthwise)".into(),
                fused: fused_names,
                format: "direct".into(),
                threads: config.threads,
                sparsity,
                candidates: vec![],
                dense_ms: f64::NAN,
                chosen_ms: f64::NAN,
                dense_macs: (b * c_out * ho * wo * cols) as u64,
                executed_macs: (b * c_out * ho * wo * cols) as u64,
                weight_bytes: fused.weight.len() * 4,
            });
            StepKind::Depthwise {
                conv: c.clone(),
                weights: fused.weight.into_data(),
                bias: fused.bias,
                act: fused.act,
                c_in: xs[1],
                h: xs[2],
                w: xs[3],
                c_out,
                ho,
                wo,
            }
        }
        Op::Conv(c) => {
            let xs = in_shape(0);
            let (c_out, ho, wo) = (out_shape[1], out_shape[2], out_shape[3]);
            let p = ho * wo;
            let direct =
                c.kernel == [1, 1] && c.strides == [1, 1] && c.pads == [0; 4] && c.groups == 1;
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
            let executed: usize =
                kernels.iter().map(|k| k.macs_per_column()).sum::<usize>() * p * b;
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
            choice = Some(LayerChoice {
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
            });
            let workers = if kernel_threads == 1 {
                config.threads.min(b)
            } else {
                1
            };
            let scratch_len = match (&direct_conv, &sparse_conv) {
                (Some(dc), _) => dc.scratch_len(xs[2], xs[3]),
                (_, Some(sc)) => sc.scratch_len(),
                _ if direct => 0,
                _ => cols * p,
            };
            let scratch = vec![vec![0.0f32; scratch_len]; workers];
            StepKind::Conv(Box::new(ConvStep {
                conv: c.clone(),
                kernels,
                bias: fused.bias,
                act: fused.act,
                c_in: xs[1],
                h: xs[2],
                w: xs[3],
                c_out,
                ho,
                wo,
                direct,
                direct_conv,
                sparse_conv,
                kernel_threads: if kernel_threads == 1 { 1 } else { kt },
                scratch,
            }))
        }
        _ => {
            let xs = in_shape(0);
            let k = *xs.last().unwrap_or(&1);
            let n_rows: usize = xs.iter().product::<usize>() / k.max(1);
            let Choice {
                kernel,
                threads: t,
                candidates: cands,
                dense_ms,
                chosen_ms,
            } = choose(
                config.isa,
                &fused.weight,
                n_rows,
                config.threads,
                &candidates(sparsity, cols, pattern, config.policy),
                measure,
            );
            choice = Some(LayerChoice {
                node: name.clone(),
                op: node.op.op_type().into(),
                fused: fused_names,
                format: kernel.format().to_string(),
                threads: t,
                sparsity,
                candidates: cands,
                dense_ms,
                chosen_ms,
                dense_macs: (rows * cols * n_rows) as u64,
                executed_macs: (kernel.macs_per_column() * n_rows) as u64,
                weight_bytes: kernel.bytes(),
            });
            let sparse = kernel.format() != Format::Dense && n_rows > 1;
            let wt = match &kernel {
                WeightKernel::Dense { .. } => fused
                    .weight
                    .transpose2()
                    .map_err(|e| err(&name, e.to_string()))?
                    .into_data(),
                _ => Vec::new(),
            };
            StepKind::Linear(Box::new(Linear {
                xt: if sparse {
                    vec![0.0; k * n_rows]
                } else {
                    Vec::new()
                },
                yt: if sparse {
                    vec![0.0; rows * n_rows]
                } else {
                    Vec::new()
                },
                wt,
                kernel,
                bias: fused.bias,
                act: fused.act,
                k,
                m: rows,
                rows: n_rows,
                threads: t,
            }))
        }
    };
    let choice = choice.ok_or_else(|| err(&name, "no kernel was chosen"))?;
    Ok(LoweredLayer {
        kind,
        choice,
        absorbed: fused.absorbed,
        output: fused.output,
        out_len,
    })
}
