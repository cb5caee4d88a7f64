//! The graph: named values flowing between nodes, weights stored as named tensors
//! (initializers), graph inputs with a symbolic batch dimension, outputs, weight masks and free
//! metadata. Nodes are kept in topological order; [`Graph::check`] verifies structure, shapes,
//! weights and masks, and [`Graph::infer_shapes`] gives the shape of every value.

use crate::error::{GraphError, Result};
use crate::mask::Mask;
use crate::ops::{InputRole, Op};
use crate::shape::{Dim, Shape, max_elements};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One operator application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node name (used in messages, pruning plans and reports).
    pub name: String,
    pub op: Op,
    /// Names of the values read, in the op's input order.
    pub inputs: Vec<String>,
    /// Names of the values produced.
    pub outputs: Vec<String>,
}

/// The element type of a graph input outside the graph. Inside, every value is f32:
/// integers (token ids, attention masks) are exact up to 2^24 and booleans are 0 and 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ElemType {
    #[default]
    Float,
    Int64,
    Int32,
    Bool,
}

/// A graph input: a name, its (possibly batched) shape and its element type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueInfo {
    pub name: String,
    pub shape: Shape,
    #[serde(default)]
    pub dtype: ElemType,
}

/// A neural network as a dataflow graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<ValueInfo>,
    /// Names of the values the graph returns.
    pub outputs: Vec<String>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Weights and other constant tensors by name.
    pub initializers: BTreeMap<String, Tensor>,
    /// Pruning masks by weight name: masked elements are zero and stay zero.
    pub masks: BTreeMap<String, Mask>,
    /// Free key/value metadata (input normalisation, class names, provenance).
    pub metadata: BTreeMap<String, String>,
    /// Int8 quantization annotations, when the model is quantized.
    #[serde(default)]
    pub quantization: Option<crate::quant::Quantization>,
    /// Initializers holding integers or booleans of the model (token type ids repeated over
    /// the batch, positions of a gather, masks): exact values of the model's arithmetic, held
    /// as f32 like every value, never trained.
    #[serde(default)]
    pub integer_constants: BTreeSet<String>,
    /// The arithmetic the model is meant to run in (bf16 when a search chose it).
    #[serde(default)]
    pub precision: crate::precision::Precision,
}

