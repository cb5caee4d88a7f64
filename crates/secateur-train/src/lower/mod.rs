//! Per-op lowering to burn, registered like the ONNX converters: each IR op implements
//! [`TrainOp`] in the file of its family (`conv.rs`: convolution and pooling; `linear.rs`:
//! Gemm and the MatMuls; `norm.rs`: batch and layer normalisation; `elementwise.rs`:
//! pointwise functions, broadcasting binaries, Where, Softmax; `layout.rs`: data movement), and
//! [`lowering`] is the one place that maps an [`Op`] to its implementation. The interpreter
//! (`forward.rs`) never looks at op types.

mod conv;
mod elementwise;
mod layout;
mod linear;
mod norm;

use crate::error::TrainError;
use crate::forward::BnBatchStats;
use crate::program::Source;
use crate::value::Value;
use burn::tensor::Tensor;
use secateur_graph::{Graph, Op};

/// What a lowering sees besides its arguments: the node, where its inputs come from, its
/// output dims, the mode, and where batch-norm statistics go in training.
pub struct OpCall<'a> {
    pub graph: &'a Graph,
    pub node: usize,
    pub sources: &'a [Source],
    pub out_dims: &'a [usize],
    pub train: bool,
    pub stats: &'a mut Vec<BnBatchStats>,
}

impl OpCall<'_> {
    /// An error naming this node.
    pub fn err(&self, message: impl Into<String>) -> TrainError {
        let n = &self.graph.nodes[self.node];
        TrainError::Unsupported {
            node: n.name.clone(),
            op: n.op.op_type().into(),
            message: message.into(),
        }
    }

    pub fn reshape(&self, v: Value, dims: &[usize]) -> Result<Value, TrainError> {
        v.reshape(dims)
            .ok_or_else(|| self.err(format!("cannot reshape to {dims:?}")))
    }

    pub fn r4(&self, v: Value) -> Result<Tensor<4>, TrainError> {
        let dims = v.dims();
        v.into_r4()
            .ok_or_else(|| self.err(format!("expected a rank-4 input, got {dims:?}")))
    }

    pub fn r2(&self, v: Value) -> Result<Tensor<2>, TrainError> {
        let dims = v.dims();
        v.into_r2()
            .ok_or_else(|| self.err(format!("expected a rank-2 input, got {dims:?}")))
    }

    pub fn r1(&self, v: Value) -> Result<Tensor<1>, TrainError> {
        let n: usize = v.dims().iter().product();
        match v.reshape(&[n]) {
            Some(Value::R1(t)) => Ok(t),
            _ => Err(self.err("expected a vector")),
        }
    }
}

/// An op's forward pass on burn values (autodiff gives its backward pass).
pub trait TrainOp {
    /// Why this op cannot be trained with its attributes, if it cannot (checked before
    /// training starts).
    fn unsupported(&self) -> Option<&'static str> {
        None
    }

    /// The output from the node's arguments, in input order.
    fn forward(&self, call: &mut OpCall, args: Vec<Value>) -> Result<Value, TrainError>;
}

/// The lowering of `op`.
pub fn lowering(op: &Op) -> &dyn TrainOp {
    match op {
        Op::Conv(o) => o,
        Op::Gemm(o) => o,
        Op::MatMul(o) => o,
        Op::BatchNorm(o) => o,
        Op::Unary(o) => o,
        Op::MaxPool(o) => o,
        Op::AveragePool(o) => o,
        Op::GlobalAveragePool(o) => o,
        Op::Binary(o) => o,
        Op::Concat(o) => o,
        Op::Flatten(o) => o,
        Op::Reshape(o) => o,
        Op::Identity(o) | Op::Dropout(o) => o,
        Op::Softmax(o) => o,
        Op::Transpose(o) => o,
        Op::Slice(o) => o,
        Op::Pad(o) => o,
        Op::LayerNorm(o) => o,
        Op::BatchMatMul(o) => o,
        Op::Expand(o) => o,
        Op::Reduce(o) => o,
        Op::Gather(o) => o,
        Op::Where(o) => o,
        Op::CumSum(o) => o,
        Op::GatherElements(o) => o,
        Op::Resize(o) => o,
    }
}

/// Takes the last argument (arguments are popped from the back, so a lowering reads its
/// inputs in reverse order).
fn pop(call: &OpCall, args: &mut Vec<Value>, what: &str) -> Result<Value, TrainError> {
    args.pop()
        .ok_or_else(|| call.err(format!("missing input: {what}")))
}
