//! The burn interpreter: runs a compiled graph on burn tensors, op by op, in training mode
//! (batch-norm batch statistics, returned so the caller can update running statistics) or
//! evaluation mode, optionally with int8 fake quantization of weights and activations and with
//! activation-range observation for calibration. Gradients flow through every op by burn's
//! autodiff when the parameters are autodiff leaves.

use crate::error::{Result, TrainError};
use crate::layout;
use crate::pointwise::apply_pointwise;
use crate::program::{Program, Source};
use crate::quant::FakeQuant;
use crate::value::{MAX_RANK, Value, broadcast_binary, on_value};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use secateur_graph::{BinaryFn, Graph, Op, OpClass, normalize_axis};

/// Batch statistics of one batch-norm node in training mode.
#[derive(Clone, Debug)]
pub struct BnBatchStats {
    pub mean_param: usize,
    pub var_param: usize,
    pub mean: Tensor<1>,
    /// Unbiased variance (as PyTorch uses for the running estimate).
    pub var: Tensor<1>,
}

/// Sees the data input of every Conv/Gemm/MatMul node during a forward pass (calibration).
pub trait ActivationObserver {
    fn observe(&mut self, node: usize, x: &Value);
}

/// How to run the forward pass.
pub struct ForwardCtx<'a> {
    pub train: bool,
    pub quant: Option<&'a FakeQuant>,
    pub observer: Option<&'a mut dyn ActivationObserver>,
}

impl ForwardCtx<'_> {
    pub fn eval() -> Self {
        ForwardCtx {
            train: false,
            quant: None,
            observer: None,
        }
    }
}

fn unsupported(graph: &Graph, node: usize, message: impl Into<String>) -> TrainError {
    let n = &graph.nodes[node];
    TrainError::Unsupported {
        node: n.name.clone(),
        op: n.op.op_type().into(),
        message: message.into(),
    }
}

fn param_value(p: Tensor<1>, shape: &[usize]) -> Option<Value> {
    // a scalar constant (rank 0) broadcasts like a one-element vector
    let shape = if shape.is_empty() { &[1][..] } else { shape };
    Value::R1(p).reshape(shape)
}

/// Checks before training that every node is something the interpreter can run.
pub fn check_trainable(graph: &Graph) -> Result<()> {
    let shapes = graph.infer_shapes()?;
    for (i, node) in graph.nodes.iter().enumerate() {
        let rank = shapes[&node.outputs[0]].rank();
        if !(1..=MAX_RANK).contains(&rank) {
            return Err(unsupported(
                graph,
                i,
                format!("rank-{rank} values are not supported in training (1 to {MAX_RANK} are)"),
            ));
        }
        if let Op::Softmax(s) = &node.op
            && s.legacy
        {
            return Err(unsupported(
                graph,
                i,
                "a legacy Softmax over several axes is not supported in training",
            ));
        }
        if let Op::MaxPool(p) = &node.op
            && p.geometry.dilations != [1, 1]
        {
            return Err(unsupported(
                graph,
                i,
                "dilated max pooling is not supported in training",
            ));
        }
    }
    Ok(())
}

/// Runs the graph; returns (output, logits) and, in training mode, batch-norm statistics.
pub fn forward(
    graph: &Graph,
    program: &Program,
    params: &[Tensor<1>],
    shapes: &[Vec<usize>],
    input: Value,
    ctx: &mut ForwardCtx,
) -> Result<(Value, Value, Vec<BnBatchStats>)> {
    let batch = input.dims()[0];
    let mut slots: Vec<Option<Value>> = vec![None; program.slots];
    let mut stats = Vec::new();
    for step in &program.steps {
        let node = &graph.nodes[step.node];
        let mut args: Vec<Value> = Vec::with_capacity(step.sources.len());
        for (k, s) in step.sources.iter().enumerate() {
            let v = match *s {
                Source::Input => input.clone(),
                Source::Slot(i) => slots[i]
                    .clone()
                    .ok_or_else(|| unsupported(graph, step.node, "input released too early"))?,
                Source::Param(p) => {
                    let mut w = params[p].clone();
                    if let Some(q) = ctx.quant {
                        w = q.weight(p, w);
                    }
                    param_value(w, &shapes[p]).ok_or_else(|| {
                        unsupported(
                            graph,
                            step.node,
                            format!("parameter input {k} has unsupported rank"),
                        )
                    })?
                }
            };
            args.push(v);
        }
        if node.op.class() == OpClass::WeightedLayer
            && let Some(obs) = ctx.observer.as_deref_mut()
        {
            obs.observe(step.node, &args[0]);
        }
        if let Some(q) = ctx.quant
            && q.activations.contains_key(&step.node)
        {
            let a = args.remove(0);
            args.insert(0, q.activation(step.node, a));
        }
        let out_dims = step.out_shape.resolve(batch);
        let y = run_op(
            graph,
            step.node,
            &node.op,
            args,
            &step.sources,
            &out_dims,
            ctx.train,
            &mut stats,
        )?;
        slots[step.out_slot] = Some(y);
        for r in &step.release {
            slots[*r] = None;
        }
    }
    let get = |s: Source| -> Result<Value> {
        match s {
            Source::Input => Ok(input.clone()),
            Source::Slot(i) => slots[i]
                .clone()
                .ok_or_else(|| TrainError::Config("missing output".into())),
            Source::Param(_) => Err(TrainError::Config("a weight cannot be the output".into())),
        }
    };
    Ok((get(program.output)?, get(program.logits)?, stats))
}

