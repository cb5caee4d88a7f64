//! secateur's graph IR: the single representation of a model that every stage reads or
//! rewrites. ONNX import fills it, training runs on it, pruning returns patched copies of it,
//! cost models and the runtime read it, export writes it.
//!
//! A [`Graph`] holds [`Node`]s applying [`Op`]s to named values, weights as named [`Tensor`]s,
//! and weight [`Mask`]s. Each op declares its own semantics through [`OpSemantics`]; in
//! particular [`OpSemantics::axis_links`] tells which axes of its inputs and outputs index the
//! same channels, from which structured pruning derives its dependency groups.

pub mod attention_layout;
pub mod bert;
pub mod builder;
pub mod ensemble;
pub mod error;
pub mod eval;
pub mod fusion;
pub mod graph;
pub mod io;
pub mod mask;
pub mod ops;
pub mod precision;
pub mod quant;
pub mod rewrite;
pub mod shape;
pub mod sharing;
pub mod softmax_fusion;
pub mod summary;
pub mod synthetic;
pub mod tensor;
pub mod zoo;

pub use builder::{Activation, GraphBuilder};
pub use ensemble::ensemble;
pub use error::{GraphError, OpError, Result};
pub use eval::{evaluate, evaluate_all, evaluate_node, feed_values};
pub use fusion::FusedChain;
pub use graph::{ElemType, Graph, Node, NodeShapes, ValueInfo};
pub use mask::{Mask, MaskPattern, MatrixView};
pub use ops::*;
pub use precision::Precision;
pub use quant::{ActQuant, Quantization, fake_quant_weight, quantize_weight};
pub use shape::{Dim, Shape, checked_product, max_elements};
pub use softmax_fusion::ScaledSoftmax;
pub use summary::{GraphSummary, LayerSummary, summarize};
pub use synthetic::{InputKind, synthetic_inputs};
pub use tensor::{Tensor, numel, strides};
