//! ONNX → IR import. Initializers become weights; graph inputs get a symbolic batch for
//! `dim_param` (or unknown) leading dimensions; `Constant` nodes, `Identity` of constants and
//! the integer shape arithmetic PyTorch emits around `Reshape` (`Shape → Gather → Unsqueeze →
//! Concat`) are folded at import, keeping the batch symbolic; every other node goes through the
//! converter registry. The result is topologically sorted and checked.

use crate::attrs::Attrs;
use crate::error::{OnnxError, Result, UnsupportedOpType};
use crate::mask_codec;
use crate::ops::{ImportCtx, registry, supported_ops};
use crate::proto::{ModelProto, NodeProto, TensorProto, data_type};
use crate::tensor_proto::{Constant, decode};
use secateur_graph::{ActQuant, Dim, Graph, Node, Quantization, Shape, Tensor};
use std::collections::{HashMap, HashSet};

/// Supported range of default-domain opset versions.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// An integer known at import, or the (symbolic) batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymInt {
    Known(i64),
    Batch,
}

/// An integer tensor known at import whose values may include the batch size.
#[derive(Clone, Debug, PartialEq)]
pub struct SymConst {
    pub dims: Vec<usize>,
    pub values: Vec<SymInt>,
}

impl SymConst {
    fn known(dims: Vec<usize>, values: &[i64]) -> Self {
        SymConst {
            dims,
            values: values.iter().map(|&v| SymInt::Known(v)).collect(),
        }
    }

    pub fn known_values(&self) -> Option<Vec<i64>> {
        self.values
            .iter()
            .map(|v| match v {
                SymInt::Known(n) => Some(*n),
                SymInt::Batch => None,
            })
            .collect()
    }
}

struct Importer {
    graph: Graph,
    opset: i64,
    shapes: HashMap<String, Shape>,
    float_consts: HashMap<String, Tensor>,
    int_consts: HashMap<String, SymConst>,
    aliases: HashMap<String, String>,
    node_names: HashSet<String>,
    /// 8-bit constants (quantized weights and zero points).
    byte_consts: HashMap<String, (Vec<usize>, Vec<i32>)>,
    /// `QuantizeLinear` outputs of activations: (input, parameters).
    pending_q: HashMap<String, (String, ActQuant)>,
    /// `DequantizeLinear` outputs standing for a quantized activation.
    act_alias: HashMap<String, (String, ActQuant)>,
    quant: Quantization,
    dropped_qdq: usize,
}

fn node_err(node: &NodeProto, message: impl Into<String>) -> OnnxError {
    OnnxError::Node {
        node: node.name.clone(),
        op_type: node.op_type.clone(),
        message: message.into(),
    }
}

fn input_shape(v: &crate::proto::ValueInfoProto) -> Result<Shape> {
    let tt = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| OnnxError::Model(format!("graph input '{}' is not a tensor", v.name)))?;
    if tt.elem_type != data_type::FLOAT {
        return Err(OnnxError::Model(format!(
            "graph input '{}' has element type {}; only FLOAT inputs are supported",
            v.name,
            data_type::name(tt.elem_type)
        )));
    }
    let shape = tt
        .shape
        .as_ref()
        .ok_or_else(|| OnnxError::Model(format!("graph input '{}' has no shape", v.name)))?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (axis, d) in shape.dim.iter().enumerate() {
        let dim = match (d.dim_value, &d.dim_param) {
            (Some(n), _) if n > 0 => Dim::Known(n as usize),
            _ if axis == 0 => Dim::Batch,
            (_, Some(p)) => {
                return Err(OnnxError::Model(format!(
                    "graph input '{}': symbolic dimension '{p}' at axis {axis} is not supported (only the leading batch dimension may be symbolic)",
                    v.name
                )));
            }
            _ => {
                return Err(OnnxError::Model(format!(
                    "graph input '{}': axis {axis} has no size (only the leading batch dimension may be unknown)",
                    v.name
                )));
            }
        };
        dims.push(dim);
    }
    Ok(Shape(dims))
}

