//! Compiling a graph into an execution plan and running it. Conv/Gemm/MatMul layers absorb a
//! following batch norm and activation; every such layer's weight format (dense, CSR, blocks,
//! N:M) and thread count are chosen by timing the candidates on this machine at the plan's batch
//! size, and the choice is recorded. Activations live in preallocated buffers that are reused
//! once their value is dead (liveness), reshapes are free aliases, and the batch is processed
//! in parallel on a dedicated pool without oversubscription.

use crate::error::{Result, RuntimeError};
use crate::fold::{FusedLayer, fuse_layer};
use crate::harness::{Budget, measure_interleaved, probe};
use crate::kernels::direct_conv::DirectConv;
use crate::kernels::sparse_conv::SparseConv;
use crate::kernels::{Activation, Epilogue, Format, Isa, WeightKernel, dense};
use crate::ops;
use rayon::prelude::*;
use secateur_graph::{
    ActQuant, BinaryFn, Conv, Graph, MaskPattern, Op, OpClass, Pointwise, PoolGeometry, Tensor,
    fake_quant_weight,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// Which weight formats a plan may use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FormatPolicy {
    /// Time every applicable format (and 1 vs all threads) per layer; keep the fastest.
    Measure,
    /// Dense everywhere (the baseline).
    Dense,
    /// One format wherever it applies, dense elsewhere.
    Force(Format),
}

/// Settings of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub batch: usize,
    pub threads: usize,
    pub isa: Isa,
    pub policy: FormatPolicy,
}

impl PlanConfig {
    pub fn new(batch: usize, threads: usize) -> Self {
        PlanConfig {
            batch,
            threads,
            isa: Isa::detect(),
            policy: FormatPolicy::Measure,
        }
    }
}

/// The recorded choice for one Conv/Gemm layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerChoice {
    pub node: String,
    pub op: String,
    /// Nodes fused into this layer (batch norm, activation).
    pub fused: Vec<String>,
    pub format: String,
    pub threads: usize,
    /// Fraction of zero weights.
    pub sparsity: f64,
    /// Every candidate tried: format, threads, median milliseconds per call.
    pub candidates: Vec<(String, usize, f64)>,
    pub dense_ms: f64,
    pub chosen_ms: f64,
    /// Multiply-accumulates per inference of the whole batch, dense and as executed.
    pub dense_macs: u64,
    pub executed_macs: u64,
    pub weight_bytes: usize,
}

struct Linear {
    kernel: WeightKernel,
    /// Dense copy for the `X·Wᵀ` path without transposes.
    bias: Vec<f32>,
    act: Activation,
    k: usize,
    m: usize,
    rows: usize,
    threads: usize,
    xt: Vec<f32>,
    yt: Vec<f32>,
    /// Wᵀ row-major for the dense path.
    wt: Vec<f32>,
}

struct ConvStep {
    conv: Conv,
    kernels: Vec<WeightKernel>,
    bias: Vec<f32>,
    act: Activation,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    ho: usize,
    wo: usize,
    direct: bool,
    direct_conv: Option<DirectConv>,
    sparse_conv: Option<SparseConv>,
    kernel_threads: usize,
    scratch: Vec<Vec<f32>>,
}

enum StepKind {
    Conv(Box<ConvStep>),
    Depthwise {
        conv: Conv,
        weights: Vec<f32>,
        bias: Vec<f32>,
        act: Activation,
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
        sa: Vec<usize>,
        sb: Vec<usize>,
        so: Vec<usize>,
    },
    Concat {
        outer: usize,
        chunks: Vec<usize>,
    },
    Softmax {
        outer: usize,
        red: usize,
        inner: usize,
    },
    Pointwise(Pointwise),
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

struct Step {
    name: String,
    kind: StepKind,
    inputs: Vec<usize>,
    output: usize,
    /// Constant inputs (weights read by element-wise ops), by input position.
    consts: Vec<(usize, Vec<f32>)>,
}

/// A compiled graph.
pub struct ExecPlan {
    pub config: PlanConfig,
    steps: Vec<Step>,
    buffers: Vec<Vec<f32>>,
    input: usize,
    output: usize,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub layers: Vec<LayerChoice>,
    pool: Option<rayon::ThreadPool>,
}

/// Activation memory of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Bytes of all activation buffers (after liveness-based reuse).
    pub activation_bytes: usize,
    /// Bytes of scratch (im2col, transposes).
    pub scratch_bytes: usize,
    /// Bytes of weights in their chosen formats.
    pub weight_bytes: usize,
}

