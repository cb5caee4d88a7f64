//! Compile-time rewrites of layers: a batch norm that directly follows a Conv/Gemm/MatMul is
//! folded into its weights and bias (`w' = w·γ/σ`, `b' = (b − μ)·γ/σ + β`, zeros stay zero),
//! and a following ReLU / Clip becomes the kernel's activation, so the three nodes run as one.

use crate::kernels::Activation;
use secateur_graph::{Graph, Op, Tensor};

/// A Conv/Gemm/MatMul layer with what follows it fused in.
#[derive(Clone, Debug)]
pub struct FusedLayer {
    /// Index of the Conv/Gemm/MatMul node.
    pub node: usize,
    /// Nodes absorbed (batch norm, activation), executed as part of this layer.
    pub absorbed: Vec<usize>,
    /// Weight as a row-major matrix `[out × in]` (conv: `[C_out, C_in/g · kh · kw]`).
    pub weight: Tensor,
    pub bias: Vec<f32>,
    pub act: Activation,
    /// The value the fused layer produces (the last absorbed node's output).
    pub output: String,
}

/// The single consumer of `value`, when there is exactly one and `value` is not a graph output.
fn sole_consumer(graph: &Graph, value: &str) -> Option<usize> {
    let c = graph.consumers(value);
    (c.len() == 1 && !graph.outputs.iter().any(|o| o == value)).then(|| c[0])
}

/// Builds the fused form of layer `node` (a Conv, Gemm or MatMul with a constant weight).
pub fn fuse_layer(
    graph: &Graph,
    node: usize,
    weight_rows: Tensor,
    bias: Vec<f32>,
    allow_act: bool,
) -> FusedLayer {
    let mut w = weight_rows;
    let mut b = bias;
    let mut absorbed = Vec::new();
    let mut out = graph.nodes[node].outputs[0].clone();
    let rows = w.shape()[0];
    let cols = w.len() / rows.max(1);
    // batch norm over the layer's output channels
    if let Some(c) = sole_consumer(graph, &out)
        && let Op::BatchNorm(bn) = &graph.nodes[c].op
        && graph.nodes[c].inputs[1..]
            .iter()
            .all(|i| graph.initializers.contains_key(i))
        && graph
            .quantization
            .as_ref()
            .is_none_or(|q| !q.activations.contains_key(&graph.nodes[c].name))
    {
        let p = |k: usize| {
            graph.initializers[&graph.nodes[c].inputs[k]]
                .data()
                .to_vec()
        };
        let (gamma, beta, mean, var) = (p(1), p(2), p(3), p(4));
        if gamma.len() == rows {
            for r in 0..rows {
                let s = gamma[r] / (var[r] + bn.epsilon).sqrt();
                for v in &mut w.data_mut()[r * cols..(r + 1) * cols] {
                    *v *= s;
                }
                b[r] = (b[r] - mean[r]) * s + beta[r];
            }
            absorbed.push(c);
            out = graph.nodes[c].outputs[0].clone();
        }
    }
    let mut act = Activation::None;
    if allow_act && let Some(c) = sole_consumer(graph, &out) {
        let quantized_next = graph
            .quantization
            .as_ref()
            .is_some_and(|q| q.activations.contains_key(&graph.nodes[c].name));
        match &graph.nodes[c].op {
            Op::Relu(_) if !quantized_next => act = Activation::Relu,
            Op::Clip(cl) if !quantized_next => {
                act = Activation::Clip {
                    min: cl.min,
                    max: cl.max,
                }
            }
            _ => {}
        }
        if act != Activation::None {
            absorbed.push(c);
            out = graph.nodes[c].outputs[0].clone();
        }
    }
    FusedLayer {
        node,
        absorbed,
        weight: w,
        bias: b,
        act,
        output: out,
    }
}
