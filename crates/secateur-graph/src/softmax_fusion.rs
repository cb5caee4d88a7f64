//! The fusion rule of a softmax's input, read by the runtime: attention scores scaled by a
//! constant and masked by an additive mask right before their softmax along the last axis
//! (`softmax(s·x + m)`, a transformer's `scores / √d + mask`) run as one step, whose first
//! pass over each row computes the scaled, masked value, so neither the scaled nor the masked
//! scores reach memory. The chain starts at the scaling (a multiplication by, or a division by,
//! a one-element constant, the scores being the first operand) or, without one, at the
//! addition (the scores first, of the output's full shape); the added value (a padding mask, a
//! constant attention bias) may be broadcast along any axis, and must be computed before the
//! chain starts. As in [`crate::fusion`], each
//! absorbed node is the sole reader of the value before it, that value is no graph output,
//! and no absorbed node's input is quantized.

use crate::graph::Graph;
use crate::ops::{Binary, BinaryFn, Op};
use crate::shape::Shape;
use std::collections::HashMap;

/// A softmax along the last axis with the scaling and masking before it fused in.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledSoftmax {
    /// The node where the chain starts (the scaling, or the addition when there is none).
    pub first: usize,
    /// The scores entering the chain: input 0 of the first node.
    pub scores: String,
    /// The scaling node and its factor (the reciprocal of a divisor).
    pub scale: Option<(usize, f32)>,
    /// The addition node and the value it adds.
    pub mask: Option<(usize, String)>,
    /// The softmax node.
    pub softmax: usize,
    /// The softmax's output: what the chain produces.
    pub output: String,
}

impl ScaledSoftmax {
    /// The nodes after the first that the chain absorbs, in execution order.
    pub fn absorbed(&self) -> Vec<usize> {
        self.scale
            .map(|s| s.0)
            .into_iter()
            .chain(self.mask.as_ref().map(|m| m.0))
            .chain([self.softmax])
            .filter(|&n| n != self.first)
            .collect()
    }

    /// The scaling factor (1 without a scaling).
    pub fn factor(&self) -> f32 {
        self.scale.map_or(1.0, |s| s.1)
    }
}

impl Graph {
    /// The scaled, masked softmax starting at node `ni`, if the rule above applies there.
    pub fn scaled_softmax(
        &self,
        ni: usize,
        shapes: &HashMap<String, Shape>,
    ) -> Option<ScaledSoftmax> {
        let node = &self.nodes[ni];
        let scores = node.inputs.first()?.clone();
        let full = shapes.get(&scores)?;
        let scale = self.constant_scaling(ni).map(|f| (ni, f));
        let mut value = node.outputs.first()?.clone();
        let mut next = ni;
        if scale.is_some() {
            next = self.chain_reader(&value)?;
        }
        let mask = match &self.nodes[next].op {
            Op::Binary(Binary { f: BinaryFn::Add }) => {
                let ins = &self.nodes[next].inputs;
                let at = ins.iter().position(|v| *v == value && scale.is_some());
                // without a scaling the scores are the addition's first operand
                let other = match at {
                    Some(k) if ins.len() == 2 => ins[1 - k].clone(),
                    None if scale.is_none() && ins.len() == 2 && ins[0] == scores => ins[1].clone(),
                    _ => return None,
                };
                let out = self.nodes[next].outputs.first()?;
                let keeps_shape =
                    shapes.get(out) == Some(full) && other != value && other != scores;
                // the step runs where the chain starts: the mask must be computed by then
                // (BoTNet adds relative-position logits computed after its scaling)
                let mask_later = self.producer(&other).is_some_and(|p| p > ni);
                if !keeps_shape || mask_later {
                    return None;
                }
                value = out.clone();
                let add = next;
                next = self.chain_reader(&value)?;
                Some((add, other))
            }
            _ => None,
        };
        if scale.is_none() && mask.is_none() {
            return None;
        }
        let Op::Softmax(sm) = &self.nodes[next].op else {
            return None;
        };
        let rank = full.rank();
        let last = crate::ops::normalize_axis(sm.axis, rank).ok()? + 1 == rank;
        (last && rank >= 1).then(|| ScaledSoftmax {
            first: ni,
            scores,
            scale,
            mask,
            softmax: next,
            output: self.nodes[next].outputs[0].clone(),
        })
    }

    /// The factor of node `ni` when it multiplies its first input by a one-element constant
    /// (or divides it by one).
    fn constant_scaling(&self, ni: usize) -> Option<f32> {
        let node = &self.nodes[ni];
        let Op::Binary(Binary { f }) = node.op else {
            return None;
        };
        let c = self.initializers.get(node.inputs.get(1)?)?;
        let [v] = c.data() else {
            return None;
        };
        match f {
            BinaryFn::Mul => Some(*v),
            BinaryFn::Div => Some(1.0 / *v),
            _ => None,
        }
    }

