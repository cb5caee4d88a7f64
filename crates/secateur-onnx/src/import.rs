//! ONNX → IR import. Initializers become weights; graph inputs get a symbolic batch for
//! `dim_param` (or unknown) leading dimensions; `Constant` nodes, `Identity` of constants and
//! the integer shape arithmetic PyTorch emits around `Reshape` (`Shape → Gather → Unsqueeze →
//! Concat`) are folded at import, keeping the batch symbolic; every other node goes through the
//! converter registry. The result is topologically sorted and checked.

use crate::attrs::Attrs;
use crate::error::{OnnxError, Result, UnsupportedOpType};
use crate::fold;
use crate::mask_codec;
use crate::ops::{ImportCtx, registry, supported_ops};
use crate::proto::{ModelProto, NodeProto, TensorProto, data_type};
use crate::tensor_proto::{Constant, decode};
use secateur_graph::{
    ActQuant, Dim, ElemType, Graph, Node, OpSemantics, Quantization, Shape, Tensor,
};
use std::collections::{HashMap, HashSet};

mod batch_index;
mod batch_statistics;
mod conv1d;
mod einsum;
mod gather_nd;
mod instance_norm;
mod scatter;
mod tile;

/// Supported range of default-domain opset versions.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// An integer known at import, or the (symbolic) batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymInt {
    Known(i64),
    Batch,
    /// `k` times the batch size (`k >= 2`).
    BatchTimes(i64),
}

impl SymInt {
    /// `k` times the batch size, normalised (`Batch` for 1).
    pub fn batch_times(k: i64) -> Option<SymInt> {
        match k {
            1 => Some(SymInt::Batch),
            k if k >= 2 => Some(SymInt::BatchTimes(k)),
            _ => None,
        }
    }

    /// The batch multiple, when the value depends on the batch.
    pub fn batch_factor(self) -> Option<i64> {
        match self {
            SymInt::Known(_) => None,
            SymInt::Batch => Some(1),
            SymInt::BatchTimes(k) => Some(k),
        }
    }
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
                SymInt::Batch | SymInt::BatchTimes(_) => None,
            })
            .collect()
    }
}

/// An 8-bit constant: its dims, its values and whether its element type is INT8 (else UINT8).
struct ByteConst {
    dims: Vec<usize>,
    values: Vec<i32>,
    signed: bool,
}

struct Importer {
    /// Which elements each sparse-stored constant holds (the keep set of its mask).
    sparse_keep: HashMap<String, Vec<bool>>,
    graph: Graph,
    opset: i64,
    shapes: HashMap<String, Shape>,
    float_consts: HashMap<String, Tensor>,
    int_consts: HashMap<String, SymConst>,
    /// Index tensors computed from the batch size (`Range(0, N)` and what is built on it).
    grids: HashMap<String, crate::grid::BatchGrid>,
    /// Integer values computed from the batch size of which only the shape is known.
    shape_only: HashMap<String, Vec<SymInt>>,
    aliases: HashMap<String, String>,
    node_names: HashSet<String>,
    /// 8-bit constants (quantized weights and zero points).
    byte_consts: HashMap<String, ByteConst>,
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

/// The element type of a graph input.
fn input_type(v: &crate::proto::ValueInfoProto) -> Result<ElemType> {
    let code = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .map_or(0, |t| t.elem_type);
    Ok(match code {
        data_type::FLOAT => ElemType::Float,
        data_type::INT64 => ElemType::Int64,
        data_type::INT32 => ElemType::Int32,
        data_type::BOOL => ElemType::Bool,
        other => {
            return Err(OnnxError::Model(format!(
                "graph input '{}' has element type {}; FLOAT, INT64, INT32 and BOOL inputs are supported",
                v.name,
                data_type::name(other)
            )));
        }
    })
}

/// Choices the file leaves open: sizes of symbolic dimensions other than the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Size of each named symbolic dimension (a sequence length: `seq = 128`).
    pub dims: std::collections::BTreeMap<String, usize>,
    /// Size of every other symbolic dimension after the batch (`--seq-len`).
    pub other_dims: Option<usize>,
}