fn err(node: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Unsupported {
        node: node.to_string(),
        message: message.into(),
    }
}

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

impl ExecPlan {
    /// Compiles `graph` for `config`.
    pub fn compile(graph: &Graph, config: PlanConfig) -> Result<ExecPlan> {
        graph.check()?;
        if graph.inputs.len() != 1 || graph.outputs.is_empty() {
            return Err(RuntimeError::Unsupported {
                node: graph.name.clone(),
                message: "the runtime runs graphs with one input".into(),
            });
        }
        if config.batch == 0 || config.threads == 0 {
            return Err(RuntimeError::Config(
                "batch and threads must be at least 1".into(),
            ));
        }
        let b = config.batch;
        let shapes = graph.infer_shapes()?;
        let concrete = |v: &str| -> Vec<usize> { shapes[v].resolve(b) };
        let measure = config.policy == FormatPolicy::Measure;
        // buffers: one per value unless aliased; assigned with liveness afterwards
        let mut value_buf: HashMap<String, usize> = HashMap::new();
        let mut sizes: Vec<usize> = Vec::new();
        let new_buf = |sizes: &mut Vec<usize>, n: usize| {
            sizes.push(n);
            sizes.len() - 1
        };
        let input_name = graph.inputs[0].name.clone();
        let input_buf = new_buf(&mut sizes, concrete(&input_name).iter().product());
        value_buf.insert(input_name.clone(), input_buf);
        let mut steps: Vec<Step> = Vec::new();
        let mut layers = Vec::new();
        let mut absorbed = vec![false; graph.nodes.len()];
        let quant = graph.quantization.as_ref();
        for (ni, node) in graph.nodes.iter().enumerate() {
            if absorbed[ni] {
                continue;
            }
            let name = node.name.clone();
            let mut in_bufs = Vec::new();
            let mut consts = Vec::new();
            for (k, v) in node.inputs.iter().enumerate() {
                if let Some(&bi) = value_buf.get(v) {
                    in_bufs.push(bi);
                } else if let Some(t) = graph.initializers.get(v) {
                    in_bufs.push(usize::MAX);
                    consts.push((k, t.data().to_vec()));
                } else {
                    return Err(err(&name, format!("input '{v}' is not available")));
                }
            }
            // quantized activation entering this node
            if let Some(q) = quant.and_then(|q| q.activations.get(&name))
                && in_bufs[0] != usize::MAX
            {
                let n = concrete(&node.inputs[0]).iter().product();
                let qb = new_buf(&mut sizes, n);
                steps.push(Step {
                    name: format!("{name}.quantize_input"),
                    kind: StepKind::Quant { q: *q, n },
                    inputs: vec![in_bufs[0]],
                    output: qb,
                    consts: vec![],
                });
                in_bufs[0] = qb;
            }
            let in_shape = |k: usize| concrete(&node.inputs[k]);
            let out_shape = concrete(&node.outputs[0]);
            let out_len: usize = out_shape.iter().product();
            // aliases: no data movement
            if node.op.class() == OpClass::View && in_bufs[0] != usize::MAX {
                value_buf.insert(node.outputs[0].clone(), in_bufs[0]);
                continue;
            }
            if graph.is_weighted_layer(ni) {
                let (mat, bias, pattern) = weight_matrix(graph, ni)?;
                let depthwise = matches!(&node.op, Op::Conv(c) if c.is_depthwise(in_shape(0)[1]));
                let fused: FusedLayer = fuse_layer(graph, &shapes, ni, mat, bias);
                for &a in &fused.absorbed {
                    absorbed[a] = true;
                }
                let fused_names: Vec<String> = fused
                    .absorbed
                    .iter()
                    .map(|&a| graph.nodes[a].name.clone())
                    .collect();
                let out_shape = concrete(&fused.output);
                let out_len: usize = out_shape.iter().product();
                let ob = new_buf(&mut sizes, out_len);
                let zeros = fused.weight.count_zeros();
                let sparsity = zeros as f64 / fused.weight.len().max(1) as f64;
                let (rows, cols) = (fused.weight.shape()[0], fused.weight.shape()[1]);
                let kind = match &node.op {
                    Op::Conv(c) if depthwise => {
                        let xs = in_shape(0);
                        let (c_out, ho, wo) = (out_shape[1], out_shape[2], out_shape[3]);
                        layers.push(LayerChoice {
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
                        let direct = c.kernel == [1, 1]
                            && c.strides == [1, 1]
                            && c.pads == [0; 4]
                            && c.groups == 1;
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
                                fused.weight.data()[gi * rows_g * cols..(gi + 1) * rows_g * cols]
                                    .to_vec(),
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
                        let may_choose =
                            matches!(config.policy, FormatPolicy::Measure | FormatPolicy::Dense);
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
                                WeightKernel::build_for(
                                    Format::Dense,
                                    rows,
                                    cols,
                                    fused.weight.data(),
                                    p,
                                )
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
                        layers.push(LayerChoice {
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
                        layers.push(LayerChoice {
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
                steps.push(Step {
                    name,
                    kind,
                    inputs: vec![in_bufs[0]],
                    output: ob,
                    consts: vec![],
                });
                value_buf.insert(fused.output.clone(), ob);
                continue;
            }
            let ob = new_buf(&mut sizes, out_len);
            let kind = match &node.op {
                op if matches!(op.class(), OpClass::Pointwise(_)) => {
                    let OpClass::Pointwise(f) = op.class() else {
                        unreachable!("matched a pointwise op")
                    };
                    StepKind::Pointwise(f)
                }
                Op::MaxPool(secateur_graph::MaxPool { geometry: p })
                | Op::AveragePool(secateur_graph::AveragePool { geometry: p, .. })
                    if in_shape(0).len() == 4 =>
                {
                    let xs = in_shape(0);
                    let (max, include_pad) = match &node.op {
                        Op::AveragePool(a) => (false, a.count_include_pad),
                        _ => (true, false),
                    };
                    StepKind::Pool {
                        geo: p.clone(),
                        max,
                        include_pad,
                        planes: xs[0] * xs[1],
                        h: xs[2],
                        w: xs[3],
                        ho: out_shape[2],
                        wo: out_shape[3],
                    }
                }
                Op::GlobalAveragePool(_) => {
                    let xs = in_shape(0);
                    StepKind::Gap {
                        planes: xs[0] * xs[1],
                        inner: xs[2..].iter().product(),
                    }
                }
                op if matches!(op.class(), OpClass::Binary(_)) => StepKind::Binary {
                    f: match op.class() {
                        OpClass::Binary(f) => f,
                        _ => unreachable!("matched a binary op"),
                    },
                    sa: in_shape(0),
                    sb: in_shape(1),
                    so: out_shape.clone(),
                },
                Op::Concat(c) => {
                    let rank = out_shape.len();
                    let axis = if c.axis < 0 {
                        (c.axis + rank as i64) as usize
                    } else {
                        c.axis as usize
                    };
                    let outer: usize = out_shape[..axis].iter().product();
                    let chunks = node
                        .inputs
                        .iter()
                        .map(|v| concrete(v)[axis..].iter().product())
                        .collect();
                    StepKind::Concat { outer, chunks }
                }
                Op::Softmax(s) => {
                    let rank = out_shape.len();
                    let a = if s.axis < 0 {
                        (s.axis + rank as i64) as usize
                    } else {
                        s.axis as usize
                    };
                    let hi = if s.legacy { rank } else { a + 1 };
                    StepKind::Softmax {
                        outer: out_shape[..a].iter().product(),
                        red: out_shape[a..hi].iter().product(),
                        inner: out_shape[hi..].iter().product(),
                    }
                }
                other => reference_step(&name, other, node.inputs.iter().map(|v| concrete(v)))?,
            };
            steps.push(Step {
                name,
                kind,
                inputs: in_bufs,
                output: ob,
                consts,
            });
            value_buf.insert(node.outputs[0].clone(), ob);
        }
        let out_name = &graph.outputs[0];
        let output = *value_buf
            .get(out_name)
            .ok_or_else(|| err(out_name, "graph output is not computed"))?;
        // liveness-based reuse: map logical buffers to physical ones
        let mut last_use = vec![0usize; sizes.len()];
        for (si, s) in steps.iter().enumerate() {
            for &i in &s.inputs {
                if i != usize::MAX {
                    last_use[i] = si;
                }
            }
        }
        last_use[output] = usize::MAX;
        last_use[input_buf] = usize::MAX;
        let mut phys_of = vec![usize::MAX; sizes.len()];
        let mut phys: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        phys_of[input_buf] = 0;
        phys.push(sizes[input_buf]);
        for (si, s) in steps.iter().enumerate() {
            let need = sizes[s.output];
            let slot = free
                .iter()
                .position(|&p| phys[p] >= need)
                .or_else(|| free.iter().position(|_| true));
            let p = match slot {
                Some(fi) => {
                    let p = free.remove(fi);
                    phys[p] = phys[p].max(need);
                    p
                }
                None => {
                    phys.push(need);
                    phys.len() - 1
                }
            };
            phys_of[s.output] = p;
            for &i in &s.inputs {
                if i != usize::MAX && last_use[i] == si && i != s.output {
                    let pi = phys_of[i];
                    if !free.contains(&pi)
                        && !steps[si + 1..].iter().any(|t| {
                            t.inputs
                                .iter()
                                .any(|&j| j != usize::MAX && phys_of[j] == pi && last_use[j] > si)
                        })
                    {
                        free.push(pi);
                    }
                }
            }
        }
        for s in &mut steps {
            s.output = phys_of[s.output];
            for i in &mut s.inputs {
                if *i != usize::MAX {
                    *i = phys_of[*i];
                }
            }
        }
        let buffers = phys.iter().map(|&n| vec![0.0f32; n]).collect();
        let pool = if config.threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(config.threads)
                    .build()
                    .map_err(|e| {
                        RuntimeError::Config(format!(
                            "cannot start {} threads: {e}",
                            config.threads
                        ))
                    })?,
            )
        } else {
            None
        };
        let input_shape = graph.inputs[0].shape.resolve(b);
        let output_shape = shapes[out_name].resolve(b);
        Ok(ExecPlan {
            config,
            steps,
            buffers,
            input: 0,
            output: phys_of[output],
            input_shape,
            output_shape,
            layers,
            pool,
        })
    }

    /// Activation, scratch and weight memory of this plan.
    pub fn memory(&self) -> MemoryReport {
        let scratch: usize = self
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Conv(c) => c.scratch.iter().map(|v| v.len()).sum::<usize>(),
                StepKind::Linear(l) => l.xt.len() + l.yt.len(),
                _ => 0,
            })
            .sum();
        MemoryReport {
            activation_bytes: self.buffers.iter().map(|b| b.len() * 4).sum(),
            scratch_bytes: scratch * 4,
            weight_bytes: self.layers.iter().map(|l| l.weight_bytes).sum(),
        }
    }

    /// Runs the plan on `input` (`[batch, ...]`, row-major) and returns the output.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        self.run_inner(input, None)?;
        let n: usize = self.output_shape.iter().product();
        Ok(&self.buffers[self.output][..n])
    }

    /// Median time of every step over `reps` profiled runs (name, milliseconds).
    pub fn time_steps(&mut self, input: &[f32], reps: usize) -> Result<Vec<(String, f64)>> {
        let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
        for _ in 0..reps.max(1) {
            for (i, (name, ms)) in self.run_profiled(input)?.into_iter().enumerate() {
                if samples.len() <= i {
                    samples.push((name, Vec::new()));
                }
                samples[i].1.push(ms);
            }
        }
        Ok(samples
            .into_iter()
            .map(|(n, v)| (n, crate::harness::Stats::from_samples(v).median_ms))
            .collect())
    }

    /// Runs the plan and returns the time spent in each step (name, milliseconds).
    pub fn run_profiled(&mut self, input: &[f32]) -> Result<Vec<(String, f64)>> {
        let mut times = Vec::with_capacity(self.steps.len());
        self.run_inner(input, Some(&mut times))?;
        Ok(times)
    }

    fn run_inner(
        &mut self,
        input: &[f32],
        mut times: Option<&mut Vec<(String, f64)>>,
    ) -> Result<()> {
        let n_in: usize = self.input_shape.iter().product();
        if input.len() != n_in {
            return Err(RuntimeError::Input(format!(
                "expected {n_in} values for input shape {:?}, got {}",
                self.input_shape,
                input.len()
            )));
        }
        self.buffers[self.input][..n_in].copy_from_slice(input);
        let isa = self.config.isa;
        let batch = self.config.batch;
        let pool = self.pool.take();
        let mut body = || -> Result<()> {
            for si in 0..self.steps.len() {
                let t = Instant::now();
                let out_idx = self.steps[si].output;
                let mut out = std::mem::take(&mut self.buffers[out_idx]);
                let ran = run_step(&mut self.steps[si], &self.buffers, &mut out, isa, batch);
                self.buffers[out_idx] = out;
                ran.map_err(|m| RuntimeError::Input(format!("{}: {m}", self.steps[si].name)))?;
                if let Some(tv) = times.as_deref_mut() {
                    tv.push((self.steps[si].name.clone(), t.elapsed().as_secs_f64() * 1e3));
                }
            }
            Ok(())
        };
        let result = match &pool {
            Some(p) => p.install(body),
            None => body(),
        };
        self.pool = pool;
        result
    }
}

/// A step running `op` by its reference evaluation, checked once on zeros of the input shapes
/// (what remains to fail at run time is data: an index out of range).
fn reference_step(
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
fn run_step(
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
                    sc.run(xs, c.h, c.w, c.ho, c.wo, y, &ep, scratch);
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
                out[..batch * per_out]
                    .par_chunks_mut(per_worker * per_out)
                    .zip(c.scratch.par_iter_mut())
                    .enumerate()
                    .for_each(|(wi, (ys, scratch))| {
                        for (j, y) in ys.chunks_mut(per_out).enumerate() {
                            sample(wi * per_worker + j, y, scratch);
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
        } => {
            let per_in = *c_in * *h * *w;
            let per_out = *c_out * *ho * *wo;
            out[..batch * per_out]
                .par_chunks_mut(per_out)
                .enumerate()
                .for_each(|(s, y)| {
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
                });
        }
        StepKind::Linear(l) => {
            let ep = Epilogue {
                bias: Some(&l.bias),
                act: l.act,
            };
            let (k, m, n) = (l.k, l.m, l.rows);
            match &l.kernel {
                WeightKernel::Dense { .. } => {
                    dense::matmul_pretransposed(&l.wt, x, out, m, k, n, &ep, l.threads)
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
        } => ops::pool(x, *planes, *h, *w, geo, *max, *include_pad, *ho, *wo, out),
        StepKind::Gap { planes, inner } => ops::global_avg_pool(x, *planes, *inner, out),
        StepKind::Binary { f, sa, sb, so } => {
            let b = input_of(inputs, consts, buffers, 1);
            let n: usize = so.iter().product();
            let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
            let (x, b, out) = (&x[..na], &b[..nb], &mut out[..n]);
            match f {
                BinaryFn::Add => ops::broadcast(x, sa, b, sb, so, out, |p, q| p + q),
                BinaryFn::Sub => ops::broadcast(x, sa, b, sb, so, out, |p, q| p - q),
                BinaryFn::Mul => ops::broadcast(x, sa, b, sb, so, out, |p, q| p * q),
                BinaryFn::Div => ops::broadcast(x, sa, b, sb, so, out, |p, q| p / q),
                other => ops::broadcast(x, sa, b, sb, so, out, |p, q| other.apply(p, q)),
            }
        }
        StepKind::Concat { outer, chunks } => {
            let total: usize = chunks.iter().sum();
            for (k, &ch) in chunks.iter().enumerate() {
                let offset: usize = chunks[..k].iter().sum();
                let src = input_of(inputs, consts, buffers, k);
                for o in 0..*outer {
                    out[o * total + offset..o * total + offset + ch]
                        .copy_from_slice(&src[o * ch..(o + 1) * ch]);
                }
            }
        }
        StepKind::Softmax { outer, red, inner } => ops::softmax(x, *outer, *red, *inner, out),
        StepKind::Pointwise(f) => ops::pointwise(*f, x, out),
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
            // round-half-to-even by the 1.5·2²³ trick (exact for |y| < 2²², and y is clamped
            // well inside that without changing the clamped level): vectorises without SSE4.1
            const MAGIC: f32 = 12_582_912.0;
            let (zp, scale) = (q.zero_point as f32, q.scale);
            for (o, v) in out[..*n].iter_mut().zip(&x[..*n]) {
                let y = (*v / scale).clamp(-512.0, 512.0);
                let level = ((y + MAGIC) - MAGIC + zp).clamp(0.0, 255.0);
                *o = (level - zp) * scale;
            }
        }
    }
    Ok(())
}
