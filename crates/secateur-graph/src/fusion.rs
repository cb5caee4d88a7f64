//! The one fusion rule of the project, read by the runtime (which executes a fused layer as one
//! kernel) and by the cost model (which prices the layers the runtime executes). A weighted
//! layer with a constant weight absorbs, in this order: a per-channel affine normalisation
//! (inference batch norm) over its output channels, or the addition of a constant per-channel
//! bias (a linear layer exported as MatMul then Add); an element-wise function (ReLU, Clip,
//! SiLU, HardSwish, GELU, ...); a residual addition of a value of the same shape computed
//! before the layer (a ResNet or MobileNetV2 shortcut); and an element-wise function after
//! it. Kernels apply all of it in their epilogue. Each absorbed node must be the sole reader of
//! the value before it, that value must not be a graph output, and the absorbed node's input
//! must not be quantized (the rounding between the two would be lost).

use crate::graph::Graph;
use crate::ops::{BinaryFn, OpClass, Pointwise, Port};
use crate::shape::Shape;
use std::collections::HashMap;

/// A weighted layer with what follows it fused in.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedChain {
    /// The weighted layer's node index.
    pub layer: usize,
    /// The folded normalisation node, if any.
    pub affine: Option<usize>,
    /// The addition of a constant per-output-channel bias and that constant, if any.
    pub bias: Option<(usize, String)>,
    /// The element-wise function applied next: its node and function.
    pub activation: Option<(usize, Pointwise)>,
    /// The residual addition: its node and the value added (computed before the layer).
    pub residual: Option<(usize, String)>,
    /// The element-wise function after the residual addition.
    pub post_activation: Option<(usize, Pointwise)>,
    /// The value the chain produces (the last absorbed node's output).
    pub output: String,
}

impl FusedChain {
    /// The absorbed nodes, in execution order.
    pub fn absorbed(&self) -> Vec<usize> {
        self.affine
            .into_iter()
            .chain(self.bias.as_ref().map(|b| b.0))
            .chain(self.activation.map(|a| a.0))
            .chain(self.residual.as_ref().map(|r| r.0))
            .chain(self.post_activation.map(|a| a.0))
            .collect()
    }
}

impl Graph {
    /// Whether node `ni` is a weighted layer whose weight (input 1) is a constant.
    pub fn is_weighted_layer(&self, ni: usize) -> bool {
        let node = &self.nodes[ni];
        node.op.class() == OpClass::WeightedLayer
            && node
                .inputs
                .get(1)
                .is_some_and(|w| self.initializers.contains_key(w))
    }

    /// The single reader of `value`, when there is exactly one and `value` is not an output.
    pub(crate) fn sole_reader(&self, value: &str) -> Option<usize> {
        let c = self.consumers(value);
        (c.len() == 1 && !self.outputs.iter().any(|o| o == value)).then(|| c[0])
    }

    pub(crate) fn input_quantized(&self, ni: usize) -> bool {
        self.quantization
            .as_ref()
            .is_some_and(|q| q.activations.contains_key(&self.nodes[ni].name))
    }

    /// The output axis of layer `ni` that indexes its output channels (the one linked to the
    /// weight's output-channel axis).
    fn channel_axis(&self, ni: usize, shapes: &HashMap<String, Shape>) -> Option<usize> {
        let node = &self.nodes[ni];
        let sem = node.op.sem();
        let ins: Vec<Shape> = node.inputs.iter().map(|v| shapes[v].clone()).collect();
        let outs: Vec<Shape> = node.outputs.iter().map(|v| shapes[v].clone()).collect();
        let out_axis = sem
            .param_axes(&ins)
            .into_iter()
            .find(|(i, _)| *i == 1)?
            .1
            .iter()
            .position(|r| *r == crate::ops::AxisRole::OutChannels)?;
        sem.axis_links(&ins, &outs).into_iter().find_map(|l| {
            let ends = [(l.a, l.b), (l.b, l.a)];
            ends.into_iter().find_map(|(x, y)| {
                (x == (Port::Input(1), out_axis) && matches!(y.0, Port::Output(0))).then_some(y.1)
            })
        })
    }