fn input_shape(v: &crate::proto::ValueInfoProto, opts: &ImportOptions) -> Result<Shape> {
    let tt = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| OnnxError::Model(format!("graph input '{}' is not a tensor", v.name)))?;
    let shape = tt
        .shape
        .as_ref()
        .ok_or_else(|| OnnxError::Model(format!("graph input '{}' has no shape", v.name)))?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (axis, d) in shape.dim.iter().enumerate() {
        let dim = match (d.dim_value, &d.dim_param) {
            (Some(n), _) if n > 0 => Dim::Known(n as usize),
            _ if axis == 0 => Dim::Batch,
            (_, Some(p)) if opts.dims.contains_key(p) => Dim::Known(opts.dims[p]),
            _ if opts.other_dims.is_some() => Dim::Known(opts.other_dims.unwrap_or(1)),
            (_, Some(p)) => {
                return Err(OnnxError::Model(format!(
                    "graph input '{}': symbolic dimension '{p}' at axis {axis} needs a size (only the leading batch dimension stays symbolic); give it with --dim {p}=SIZE (or --seq-len SIZE for every such dimension)",
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
            Constant::Byte {
                dims,
                values,
                signed,
            } => {
                self.byte_consts.insert(
                    name.to_string(),
                    ByteConst {
                        dims,
                        values,
                        signed,
                    },
                );
            }
        }
        Ok(())
    }

    /// Records a float tensor computed at import as a constant (an initializer).
    fn add_float_const(&mut self, name: &str, t: Tensor) {
        self.shapes
            .insert(name.to_string(), Shape::known(t.shape()));
        self.float_consts.insert(name.to_string(), t.clone());
        self.graph.add_initializer(name, t);
    }

    /// Records a constant the import computed from `inputs`: an integer constant (never
    /// trained, not counted as a parameter) when it and every input hold integers (Swin's
    /// attention masks, built from shape arithmetic, zeros and a scatter), else an ordinary
    /// one (a transposed or scaled weight: trained values are not all integers).
    fn add_folded_const(&mut self, name: &str, t: Tensor, inputs: &[String]) {
        let from_constants = inputs.iter().all(|i| {
            self.graph.integer_constants.contains(i)
                || self
                    .float_consts
                    .get(i)
                    .is_some_and(|c| c.len() <= 1 || c.data().iter().all(|v| v.fract() == 0.0))
        });
        if from_constants && t.data().iter().all(|v| v.fract() == 0.0) {
            self.add_integer_const(name, t);
        } else {
            self.add_float_const(name, t);
        }
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
                let int_shape = inputs
                    .first()
                    .and_then(|n| self.int_consts.get(n))
                    .map(|c| Shape::known(&c.dims));
                let Some(s) = inputs
                    .first()
                    .and_then(|n| self.shapes.get(n))
                    .cloned()
                    .or(int_shape)
                else {
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
                        Dim::BatchTimes(k) => SymInt::BatchTimes(*k as i64),
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
                    return self.fold_float_to_int(node, inputs);
                };
                let to = a.int("to", 0).map_err(|m| node_err(node, m))? as i32;
                if to == data_type::FLOAT || to == data_type::DOUBLE || to == 10 || to == 16 {
                    let values = data
                        .known_values()
                        .ok_or_else(|| node_err(node, "casting the batch size to float"))?;
                    let t = Tensor::new(
                        data.dims.clone(),
                        values.iter().map(|&v| v as f32).collect(),
                    )?;
                    self.add_integer_const(&out, t);
                    return Ok(true);
                }
                data.clone()
            }
            "Not" => {
                let Some(data) = int_in(0) else {
                    return Ok(false);
                };
                let zero = SymConst::known(vec![], &[0]);
                fold::binary(fold::IntBinary::Equal, data, &zero)
                    .ok_or_else(|| node_err(node, "Not of the batch size"))?
            }
            "Clip" if self.opset >= 11 => {
                let Some(data) = int_in(0) else {
                    return Ok(false);
                };
                let bound = |i: usize| -> Result<Option<i64>> {
                    match inputs.get(i).filter(|n| !n.is_empty()) {
                        None => Ok(None),
                        Some(n) => match self.int_consts.get(n).and_then(|c| c.known_values()) {
                            Some(v) if v.len() == 1 => Ok(Some(v[0])),
                            _ => Err(node_err(
                                node,
                                "integer Clip bounds must be constant scalars",
                            )),
                        },
                    }
                };
                let (lo, hi) = (bound(1)?, bound(2)?);
                let values = data
                    .known_values()
                    .ok_or_else(|| node_err(node, "clipping the batch size"))?;
                let clipped: Vec<i64> = values
                    .iter()
                    .map(|&v| v.max(lo.unwrap_or(i64::MIN)).min(hi.unwrap_or(i64::MAX)))
                    .collect();
                SymConst::known(data.dims.clone(), &clipped)
            }
            "Where" => {
                let (Some(c), Some(x), Some(y)) = (int_in(0), int_in(1), int_in(2)) else {
                    return Ok(false);
                };
                fold::select(c, x, y)
                    .ok_or_else(|| node_err(node, "the condition depends on the batch size"))?
            }
            "OneHot" => {
                let (Some(idx), Some(depth), Some(values)) = (int_in(0), int_in(1), int_in(2))
                else {
                    return Ok(false);
                };
                let depth = match depth.values.as_slice() {
                    [SymInt::Known(d)] => *d,
                    _ => return Err(node_err(node, "depth must be one known integer")),
                };
                let [off, on] = values.values.as_slice() else {
                    return Err(node_err(node, "values must be [off, on]"));
                };
                let axis = a.int("axis", -1).map_err(|m| node_err(node, m))?;
                fold::one_hot(idx, depth, *off, *on, axis).ok_or_else(|| {
                    node_err(
                        node,
                        format!("indices of dims {:?} do not take a one-hot axis {axis} of depth {depth}", idx.dims),
                    )
                })?
            }
            "Range" => {
                let scalar = |i: usize| {
                    int_in(i)
                        .and_then(|c| c.known_values())
                        .and_then(|v| v.first().copied())
                };
                let (Some(s0), Some(l), Some(d)) = (scalar(0), scalar(1), scalar(2)) else {
                    return Ok(false);
                };
                fold::range(s0, l, d)
                    .ok_or_else(|| node_err(node, "delta must be non-zero and the range small"))?
            }
            "ConstantOfShape" => {
                let Some(shape) = int_in(0).and_then(|c| c.known_values()) else {
                    return Ok(false);
                };
                let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
                let n = fold::element_count(&dims).ok_or_else(|| {
                    node_err(node, format!("a constant of shape {dims:?} is too large"))
                })?;
                let value = node.attribute.iter().find(|x| x.name == "value");
                match value.and_then(|v| v.t.as_ref()).map(decode).transpose()? {
                    Some(Constant::Int { values, .. }) => {
                        let v = values.first().copied().unwrap_or(0);
                        SymConst::known(dims, &vec![v; n])
                    }
                    Some(Constant::Float(t)) => {
                        let v = t.data().first().copied().unwrap_or(0.0);
                        self.add_folded_const(&out, Tensor::full(dims, v), &[]);
                        return Ok(true);
                    }
                    Some(Constant::Byte { .. }) => {
                        return Err(node_err(node, "8-bit fill values are not supported"));
                    }
                    None => {
                        self.add_integer_const(&out, Tensor::zeros(dims));
                        return Ok(true);
                    }
                }
            }
            "Expand" => {
                let (Some(data), Some(shape)) = (int_in(0), int_in(1)) else {
                    return Ok(false);
                };
                let target = shape
                    .known_values()
                    .ok_or_else(|| node_err(node, "expanding by a batch multiple"))?;
                let target: Vec<usize> = target.iter().map(|&d| d.max(0) as usize).collect();
                fold::expand(data, &target)
                    .ok_or_else(|| node_err(node, "shapes do not broadcast"))?
            }
            "Slice" if self.opset >= 10 => {
                let Some(data) = int_in(0) else {
                    return Ok(false);
                };
                let list = |i: usize| {
                    inputs
                        .get(i)
                        .filter(|n| !n.is_empty())
                        .and_then(|n| self.int_consts.get(n))
                        .and_then(|c| c.known_values())
                };
                let (Some(st), Some(en)) = (list(1), list(2)) else {
                    return Ok(false);
                };
                let rank = data.dims.len() as i64;
                let axes: Vec<usize> = list(3)
                    .unwrap_or_else(|| (0..st.len() as i64).collect())
                    .iter()
                    .map(|&x| (if x < 0 { x + rank } else { x }) as usize)
                    .collect();
                let steps = list(4).unwrap_or_else(|| vec![1; st.len()]);
                fold::slice(data, &axes, &st, &en, &steps)
                    .ok_or_else(|| node_err(node, "integer slice out of range"))?
            }
            "GatherElements" => {
                let (Some(data), Some(idx)) = (int_in(0), int_in(1)) else {
                    return Ok(false);
                };
                let values = idx
                    .known_values()
                    .ok_or_else(|| node_err(node, "indices depend on the batch size"))?;
                let rank = data.dims.len() as i64;
                let ax = a.int("axis", 0).map_err(|m| node_err(node, m))?;
                let ax = (if ax < 0 { ax + rank } else { ax }) as usize;
                fold::gather_elements(data, &values, &idx.dims, ax)
                    .ok_or_else(|| node_err(node, "indices out of range or ranks differ"))?
            }
            "Transpose" => {
                let Some(data) = int_in(0) else {
                    return Ok(false);
                };
                let perm = a.ints("perm").map_err(|m| node_err(node, m))?;
                fold::transpose(data, perm.as_deref())
                    .ok_or_else(|| node_err(node, "only 2-D integer transposes fold at import"))?
            }
            "Reshape" => {
                let (Some(data), Some(shape)) = (int_in(0), int_in(1)) else {
                    return Ok(false);
                };
                let target = shape
                    .known_values()
                    .ok_or_else(|| node_err(node, "reshaping integers by the batch size"))?;
                let n = data.values.len();
                let positive: Vec<usize> = target
                    .iter()
                    .filter(|&&d| d > 0)
                    .map(|&d| d as usize)
                    .collect();
                let known = fold::element_count(&positive).ok_or_else(|| {
                    node_err(node, format!("target shape {target:?} is too large"))
                })?;
                let dims = target
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        -1 => n / known.max(1),
                        0 => data.dims.get(i).copied().unwrap_or(1),
                        d => d as usize,
                    })
                    .collect::<Vec<_>>();
                if fold::element_count(&dims) != Some(n) {
                    return Err(node_err(
                        node,
                        format!("cannot reshape {n} integers to {target:?}"),
                    ));
                }
                SymConst {
                    dims,
                    values: data.values.clone(),
                }
            }
            op if fold::IntBinary::from_op_type(op).is_some() => {
                let (Some(x), Some(y)) = (int_in(0), int_in(1)) else {
                    return Ok(false);
                };
                let f = fold::IntBinary::from_op_type(op).expect("checked");
                fold::binary(f, x, y).ok_or_else(|| {
                    node_err(node, "integer arithmetic on the batch size or by zero")
                })?
            }
            "Concat" => {
                let parts: Option<Vec<&SymConst>> = (0..inputs.len()).map(int_in).collect();
                let Some(parts) = parts else { return Ok(false) };
                let axis = a.int("axis", 0).map_err(|m| node_err(node, m))?;
                fold::concat(&parts, axis).ok_or_else(|| {
                    let dims: Vec<_> = parts.iter().map(|p| p.dims.clone()).collect();
                    node_err(
                        node,
                        format!("integer parts of dims {dims:?} do not join along axis {axis}"),
                    )
                })?
            }
            _ => return Ok(false),
        };
        self.int_consts.insert(out, folded);
        Ok(true)
    }

    /// Integer values of a constant (8-bit or wider) with its dims.
    fn int_values(&self, name: &str) -> Option<(Vec<usize>, Vec<i64>)> {
        if let Some(b) = self.byte_consts.get(name) {
            return Some((b.dims.clone(), b.values.iter().map(|&x| x as i64).collect()));
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
        let zp_name = inputs.get(2).filter(|n| !n.is_empty());
        let zp = match zp_name {
            Some(n) => {
                self.int_values(n)
                    .ok_or_else(|| node_err(node, "the zero point must be a constant"))?
                    .1
            }
            None => vec![0],
        };
        if zp.len() != 1 && zp.len() != scale.len() {
            return Err(node_err(
                node,
                format!(
                    "{} zero points for {} scales (expected 1 or one per scale)",
                    zp.len(),
                    scale.len()
                ),
            ));
        }
        // The zero point's element type is the quantized type (ONNX: uint8 when absent).
        let zp_signed = zp_name
            .and_then(|n| self.byte_consts.get(n))
            .is_some_and(|b| b.signed);
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
            let (lo, hi) = if zp_signed { (-128, 127) } else { (0, 255) };
            let q: Vec<i32> = w
                .data()
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    ((v / scale.data()[c_of(i)]).round_ties_even() as i64 + zp_of(c_of(i)))
                        .clamp(lo, hi) as i32
                })
                .collect();
            self.byte_consts.insert(
                out,
                ByteConst {
                    dims: w.shape().to_vec(),
                    values: q,
                    signed: zp_signed,
                },
            );
            return Ok(());
        }
        let z = zp[0];
        // an int8 activation equals a uint8 one with the zero point shifted by 128
        let zp_u8 = if zp_signed { z + 128 } else { z };
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
                "sparse_value" => {
                    let sp = attr
                        .sparse_tensor
                        .as_ref()
                        .ok_or_else(|| node_err(node, "sparse_value holds no sparse tensor"))?;
                    let (_, t, keep) = crate::sparse_init::decode_sparse(sp)?;
                    self.add_float_const(&out0, t);
                    self.sparse_keep.insert(out0, keep);
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
        if self.fold_batch_index(node, &inputs, index)? || self.fold_int(node, &inputs)? {
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
        if node.op_type == "Einsum" {
            return self.import_einsum(node, &inputs, index);
        }
        if node.op_type == "Tile" {
            return self.import_tile(node, &inputs, index);
        }
        if node.op_type == "BatchNormalization" && self.fold_batch_statistics(node, &inputs)? {
            return Ok(());
        }
        if node.op_type == "Conv" && self.import_conv1d(node, &inputs, index)? {
            return Ok(());
        }
        if node.op_type == "InstanceNormalization" {
            return self.import_instance_norm(node, &inputs, index);
        }
        if node.op_type == "ScatterND" {
            return self.import_scatter_nd(node, &inputs);
        }
        if node.op_type == "GatherND" && self.gather_nd_constant(node, &inputs, index)? {
            return Ok(());
        }
        if node.op_type == "ConstantOfShape"
            && self.constant_of_batched_shape(node, &inputs, index)?
        {
            return Ok(());
        }
        if self.expand_node(node, &inputs, index)? {
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
        // integer constants have the shape they will have as values (`integers_as_values`)
        let shapes = inputs
            .iter()
            .map(|n| {
                let int_shape = || self.int_consts.get(n).map(|c| Shape::known(&c.dims));
                self.shapes.get(n).cloned().or_else(int_shape)
            })
            .collect();
        let mut ctx = ImportCtx {
            node,
            attrs: Attrs::new(node),
            opset: self.opset,
            inputs: inputs.clone(),
            shapes,
            int_consts: &self.int_consts,
            float_consts: &self.float_consts,
            batch_source: self.batch_source(),
        };
        let op = conv.import(&mut ctx).map_err(|m| node_err(node, m))?;
        let kept_inputs = ctx.inputs;
        if self.fold_float(node, &op, &kept_inputs)? {
            return Ok(());
        }
        self.integers_as_values(node, &kept_inputs)?;
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
        self.push_node(name, op, kept_inputs, outputs)
    }

    /// `ConstantOfShape` of a shape whose first entry is the batch size and the others known
    /// (DETR-style position encodings start from `zeros(N, H, W)`): the fill value expanded
    /// over the batch of the graph input. `Ok(false)` when it is not one.
    fn constant_of_batched_shape(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<bool> {
        let Some(shape) = inputs.first().and_then(|n| self.int_consts.get(n)) else {
            return Ok(false);
        };
        if shape.known_values().is_some() {
            return Ok(false);
        }
        let Some((SymInt::Batch, rest)) = shape.values.split_first() else {
            return Err(node_err(
                node,
                format!(
                    "a constant of shape {:?}: only the first size may depend on the batch, and be the batch size",
                    shape.values
                ),
            ));
        };
        let mut dims = vec![Dim::Batch];
        for v in rest {
            match v {
                SymInt::Known(n) if *n >= 0 => dims.push(Dim::Known(*n as usize)),
                _ => return Err(node_err(node, "only the first size may be the batch's")),
            }
        }
        let batch = self
            .batch_source()
            .ok_or_else(|| node_err(node, "no graph input carries the batch size"))?;
        let value = node.attribute.iter().find(|x| x.name == "value");
        let (fill, integer) = match value.and_then(|v| v.t.as_ref()).map(decode).transpose()? {
            Some(Constant::Int { values, .. }) => {
                (values.first().copied().unwrap_or(0) as f32, true)
            }
            Some(Constant::Float(t)) => (t.data().first().copied().unwrap_or(0.0), false),
            Some(Constant::Byte { .. }) => {
                return Err(node_err(node, "8-bit fill values are not supported"));
            }
            None => (0.0, true),
        };
        let base = self.unique_name(node, index);
        let fill_name = format!("{base}.value");
        let unit = Tensor::full(vec![1; dims.len()], fill);
        if integer {
            self.add_integer_const(&fill_name, unit);
        } else {
            self.add_float_const(&fill_name, unit);
        }
        let expand = secateur_graph::Op::Expand(secateur_graph::Expand { shape: Shape(dims) });
        let out = node.output.first().cloned().unwrap_or_default();
        self.push_node(base, expand, vec![fill_name, batch], vec![out])?;
        Ok(true)
    }

    /// A `Cast` of a float constant to an integer type (pads computed in float from a shape,
    /// as TensorFlow-style "same" padding exports): an integer constant, truncated toward
    /// zero as ONNX casts. `Ok(false)` when it is not one.
    fn fold_float_to_int(&mut self, node: &NodeProto, inputs: &[String]) -> Result<bool> {
        use crate::proto::data_type as dt;
        let to = Attrs::new(node)
            .int("to", 0)
            .map_err(|m| node_err(node, m))? as i32;
        // INT16, UINT16, UINT32 and UINT64 besides the named ones
        let integer = [dt::INT64, dt::INT32, dt::INT8, dt::UINT8, 5, 4, 12, 13];
        let (Some(t), true) = (
            inputs.first().and_then(|n| self.float_consts.get(n)),
            integer.contains(&to),
        ) else {
            return Ok(false);
        };
        if t.data().iter().any(|v| !v.is_finite() || v.abs() >= 9.0e15) {
            return Err(node_err(
                node,
                "casting a non-finite or huge float to an integer",
            ));
        }
        let values: Vec<i64> = t.data().iter().map(|&v| v.trunc() as i64).collect();
        let out = node.output.first().cloned().unwrap_or_default();
        self.int_consts
            .insert(out, SymConst::known(t.shape().to_vec(), &values));
        Ok(true)
    }

    /// Integer constants an op reads as values (a boolean mask combined with an activation)
    /// become f32 initializers marked as integer constants.
    fn integers_as_values(&mut self, node: &NodeProto, inputs: &[String]) -> Result<()> {
        for name in inputs {
            if self.shapes.contains_key(name) {
                continue;
            }
            let Some(c) = self.int_consts.get(name) else {
                continue;
            };
            let values = c
                .known_values()
                .filter(|v| v.iter().all(|x| x.unsigned_abs() <= 1 << 24))
                .ok_or_else(|| {
                    node_err(
                        node,
                        format!("input '{name}' holds integers that are not exact as values (the batch size, or beyond 2^24)"),
                    )
                })?;
            let t = Tensor::new(c.dims.clone(), values.iter().map(|&v| v as f32).collect())?;
            self.add_integer_const(name, t);
        }
        Ok(())
    }

    /// Records integers computed at import as an initializer the graph never trains.
    fn add_integer_const(&mut self, name: &str, t: Tensor) {
        self.add_float_const(name, t);
        self.graph.integer_constants.insert(name.to_string());
    }

    /// Appends an IR node, inferring its output shapes.
    fn push_node(
        &mut self,
        name: String,
        op: secateur_graph::Op,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<()> {
        let ir = Node {
            name,
            op,
            inputs,
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

    /// The first graph input whose axis 0 is the batch.
    fn batch_source(&self) -> Option<String> {
        self.graph
            .inputs
            .iter()
            .find(|i| i.shape.0.first() == Some(&Dim::Batch))
            .map(|i| i.name.clone())
    }

    /// Evaluates at import a node whose inputs are all float constants (weights transposed or
    /// scaled by the exporter, `Sqrt` of a head size); `Ok(false)` if it is not such a node.
    fn fold_float(
        &mut self,
        node: &NodeProto,
        op: &secateur_graph::Op,
        inputs: &[String],
    ) -> Result<bool> {
        let Some(out) = node.output.first() else {
            return Ok(false);
        };
        if inputs.is_empty()
            || self.graph.outputs.contains(out)
            || !inputs.iter().all(|i| self.float_consts.contains_key(i))
        {
            return Ok(false);
        }
        // the reference evaluation trusts validated shapes: check them like any node's
        let probe = Node {
            name: node.name.clone(),
            op: op.clone(),
            inputs: inputs.to_vec(),
            outputs: vec![out.clone()],
        };
        let in_shapes: Vec<Shape> = inputs
            .iter()
            .map(|i| Shape::known(self.float_consts[i].shape()))
            .collect();
        self.graph.infer_node(&probe, &in_shapes)?;
        let args: Vec<&Tensor> = inputs.iter().map(|i| &self.float_consts[i]).collect();
        let mut y = op
            .sem()
            .eval(&args)
            .map_err(|e| node_err(node, e.to_string()))?;
        if y.len() != 1 {
            return Ok(false);
        }
        let t = y.remove(0);
        self.add_folded_const(out, t, inputs);
        Ok(true)
    }

    /// Ops that become several IR nodes: `Split` (one `Slice` per output, or constants when it
    /// cuts a constant) and `Gather` of an
    /// activation at constant indices (a `Slice`, then a `Reshape` dropping the axis for a
    /// scalar index). `Ok(false)` if `node` is not one of them.
    fn expand_node(&mut self, node: &NodeProto, inputs: &[String], index: usize) -> Result<bool> {
        let a = Attrs::new(node);
        let x = inputs.first().cloned().unwrap_or_default();
        let Some(shape) = self.shapes.get(&x).cloned() else {
            return Ok(false);
        };
        let constant_data = self.float_consts.contains_key(&x);
        let rank = shape.rank() as i64;
        let axis_of = |v: i64| -> Result<usize> {
            let ax = if v < 0 { v + rank } else { v };
            if !(0..rank).contains(&ax) {
                return Err(node_err(
                    node,
                    format!("axis {v} is out of range for {shape}"),
                ));
            }
            Ok(ax as usize)
        };
        match node.op_type.as_str() {
            "Split" => {
                let ax = axis_of(a.int("axis", 0).map_err(|m| node_err(node, m))?)?;
                let dim = shape
                    .dim(ax)
                    .ok_or_else(|| node_err(node, "cannot split the batch"))?;
                let outputs: Vec<&String> = node.output.iter().collect();
                let sizes: Vec<i64> = match inputs.get(1).filter(|n| !n.is_empty()) {
                    Some(n) => {
                        self.int_values(n)
                            .ok_or_else(|| node_err(node, "split sizes must be constant"))?
                            .1
                    }
                    None => match a.ints("split").map_err(|m| node_err(node, m))? {
                        Some(v) if self.opset < 13 => v,
                        _ => {
                            let k = outputs.len().max(1);
                            let part = dim.div_ceil(k) as i64;
                            (0..k as i64)
                                .map(|i| part.min(dim as i64 - i * part))
                                .collect()
                        }
                    },
                };
                if sizes.len() != outputs.len() || sizes.iter().sum::<i64>() != dim as i64 {
                    return Err(node_err(
                        node,
                        format!("split sizes {sizes:?} do not cover axis {ax} of {shape}"),
                    ));
                }
                let base = self.unique_name(node, index);
                let mut start = 0i64;
                for (k, (out, size)) in outputs.iter().zip(&sizes).enumerate() {
                    let op = secateur_graph::Op::Slice(secateur_graph::Slice {
                        axes: vec![ax],
                        starts: vec![start],
                        ends: vec![start + size],
                        steps: vec![1],
                    });
                    start += size;
                    if out.is_empty() {
                        continue;
                    }
                    if constant_data {
                        // a constant table cut in parts (GPT-J's rotary sines and cosines)
                        let y = op
                            .sem()
                            .eval(&[&self.float_consts[&x]])
                            .map_err(|e| node_err(node, e.to_string()))?
                            .remove(0);
                        self.add_float_const(out, y);
                        continue;
                    }
                    self.push_node(
                        format!("{base}.{k}"),
                        op,
                        vec![x.clone()],
                        vec![(*out).clone()],
                    )?;
                }
                Ok(true)
            }
            "Gather" => {
                let Some((dims, idx)) = inputs.get(1).and_then(|n| self.int_values(n)) else {
                    return Ok(false);
                };
                let ax = axis_of(a.int("axis", 0).map_err(|m| node_err(node, m))?)?;
                let dim = shape
                    .dim(ax)
                    .ok_or_else(|| node_err(node, "cannot gather along the batch"))?;
                let out = node.output.first().cloned().unwrap_or_default();
                let idx_tensor =
                    Tensor::new(dims.clone(), idx.iter().map(|&v| v as f32).collect())?;
                let gather = secateur_graph::Gather { axis: ax };
                if constant_data {
                    // constant rows of a constant table (position embeddings): folded
                    let data = &self.float_consts[&x];
                    let y = gather
                        .eval(&[data, &idx_tensor])
                        .map_err(|e| node_err(node, e.to_string()))?
                        .remove(0);
                    self.add_float_const(&out, y);
                    return Ok(true);
                }
                let base = self.unique_name(node, index);
                let contiguous = !idx.is_empty() && idx.windows(2).all(|w| w[1] == w[0] + 1);
                if !contiguous {
                    let idx_name = format!("{out}__indices");
                    self.add_integer_const(&idx_name, idx_tensor);
                    let op = secateur_graph::Op::Gather(gather);
                    self.push_node(base, op, vec![x, idx_name], vec![out])?;
                    return Ok(true);
                }
                let (first, count) = (idx[0], idx.len() as i64);
                let start = if first < 0 { first + dim as i64 } else { first };
                if start < 0 || start + count > dim as i64 {
                    return Err(node_err(
                        node,
                        format!("indices {idx:?} out of range for {shape}"),
                    ));
                }
                let slice = secateur_graph::Op::Slice(secateur_graph::Slice {
                    axes: vec![ax],
                    starts: vec![start],
                    ends: vec![start + count],
                    steps: vec![1],
                });
                if !dims.is_empty() {
                    self.push_node(base, slice, vec![x], vec![out])?;
                    return Ok(true);
                }
                // a scalar index drops the axis
                let sliced = format!("{out}__slice");
                self.push_node(
                    format!("{base}.slice"),
                    slice,
                    vec![x],
                    vec![sliced.clone()],
                )?;
                let kept = &self.shapes[&sliced];
                let target: Vec<i64> = kept
                    .0
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != ax)
                    .map(|(i, d)| match d {
                        Dim::Known(n) => *n as i64,
                        Dim::Batch if i == 0 => 0,
                        Dim::Batch | Dim::BatchTimes(_) => -1,
                    })
                    .collect();
                let reshape = secateur_graph::Op::Reshape(secateur_graph::Reshape {
                    shape: target,
                    allowzero: false,
                });
                self.push_node(format!("{base}.squeeze"), reshape, vec![sliced], vec![out])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Op types the importer handles itself (folded away, turned into annotations, or lowered to
/// several IR ops) rather than through a converter.
pub(crate) const FOLDED_OPS: &[&str] = &[
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "Identity",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Split",
    "GatherElements",
    "GatherND",
    "Range",
    "ConstantOfShape",
    "Where",
    "Not",
    "Equal",
    "Mod",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Max",
    "Min",
    "And",
    "Or",
    "Einsum",
    "ScatterND",
    "InstanceNormalization",
    "Tile",
    "OneHot",
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
    import_model_with(model, &ImportOptions::default())
}

/// [`import_model`] with sizes for the file's open dimensions.
pub fn import_model_with(model: &ModelProto, opts: &ImportOptions) -> Result<Graph> {
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
        grids: HashMap::new(),
        shape_only: HashMap::new(),
        aliases: HashMap::new(),
        node_names: HashSet::new(),
        byte_consts: HashMap::new(),
        pending_q: HashMap::new(),
        act_alias: HashMap::new(),
        quant: Quantization::default(),
        dropped_qdq: 0,
        sparse_keep: HashMap::new(),
    };
    imp.graph.outputs = gp.output.iter().map(|o| o.name.clone()).collect();
    for t in &gp.initializer {
        if t.name.is_empty() {
            return Err(OnnxError::Model("an initializer has no name".into()));
        }
        imp.add_constant(&t.name, t)?;
    }
    for sp in &gp.sparse_initializer {
        let (name, t, keep) = crate::sparse_init::decode_sparse(sp)?;
        imp.add_float_const(&name, t);
        imp.sparse_keep.insert(name, keep);
    }
    for v in &gp.input {
        if imp.graph.initializers.contains_key(&v.name) || imp.int_consts.contains_key(&v.name) {
            continue;
        }
        let shape = input_shape(v, opts)?;
        imp.shapes.insert(v.name.clone(), shape.clone());
        imp.graph.add_input(v.name.clone(), shape);
        if let Some(last) = imp.graph.inputs.last_mut() {
            last.dtype = input_type(v)?;
        }
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
        if prop.key == crate::export::PRECISION_KEY {
            imp.graph.precision = prop.value.parse().map_err(|_| {
                OnnxError::Model(format!(
                    "metadata '{}' is '{}', expected one of f32, bf16",
                    prop.key, prop.value
                ))
            })?;
        } else if prop.key == crate::export::INTEGER_CONSTANTS_KEY {
            let names = prop.value.lines().map(str::to_string);
            imp.graph.integer_constants.extend(names);
        } else if let Some(weight) = prop.key.strip_prefix(mask_codec::PREFIX) {
            let mask = mask_codec::decode(
                weight,
                &prop.value,
                imp.sparse_keep.get(weight).map(Vec::as_slice),
            )?;
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
    graph.fuse_layer_norms()?;
    graph.fuse_silu();
    graph.fuse_gelu();
    graph.fuse_channel_shuffles()?;
    graph.canonicalize_attention()?;
    graph.check()?;
    Ok(graph)
}
