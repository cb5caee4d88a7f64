//! Compile-time rewrites of layers along the graph's fusion rule ([`Graph::fused_chain`]): a
//! batch norm that directly follows a weighted layer is folded into its weights and bias
//! (`w' = w·γ/σ`, `b' = (b − μ)·γ/σ + β`, zeros stay zero); the element-wise function, residual
//! addition and function after it that the chain absorbs become the layer's [`Tail`] (a
//! constant per-channel bias addition joins the layer's bias), and a
//! clamp (ReLU, Clip) right after the layer is also its kernels' in-kernel activation.

use crate::kernels::{Activation, Tail};
use secateur_graph::{Graph, Op, Shape, Tensor};
use std::collections::HashMap;

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
    /// What the layer applies after adding the bias: the whole chain ([`Tail`]), of which
    /// `act` is the part kernels without a general epilogue apply in their store.
    pub tail: Tail,
    pub act: Activation,
    /// The value added by the residual addition, if the chain has one.
    pub residual: Option<String>,
    /// The value the fused layer produces (the last absorbed node's output).
    pub output: String,
}

/// An inference batch norm as a per-channel affine map `x·scale + shift`:
/// `scale = γ/√(σ² + ε)`, `shift = β − μ·scale`.
pub fn batch_norm_affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + epsilon).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// Builds the fused form of layer `node` (a weighted layer with a constant weight, given as
/// `[out × in]` rows and a bias) from the graph's fusion rule ([`Graph::fused_chain`]).
pub fn fuse_layer(
    graph: &Graph,
    shapes: &HashMap<String, Shape>,
    node: usize,
    weight_rows: Tensor,
    bias: Vec<f32>,
) -> FusedLayer {
    let chain = graph.fused_chain(node, shapes);
    let mut w = weight_rows;
    let mut b = bias;
    let mut absorbed = Vec::new();
    let mut out = graph.nodes[node].outputs[0].clone();
    let rows = w.shape()[0];
    let cols = w.len() / rows.max(1);
    if let Some(c) = chain.affine
        && let Op::BatchNorm(bn) = &graph.nodes[c].op
    {
        let p = |k: usize| {
            graph.initializers[&graph.nodes[c].inputs[k]]
                .data()
                .to_vec()
        };
        let (gamma, beta, mean, var) = (p(1), p(2), p(3), p(4));
        if gamma.len() == rows {
            let (scale, _) = batch_norm_affine(&gamma, &beta, &mean, &var, bn.epsilon);
            for (r, s) in scale.into_iter().enumerate() {
                for v in &mut w.data_mut()[r * cols..(r + 1) * cols] {
                    *v *= s;
                }
                b[r] = (b[r] - mean[r]) * s + beta[r];
            }
            absorbed.push(c);
            out = graph.nodes[c].outputs[0].clone();
        }
    }
    if let Some((c, constant)) = &chain.bias {
        let add = graph.initializers[constant].data();
        if add.len() == rows {
            b.iter_mut().zip(add).for_each(|(b, a)| *b += a);
            absorbed.push(*c);
            out = graph.nodes[*c].outputs[0].clone();
        }
    }
    let folded = (chain.affine.is_none() && chain.bias.is_none()) || !absorbed.is_empty();
    let mut tail = Tail::default();
    let mut residual = None;
    if folded {
        if let Some((c, f)) = chain.activation {
            tail.act = Some(f);
            absorbed.push(c);
            out = graph.nodes[c].outputs[0].clone();
        }
        if let Some((c, other)) = &chain.residual {
            tail.residual = true;
            residual = Some(other.clone());
            absorbed.push(*c);
            out = graph.nodes[*c].outputs[0].clone();
            if let Some((c, f)) = chain.post_activation {
                tail.post = Some(f);
                absorbed.push(c);
                out = graph.nodes[c].outputs[0].clone();
            }
        }
    }
    let act = tail.in_kernel_activation();
    FusedLayer {
        node,
        absorbed,
        weight: w,
        bias: b,
        tail,
        act,
        residual,
        output: out,
    }
}
