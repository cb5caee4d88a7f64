//! Import of index tensors computed from the batch size ([`BatchGrid`]): `Range(0, N, 1)` and
//! the affine arithmetic, reshaping and concatenation exporters apply to it are folded; values
//! that are not affine in the batch coordinate keep only their shape (they are built to be
//! measured by `Shape`); a `GatherND` or `Gather` reading through such a grid becomes a gather
//! at constant positions within each sample, or a reshape when the positions are the sample's
//! own order. A grid constant over the batch that an ordinary op reads (token type ids
//! repeated over the batch) is materialised as an `Expand` of its values.

use super::{Importer, SymConst, SymInt, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::fold::IntBinary;
use crate::grid::{BatchGrid, Operand, is_identity};
use crate::proto::NodeProto;
use secateur_graph::{Dim, Op, Shape, Tensor};

/// Op types whose result is not affine in the batch coordinate: only the shape survives.
const SHAPE_ONLY_OPS: &[&str] = &[
    "Max",
    "Min",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Not",
    "Div",
    "Mod",
    "Where",
];

fn sym_dims(shape: &[SymInt]) -> Vec<Dim> {
    shape
        .iter()
        .map(|v| match v {
            SymInt::Known(n) => Dim::Known((*n).max(0) as usize),
            SymInt::Batch => Dim::Batch,
            SymInt::BatchTimes(k) => Dim::batch_times(*k as usize),
        })
        .collect()
}

/// NumPy broadcasting of symbolic shapes (a batch size broadcasts against 1 or itself).
fn broadcast_sym(a: &[SymInt], b: &[SymInt]) -> Option<Vec<SymInt>> {
    let r = a.len().max(b.len());
    let at = |s: &[SymInt], i: usize| {
        if i < r - s.len() {
            SymInt::Known(1)
        } else {
            s[i - (r - s.len())]
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (SymInt::Known(1), y) => Some(y),
            (x, SymInt::Known(1)) => Some(x),
            _ => None,
        })
        .collect()
}

impl Importer {
    fn grid_operand(&self, name: &str) -> Option<Operand<'_>> {
        self.grids
            .get(name)
            .map(Operand::Grid)
            .or_else(|| self.int_consts.get(name).map(Operand::Const))
    }

    /// The symbolic shape of an integer value: constant, grid or shape-only.
    fn int_shape(&self, name: &str) -> Option<Vec<SymInt>> {
        if let Some(g) = self.grids.get(name) {
            return Some(g.shape());
        }
        if let Some(s) = self.shape_only.get(name) {
            return Some(s.clone());
        }
        self.int_consts
            .get(name)
            .map(|c| c.dims.iter().map(|&d| SymInt::Known(d as i64)).collect())
    }

    /// Folds a node computing an index tensor from the batch size, or a gather through one;
    /// `Ok(false)` if the node is not one.
    pub(super) fn fold_batch_index(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<bool> {
        let a = Attrs::new(node);
        let out = node.output.first().cloned().unwrap_or_default();
        let is_grid = |n: &String| self.grids.contains_key(n);
        let touches = inputs
            .iter()
            .any(|n| is_grid(n) || self.shape_only.contains_key(n));
        let op = node.op_type.as_str();
        let batch_limit = op == "Range"
            && inputs
                .get(1)
                .and_then(|n| self.int_consts.get(n))
                .is_some_and(|c| c.values.first() == Some(&SymInt::Batch));
        let batch_expand = op == "Expand"
            && inputs
                .get(1)
                .and_then(|n| self.int_consts.get(n))
                .is_some_and(|c| c.values.contains(&SymInt::Batch))
            && inputs
                .first()
                .is_some_and(|n| self.grid_operand(n).is_some());
        if !(touches || batch_limit || batch_expand) {
            return Ok(false);
        }
        if let Some(n) = inputs
            .iter()
            .find(|n| self.shape_only.contains_key(*n))
            .filter(|_| op != "Shape" && !SHAPE_ONLY_OPS.contains(&op))
        {
            return Err(node_err(
                node,
                format!(
                    "input '{n}' is computed from the batch size in a way only its shape can be taken of"
                ),
            ));
        }
        let first_grid = || {
            inputs
                .first()
                .and_then(|n| self.grids.get(n))
                .ok_or_else(|| node_err(node, "the batch index must be the first input"))
        };
        let int_list = |i: usize| {
            inputs
                .get(i)
                .and_then(|n| self.int_consts.get(n))
                .and_then(|c| c.known_values())
        };
        let grid = match op {
            "Range" => {
                let (start, delta) = (int_list(0), int_list(2));
                if start.as_deref() != Some(&[0]) || delta.as_deref() != Some(&[1]) {
                    return Err(node_err(
                        node,
                        "a range up to the batch size must start at 0 with step 1",
                    ));
                }
                BatchGrid::arange()
            }
            "Shape" => {
                let shape = inputs
                    .first()
                    .and_then(|n| self.int_shape(n))
                    .ok_or_else(|| node_err(node, "the input's shape is not known"))?;
                let rank = shape.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = clamp(a.int("start", 0).map_err(|m| node_err(node, m))?);
                let end = clamp(a.int("end", rank).map_err(|m| node_err(node, m))?);
                let values = shape[start..end.max(start)].to_vec();
                let dims = vec![values.len()];
                self.int_consts.insert(out, SymConst { dims, values });
                return Ok(true);
            }
            "Cast" | "Identity" => first_grid()?.clone(),
            "Unsqueeze" | "Squeeze" => {
                let g = first_grid()?;
                let axes = if self.opset >= 13 {
                    int_list(1)
                } else {
                    a.ints("axes").map_err(|m| node_err(node, m))?
                };
                let folded = if op == "Unsqueeze" {
                    g.unsqueeze(&axes.unwrap_or_default())
                } else {
                    g.squeeze(axes.as_deref())
                };
                folded.ok_or_else(|| node_err(node, "axes out of range or not of length 1"))?
            }
            "Expand" => {
                let target = inputs
                    .get(1)
                    .and_then(|n| self.int_consts.get(n))
                    .ok_or_else(|| node_err(node, "the target shape must be a constant"))?
                    .values
                    .clone();
                let what = inputs
                    .first()
                    .and_then(|n| self.grid_operand(n))
                    .ok_or_else(|| node_err(node, "the expanded input must be a batch index"))?;
                BatchGrid::expand(what, &target)
                    .ok_or_else(|| node_err(node, "shapes do not broadcast"))?
            }
            "Add" | "Sub" | "Mul" => {
                let f = IntBinary::from_op_type(op).expect("arithmetic");
                let operand = |i: usize| inputs.get(i).and_then(|n| self.grid_operand(n));
                let (x, y) = (operand(0), operand(1));
                match (x, y) {
                    (Some(x), Some(y)) => match BatchGrid::binary(f, x, y) {
                        Some(g) => g,
                        None => return self.keep_shape_only(node, inputs),
                    },
                    _ => return self.materialize_grids(node, inputs).map(|()| false),
                }
            }
            "Concat" => {
                let parts: Option<Vec<Operand>> =
                    inputs.iter().map(|n| self.grid_operand(n)).collect();
                let Some(parts) = parts else {
                    return self.materialize_grids(node, inputs).map(|()| false);
                };
                let axis = a.int("axis", 0).map_err(|m| node_err(node, m))?;
                BatchGrid::concat(&parts, axis)
                    .ok_or_else(|| node_err(node, "parts do not concatenate"))?
            }
            "GatherND" | "Gather" if inputs.len() != 2 => {
                return Err(node_err(node, "expects two inputs: data and indices"));
            }
            "GatherND" => return self.gather_nd(node, inputs, index),
            "Gather" => return self.gather_flat(node, inputs, index),
            _ if SHAPE_ONLY_OPS.contains(&op) => return self.keep_shape_only(node, inputs),
            _ => return self.materialize_grids(node, inputs).map(|()| false),
        };
        self.grids.insert(out, grid);
        Ok(true)
    }

    /// Records only the broadcast shape of an element-wise op over index tensors.
    fn keep_shape_only(&mut self, node: &NodeProto, inputs: &[String]) -> Result<bool> {
        let mut shape: Vec<SymInt> = Vec::new();
        for n in inputs.iter().filter(|n| !n.is_empty()) {
            let s = self
                .int_shape(n)
                .ok_or_else(|| node_err(node, format!("input '{n}' is not an integer tensor")))?;
            shape = broadcast_sym(&shape, &s)
                .ok_or_else(|| node_err(node, "operand shapes do not broadcast"))?;
        }
        let out = node.output.first().cloned().unwrap_or_default();
        self.shape_only.insert(out, shape);
        Ok(true)
    }

    /// `GatherND(data, grid)`: per sample, constant positions.
    fn gather_nd(&mut self, node: &NodeProto, inputs: &[String], index: usize) -> Result<bool> {
        let a = Attrs::new(node);
        if a.int("batch_dims", 0).map_err(|m| node_err(node, m))? != 0 {
            return Err(node_err(node, "only batch_dims = 0 is supported"));
        }
        let (data, grid) = (&inputs[0], self.grids.get(&inputs[1]));
        let (Some(shape), Some(grid)) = (self.shapes.get(data), grid) else {
            return Err(node_err(
                node,
                "GatherND is supported only of an activation at positions computed from the batch size",
            ));
        };
        let sample = sample_dims(shape)
            .ok_or_else(|| node_err(node, format!("data {shape} must be [batch, sizes…]")))?;
        let (out_dims, positions) = grid.gather_nd_positions(&sample).ok_or_else(|| {
            node_err(
                node,
                "the indices must select, for each sample, constant positions within it",
            )
        })?;
        let size = sample.iter().product();
        self.emit_sample_gather(node, index, data, size, &out_dims, &positions)?;
        Ok(true)
    }

    /// `Gather(flat, grid, axis = 0)` of data flattened together with the batch.
    fn gather_flat(&mut self, node: &NodeProto, inputs: &[String], index: usize) -> Result<bool> {
        let a = Attrs::new(node);
        let data = &inputs[0];
        let flat = self.shapes.get(data).and_then(|s| {
            let dims = s.dims();
            let size = dims.first()?.batch_factor()?;
            let rest: Option<Vec<usize>> = dims[1..].iter().map(|d| d.known()).collect();
            Some((size, rest?))
        });
        let (Some(grid), Some((size, rest))) = (self.grids.get(&inputs[1]), flat) else {
            // an embedding lookup of ids repeated over the batch, a gather from a grid
            self.materialize_grids(node, inputs)?;
            return Ok(false);
        };
        if a.int("axis", 0).map_err(|m| node_err(node, m))? != 0 {
            return Err(node_err(node, "only axis 0 is supported here"));
        }
        let inner: usize = rest.iter().product();
        let positions = grid.flat_gather_positions(size, inner).ok_or_else(|| {
            node_err(
                node,
                "the indices must step by whole samples (as_strided of a contiguous tensor)",
            )
        })?;
        let mut out_dims = grid.dims[1..].to_vec();
        out_dims.extend_from_slice(&rest);
        let size = size * inner;
        self.emit_sample_gather(node, index, data, size, &out_dims, &positions)?;
        Ok(true)
    }

    /// `out[n, …] = data[n][positions]` for data of `size` elements per sample: a reshape
    /// when the positions are the sample's own order, else a reshape to `[N, size]` and a
    /// gather along axis 1 at constant positions.
    fn emit_sample_gather(
        &mut self,
        node: &NodeProto,
        index: usize,
        data: &str,
        size: usize,
        out_dims: &[usize],
        positions: &[usize],
    ) -> Result<()> {
        let out = node.output.first().cloned().unwrap_or_default();
        let base = self.unique_name(node, index);
        let reshape_to = |dims: &[usize]| {
            let mut shape = vec![-1i64];
            shape.extend(dims.iter().map(|&d| d as i64));
            Op::Reshape(secateur_graph::Reshape {
                shape,
                allowzero: false,
            })
        };
        if is_identity(positions, size) {
            let op = reshape_to(out_dims);
            return self.push_node(base, op, vec![data.to_string()], vec![out]);
        }
        let flat = format!("{out}__per_sample");
        self.push_node(
            format!("{base}.flatten"),
            reshape_to(&[size]),
            vec![data.to_string()],
            vec![flat.clone()],
        )?;
        let idx_name = format!("{out}__positions");
        let idx = Tensor::new(
            out_dims.to_vec(),
            positions.iter().map(|&p| p as f32).collect(),
        )?;
        self.add_integer_const(&idx_name, idx);
        let gather = Op::Gather(secateur_graph::Gather { axis: 1 });
        self.push_node(base, gather, vec![flat, idx_name], vec![out])
    }

    /// Turns every grid `inputs` names into a graph value: a grid constant over the batch is
    /// its values expanded by the batch; any other grid cannot be computed by the graph.
    pub(super) fn materialize_grids(&mut self, node: &NodeProto, inputs: &[String]) -> Result<()> {
        for name in inputs {
            let Some(grid) = self.grids.get(name).cloned() else {
                continue;
            };
            if self.shapes.contains_key(name) {
                continue;
            }
            if !grid.is_repeated_constant() || grid.axis != 0 {
                return Err(node_err(
                    node,
                    format!(
                        "input '{name}' holds positions computed from the batch size; they are supported only as the indices of a gather within each sample"
                    ),
                ));
            }
            let values = Tensor::new(
                grid.dims.clone(),
                grid.offset.iter().map(|&v| v as f32).collect(),
            )?;
            let source = self
                .batch_source()
                .ok_or_else(|| node_err(node, "no graph input is batched"))?;
            let values_name = format!("{name}__values");
            self.add_integer_const(&values_name, values);
            let shape = Shape(sym_dims(&grid.shape()));
            let op = Op::Expand(secateur_graph::Expand { shape });
            let expand_name = format!("{name}.expand");
            self.push_node(
                expand_name,
                op,
                vec![values_name, source],
                vec![name.clone()],
            )?;
        }
        Ok(())
    }
}

/// `[d1, …]` of a `[batch, d1, …]` shape with known sizes after the batch.
fn sample_dims(shape: &Shape) -> Option<Vec<usize>> {
    let dims = shape.dims();
    if dims.first() != Some(&Dim::Batch) {
        return None;
    }
    dims[1..].iter().map(|d| d.known()).collect()
}
