//! The operator set of the IR and the contract every operator fulfils ([`OpSemantics`]): shape
//! inference, which axes of its inputs and outputs are the same index space ([`AxisLink`]),
//! which inputs are parameters and what each of their axes means ([`AxisRole`]), how its
//! attributes follow when a linked axis shrinks, its MAC count, and a plain reference
//! evaluation. Pruning, cost models and the runtime read these declarations instead of
//! switching on the operator type.

mod activation;
mod batchnorm;
mod broadcast;
mod class;
mod concat;
mod conv;
mod cumsum;
mod expand;
mod gather;
mod gather_elements;
mod gemm;
mod layernorm;
mod matmul;
mod pool;
mod reduce;
mod reshape;
mod resize;
mod select;
mod slice;
mod softmax;
mod transpose;

pub use activation::{Identity, Unary};
pub use batchnorm::BatchNorm;
pub use broadcast::{Binary, broadcast_shapes};
pub use class::{BinaryFn, OpClass, Pointwise, erf};
pub use concat::{Concat, normalize_axis};
pub use conv::Conv;
pub use cumsum::CumSum;
pub use expand::Expand;
pub use gather::Gather;
pub use gather_elements::GatherElements;
pub use gemm::{Gemm, MatMul};
pub use layernorm::LayerNorm;
pub use matmul::{BatchMatMul, MatrixProducts};
pub use pool::{AveragePool, GlobalAveragePool, MaxPool, PoolGeometry};
pub use reduce::{Reduce, ReduceKind};
pub use reshape::{Flatten, Reshape};
pub use resize::{NearestRounding, Resize, ResizeCoordinates, ResizeMode, Tap};
pub use select::Where;
pub use slice::{Pad, PadMode, Slice};
pub use softmax::Softmax;
pub use transpose::{Transpose, transpose_tensor};

use crate::error::OpError;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// An input or output slot of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Port {
    Input(usize),
    Output(usize),
}

/// How indices along one axis correspond to indices along another: index `i` of the first
/// side is the same channel as indices `offset + i * scale + s` for `s < width` on the second.
/// Identity is `(0, 1, 1)`; a concatenation shifts by `offset`; flattening `C×H×W` into a
/// vector maps channel `i` to a block of `H·W` features (`scale = width = H·W`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexMap {
    pub offset: usize,
    pub scale: usize,
    pub width: usize,
}

impl IndexMap {
    pub const IDENTITY: IndexMap = IndexMap {
        offset: 0,
        scale: 1,
        width: 1,
    };

    pub fn offset(offset: usize) -> Self {
        IndexMap {
            offset,
            scale: 1,
            width: 1,
        }
    }

    pub fn block(inner: usize) -> Self {
        IndexMap {
            offset: 0,
            scale: inner,
            width: inner,
        }
    }

    /// The indices on the second side that correspond to index `i` of the first.
    pub fn image(&self, i: usize) -> std::ops::Range<usize> {
        let start = self.offset + i * self.scale;
        start..start + self.width
    }
}

/// A declaration that axis `a.1` of port `a.0` and axis `b.1` of port `b.0` index the same
/// channels, related by `map` (from `a` to `b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxisLink {
    pub a: (Port, usize),
    pub b: (Port, usize),
    pub map: IndexMap,
}

impl AxisLink {
    pub fn identity(a: (Port, usize), b: (Port, usize)) -> Self {
        AxisLink {
            a,
            b,
            map: IndexMap::IDENTITY,
        }
    }
}

/// What an axis of a parameter tensor means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AxisRole {
    /// Output channels or features: one slice per produced channel (a filter, a neuron).
    OutChannels,
    /// Input channels or features: the slice that reads one incoming channel.
    InChannels,
    /// A spatial kernel axis.
    Kernel,
    /// A per-channel vector (bias, batch-norm statistics and affine parameters).
    Channel,
}