fn r4(graph: &Graph, node: usize, v: Value) -> Result<Tensor<4>> {
    let dims = v.dims();
    v.into_r4().ok_or_else(|| {
        unsupported(
            graph,
            node,
            format!("expected a rank-4 input, got {dims:?}"),
        )
    })
}

fn r2(graph: &Graph, node: usize, v: Value) -> Result<Tensor<2>> {
    let dims = v.dims();
    v.into_r2().ok_or_else(|| {
        unsupported(
            graph,
            node,
            format!("expected a rank-2 input, got {dims:?}"),
        )
    })
}

fn r1(graph: &Graph, node: usize, v: Value) -> Result<Tensor<1>> {
    let d = v.dims();
    let n: usize = d.iter().product();
    match v.reshape(&[n]) {
        Some(Value::R1(t)) => Ok(t),
        _ => Err(unsupported(graph, node, "expected a vector")),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_op(
    graph: &Graph,
    ni: usize,
    op: &Op,
    mut args: Vec<Value>,
    sources: &[Source],
    out_dims: &[usize],
    train: bool,
    stats: &mut Vec<BnBatchStats>,
) -> Result<Value> {
    let reshape = |v: Value, dims: &[usize]| {
        v.reshape(dims)
            .ok_or_else(|| unsupported(graph, ni, format!("cannot reshape to {dims:?}")))
    };
    Ok(match op {
        Op::Conv(c) => {
            let bias = if args.len() == 3 {
                Some(r1(graph, ni, args.pop().expect("3 args"))?)
            } else {
                None
            };
            let w = r4(graph, ni, args.pop().expect("weight"))?;
            let x = r4(graph, ni, args.pop().expect("input"))?;
            let opts = ConvOptions::new_with_padding(
                c.strides,
                [(c.pads[0], c.pads[2]), (c.pads[1], c.pads[3])],
                c.dilations,
                c.groups,
            );
            Value::R4(conv2d(x, w, bias, opts))
        }
        Op::Gemm(g) => {
            let c = if args.len() == 3 { args.pop() } else { None };
            let b = r2(graph, ni, args.pop().expect("B"))?;
            let a = r2(graph, ni, args.pop().expect("A"))?;
            let a = if g.trans_a { a.transpose() } else { a };
            let b = if g.trans_b { b.transpose() } else { b };
            let mut y = a.matmul(b);
            if g.alpha != 1.0 {
                y = y * g.alpha;
            }
            let mut v = Value::R2(y);
            if let Some(c) = c {
                let c = if g.beta != 1.0 {
                    on_value!(c, |t| t * g.beta)
                } else {
                    c
                };
                v = broadcast_binary(v, c, BinaryFn::Add)
                    .ok_or_else(|| unsupported(graph, ni, "bias does not broadcast"))?;
            }
            v
        }
        Op::MatMul(_) => {
            let w = r2(graph, ni, args.pop().expect("B"))?;
            match args.pop().expect("A") {
                Value::R2(a) => Value::R2(a.matmul(w)),
                Value::R3(a) => Value::R3(a.matmul(w.unsqueeze::<3>())),
                Value::R4(a) => Value::R4(a.matmul(w.unsqueeze::<4>())),
                Value::R5(a) => Value::R5(a.matmul(w.unsqueeze::<5>())),
                other => {
                    return Err(unsupported(
                        graph,
                        ni,
                        format!("MatMul of a rank-{} input", other.rank()),
                    ));
                }
            }
        }
        Op::BatchNorm(bn) => {
            let var = r1(graph, ni, args.pop().expect("var"))?;
            let mean = r1(graph, ni, args.pop().expect("mean"))?;
            let shift = r1(graph, ni, args.pop().expect("shift"))?;
            let scale = r1(graph, ni, args.pop().expect("scale"))?;
            let x = args.pop().expect("x");
            let dims = x.dims();
            let c = dims[1];
            let mut bshape = vec![1; dims.len()];
            bshape[1] = c;
            let b = |t: Tensor<1>| reshape(Value::R1(t), &bshape);
            let reduce: Vec<usize> = (0..dims.len()).filter(|&d| d != 1).collect();
            let (mean_v, var_v) = if train {
                let count: usize = reduce.iter().map(|&d| dims[d]).product();
                if count < 2 {
                    return Err(unsupported(
                        graph,
                        ni,
                        "batch normalisation in training needs more than one value per channel (batch size 1?)",
                    ));
                }
                let (m, v) = batch_moments(x.clone(), &reduce)
                    .ok_or_else(|| unsupported(graph, ni, "unsupported rank for batch norm"))?;
                let (Source::Param(mp), Source::Param(vp)) = (sources[3], sources[4]) else {
                    return Err(unsupported(graph, ni, "running statistics must be weights"));
                };
                let mut s = BnBatchStats {
                    mean_param: mp,
                    var_param: vp,
                    mean: r1(graph, ni, m.clone())?.inner(),
                    var: r1(graph, ni, v.clone())?.inner(),
                };
                s.var = s.var * (count as f64 / (count - 1) as f64);
                stats.push(s);
                (m, v)
            } else {
                (b(mean)?, b(var)?)
            };
            let centered = broadcast_binary(x, on_value!(mean_v, |t| t.neg()), BinaryFn::Add)
                .ok_or_else(|| unsupported(graph, ni, "shape"))?;
            let inv = on_value!(var_v, |t| (t + bn.epsilon as f64).sqrt().recip());
            let factor = broadcast_binary(inv, b(scale)?, BinaryFn::Mul)
                .ok_or_else(|| unsupported(graph, ni, "shape"))?;
            let y = broadcast_binary(centered, factor, BinaryFn::Mul)
                .ok_or_else(|| unsupported(graph, ni, "shape"))?;
            broadcast_binary(y, b(shift)?, BinaryFn::Add)
                .ok_or_else(|| unsupported(graph, ni, "shape"))?
        }
        Op::Unary(u) => on_value!(args.pop().expect("x"), |t| apply_pointwise(u.f, t)),
        Op::Identity(_) | Op::Dropout(_) => args.pop().expect("x"),
        Op::MaxPool(p) => {
            let g = &p.geometry;
            let x = r4(graph, ni, args.pop().expect("x"))?;
            let o = MaxPoolOptions::new(g.kernel)
                .with_stride(g.strides)
                .with_padding_pairs([(g.pads[0], g.pads[2]), (g.pads[1], g.pads[3])])
                .with_ceil_mode(g.ceil_mode);
            Value::R4(max_pool2d(x, o))
        }
        Op::AveragePool(p) => {
            let g = &p.geometry;
            let x = r4(graph, ni, args.pop().expect("x"))?;
            let o = AvgPoolOptions::new(g.kernel)
                .with_stride(g.strides)
                .with_padding_pairs([(g.pads[0], g.pads[2]), (g.pads[1], g.pads[3])])
                .with_count_include_pad(p.count_include_pad)
                .with_ceil_mode(g.ceil_mode);
            Value::R4(avg_pool2d(x, o))
        }
        Op::GlobalAveragePool(_) => reshape(
            Value::R4(r4(graph, ni, args.pop().expect("x"))?.mean_dims(&[2, 3])),
            out_dims,
        )?,
        Op::Binary(bin) => {
            let f = bin.f;
            let b = args.pop().expect("b");
            let a = args.pop().expect("a");
            broadcast_binary(a, b, f)
                .ok_or_else(|| unsupported(graph, ni, "operands do not broadcast"))?
        }
        Op::Concat(c) => {
            let axis =
                normalize_axis(c.axis, args[0].rank()).map_err(|e| unsupported(graph, ni, e.0))?;
            layout::concat(args, axis).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Transpose(t) => {
            layout::transpose(t, args.pop().expect("x")).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Slice(sl) => {
            layout::slice(sl, args.pop().expect("x")).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Pad(p) => {
            layout::pad(p, args.pop().expect("x")).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::LayerNorm(ln) => {
            let bias = if args.len() == 3 { args.pop() } else { None };
            let scale = args.pop().expect("scale");
            let x = args.pop().expect("x");
            layout::layer_norm(ln, x, scale, bias).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::BatchMatMul(_) => {
            let b = args.pop().expect("B");
            let a = args.pop().expect("A");
            layout::batch_matmul(a, b).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Reduce(r) => layout::reduce(r, args.pop().expect("x"), out_dims)
            .map_err(|m| unsupported(graph, ni, m))?,
        Op::Gather(g) => {
            let idx = args.pop().expect("indices");
            let data = args.pop().expect("data");
            layout::gather(g, data, idx, out_dims).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Where(_) => {
            let y = args.pop().expect("y");
            let x = args.pop().expect("x");
            let c = args.pop().expect("cond");
            layout::select(c, x, y, out_dims).map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Expand(_) => {
            args.truncate(1);
            layout::expand(args.pop().expect("x"), out_dims)
                .map_err(|m| unsupported(graph, ni, m))?
        }
        Op::Flatten(_) | Op::Reshape(_) => reshape(args.pop().expect("x"), out_dims)?,
        Op::Softmax(s) => {
            let x = args.pop().expect("x");
            let axis = normalize_axis(s.axis, x.rank()).map_err(|e| unsupported(graph, ni, e.0))?;
            on_value!(x, |t| softmax(t, axis))
        }
    })
}

/// Mean and biased variance over `reduce` axes, kept as broadcastable values.
fn batch_moments(x: Value, reduce: &[usize]) -> Option<(Value, Value)> {
    Some(match x {
        Value::R2(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R2(m), Value::R2(v))
        }
        Value::R3(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R3(m), Value::R3(v))
        }
        Value::R4(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R4(m), Value::R4(v))
        }
        Value::R5(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R5(m), Value::R5(v))
        }
        Value::R1(_) => return None,
    })
}
