//! The converter registry: one entry per ONNX op type, each knowing how to turn a `NodeProto`
//! into an IR [`Op`] (reading attributes and constant inputs) and back. Adding an op to the IR
//! means adding one converter here.

mod activation;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod norm;
mod pool;
mod reduce;
mod resize;
mod shape;

use crate::attrs::Attrs;
use crate::import::SymConst;
use crate::proto::{AttributeProto, NodeProto, TensorProto};
use secateur_graph::{Node, Op, Shape, Tensor};
use std::collections::HashMap;
use std::sync::OnceLock;

/// What an import converter sees of a node.
pub struct ImportCtx<'a> {
    pub node: &'a NodeProto,
    pub attrs: Attrs<'a>,
    /// Default-domain opset version of the model.
    pub opset: i64,
    /// Input names (aliases resolved); converters drop those they turn into attributes.
    pub inputs: Vec<String>,
    /// Shapes of the inputs, where known.
    pub shapes: Vec<Option<Shape>>,
    /// Integer constants available at import (shape arguments, axes).
    pub int_consts: &'a HashMap<String, SymConst>,
    /// Float constants (initializers), for scalar arguments such as Clip bounds.
    pub float_consts: &'a HashMap<String, Tensor>,
    /// A graph input whose axis 0 is the batch, for ops that need the batch size at run time.
    pub batch_source: Option<String>,
}

impl ImportCtx<'_> {
    /// The float scalar in input `i`, if that input is present and constant (an integer
    /// constant counts: an integer Clip's bounds).
    pub fn float_scalar_input(&self, i: usize) -> Result<Option<f32>, String> {
        match self.inputs.get(i) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) if self.int_consts.contains_key(n) => {
                match self.int_consts[n].known_values().as_deref() {
                    Some([v]) => Ok(Some(*v as f32)),
                    _ => Err(format!("input '{n}' must be a constant scalar")),
                }
            }
            Some(n) => match self.float_consts.get(n) {
                Some(t) if t.len() == 1 => Ok(Some(t.data()[0])),
                Some(t) => Err(format!(
                    "input '{n}' must be a scalar, has shape {:?}",
                    t.shape()
                )),
                None => Err(format!(
                    "input '{n}' must be a constant (computed bounds are not supported)"
                )),
            },
        }
    }

    /// The integer constant in input `i`.
    pub fn int_input(&self, i: usize) -> Result<&SymConst, String> {
        let n = self
            .inputs
            .get(i)
            .ok_or_else(|| format!("missing input {i}"))?;
        self.int_consts
            .get(n)
            .ok_or_else(|| format!("input '{n}' must be a constant integer tensor known at import"))
    }
}

/// What an export converter writes besides the node itself.
pub struct ExportCtx {
    pub initializers: Vec<TensorProto>,
    /// Nodes computing intermediate values of the node (an op the export opset lacks,
    /// written as the ops it decomposes into), placed right before it.
    pub nodes: Vec<NodeProto>,
    /// Names the graph and the helpers already use: a helper's name that is taken (a graph
    /// imported from an earlier export holds that export's helpers) gets a numeric suffix.
    pub used: std::collections::HashSet<String>,
    /// The shapes of the graph's values (for an op whose ONNX form needs a constant of its
    /// input's shape).
    pub shapes: HashMap<String, Shape>,
}

impl ExportCtx {
    /// A context for exporting `graph`, whose names are all taken.
    pub fn for_graph(graph: &secateur_graph::Graph) -> Self {
        let used = graph
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().chain([&n.name]))
            .chain(graph.inputs.iter().map(|i| &i.name))
            .chain(graph.initializers.keys())
            .cloned()
            .collect();
        ExportCtx {
            initializers: Vec::new(),
            nodes: Vec::new(),
            used,
            shapes: HashMap::new(),
        }
    }

    /// `name`, or the first of `name_2`, `name_3`, ... that no value or node uses yet; the
    /// returned name is taken from then on.
    pub fn fresh(&mut self, name: String) -> String {
        let unique = if self.used.contains(&name) {
            (2..)
                .map(|k| format!("{name}_{k}"))
                .find(|c| !self.used.contains(c))
                .expect("an unused name exists")
        } else {
            name
        };
        self.used.insert(unique.clone());
        unique
    }

    /// Adds a float scalar initializer named `name` (made unique); returns the name.
    pub fn scalar(&mut self, name: String, value: f32) -> String {
        let name = self.fresh(name);
        self.initializers.push(crate::tensor_proto::encode_f32(
            &name,
            &Tensor::scalar(value),
        ));
        name
    }

    /// Adds a helper node `op_type(inputs) -> output`; returns the output name.
    pub fn helper(&mut self, op_type: &str, inputs: Vec<String>, output: String) -> String {
        self.helper_with(op_type, inputs, output, Vec::new())
    }

    /// [`ExportCtx::helper`] with attributes.
    pub fn helper_with(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        output: String,
        attribute: Vec<AttributeProto>,
    ) -> String {
        let output = self.fresh(output);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
        output
    }
}

/// Converts one op type in both directions.
pub trait Converter: Sync {
    /// The ONNX op type (default domain).
    fn op_type(&self) -> &'static str;
    /// Builds the IR op; may remove inputs from `ctx.inputs` that became attributes.
    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String>;
    /// Attributes and extra constant inputs of the exported node.
    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String>;
}

/// A node as written to ONNX: attributes and the full input list.
pub struct ExportedNode {
    pub op_type: &'static str,
    pub attributes: Vec<AttributeProto>,
    pub inputs: Vec<String>,
}

impl ExportedNode {
    /// Same inputs as the IR node, given attributes.
    pub fn plain(op_type: &'static str, node: &Node, attributes: Vec<AttributeProto>) -> Self {
        ExportedNode {
            op_type,
            attributes,
            inputs: node.inputs.clone(),
        }
    }
}

fn all_converters() -> Vec<&'static dyn Converter> {
    let mut v: Vec<&'static dyn Converter> = Vec::new();
    v.extend(conv::CONVERTERS);
    v.extend(gemm::CONVERTERS);
    v.extend(norm::CONVERTERS);
    v.extend(activation::CONVERTERS);
    v.extend(pool::CONVERTERS);
    v.extend(reduce::CONVERTERS);
    v.extend(elementwise::CONVERTERS);
    v.extend(shape::CONVERTERS);
    v.extend(layout::CONVERTERS);
    v.extend(resize::CONVERTERS);
    v
}

/// The registry, by op type.
pub fn registry() -> &'static HashMap<&'static str, &'static dyn Converter> {
    static REG: OnceLock<HashMap<&'static str, &'static dyn Converter>> = OnceLock::new();
    REG.get_or_init(|| {
        all_converters()
            .into_iter()
            .map(|c| (c.op_type(), c))
            .collect()
    })
}

/// Sorted list of supported op types (converters and the ops the importer folds or lowers
/// itself), for error messages and `--help`.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<_> = registry()
        .keys()
        .copied()
        .chain(crate::import::FOLDED_OPS.iter().copied())
        .collect();
    v.sort();
    v.dedup();
    v
}
