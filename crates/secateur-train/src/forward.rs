//! The burn interpreter: runs a compiled graph on burn tensors, op by op (each op's lowering
//! is in `lower/`), in training mode
//! (batch-norm batch statistics, returned so the caller can update running statistics) or
//! evaluation mode, optionally with int8 fake quantization of weights and activations and with
//! activation-range observation for calibration. Gradients flow through every op by burn's
//! autodiff when the parameters are autodiff leaves.

use crate::error::{Result, TrainError};
use crate::lower::{OpCall, lowering};
use crate::program::{Program, Source};
use crate::quant::FakeQuant;
use crate::value::{MAX_RANK, Value};
use burn::tensor::Tensor;
use secateur_graph::{Graph, OpClass};

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

/// Intermediate outputs to keep: the output of each listed node, in list order.
#[derive(Default)]
pub struct Taps {
    pub nodes: Vec<usize>,
    pub values: Vec<Option<Value>>,
}

impl Taps {
    pub fn new(nodes: Vec<usize>) -> Taps {
        let values = vec![None; nodes.len()];
        Taps { nodes, values }
    }
}

/// How to run the forward pass.
pub struct ForwardCtx<'a> {
    pub train: bool,
    pub quant: Option<&'a FakeQuant>,
    pub observer: Option<&'a mut dyn ActivationObserver>,
    pub taps: Option<&'a mut Taps>,
}

impl ForwardCtx<'_> {
    pub fn eval() -> Self {
        ForwardCtx {
            train: false,
            quant: None,
            observer: None,
            taps: None,
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
        if let Some(why) = lowering(&node.op).unsupported() {
            return Err(unsupported(graph, i, why));
        }
    }
    Ok(())
}

/// Runs the graph on one value per graph input; returns (output, logits) and, in training mode, batch-norm statistics.
pub fn forward(
    graph: &Graph,
    program: &Program,
    params: &[Tensor<1>],
    shapes: &[Vec<usize>],
    inputs: &[Value],
    ctx: &mut ForwardCtx,
) -> Result<(Value, Value, Vec<BnBatchStats>)> {
    let input = |k: usize| -> Result<Value> {
        inputs
            .get(k)
            .cloned()
            .ok_or_else(|| TrainError::Config(format!("graph input {k} was not given")))
    };
    let batch = input(0)?.dims()[0];
    let mut slots: Vec<Option<Value>> = vec![None; program.slots];
    let mut stats = Vec::new();
    for step in &program.steps {
        let node = &graph.nodes[step.node];
        let mut args: Vec<Value> = Vec::with_capacity(step.sources.len());
        for (k, s) in step.sources.iter().enumerate() {
            let v = match *s {
                Source::Input(k) => input(k)?,
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
        let mut call = OpCall {
            graph,
            node: step.node,
            sources: &step.sources,
            out_dims: &out_dims,
            train: ctx.train,
            stats: &mut stats,
        };
        let y = lowering(&node.op).forward(&mut call, args)?;
        if let Some(taps) = ctx.taps.as_deref_mut()
            && let Some(k) = taps.nodes.iter().position(|&n| n == step.node)
        {
            taps.values[k] = Some(y.clone());
        }
        slots[step.out_slot] = Some(y);
        for r in &step.release {
            slots[*r] = None;
        }
    }
    let get = |s: Source| -> Result<Value> {
        match s {
            Source::Input(k) => input(k),
            Source::Slot(i) => slots[i]
                .clone()
                .ok_or_else(|| TrainError::Config("missing output".into())),
            Source::Param(_) => Err(TrainError::Config("a weight cannot be the output".into())),
        }
    };
    Ok((get(program.output)?, get(program.logits)?, stats))
}