/// What a node input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InputRole {
    /// An activation flowing through the network.
    Data,
    /// A multiplicative weight (conv kernel, linear matrix): what masks and sparse kernels act on.
    Weight,
    /// An additive bias.
    Bias,
    /// Normalisation scale (batch-norm or layer-norm gamma).
    BnScale,
    /// Normalisation shift (batch-norm or layer-norm beta).
    BnShift,
    /// Batch-norm running mean.
    BnMean,
    /// Batch-norm running variance.
    BnVar,
    /// Positions to gather (integers held as values): data, never trained or pruned.
    Indices,
}

impl InputRole {
    /// Whether inputs in this role are trained parameters (running statistics are not).
    pub fn is_trainable(self) -> bool {
        matches!(
            self,
            InputRole::Weight | InputRole::Bias | InputRole::BnScale | InputRole::BnShift
        )
    }
}

/// The semantics an operator declares about itself.
pub trait OpSemantics {
    /// The ONNX operator type this op corresponds to.
    fn op_type(&self) -> &'static str;

    /// What the operator is (weighted layer, element-wise function, view, ...).
    fn class(&self) -> OpClass {
        OpClass::Other
    }

    /// The kind and geometry by which a latency table tells this layer's kernels apart, from
    /// the concrete input shapes (batch 1).
    fn kernel_signature(&self, inputs: &[Vec<usize>]) -> (&'static str, String) {
        let spatial = inputs.first().and_then(|s| s.get(2..)).unwrap_or(&[]);
        (self.op_type(), format!("in{spatial:?}"))
    }

    /// The input and output widths by which a latency table interpolates between pruned
    /// variants of this layer, from the concrete shapes (batch 1): the channels (axis 1) of
    /// the first input and of the output.
    fn kernel_widths(&self, inputs: &[Vec<usize>], output: &[usize]) -> (usize, usize) {
        let first = inputs.first().and_then(|s| s.get(1)).copied();
        (first.unwrap_or(1), output.get(1).copied().unwrap_or(1))
    }

    /// Accepted number of inputs.
    fn input_count(&self) -> RangeInclusive<usize> {
        1..=1
    }

    /// What each input is, given how many inputs the node has.
    fn input_roles(&self, n_inputs: usize) -> Vec<InputRole> {
        vec![InputRole::Data; n_inputs]
    }

    /// Meaning of every axis of each parameter input (by input index).
    fn param_axes(&self, _inputs: &[Shape]) -> Vec<(usize, Vec<AxisRole>)> {
        Vec::new()
    }

    /// Output shapes from input shapes; errors explain what was expected.
    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError>;

    /// Which input and output axes index the same channels. Any non-batch axis of a port that
    /// no link mentions is *pinned*: its size must not change.
    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink>;