    /// The fused chain starting at weighted layer `ni` (nothing absorbed when `ni` is not a
    /// weighted layer with a constant weight).
    pub fn fused_chain(&self, ni: usize, shapes: &HashMap<String, Shape>) -> FusedChain {
        let mut chain = FusedChain {
            layer: ni,
            affine: None,
            bias: None,
            activation: None,
            residual: None,
            post_activation: None,
            output: self.nodes[ni].outputs[0].clone(),
        };
        if !self.is_weighted_layer(ni) {
            return chain;
        }
        if let Some(c) = self.sole_reader(&chain.output)
            && self.nodes[c].op.class() == OpClass::ChannelAffine
            && self.nodes[c].inputs[1..]
                .iter()
                .all(|i| self.initializers.contains_key(i))
            && !self.input_quantized(c)
            && self.channel_axis(ni, shapes) == Some(1)
        {
            chain.affine = Some(c);
            chain.output = self.nodes[c].outputs[0].clone();
        } else if let Some((c, b)) = self.next_bias(ni, &chain.output, shapes) {
            chain.bias = Some((c, b));
            chain.output = self.nodes[c].outputs[0].clone();
        }
        if let Some((c, f)) = self.next_pointwise(&chain.output) {
            chain.activation = Some((c, f));
            chain.output = self.nodes[c].outputs[0].clone();
        }
        if let Some((c, other)) = self.next_residual(ni, &chain.output, shapes) {
            chain.residual = Some((c, other));
            chain.output = self.nodes[c].outputs[0].clone();
            if let Some((c, f)) = self.next_pointwise(&chain.output) {
                chain.post_activation = Some((c, f));
                chain.output = self.nodes[c].outputs[0].clone();
            }
        }
        chain
    }

    /// The two-input addition (not quantized) that is the sole reader of `value`, and its
    /// other operand.
    fn sole_add_reader(&self, value: &str) -> Option<(usize, &String)> {
        let c = self.sole_reader(value)?;
        let node = &self.nodes[c];
        if node.op.class() != OpClass::Binary(BinaryFn::Add)
            || node.inputs.len() != 2
            || self.input_quantized(c)
        {
            return None;
        }
        let other = if node.inputs[0] == value {
            &node.inputs[1]
        } else {
            &node.inputs[0]
        };
        Some((c, other))
    }

    /// The addition that is the sole reader of `value` (layer `ni`'s output) and adds a
    /// constant with one value per output channel, broadcast over every other axis: returns
    /// the Add node and the constant.
    fn next_bias(
        &self,
        ni: usize,
        value: &str,
        shapes: &HashMap<String, Shape>,
    ) -> Option<(usize, String)> {
        let (c, other) = self.sole_add_reader(value)?;
        let node = &self.nodes[c];
        let t = self.initializers.get(other)?;
        let out = shapes.get(value)?;
        let axis = self.channel_axis(ni, shapes)?;
        let channels = out.dim(axis)?;
        // the constant's shape, right-aligned against the output: size 1 except the channels
        let offset = out.rank().checked_sub(t.rank())?;
        let per_channel = t.len() == channels
            && t.shape()
                .iter()
                .enumerate()
                .all(|(k, &d)| d == 1 || (k + offset == axis && d == channels));
        (per_channel && shapes.get(&node.outputs[0]) == Some(out)).then(|| (c, other.clone()))
    }

    /// The element-wise function that is the sole reader of `value` (not a graph output, the
    /// function's input not quantized): what a step producing `value` may apply itself.
    pub fn next_pointwise(&self, value: &str) -> Option<(usize, Pointwise)> {
        let c = self.sole_reader(value)?;
        let OpClass::Pointwise(f) = self.nodes[c].op.class() else {
            return None;
        };
        (!self.input_quantized(c)).then_some((c, f))
    }

    /// The addition that is the sole reader of `value` (an output of layer `ni`'s chain) and
    /// adds a value of the same shape computed before node `ni`: returns the Add node and that
    /// value.
    fn next_residual(
        &self,
        ni: usize,
        value: &str,
        shapes: &HashMap<String, Shape>,
    ) -> Option<(usize, String)> {
        let (c, other) = self.sole_add_reader(value)?;
        let earlier = self.inputs.iter().any(|i| &i.name == other)
            || self.nodes[..ni].iter().any(|n| n.outputs.contains(other));
        let same_shape = shapes.get(other) == shapes.get(value);
        (other != value && earlier && same_shape && !self.initializers.contains_key(other))
            .then(|| (c, other.clone()))
    }

    /// Every fused chain of the graph, in node order; a node absorbed by one chain starts none.
    pub fn fused_chains(&self) -> crate::error::Result<Vec<FusedChain>> {
        let shapes = self.infer_shapes()?;
        let mut absorbed = vec![false; self.nodes.len()];
        let mut chains = Vec::new();
        for ni in 0..self.nodes.len() {
            if absorbed[ni] || !self.is_weighted_layer(ni) {
                continue;
            }
            let chain = self.fused_chain(ni, &shapes);
            for a in chain.absorbed() {
                absorbed[a] = true;
            }
            chains.push(chain);
        }
        Ok(chains)
    }
}