/// Shapes of a node's inputs and outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeShapes {
    pub inputs: Vec<Shape>,
    pub outputs: Vec<Shape>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, shape: Shape) {
        self.inputs.push(ValueInfo {
            name: name.into(),
            shape,
            dtype: ElemType::Float,
        });
    }

    /// Adds a weight tensor under a name.
    pub fn add_initializer(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.initializers.insert(name.into(), tensor);
    }

    /// Appends a node; returns the name of its first output.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[&str],
        outputs: &[&str],
    ) -> String {
        let node = Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        };
        let first = node.outputs.first().cloned().unwrap_or_default();
        self.nodes.push(node);
        first
    }

    /// Index of a node by name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node producing a value, if any.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == value))
    }

    /// Indices of the nodes reading a value.
    pub fn consumers(&self, value: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.iter().any(|i| i == value))
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether a value is a weight.
    pub fn is_initializer(&self, value: &str) -> bool {
        self.initializers.contains_key(value)
    }

    /// Reorders nodes topologically (stable: keeps the given order where it is valid).
    pub fn sort_topologically(&mut self) -> Result<()> {
        let mut available: HashSet<String> = self.inputs.iter().map(|i| i.name.clone()).collect();
        available.extend(self.initializers.keys().cloned());
        let mut remaining: Vec<Node> = std::mem::take(&mut self.nodes);
        let mut ordered = Vec::with_capacity(remaining.len());
        while !remaining.is_empty() {
            let pos = remaining.iter().position(|n| {
                n.inputs
                    .iter()
                    .all(|i| i.is_empty() || available.contains(i))
            });
            match pos {
                Some(p) => {
                    let node = remaining.remove(p);
                    available.extend(node.outputs.iter().cloned());
                    ordered.push(node);
                }
                None => {
                    let stuck = &remaining[0];
                    let produced: HashSet<&String> =
                        remaining.iter().flat_map(|n| n.outputs.iter()).collect();
                    let missing = stuck.inputs.iter().find(|i| {
                        !i.is_empty() && !available.contains(*i) && !produced.contains(i)
                    });
                    let err = match missing {
                        Some(v) => GraphError::UndefinedValue {
                            value: v.clone(),
                            node: stuck.name.clone(),
                        },
                        None => GraphError::Cycle(stuck.name.clone()),
                    };
                    self.nodes = ordered.into_iter().chain(remaining).collect();
                    return Err(err);
                }
            }
        }
        self.nodes = ordered;
        Ok(())
    }

    /// Whether every sample of a batch is computed independently of the others, so a batch
    /// may run as separate one-sample runs: every graph input and output is `[N, sizes…]`,
    /// every value computed from a batched value is `[N, sizes…]` as well (an op that moves or
    /// merges the batch axis fails this), and no op mixes samples
    /// ([`crate::OpSemantics::mixes_samples`]).
    pub fn samples_independent(&self) -> bool {
        let Ok(shapes) = self.infer_shapes() else {
            return false;
        };
        let leading = |s: &Shape| {
            s.0.first() == Some(&Dim::Batch) && s.0[1..].iter().all(|d| d.known().is_some())
        };
        let batched = |s: &Shape| s.0.iter().any(|d| d.batch_factor().is_some());
        let of = |v: &String| shapes.get(v).cloned().unwrap_or_default();
        self.inputs.iter().all(|i| leading(&i.shape))
            && self.outputs.iter().all(|o| leading(&of(o)))
            && self.nodes.iter().all(|n| {
                let ins: Vec<Shape> = n.inputs.iter().map(of).collect();
                let from_batch = ins.iter().any(batched);
                !n.op.sem().mixes_samples(&ins)
                    && n.outputs.iter().all(|o| {
                        let s = of(o);
                        if from_batch {
                            leading(&s)
                        } else {
                            !batched(&s)
                        }
                    })
            })
    }

    /// Shapes of every value: inputs, weights and node outputs.
    pub fn infer_shapes(&self) -> Result<HashMap<String, Shape>> {
        let mut shapes: HashMap<String, Shape> = HashMap::new();
        for i in &self.inputs {
            shapes.insert(i.name.clone(), i.shape.clone());
        }
        for (name, t) in &self.initializers {
            shapes.insert(name.clone(), Shape::known(t.shape()));
        }
        for node in &self.nodes {
            let ins = node
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
                .collect::<Result<Vec<_>>>()?;
            let outs = self.infer_node(node, &ins)?;
            for (name, s) in node.outputs.iter().zip(outs) {
                shapes.insert(name.clone(), s);
            }
        }
        Ok(shapes)
    }

    /// Output shapes of one node given its input shapes, with arity checks.
    pub fn infer_node(&self, node: &Node, inputs: &[Shape]) -> Result<Vec<Shape>> {
        let sem = node.op.sem();
        let op_err = |message: String| GraphError::Op {
            node: node.name.clone(),
            op: node.op.op_type(),
            message,
        };
        if !sem.input_count().contains(&inputs.len()) {
            return Err(op_err(format!(
                "expected {:?} inputs, got {}",
                sem.input_count(),
                inputs.len()
            )));
        }
        let limit = max_elements();
        let too_large = |s: &Shape| s.elements_per_sample().is_none_or(|n| n > limit);
        let advice = "per sample, the limit on one tensor (SECATEUR_MAX_TENSOR_MB raises it)";
        // a weight's data is already in memory (VGG's first classifier layer holds 103 M
        // values): only shapes that would be allocated from a declaration are limited
        let declared = |i: usize| {
            node.inputs
                .get(i)
                .is_none_or(|n| !self.initializers.contains_key(n))
        };
        let oversized = inputs
            .iter()
            .enumerate()
            .find(|(i, s)| declared(*i) && too_large(s));
        if let Some((i, s)) = oversized {
            return Err(op_err(format!(
                "input {i} has shape {s}: more than {limit} elements {advice}"
            )));
        }
        let outs = sem.infer(inputs).map_err(|e| op_err(e.0))?;
        if let Some(s) = outs.iter().find(|s| too_large(s)) {
            return Err(op_err(format!(
                "infers output shape {s}: more than {limit} elements {advice}"
            )));
        }
        if outs.len() != node.outputs.len() {
            return Err(op_err(format!(
                "produces {} outputs but the node names {}",
                outs.len(),
                node.outputs.len()
            )));
        }
        Ok(outs)
    }

    /// Input and output shapes of every node, in node order.
    pub fn node_shapes(&self) -> Result<Vec<NodeShapes>> {
        let shapes = self.infer_shapes()?;
        Ok(self
            .nodes
            .iter()
            .map(|n| NodeShapes {
                inputs: n.inputs.iter().map(|v| shapes[v].clone()).collect(),
                outputs: n.outputs.iter().map(|v| shapes[v].clone()).collect(),
            })
            .collect())
    }

    /// Role of every weight (by name) as its first consumer declares it.
    pub fn initializer_roles(&self) -> BTreeMap<String, InputRole> {
        let mut roles = BTreeMap::new();
        for node in &self.nodes {
            let r = node.op.sem().input_roles(node.inputs.len());
            for (v, role) in node.inputs.iter().zip(r) {
                if self.initializers.contains_key(v) {
                    roles.entry(v.clone()).or_insert(role);
                }
            }
        }
        roles
    }

    /// Full consistency check: unique names, defined values, topological order, arities,
    /// shapes, finite weights, masks that fit their weights and keep masked weights at zero.
    pub fn check(&self) -> Result<()> {
        let mut defined: HashSet<&str> = HashSet::new();
        for i in &self.inputs {
            if !defined.insert(&i.name) {
                return Err(GraphError::DuplicateValue(i.name.clone()));
            }
        }
        for name in self.initializers.keys() {
            if !defined.insert(name) {
                return Err(GraphError::DuplicateValue(name.clone()));
            }
        }
        let mut node_names = HashSet::new();
        for node in &self.nodes {
            if !node_names.insert(&node.name) {
                return Err(GraphError::Invalid(format!(
                    "node name '{}' is used twice",
                    node.name
                )));
            }
            for v in &node.inputs {
                if !defined.contains(v.as_str()) {
                    return Err(GraphError::UndefinedValue {
                        value: v.clone(),
                        node: node.name.clone(),
                    });
                }
            }
            for v in &node.outputs {
                if !defined.insert(v) {
                    return Err(GraphError::DuplicateValue(v.clone()));
                }
            }
        }
        for o in &self.outputs {
            if !defined.contains(o.as_str()) {
                return Err(GraphError::MissingOutput(o.clone()));
            }
        }
        if self.outputs.is_empty() {
            return Err(GraphError::Invalid("the graph has no outputs".into()));
        }
        for (name, t) in &self.initializers {
            // a lone ±infinity is a fill value (attention masks), never a weight
            let fill = t.len() == 1 && t.data()[0].is_infinite();
            if let Some((index, value)) = t.first_non_finite().filter(|_| !fill) {
                return Err(GraphError::NonFinite {
                    name: name.clone(),
                    index,
                    value,
                });
            }
        }
        self.infer_shapes()?;
        for (name, mask) in &self.masks {
            let w = self
                .initializers
                .get(name)
                .ok_or_else(|| GraphError::Mask {
                    name: name.clone(),
                    message: "no weight of that name".into(),
                })?;
            mask.check_against(name, w)?;
        }
        Ok(())
    }

    /// Zeroes every masked weight element (call after an update that may have touched them).
    pub fn apply_masks(&mut self) -> Result<()> {
        for (name, mask) in &self.masks {
            let w = self
                .initializers
                .get_mut(name)
                .ok_or_else(|| GraphError::Mask {
                    name: name.clone(),
                    message: "no weight of that name".into(),
                })?;
            mask.apply(name, w)?;
        }
        Ok(())
    }

    /// Whether initializer `name`, read in `role`, is a parameter of the model (what training
    /// trains and parameter counts count): a trained role (weights, biases, normalisation
    /// scales and shifts), or a float constant read as data with more than one element (an
    /// embedding table, a class token, position embeddings, a layer scale) that is not an
    /// integer constant.
    pub fn is_parameter(&self, name: &str, role: InputRole) -> bool {
        match role {
            r if r.is_trainable() => true,
            InputRole::Data => {
                !self.integer_constants.contains(name)
                    && self.initializers.get(name).is_some_and(|t| t.len() > 1)
            }
            _ => false,
        }
    }

    /// Names of weights in a role (e.g. every multiplicative weight), in node order.
    pub fn weights_in_role(&self, role: InputRole) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for node in &self.nodes {
            let roles = node.op.sem().input_roles(node.inputs.len());
            for (v, r) in node.inputs.iter().zip(roles) {
                if r == role && self.initializers.contains_key(v) && seen.insert(v.clone()) {
                    out.push(v.clone());
                }
            }
        }
        out
    }

    /// The node that reads a weight, with the input slot.
    pub fn weight_consumer(&self, weight: &str) -> Option<(usize, usize)> {
        self.nodes.iter().enumerate().find_map(|(ni, n)| {
            n.inputs
                .iter()
                .position(|v| v == weight)
                .map(|slot| (ni, slot))
        })
    }

    /// Removes weights that no node reads any more.
    pub fn drop_unused_initializers(&mut self) {
        let used: HashSet<&String> = self.nodes.iter().flat_map(|n| n.inputs.iter()).collect();
        let unused: Vec<String> = self
            .initializers
            .keys()
            .filter(|k| !used.contains(k) && !self.outputs.contains(k))
            .cloned()
            .collect();
        for k in unused {
            self.initializers.remove(&k);
            self.masks.remove(&k);
            self.integer_constants.remove(&k);
        }
    }

    /// Total number of weight elements and of non-zero weight elements.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let roles = self.initializer_roles();
        let mut total = 0;
        let mut nonzero = 0;
        for (name, t) in &self.initializers {
            if roles.get(name).is_some_and(|r| self.is_parameter(name, *r)) {
                total += t.len();
                nonzero += t.len() - t.count_zeros();
            }
        }
        (total, nonzero)
    }
}