impl Importer {
    fn resolve(&self, name: &str) -> String {
        let mut n = name;
        while let Some(a) = self.aliases.get(n) {
            n = a;
        }
        n.to_string()
    }

    fn add_constant(&mut self, name: &str, t: &TensorProto) -> Result<()> {
        match decode(t)? {
            Constant::Float(f) => {
                self.shapes
                    .insert(name.to_string(), Shape::known(f.shape()));
                self.float_consts.insert(name.to_string(), f.clone());
                self.graph.add_initializer(name, f);
            }
            Constant::Int { dims, values } => {
                self.int_consts
                    .insert(name.to_string(), SymConst::known(dims, &values));
            }
            Constant::Byte { dims, values, .. } => {
                self.byte_consts.insert(name.to_string(), (dims, values));
            }
        }
        Ok(())
    }

    fn unique_name(&mut self, node: &NodeProto, index: usize) -> String {
        let base = if node.name.is_empty() {
            format!("{}_{index}", node.op_type)
        } else {
            node.name.clone()
        };
        let mut name = base.clone();
        let mut k = 1;
        while !self.node_names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// Folds a node computing integers known at import; `Ok(false)` if it is not such a node.
    fn fold_int(&mut self, node: &NodeProto, inputs: &[String]) -> Result<bool> {
        let a = Attrs::new(node);
        let out = node.output.first().cloned().unwrap_or_default();
        let int_in = |i: usize| inputs.get(i).and_then(|n| self.int_consts.get(n));
        let folded = match node.op_type.as_str() {
            "Shape" => {
                let Some(s) = inputs.first().and_then(|n| self.shapes.get(n)) else {
                    return Ok(false);
                };
                let rank = s.rank() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = clamp(a.int("start", 0).map_err(|m| node_err(node, m))?);
                let end = clamp(a.int("end", rank).map_err(|m| node_err(node, m))?);
                let values: Vec<SymInt> = s.dims()[start..end.max(start)]
                    .iter()
                    .map(|d| match d {
                        Dim::Known(n) => SymInt::Known(*n as i64),
                        Dim::Batch => SymInt::Batch,
                    })
                    .collect();
                SymConst {
                    dims: vec![values.len()],
                    values,
                }
            }
            "Gather" => {
                let (Some(data), Some(idx)) = (int_in(0), int_in(1)) else {
                    return Ok(false);
                };
                if data.dims.len() != 1 || a.int("axis", 0).map_err(|m| node_err(node, m))? != 0 {
                    return Err(node_err(
                        node,
                        "only gathering from a 1-D integer constant along axis 0 is supported",
                    ));
                }
                let idx_vals = idx
                    .known_values()
                    .ok_or_else(|| node_err(node, "indices depend on the batch size"))?;
                let n = data.values.len() as i64;
                let mut values = Vec::new();
                for i in idx_vals {
                    let j = if i < 0 { i + n } else { i };
                    values.push(*data.values.get(j as usize).ok_or_else(|| {
                        node_err(node, format!("index {i} out of range for {n} values"))
                    })?);
                }
                SymConst {
                    dims: idx.dims.clone(),
                    values,
                }
            }
            "Unsqueeze" | "Squeeze" => {
                let Some(data) = int_in(0) else {
                    return Ok(false);
                };
                let axes = if self.opset >= 13 {
                    int_in(1).and_then(|c| c.known_values()).unwrap_or_default()
                } else {
                    a.ints("axes")
                        .map_err(|m| node_err(node, m))?
                        .unwrap_or_default()
                };
                let mut dims = data.dims.clone();
                if node.op_type == "Unsqueeze" {
                    let rank = (dims.len() + axes.len()) as i64;
                    let mut axes: Vec<usize> = axes
                        .iter()
                        .map(|&x| (if x < 0 { x + rank } else { x }) as usize)
                        .collect();
                    axes.sort();
                    for ax in axes {
                        if ax > dims.len() {
                            return Err(node_err(node, format!("axis {ax} out of range")));
                        }
                        dims.insert(ax, 1);
                    }
                } else {
                    dims.retain(|&d| d != 1);
                }
                SymConst {
                    dims,
                    values: data.values.clone(),
                }
            }
            "Cast" => {
                let Some(data) = int_in(0) else {
                    return Ok(false);
                };
                data.clone()
            }
            "Concat" => {
                let parts: Option<Vec<&SymConst>> = (0..inputs.len()).map(int_in).collect();
                let Some(parts) = parts else { return Ok(false) };
                let values: Vec<SymInt> = parts
                    .iter()
                    .flat_map(|p| p.values.iter().copied())
                    .collect();
                SymConst {
                    dims: vec![values.len()],
                    values,
                }
            }
            _ => return Ok(false),
        };
        self.int_consts.insert(out, folded);
        Ok(true)
    }

    /// Integer values of a constant (8-bit or wider) with its dims.
    fn int_values(&self, name: &str) -> Option<(Vec<usize>, Vec<i64>)> {
        if let Some((d, v)) = self.byte_consts.get(name) {
            return Some((d.clone(), v.iter().map(|&x| x as i64).collect()));
        }
        let c = self.int_consts.get(name)?;
        Some((c.dims.clone(), c.known_values()?))
    }

    /// Folds `QuantizeLinear` / `DequantizeLinear`: quantized weights become float weights
    /// annotated as int8, activation QDQ pairs become activation annotations.
    fn import_qdq(&mut self, node: &NodeProto, inputs: &[String]) -> Result<()> {
        let a = Attrs::new(node);
        let out = node.output.first().cloned().unwrap_or_default();
        let scale = inputs
            .get(1)
            .and_then(|n| self.float_consts.get(n))
            .cloned()
            .ok_or_else(|| node_err(node, "the scale must be a constant"))?;
        let zp = match inputs.get(2).filter(|n| !n.is_empty()) {
            Some(n) => {
                self.int_values(n)
                    .ok_or_else(|| node_err(node, "the zero point must be a constant"))?
                    .1
            }
            None => vec![0],
        };
        let zp_signed = inputs
            .get(2)
            .and_then(|n| self.byte_consts.get(n))
            .is_some_and(|_| {
                inputs
                    .get(2)
                    .and_then(|n| self.byte_consts.get(n))
                    .is_some_and(|(_, v)| v.iter().any(|&x| x < 0))
            });
        let x = inputs.first().cloned().unwrap_or_default();
        let per_axis = |dims: &[usize]| -> Result<(usize, usize, usize)> {
            let rank = dims.len() as i64;
            let axis = a.int("axis", 1).map_err(|m| node_err(node, m))?;
            let axis = if scale.len() == 1 {
                0
            } else {
                (if axis < 0 { axis + rank } else { axis }) as usize
            };
            let inner: usize = dims.get(axis + 1..).map_or(1, |d| d.iter().product());
            let ch = if scale.len() == 1 {
                1
            } else {
                dims.get(axis).copied().unwrap_or(1)
            };
            if scale.len() != ch {
                return Err(node_err(
                    node,
                    format!("{} scales for {ch} channels", scale.len()),
                ));
            }
            Ok((axis, inner, ch))
        };
        if node.op_type == "DequantizeLinear" {
            if let Some((dims, q)) = self.int_values(&x) {
                let (axis, inner, ch) = per_axis(&dims)?;
                let c_of = |i: usize| if ch == 1 { 0 } else { (i / inner.max(1)) % ch };
                let zp_of = |c: usize| if zp.len() == 1 { zp[0] } else { zp[c] };
                let vals: Vec<f32> = q
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v - zp_of(c_of(i))) as f32 * scale.data()[c_of(i)])
                    .collect();
                let t = Tensor::new(dims, vals)?;
                self.shapes.insert(out.clone(), Shape::known(t.shape()));
                self.float_consts.insert(out.clone(), t.clone());
                self.graph.add_initializer(out.clone(), t);
                if self.byte_consts.contains_key(&x) && zp.iter().all(|&z| z == 0) {
                    self.quant.weights.insert(out, axis);
                }
                return Ok(());
            }
            if let Some((src, aq)) = self.pending_q.get(&x).cloned() {
                self.act_alias.insert(out, (src, aq));
                return Ok(());
            }
            return Err(node_err(
                node,
                "only dequantization of constants or of a QuantizeLinear output is supported",
            ));
        }
        // QuantizeLinear
        if scale.len() != 1 && !self.float_consts.contains_key(&x) {
            return Err(node_err(
                node,
                "per-axis quantization of activations is not supported",
            ));
        }
        if let Some(w) = self.float_consts.get(&x).cloned() {
            let (_, inner, ch) = per_axis(w.shape())?;
            let c_of = |i: usize| if ch == 1 { 0 } else { (i / inner.max(1)) % ch };
            let zp_of = |c: usize| if zp.len() == 1 { zp[0] } else { zp[c] };
            let (lo, hi) = if zp_signed || zp.iter().all(|&z| z <= 0) {
                (-128, 127)
            } else {
                (0, 255)
            };
            let q: Vec<i32> = w
                .data()
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    ((v / scale.data()[c_of(i)]).round_ties_even() as i64 + zp_of(c_of(i)))
                        .clamp(lo, hi) as i32
                })
                .collect();
            self.byte_consts.insert(out, (w.shape().to_vec(), q));
            return Ok(());
        }
        let z = zp[0];
        // an int8 activation equals a uint8 one with the zero point shifted by 128
        let zp_u8 = if zp_signed || (z < 0) { z + 128 } else { z };
        let aq = ActQuant {
            scale: scale.data()[0],
            zero_point: zp_u8.clamp(0, 255) as u8,
        };
        self.pending_q.insert(out, (x, aq));
        Ok(())
    }

    fn import_node(&mut self, node: &NodeProto, index: usize) -> Result<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(OnnxError::UnsupportedOp {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                supported: supported_ops().join(", "),
            });
        }
        let inputs: Vec<String> = node
            .input
            .iter()
            .map(|i| {
                if i.is_empty() {
                    String::new()
                } else {
                    self.resolve(i)
                }
            })
            .collect();
        let out0 = node.output.first().cloned().unwrap_or_default();
        if node.op_type == "Constant" {
            let a = Attrs::new(node);
            let attr = node
                .attribute
                .first()
                .ok_or_else(|| node_err(node, "Constant has no value attribute"))?;
            match attr.name.as_str() {
                "value" => {
                    let mut t = attr
                        .t
                        .clone()
                        .ok_or_else(|| node_err(node, "Constant value is not a tensor"))?;
                    t.name = out0.clone();
                    self.add_constant(&out0, &t)?;
                }
                "value_float" => {
                    let v = a.float("value_float", 0.0).map_err(|m| node_err(node, m))?;
                    self.add_constant(
                        &out0,
                        &crate::tensor_proto::encode_f32(&out0, &Tensor::scalar(v)),
                    )?;
                }
                "value_floats" => {
                    let t = Tensor::new(vec![attr.floats.len()], attr.floats.clone())
                        .map_err(OnnxError::Graph)?;
                    self.add_constant(&out0, &crate::tensor_proto::encode_f32(&out0, &t))?;
                }
                "value_int" => {
                    self.int_consts
                        .insert(out0, SymConst::known(vec![], &[attr.i]));
                }
                "value_ints" => {
                    self.int_consts
                        .insert(out0, SymConst::known(vec![attr.ints.len()], &attr.ints));
                }
                other => {
                    return Err(node_err(
                        node,
                        format!("Constant attribute '{other}' is not supported"),
                    ));
                }
            }
            return Ok(());
        }
        if node.op_type == "QuantizeLinear" || node.op_type == "DequantizeLinear" {
            return self.import_qdq(node, &inputs);
        }
        if self.fold_int(node, &inputs)? {
            return Ok(());
        }
        // activations behind a QuantizeLinear -> DequantizeLinear pair
        let mut inputs = inputs;
        let mut act_quant = None;
        for (k, i) in inputs.iter_mut().enumerate() {
            if let Some((src, aq)) = self.act_alias.get(i.as_str()).cloned() {
                *i = src;
                if k == 0 {
                    act_quant = Some(aq);
                } else {
                    self.dropped_qdq += 1;
                }
            }
        }
        let is_const =
            |n: &String| self.float_consts.contains_key(n) || self.int_consts.contains_key(n);
        if node.op_type == "Identity"
            && inputs.first().is_some_and(is_const)
            && !self.graph.outputs.contains(&out0)
        {
            self.aliases.insert(out0, inputs[0].clone());
            return Ok(());
        }
        let conv =
            registry()
                .get(node.op_type.as_str())
                .ok_or_else(|| OnnxError::UnsupportedOp {
                    node: node.name.clone(),
                    op_type: node.op_type.clone(),
                    domain: node.domain.clone(),
                    supported: supported_ops().join(", "),
                })?;
        let shapes = inputs.iter().map(|n| self.shapes.get(n).cloned()).collect();
        let mut ctx = ImportCtx {
            node,
            attrs: Attrs::new(node),
            opset: self.opset,
            inputs: inputs.clone(),
            shapes,
            int_consts: &self.int_consts,
            float_consts: &self.float_consts,
        };
        let op = conv.import(&mut ctx).map_err(|m| node_err(node, m))?;
        let kept_inputs = ctx.inputs;
        for i in &kept_inputs {
            if i.is_empty() {
                return Err(node_err(
                    node,
                    "optional inputs left empty in the middle are not supported",
                ));
            }
            if !self.shapes.contains_key(i) {
                let what = if self.int_consts.contains_key(i) {
                    "an integer constant, which this input cannot take"
                } else {
                    "not defined before this node"
                };
                return Err(node_err(node, format!("input '{i}' is {what}")));
            }
        }
        let outputs: Vec<String> = node
            .output
            .iter()
            .take_while(|o| !o.is_empty())
            .take(1)
            .cloned()
            .collect();
        let name = self.unique_name(node, index);
        if let Some(aq) = act_quant {
            self.quant.activations.insert(name.clone(), aq);
        }
        let ir = Node {
            name,
            op,
            inputs: kept_inputs,
            outputs,
        };
        let in_shapes: Vec<Shape> = ir.inputs.iter().map(|i| self.shapes[i].clone()).collect();
        let out_shapes = self.graph.infer_node(&ir, &in_shapes)?;
        for (o, s) in ir.outputs.iter().zip(out_shapes) {
            self.shapes.insert(o.clone(), s);
        }
        self.graph.nodes.push(ir);
        Ok(())
    }
}

