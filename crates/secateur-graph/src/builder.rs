//! A small builder for writing graphs in code (the model zoo, tests): it names nodes and
//! weights, tracks shapes as nodes are added, and initialises weights the way PyTorch does
//! (Kaiming-uniform with `a = √5`, i.e. `U(-1/√fan_in, 1/√fan_in)`, biases likewise; batch-norm
//! scale 1, shift 0, running mean 0, running variance 1) from a seeded generator.

use crate::error::{GraphError, Result};
use crate::graph::Graph;
use crate::ops::*;
use crate::shape::Shape;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// Builds a graph node by node.
pub struct GraphBuilder {
    graph: Graph,
    shapes: HashMap<String, Shape>,
    rng: ChaCha8Rng,
}

impl GraphBuilder {
    /// A builder for a graph with one batched input of per-sample shape `input` (e.g. `[1, 28, 28]`).
    pub fn new(name: &str, input: &[usize], seed: u64) -> (Self, String) {
        let mut graph = Graph::new(name);
        let shape = Shape::batched(input);
        graph.add_input("input", shape.clone());
        let mut shapes = HashMap::new();
        shapes.insert("input".to_string(), shape);
        (
            GraphBuilder {
                graph,
                shapes,
                rng: ChaCha8Rng::seed_from_u64(seed),
            },
            "input".to_string(),
        )
    }

    /// Shape of a value built so far.
    pub fn shape(&self, value: &str) -> &Shape {
        &self.shapes[value]
    }

    /// Channels (axis 1) of a value.
    pub fn channels(&self, value: &str) -> usize {
        self.shapes[value].dim(1).unwrap_or(0)
    }

    fn uniform(&mut self, shape: Vec<usize>, bound: f32) -> Tensor {
        let rng = &mut self.rng;
        Tensor::from_fn(shape, |_| rng.random_range(-bound..=bound))
    }

    /// Adds a node with the given weights (created as initializers `<name>.<suffix>`).
    pub fn node(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[&str],
        weights: Vec<(&str, Tensor)>,
    ) -> Result<String> {
        let mut all: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        for (suffix, t) in weights {
            let wname = format!("{name}.{suffix}");
            self.shapes.insert(wname.clone(), Shape::known(t.shape()));
            self.graph.add_initializer(wname.clone(), t);
            all.push(wname);
        }
        let node = crate::graph::Node {
            name: name.to_string(),
            op,
            inputs: all,
            outputs: vec![format!("{name}_out")],
        };
        push_node(&mut self.graph, &mut self.shapes, node)
    }

    /// A convolution `c_in → c_out` with a square kernel; PyTorch initialisation.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: &str,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        bias: bool,
    ) -> Result<String> {
        let c_in = self.channels(x);
        let fan_in = (c_in / groups.max(1)) * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = self.uniform(vec![c_out, c_in / groups.max(1), k, k], bound);
        let mut weights = vec![("weight", w)];
        if bias {
            weights.push(("bias", self.uniform(vec![c_out], bound)));
        }
        let op = Op::Conv(Conv {
            kernel: [k, k],
            strides: [stride; 2],
            pads: [pad; 4],
            dilations: [1, 1],
            groups,
        });
        self.node(name, op, &[x], weights)
    }

    /// Batch normalisation over the channels of `x`.
    pub fn batch_norm(&mut self, name: &str, x: &str) -> Result<String> {
        let c = self.channels(x);
        let weights = vec![
            ("weight", Tensor::full(vec![c], 1.0)),
            ("bias", Tensor::zeros(vec![c])),
            ("running_mean", Tensor::zeros(vec![c])),
            ("running_var", Tensor::full(vec![c], 1.0)),
        ];
        self.node(name, Op::BatchNorm(BatchNorm::default()), &[x], weights)
    }

    /// A fully connected layer (`Gemm`, weight `[out, in]` as PyTorch's `nn.Linear`).
    pub fn linear(&mut self, name: &str, x: &str, out: usize) -> Result<String> {
        let fan_in = self.shapes[x].dim(1).unwrap_or(0);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = self.uniform(vec![out, fan_in], bound);
        let b = self.uniform(vec![out], bound);
        self.node(
            name,
            Op::Gemm(Gemm::linear()),
            &[x],
            vec![("weight", w), ("bias", b)],
        )
    }

    pub fn relu(&mut self, name: &str, x: &str) -> Result<String> {
        self.node(name, Op::Unary(Unary::RELU), &[x], vec![])
    }

    pub fn relu6(&mut self, name: &str, x: &str) -> Result<String> {
        self.node(name, Op::Unary(Unary::clip(0.0, 6.0)), &[x], vec![])
    }

    pub fn max_pool(&mut self, name: &str, x: &str, k: usize) -> Result<String> {
        self.node(
            name,
            Op::MaxPool(MaxPool {
                geometry: PoolGeometry::square(k),
            }),
            &[x],
            vec![],
        )
    }

    pub fn global_avg_pool(&mut self, name: &str, x: &str) -> Result<String> {
        self.node(
            name,
            Op::GlobalAveragePool(GlobalAveragePool::KEEP),
            &[x],
            vec![],
        )
    }

    pub fn flatten(&mut self, name: &str, x: &str) -> Result<String> {
        self.node(name, Op::Flatten(Flatten { axis: 1 }), &[x], vec![])
    }

    pub fn add(&mut self, name: &str, a: &str, b: &str) -> Result<String> {
        self.node(name, Op::Binary(Binary::ADD), &[a, b], vec![])
    }

    pub fn concat(&mut self, name: &str, xs: &[&str]) -> Result<String> {
        self.node(name, Op::Concat(Concat { axis: 1 }), xs, vec![])
    }

    /// Conv → BN → (ReLU | ReLU6 | nothing), the usual block.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_bn(
        &mut self,
        name: &str,
        x: &str,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: Activation,
    ) -> Result<String> {
        let y = self.conv(
            &format!("{name}.conv"),
            x,
            c_out,
            k,
            stride,
            k / 2,
            groups,
            false,
        )?;
        let y = self.batch_norm(&format!("{name}.bn"), &y)?;
        match act {
            Activation::Relu => self.relu(&format!("{name}.relu"), &y),
            Activation::Relu6 => self.relu6(&format!("{name}.relu6"), &y),
            Activation::None => Ok(y),
        }
    }

    /// Finishes the graph with `output` as its only output, renamed to `logits`.
    pub fn finish(mut self, output: &str) -> Result<Graph> {
        for node in &mut self.graph.nodes {
            for o in &mut node.outputs {
                if o == output {
                    *o = "logits".into();
                }
            }
        }
        self.graph.outputs = vec!["logits".into()];
        self.graph.check()?;
        Ok(self.graph)
    }
}

/// Appends `node` (one output) to `graph` after inferring its output shape from the shapes of
/// the values built so far, which it extends; returns the output's name.
pub(crate) fn push_node(
    graph: &mut Graph,
    shapes: &mut HashMap<String, Shape>,
    node: crate::graph::Node,
) -> Result<String> {
    let in_shapes: Vec<Shape> = node
        .inputs
        .iter()
        .map(|v| {
            shapes
                .get(v)
                .cloned()
                .ok_or_else(|| GraphError::UndefinedValue {
                    value: v.clone(),
                    node: node.name.clone(),
                })
        })
        .collect::<Result<_>>()?;
    let outs = graph.infer_node(&node, &in_shapes)?;
    let out = node.outputs[0].clone();
    shapes.insert(out.clone(), outs[0].clone());
    graph.nodes.push(node);
    Ok(out)
}

/// Activation after a conv-BN block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Relu6,
    None,
}
