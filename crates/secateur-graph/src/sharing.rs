//! Initializers read by several nodes. Exporters deduplicate initializers by value (PyTorch
//! merges every all-zero bias or all-one batch-norm scale into one tensor, often behind an
//! `Identity`), which would make unrelated layers look like one shared parameter and couple
//! them in structured pruning. [`Graph::unshare_initializers`] gives each reader its own copy,
//! except for weights a model genuinely ties (the same multiplicative weight matrix with
//! non-constant values read by several layers, such as tied embeddings).

use crate::graph::Graph;
use crate::ops::InputRole;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Whether every element of `t` has the same value (what value deduplication merges by
/// accident: zeros, ones, a constant fill).
fn is_constant_fill(t: &Tensor) -> bool {
    t.data()
        .windows(2)
        .all(|w| w[0].to_bits() == w[1].to_bits())
}

/// Whether readers of `t` in these roles share it on purpose.
fn genuinely_shared(t: &Tensor, roles: &[InputRole]) -> bool {
    roles.iter().all(|r| *r == InputRole::Weight) && t.rank() >= 2 && !is_constant_fill(t)
}

impl Graph {
    /// Gives every node reading a deduplicated initializer its own copy (named
    /// `<initializer>.<node>`), with its mask and quantization annotation; genuinely tied
    /// weights stay shared. Returns how many copies were made.
    pub fn unshare_initializers(&mut self) -> usize {
        // initializer -> (node index, input index, role) of every reader
        let mut readers: BTreeMap<String, Vec<(usize, usize, InputRole)>> = BTreeMap::new();
        for (ni, node) in self.nodes.iter().enumerate() {
            let roles = node.op.sem().input_roles(node.inputs.len());
            for (k, v) in node.inputs.iter().enumerate() {
                if self.initializers.contains_key(v) {
                    let role = roles.get(k).copied().unwrap_or(InputRole::Data);
                    readers.entry(v.clone()).or_default().push((ni, k, role));
                }
            }
        }
        let mut copies = 0;
        for (name, uses) in readers {
            if uses.len() < 2 {
                continue;
            }
            let tensor = self.initializers[&name].clone();
            let roles: Vec<InputRole> = uses.iter().map(|u| u.2).collect();
            if genuinely_shared(&tensor, &roles) {
                continue;
            }
            for &(ni, k, _) in &uses[1..] {
                let copy = self.fresh_initializer_name(&format!("{name}.{}", self.nodes[ni].name));
                self.initializers.insert(copy.clone(), tensor.clone());
                if let Some(m) = self.masks.get(&name).cloned() {
                    self.masks.insert(copy.clone(), m);
                }
                if let Some(q) = self.quantization.as_mut()
                    && let Some(&axis) = q.weights.get(&name)
                {
                    q.weights.insert(copy.clone(), axis);
                }
                self.nodes[ni].inputs[k] = copy;
                copies += 1;
            }
        }
        copies
    }

    /// `base`, or `base#k` for the first `k` that names no value of the graph.
    pub(crate) fn fresh_initializer_name(&self, base: &str) -> String {
        let taken = |n: &str| {
            self.initializers.contains_key(n)
                || self.inputs.iter().any(|i| i.name == n)
                || self
                    .nodes
                    .iter()
                    .any(|nd| nd.outputs.iter().any(|o| o == n))
        };
        let mut name = base.to_string();
        let mut k = 1;
        while taken(&name) {
            name = format!("{base}#{k}");
            k += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::Graph;
    use crate::ops::{Binary, Conv, Op};
    use crate::shape::Shape;
    use crate::tensor::Tensor;

    /// Two 1×1 convolutions of `x` added; the second reads `weight_b` and `bias_b`.
    fn two_convs(weight_b: &str, bias_b: &str) -> Graph {
        let mut g = Graph::new("t");
        g.add_input("x", Shape::batched(&[2, 4, 4]));
        let w = Tensor::from_fn(vec![2, 2, 1, 1], |i| i as f32 + 1.0);
        g.add_initializer("w", w.clone());
        g.add_initializer("w2", w);
        g.add_initializer("b", Tensor::zeros(vec![2]));
        g.add_initializer("b2", Tensor::zeros(vec![2]));
        g.add_node(
            "c1",
            Op::Conv(Conv::new([1, 1], 0)),
            &["x", "w", "b"],
            &["y1"],
        );
        g.add_node(
            "c2",
            Op::Conv(Conv::new([1, 1], 0)),
            &["x", weight_b, bias_b],
            &["y2"],
        );
        g.add_node("add", Op::Binary(Binary::ADD), &["y1", "y2"], &["out"]);
        g.outputs = vec!["out".into()];
        g
    }

    #[test]
    fn deduplicated_biases_are_copied_and_tied_weights_kept() {
        let mut g = two_convs("w", "b");
        assert_eq!(g.unshare_initializers(), 1);
        g.check().unwrap();
        assert_eq!(
            g.nodes[1].inputs[1], "w",
            "a non-constant weight read twice is tied"
        );
        assert_eq!(g.nodes[1].inputs[2], "b.c2");
        assert_eq!(g.initializers["b.c2"], Tensor::zeros(vec![2]));
    }

    #[test]
    fn unshared_graphs_are_left_alone() {
        let mut g = two_convs("w2", "b2");
        let before = g.clone();
        assert_eq!(g.unshare_initializers(), 0);
        assert_eq!(g, before);
    }
}
