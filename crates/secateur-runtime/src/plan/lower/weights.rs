//! What every weighted layer's lowering shares: the weight as a row-major `[out × in]` matrix
//! with the fusion rule's batch norm and activation folded in ([`prepare`]), the candidate
//! weight formats for its sparsity and mask pattern, and timing them against each other.

use super::LowerCx;
use crate::error::Result;
use crate::fold::{FusedLayer, fuse_layer};
use crate::harness::{Budget, measure_interleaved, probe};
use crate::kernels::{Epilogue, Format, Isa, WeightKernel};
use crate::plan::{FormatPolicy, PlanConfig, err};
use secateur_graph::{
    ActQuant, Graph, MaskPattern, Op, Tensor, fake_quant_weight, quantize_weight,
};

/// A weighted layer ready to lower: its fused weight and what the fusion absorbed.
pub(super) struct Prepared {
    pub name: String,
    pub config: PlanConfig,
    /// Concrete shape of the data input.
    pub xs: Vec<usize>,
    /// Concrete shape of the fused layer's output.
    pub out_shape: Vec<usize>,
    pub fused: FusedLayer,
    pub fused_names: Vec<String>,
    pub sparsity: f64,
    pub rows: usize,
    pub cols: usize,
    pub pattern: Option<MaskPattern>,
    pub absorbed: Vec<usize>,
    pub output: String,
    pub out_len: usize,
    /// The layer's integer form where the graph quantizes its weight and input.
    pub int8: Option<Int8Form>,
}

/// A quantized layer in integers: the int8 weights (`[out × in]`, as the fused weight), the
/// f32 value of one weight unit per output row (the weight scale times any folded batch-norm
/// factor) and the quantization of its input activation.
pub(super) struct Int8Form {
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
    pub quant: ActQuant,
}

/// The weight matrix of the layer at `cx` with what the fusion rule absorbs folded in.
pub(super) fn prepare(cx: &LowerCx) -> Result<Prepared> {
    let (graph, ni) = (cx.graph, cx.node);
    let (mat, bias, pattern) = weight_matrix(graph, ni)?;
    let fused: FusedLayer = fuse_layer(graph, cx.shapes, ni, mat, bias);
    let fused_names = fused
        .absorbed
        .iter()
        .map(|&a| graph.nodes[a].name.clone())
        .collect();
    let out_shape = cx.value_shape(&fused.output);
    let sparsity = fused.weight.count_zeros() as f64 / fused.weight.len().max(1) as f64;
    let (rows, cols) = (fused.weight.shape()[0], fused.weight.shape()[1]);
    let int8 = int8_form(graph, ni, &fused.weight);
    Ok(Prepared {
        name: cx.node().name.clone(),
        config: cx.config,
        xs: cx.in_shape(0),
        out_len: out_shape.iter().product(),
        out_shape,
        absorbed: fused.absorbed.clone(),
        output: fused.output.clone(),
        fused,
        fused_names,
        sparsity,
        rows,
        cols,
        pattern,
        int8,
    })
}

/// The integer form of layer `ni` (a convolution, or a linear layer with a 2-D weight) when
/// the graph quantizes its weight (per output channel) and its input: the int8 weights of the
/// graph's quantization as `[out × in]` rows, and each row's unit read off the fused weight
/// (`fused = q · unit`, exact to rounding; a fused weight that is not such a multiple of `q`,
/// which no fusion makes, keeps the layer in f32).
fn int8_form(graph: &Graph, ni: usize, fused: &Tensor) -> Option<Int8Form> {
    let node = &graph.nodes[ni];
    let quantization = graph.quantization.as_ref()?;
    let quant = *quantization.activations.get(&node.name)?;
    let axis = *quantization.weights.get(&node.inputs[1])?;
    let w0 = graph.initializers.get(&node.inputs[1])?;
    let (q, _) = quantize_weight(w0, axis);
    let rows = fused.shape()[0];
    let cols = fused.len() / rows.max(1);
    let q = match (&node.op, axis, w0.shape()) {
        (Op::Conv(_), 0, _) => q,
        (Op::Gemm(_) | Op::MatMul(_), 0, [_, _]) => q,
        // `[in × out]`: the rows are the columns
        (Op::Gemm(_) | Op::MatMul(_), 1, &[k, n]) => {
            (0..n * k).map(|i| q[(i % k) * n + i / k]).collect()
        }
        _ => return None,
    };
    if q.len() != fused.len() {
        return None;
    }
    let mut scales = Vec::with_capacity(rows);
    for (qr, fr) in q.chunks(cols).zip(fused.data().chunks(cols)) {
        let (at, _) = qr
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.unsigned_abs())
            .unwrap_or((0, &0));
        let unit = if qr.get(at).is_some_and(|&v| v != 0) {
            fr[at] / qr[at] as f32
        } else {
            0.0
        };
        let largest = fr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let exact = qr
            .iter()
            .zip(fr)
            .all(|(&qv, &f)| (qv as f32 * unit - f).abs() <= 1e-5 * largest);
        if !exact || !unit.is_finite() {
            return None;
        }
        scales.push(unit);
    }
    Some(Int8Form { q, scales, quant })
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
pub(super) fn candidates(
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
pub(super) struct Choice {
    pub kernel: WeightKernel,
    pub threads: usize,
    pub candidates: Vec<(String, usize, f64)>,
    pub dense_ms: f64,
    pub chosen_ms: f64,
}

/// Times candidate kernels for a product with `n` columns and keeps the fastest.
pub(super) fn choose(
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
