//! The one fusion rule of the project, read by the runtime (which executes a fused layer as one
//! kernel) and by the cost model (which prices the layers the runtime executes). A weighted
//! layer with a constant weight absorbs a per-channel affine normalisation (inference batch
//! norm) over its output channels, then a clamp activation (ReLU, Clip) that its kernels apply
//! in their epilogue; each absorbed node must be the sole reader of the value before it, that
//! value must not be a graph output, and the absorbed node's input must not be quantized (the
//! rounding between the two would be lost).

use crate::graph::Graph;
use crate::ops::{OpClass, Port};
use crate::shape::Shape;
use std::collections::HashMap;

/// A weighted layer with what follows it fused in.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedChain {
    /// The weighted layer's node index.
    pub layer: usize,
    /// The folded normalisation node, if any.
    pub affine: Option<usize>,
    /// The fused clamp activation: its node and bounds `(min, max)`.
    pub activation: Option<(usize, (f32, f32))>,
    /// The value the chain produces (the last absorbed node's output).
    pub output: String,
}

impl FusedChain {
    /// The absorbed nodes, in execution order.
    pub fn absorbed(&self) -> Vec<usize> {
        self.affine
            .into_iter()
            .chain(self.activation.map(|a| a.0))
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
    fn sole_reader(&self, value: &str) -> Option<usize> {
        let c = self.consumers(value);
        (c.len() == 1 && !self.outputs.iter().any(|o| o == value)).then(|| c[0])
    }

    fn input_quantized(&self, ni: usize) -> bool {
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
            activation: None,
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
        }
        if let Some(c) = self.sole_reader(&chain.output)
            && let OpClass::Pointwise(f) = self.nodes[c].op.class()
            && let Some(bounds) = f.clamp_bounds()
            && !self.input_quantized(c)
        {
            chain.activation = Some((c, bounds));
            chain.output = self.nodes[c].outputs[0].clone();
        }
        chain
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
        // a sigmoid is no clamp: the chain ends at the batch norm
        assert_eq!(chains[1].affine.map(name), Some("b.bn"));
        assert_eq!(chains[1].activation, None);
        assert_eq!(
            chains[1].output,
            g.nodes[chains[1].affine.unwrap()].outputs[0]
        );
    }
}