/// Op types the importer handles itself (folded away or turned into annotations) rather than
/// through a converter.
const FOLDED_OPS: &[&str] = &[
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
];

/// Fails with one error naming every unsupported op type (count and first node) when the
/// model uses any, so a user sees the whole list at once.
fn check_op_support(nodes: &[NodeProto]) -> Result<()> {
    let mut missing: Vec<UnsupportedOpType> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        let known = default_domain
            && (registry().contains_key(n.op_type.as_str())
                || FOLDED_OPS.contains(&n.op_type.as_str()));
        if known {
            continue;
        }
        let op_type = if default_domain {
            n.op_type.clone()
        } else {
            format!("{}:{}", n.domain, n.op_type)
        };
        match missing.iter_mut().find(|m| m.op_type == op_type) {
            Some(m) => m.count += 1,
            None => missing.push(UnsupportedOpType {
                op_type,
                count: 1,
                first_node: if n.name.is_empty() {
                    format!("#{i}")
                } else {
                    n.name.clone()
                },
            }),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(OnnxError::UnsupportedOps {
        ops: missing,
        supported: supported_ops().join(", "),
    })
}

/// Orders nodes so that every input is defined first (ONNX requires it; some tools do not).
fn sorted_nodes(nodes: &[NodeProto], defined: &HashSet<String>) -> Vec<usize> {
    let mut avail = defined.clone();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    loop {
        let mut progressed = false;
        for (i, n) in nodes.iter().enumerate() {
            if !done[i] && n.input.iter().all(|x| x.is_empty() || avail.contains(x)) {
                done[i] = true;
                order.push(i);
                avail.extend(n.output.iter().cloned());
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    // nodes whose inputs never appear keep their place at the end and fail with a clear error
    order.extend((0..nodes.len()).filter(|i| !done[*i]));
    order
}

/// Converts a decoded ONNX model into a checked graph.
pub fn import_model(model: &ModelProto) -> Result<Graph> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| OnnxError::Model("the model declares no default-domain opset".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(OnnxError::Model(format!(
            "opset {opset} is not supported (supported: {}..={}); convert the model with onnx.version_converter",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    if !gp.sparse_initializer.is_empty() {
        return Err(OnnxError::Model(
            "sparse initializers are not supported".into(),
        ));
    }
    let mut imp = Importer {
        graph: Graph::new(if gp.name.is_empty() {
            "model"
        } else {
            &gp.name
        }),
        opset,
        shapes: HashMap::new(),
        float_consts: HashMap::new(),
        int_consts: HashMap::new(),
        aliases: HashMap::new(),
        node_names: HashSet::new(),
        byte_consts: HashMap::new(),
        pending_q: HashMap::new(),
        act_alias: HashMap::new(),
        quant: Quantization::default(),
        dropped_qdq: 0,
    };
    imp.graph.outputs = gp.output.iter().map(|o| o.name.clone()).collect();
    for t in &gp.initializer {
        if t.name.is_empty() {
            return Err(OnnxError::Model("an initializer has no name".into()));
        }
        imp.add_constant(&t.name, t)?;
    }
    for v in &gp.input {
        if imp.graph.initializers.contains_key(&v.name) || imp.int_consts.contains_key(&v.name) {
            continue;
        }
        let shape = input_shape(v)?;
        imp.shapes.insert(v.name.clone(), shape.clone());
        imp.graph.add_input(v.name.clone(), shape);
    }
    if imp.graph.inputs.is_empty() {
        return Err(OnnxError::Model(
            "the graph has no (non-initializer) inputs".into(),
        ));
    }
    check_op_support(&gp.node)?;
    let mut defined: HashSet<String> = imp.shapes.keys().cloned().collect();
    defined.extend(imp.int_consts.keys().cloned());
    for i in sorted_nodes(&gp.node, &defined) {
        imp.import_node(&gp.node[i], i)?;
    }
    let outputs: Vec<String> = imp.graph.outputs.iter().map(|o| imp.resolve(o)).collect();
    imp.graph.outputs = outputs;
    if !imp.quant.weights.is_empty() || !imp.quant.activations.is_empty() {
        imp.graph.quantization = Some(std::mem::take(&mut imp.quant));
    }
    if imp.dropped_qdq > 0 {
        imp.graph.metadata.insert("secateur.import.note".into(), format!("{} quantize/dequantize pairs on inputs other than the first were folded away (their rounding is not simulated)", imp.dropped_qdq));
    }
    for prop in &model.metadata_props {
        if let Some(weight) = prop.key.strip_prefix(mask_codec::PREFIX) {
            let mask = mask_codec::decode(weight, &prop.value)?;
            imp.graph.masks.insert(weight.to_string(), mask);
        } else {
            imp.graph
                .metadata
                .insert(prop.key.clone(), prop.value.clone());
        }
    }
    let mut graph = imp.graph;
    graph.drop_unused_initializers();
    graph.unshare_initializers();
    graph.check()?;
    Ok(graph)
}
