//! Per-op lowering to execution steps, registered like the ONNX converters and the training
//! lowerings: each IR op implements [`RuntimeOp`] in the file of its family (`conv.rs` and
//! `linear.rs`: weighted layers with fusion and a measured kernel choice, sharing
//! `weights.rs`; `pool.rs`; `reduce.rs`; `elementwise.rs`: pointwise functions, broadcasting
//! binaries, `Expand` and softmax; `layout.rs`: concatenation and transposes), and
//! [`lowering`] is the one place that maps an [`Op`] to its implementation. An op without a
//! kernel keeps the default: its reference evaluation, checked on zeros of its input shapes
//! when the plan compiles.

mod conv;
mod conv_nhwc;
mod elementwise;
mod layout;
mod linear;
mod pool;
mod reduce;
mod weights;

use super::step::{StepKind, reference_step};
use super::{LayerChoice, PlanConfig};
use crate::error::Result;
use secateur_graph::{Graph, Node, Op, Shape};
use std::collections::HashMap;

/// What a lowering sees: the graph, value shapes, the node and the plan's settings.
pub(crate) struct LowerCx<'a> {
    pub graph: &'a Graph,
    pub shapes: &'a HashMap<String, Shape>,
    pub node: usize,
    pub config: PlanConfig,
    /// Whether the node's rank-4 activations (inputs and output) are channels-last.
    pub nhwc: bool,
    /// Whether the data input (the first) is channels-first in memory where it is now (the
    /// graph's input, or the output of a channels-first step), before any conversion.
    pub data_nchw: bool,
}

/// Whether an op runs on channels-last activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelsLast {
    /// Only on NCHW.
    No,
    /// In whichever layout its inputs arrive (element-wise ops).
    Follow,
    /// On NHWC, converting its input if it must (convolutions, pooling).
    Prefer,
}

impl LowerCx<'_> {
    pub fn node(&self) -> &Node {
        &self.graph.nodes[self.node]
    }

    /// The concrete shape of a value at the plan's batch size.
    pub fn value_shape(&self, v: &str) -> Vec<usize> {
        self.shapes[v].resolve(self.config.batch)
    }

    pub fn in_shape(&self, k: usize) -> Vec<usize> {
        self.value_shape(&self.node().inputs[k])
    }

    pub fn out_shape(&self) -> Vec<usize> {
        self.value_shape(&self.node().outputs[0])
    }

    /// A shape in the memory order of this node's layout: `[n, c, h, w]` as `[n, h, w, c]`
    /// under channels-last (shapes of lower rank are first aligned to rank 4).
    pub fn memory_order(&self, dims: &[usize], rank: usize) -> Vec<usize> {
        if !self.nhwc || rank != 4 {
            return dims.to_vec();
        }
        let mut d = vec![1; 4 - dims.len().min(4)];
        d.extend_from_slice(dims);
        vec![d[0], d[2], d[3], d[1]]
    }

    /// The node run by its reference evaluation.
    pub fn reference(&self) -> Result<Lowered> {
        let node = self.node();
        let shapes = node.inputs.iter().map(|v| self.value_shape(v));
        Ok(Lowered::plain(
            self,
            reference_step(&node.name, &node.op, shapes)?,
        ))
    }
}

/// A node lowered to its step.
pub(crate) struct Lowered {
    pub kind: StepKind,
    /// The kernel choice of a weighted layer.
    pub choice: Option<LayerChoice>,
    /// Nodes fused into this step.
    pub absorbed: Vec<usize>,
    /// The value the step produces and its number of elements.
    pub output: String,
    pub out_len: usize,
    /// Whether the step reads only the data input (a weighted layer holds its weights), and
    /// then the residual value its chain adds, if any.
    pub data_only: bool,
    pub residual: Option<String>,
    /// Whether the step quantizes its data input itself (an int8 kernel), so the graph's
    /// quantization of that input needs no simulation step before it.
    pub quantizes_input: bool,
    /// Whether the step reads its data input channels-first although it runs channels-last
    /// (a stem convolution reading the graph's input), so no conversion precedes it.
    pub reads_nchw: bool,
    /// Set when the node moves no data in this plan: its output is its data input's memory as
    /// it is now, read in this layout (a transpose between channels-first and channels-last
    /// axis orders of a value already stored in the target order).
    pub relabels: Option<super::build::Layout>,
}

impl Lowered {
    /// A step computing the node's own output from all its inputs.
    pub fn plain(cx: &LowerCx, kind: StepKind) -> Self {
        let output = cx.node().outputs[0].clone();
        Lowered {
            kind,
            choice: None,
            absorbed: Vec::new(),
            out_len: cx.value_shape(&output).iter().product(),
            output,
            data_only: false,
            residual: None,
            quantizes_input: false,
            reads_nchw: false,
            relabels: None,
        }
    }

    /// A weighted layer's step with its fused nodes and kernel choice.
    /// A weighted layer's lowering before its step is chosen: what it absorbs and produces.
    fn layer_shell(prep: &weights::Prepared) -> Self {
        Lowered {
            kind: StepKind::Pointwise(secateur_graph::Pointwise::Neg),
            choice: None,
            absorbed: prep.absorbed.clone(),
            output: prep.output.clone(),
            out_len: prep.out_len,
            data_only: true,
            residual: prep.fused.residual.clone(),
            quantizes_input: false,
            reads_nchw: false,
            relabels: None,
        }
    }

    /// The shell with its step and kernel choice.
    fn with(mut self, kind: StepKind, choice: LayerChoice) -> Self {
        self.quantizes_input = kind.quantizes_input();
        self.reads_nchw = kind.reads_nchw();
        self.kind = kind;
        self.choice = Some(choice);
        self
    }
}

/// How an op runs in the runtime.
pub(crate) trait RuntimeOp {
    /// Whether the node at `cx` can run channels-last; `lower` then sees `cx.nhwc`.
    fn channels_last(&self, _cx: &LowerCx) -> ChannelsLast {
        ChannelsLast::No
    }

    /// The step (and fused nodes) of the node at `cx`.
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        cx.reference()
    }
}

/// The lowering of `op`.
pub(crate) fn lowering(op: &Op) -> &dyn RuntimeOp {
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

// ops that run by their reference evaluation (or alias their input, for views)
impl RuntimeOp for secateur_graph::Flatten {}
impl RuntimeOp for secateur_graph::Reshape {}
impl RuntimeOp for secateur_graph::Identity {}
impl RuntimeOp for secateur_graph::CumSum {}
impl RuntimeOp for secateur_graph::GatherElements {}
impl RuntimeOp for secateur_graph::Resize {}