    /// The sole reader of `value` when the chain may absorb it.
    fn chain_reader(&self, value: &str) -> Option<usize> {
        let c = self.sole_reader(value)?;
        (!self.input_quantized(c)).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use crate::bert::{Pooling, random_bert};
    use crate::ops::{Binary, BinaryFn, Op, Softmax};
    use crate::{Graph, Shape, Tensor};

    /// `x [1, 2, 3, 4]`, `m [1, 1, 1, 4]` → ops → softmax along `axis`.
    fn scores(ops: &[(&str, BinaryFn, &str)], axis: i64) -> Graph {
        let mut g = Graph::new("s");
        g.add_input("x", Shape::batched(&[2, 3, 4]));
        g.add_input("m", Shape::batched(&[1, 1, 4]));
        g.add_initializer("c", Tensor::scalar(0.5));
        g.add_initializer("v", Tensor::from_fn(vec![4], |i| i as f32));
        let mut cur = "x".to_string();
        for (k, (name, f, other)) in ops.iter().enumerate() {
            let out = format!("t{k}");
            g.add_node(*name, Op::Binary(Binary { f: *f }), &[&cur, other], &[&out]);
            cur = out;
        }
        g.add_node(
            "sm",
            Op::Softmax(Softmax {
                axis,
                legacy: false,
            }),
            &[&cur],
            &["y"],
        );
        g.outputs = vec!["y".into()];
        g
    }

    #[test]
    fn scaling_and_mask_fuse_into_the_softmax() {
        let g = scores(
            &[("mul", BinaryFn::Mul, "c"), ("add", BinaryFn::Add, "m")],
            -1,
        );
        let shapes = g.infer_shapes().unwrap();
        let s = g.scaled_softmax(0, &shapes).unwrap();
        assert_eq!((s.first, s.scale, s.softmax), (0, Some((0, 0.5)), 2));
        assert_eq!(s.mask, Some((1, "m".to_string())));
        assert_eq!((s.scores.as_str(), s.output.as_str()), ("x", "y"));
        assert_eq!(s.absorbed(), vec![1, 2]);
        // a division is a scaling by the reciprocal; an addition alone is a chain too
        let g = scores(&[("div", BinaryFn::Div, "c")], 3);
        let s = g.scaled_softmax(0, &g.infer_shapes().unwrap()).unwrap();
        assert_eq!(
            (s.factor(), s.mask.clone(), s.absorbed()),
            (2.0, None, vec![1])
        );
        let g = scores(&[("add", BinaryFn::Add, "m")], -1);
        let s = g.scaled_softmax(0, &g.infer_shapes().unwrap()).unwrap();
        assert_eq!((s.factor(), s.absorbed()), (1.0, vec![1]));
    }

    #[test]
    fn what_breaks_the_rule_keeps_the_nodes() {
        let none = |g: &Graph| g.scaled_softmax(0, &g.infer_shapes().unwrap()).is_none();
        // not the last axis; no scaling or mask; a subtraction
        assert!(none(&scores(&[("mul", BinaryFn::Mul, "c")], 1)));
        assert!(none(&scores(&[("sub", BinaryFn::Sub, "c")], -1)));
        // a constant bias is a mask too
        let g = scores(
            &[("mul", BinaryFn::Mul, "c"), ("add", BinaryFn::Add, "v")],
            -1,
        );
        let s = g.scaled_softmax(0, &g.infer_shapes().unwrap()).unwrap();
        assert_eq!(s.mask, Some((1, "v".to_string())));
        // the scaled scores read twice
        let mut g = scores(
            &[("mul", BinaryFn::Mul, "c"), ("add", BinaryFn::Add, "m")],
            -1,
        );
        g.add_node("peek", Op::Binary(Binary::ADD), &["t0", "t0"], &["p"]);
        g.outputs.push("p".into());
        assert!(none(&g));
        // a mask computed after the scaling (BoTNet's relative-position logits): the step
        // would run before it
        let mut g = scores(
            &[("mul", BinaryFn::Mul, "c"), ("add", BinaryFn::Add, "late")],
            -1,
        );
        g.add_node("bias", Op::Binary(Binary::ADD), &["m", "m"], &["late"]);
        let bias = g.nodes.pop().expect("just added");
        g.nodes.insert(1, bias);
        assert!(none(&g));
        // a mask that enlarges the scores
        let mut g = scores(&[("add", BinaryFn::Add, "m")], -1);
        g.inputs[0].shape = Shape::batched(&[2, 3, 1]);
        assert!(none(&g));
    }

    #[test]
    fn every_layer_of_a_bert_fuses_its_attention_softmax() {
        let g = random_bert(&crate::bert::tests::tiny(), 6, Pooling::Mean, 1).unwrap();
        let shapes = g.infer_shapes().unwrap();
        // in node order, as the runtime lowers them: a node absorbed starts no chain
        let mut absorbed = vec![false; g.nodes.len()];
        let mut chains = Vec::new();
        for ni in 0..g.nodes.len() {
            if let Some(c) = g.scaled_softmax(ni, &shapes).filter(|_| !absorbed[ni]) {
                c.absorbed().into_iter().for_each(|a| absorbed[a] = true);
                chains.push(c);
            }
        }
        assert_eq!(chains.len(), 2);
        for c in &chains {
            assert!(c.scale.is_some() && c.mask.is_some());
            assert!(g.nodes[c.softmax].name.ends_with("Softmax"));
        }
    }
}