    /// Inputs the operator reads for their shape only, never their values (the batch source of
    /// an `Expand` to a batch-sized shape): a node whose other inputs are constants computes a
    /// constant.
    fn shape_only_inputs(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Whether an output value at one batch index may depend on inputs at another (a softmax
    /// or reduction over the batch axis). Ops that move the batch axis change their output
    /// shapes, which [`crate::Graph::samples_independent`] checks on its own.
    fn mixes_samples(&self, _inputs: &[Shape]) -> bool {
        false
    }

    /// Axes of the inputs (input index, axis) that index independent matrix products: the
    /// leading axes (after the batch) of a product of activations, such as the heads of
    /// attention scores `[batch, heads, seq, seq]`. Pruning calls the channels of such an axis
    /// heads.
    fn product_axes(&self, _inputs: &[Shape]) -> Vec<(usize, usize)> {
        Vec::new()
    }

    /// Axes split into equal consecutive blocks that pruning must shrink evenly, as
    /// `(port, axis, blocks)`: the output channels of a grouped convolution form `groups`
    /// blocks, and every block must keep the same number of channels so that each filter
    /// still reads its own group's inputs.
    fn axis_blocks(&self, _inputs: &[Shape], _outputs: &[Shape]) -> Vec<(Port, usize, usize)> {
        Vec::new()
    }

    /// Updates attributes after linked axes were resized from `old` to `new` input shapes
    /// (e.g. the group count of a depthwise convolution, a literal size in a reshape).
    fn refit(&mut self, _old: &[Shape], _new: &[Shape]) -> Result<(), OpError> {
        Ok(())
    }

    /// Axes that no link relates but that pruning may still resize, as `(port, axis)`: each
    /// index along them is independent and the op sizes them from an attribute, which
    /// [`OpSemantics::refit_outputs`] updates (the axis an `Expand` broadcasts a size-1 axis
    /// along: the query heads one shared key/value head is repeated for). Every other unlinked
    /// axis pins the channels it meets.
    fn free_axes(&self, _inputs: &[Shape], _outputs: &[Shape]) -> Vec<(Port, usize)> {
        Vec::new()
    }

    /// Updates attributes after pruning resized free output axes ([`OpSemantics::free_axes`])
    /// to the `new` output shapes.
    fn refit_outputs(&mut self, _new: &[Shape]) -> Result<(), OpError> {
        Ok(())
    }

    /// Multiply-accumulate operations for concrete input and output shapes (dense execution).
    fn macs(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    /// Other arithmetic operations (comparisons, additions, exponentials) per inference.
    fn elementwise_ops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        outputs
            .iter()
            .map(|s| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// Reference evaluation with obvious loops: the oracle every faster path is tested against.
    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError>;
}

/// Every operator the IR supports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Conv(Conv),
    Gemm(Gemm),
    MatMul(MatMul),
    BatchNorm(BatchNorm),
    Unary(Unary),
    MaxPool(MaxPool),
    AveragePool(AveragePool),
    GlobalAveragePool(GlobalAveragePool),
    Binary(Binary),
    Concat(Concat),
    Flatten(Flatten),
    Reshape(Reshape),
    Identity(Identity),
    Dropout(Identity),
    Softmax(Softmax),
    Transpose(Transpose),
    Slice(Slice),
    Pad(Pad),
    LayerNorm(LayerNorm),
    BatchMatMul(BatchMatMul),
    Expand(Expand),
    Reduce(Reduce),
    Gather(Gather),
    Where(Where),
    CumSum(CumSum),
    GatherElements(GatherElements),
    Resize(Resize),
}

impl Op {
    /// The op's semantics.
    pub fn sem(&self) -> &dyn OpSemantics {
        match self {
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

    /// Mutable access to the op's semantics (for [`OpSemantics::refit`]).
    pub fn sem_mut(&mut self) -> &mut dyn OpSemantics {
        match self {
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

    /// What the operator is.
    pub fn class(&self) -> OpClass {
        self.sem().class()
    }

    /// The ONNX type name (Dropout reports itself as Dropout even though it evaluates as
    /// identity at inference).
    pub fn op_type(&self) -> &'static str {
        match self {
            Op::Dropout(_) => "Dropout",
            other => other.sem().op_type(),
        }
    }
}

/// Links every axis of input 0 to the same axis of output 0 (element-wise unary ops).
pub(crate) fn all_axes_identity(rank: usize) -> Vec<AxisLink> {
    (0..rank)
        .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
        .collect()
}

/// Checks that `shape` has the expected rank.
pub(crate) fn expect_rank(shape: &Shape, rank: usize, what: &str) -> Result<(), OpError> {
    if shape.rank() != rank {
        crate::op_bail!("{what} must have rank {rank}, got shape {shape}");
    }
    Ok(())
}

/// The known size of `axis`, or an error naming `what`.
pub(crate) fn known_dim(shape: &Shape, axis: usize, what: &str) -> Result<usize, OpError> {
    shape.dim(axis).ok_or_else(|| {
        OpError::new(format!(
            "{what} axis {axis} of shape {shape} must have a known size"
        ))
    })
}