#[cfg(test)]
mod tests {
    use crate::builder::{Activation, GraphBuilder};
    use crate::ops::{Op, Unary};

    #[test]
    fn conv_bn_relu_fuse_and_a_shared_value_stops_the_chain() {
        let (mut b, x) = GraphBuilder::new("t", &[3, 8, 8], 1);
        let y = b.conv_bn("a", &x, 4, 3, 1, 1, Activation::Relu).unwrap();
        let z = b.conv_bn("b", &y, 4, 3, 1, 1, Activation::None).unwrap();
        let s = b
            .node("sig", Op::Unary(Unary::SIGMOID), &[&z], vec![])
            .unwrap();
        let g = b.finish(&s).unwrap();
        let chains = g.fused_chains().unwrap();
        assert_eq!(chains.len(), 2);
        let name = |i: usize| g.nodes[i].name.as_str();
        assert_eq!(name(chains[0].layer), "a.conv");
        assert_eq!(chains[0].affine.map(name), Some("a.bn"));
        assert_eq!(chains[0].activation.map(|a| name(a.0)), Some("a.relu"));
        // any element-wise function fuses
        assert_eq!(chains[1].affine.map(name), Some("b.bn"));
        assert_eq!(chains[1].activation.map(|a| name(a.0)), Some("sig"));
        assert_eq!(chains[1].output, g.outputs[0]);
    }

    #[test]
    fn a_shortcut_fuses_into_the_later_branch_with_the_activation_after_it() {
        use crate::ops::{Binary, BinaryFn, Pointwise};
        let (mut b, x) = GraphBuilder::new("t", &[4, 8, 8], 1);
        let a = b.conv_bn("a", &x, 4, 3, 1, 1, Activation::Relu).unwrap();
        let c = b.conv_bn("c", &a, 4, 3, 1, 1, Activation::None).unwrap();
        let sum = b
            .node(
                "add",
                Op::Binary(Binary { f: BinaryFn::Add }),
                &[&c, &a],
                vec![],
            )
            .unwrap();
        let r = b
            .node("relu", Op::Unary(Unary::RELU), &[&sum], vec![])
            .unwrap();
        let g = b.finish(&r).unwrap();
        let chains = g.fused_chains().unwrap();
        let name = |i: usize| g.nodes[i].name.as_str();
        // `a` is read twice: its chain ends at its ReLU; `c` adds it and applies the ReLU
        assert_eq!(chains[0].residual, None);
        assert_eq!(
            chains[1]
                .residual
                .as_ref()
                .map(|r| (name(r.0), r.1.as_str())),
            Some(("add", a.as_str()))
        );
        assert_eq!(
            chains[1].post_activation,
            Some((g.nodes.len() - 1, Pointwise::Relu))
        );
        assert_eq!(chains[1].output, g.outputs[0]);
        assert_eq!(chains[1].absorbed().len(), 3);
    }

    /// A linear layer exported as MatMul then Add of its bias absorbs the bias, the GELU after
    /// it, and (for the FFN's second layer) the residual addition.
    #[test]
    fn matmul_bias_activation_and_residual_fuse() {
        use crate::bert::{BertConfig, HiddenAct, Pooling, random_bert};
        let cfg = BertConfig {
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 8,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: HiddenAct::Gelu,
            position_offset: 0,
        };
        let g = random_bert(&cfg, 4, Pooling::Mean, 1).unwrap();
        let chains = g.fused_chains().unwrap();
        let name = |i: usize| g.nodes[i].name.as_str();
        let ffn = chains
            .iter()
            .find(|c| name(c.layer) == "encoder.layer.0.intermediate.dense/MatMul")
            .unwrap();
        assert_eq!(
            name(ffn.bias.as_ref().unwrap().0),
            "encoder.layer.0.intermediate.dense/Add"
        );
        assert_eq!(
            name(ffn.activation.unwrap().0),
            "encoder.layer.0.intermediate/act"
        );
        let out = chains
            .iter()
            .find(|c| name(c.layer) == "encoder.layer.0.output.dense/MatMul")
            .unwrap();
        assert!(out.bias.is_some() && out.activation.is_none());
        assert_eq!(
            name(out.residual.as_ref().unwrap().0),
            "encoder.layer.0.output/Add"
        );
    }
}
