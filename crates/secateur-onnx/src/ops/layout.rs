//! Converters of data-movement ops: `Transpose`, `Slice` (bounds as attributes before opset 10,
//! constant inputs after), `Pad` (likewise before and after opset 11), `Expand` (target shape
//! possibly holding the batch, taken from the graph input), `Gather` and `GatherElements` at
//! computed indices, `Where`, and `Squeeze` / `Unsqueeze` of
//! activations, which become a `Reshape` to the shape known at import.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use crate::import::SymInt;
use crate::tensor_proto::encode_i64;
use secateur_graph::{
    Dim, Expand, Gather, GatherElements, Node, Op, Pad, PadMode, Reshape, Shape, Slice, Transpose,
};

struct TransposeConverter;
struct SliceConverter;
struct PadConverter;
struct ExpandConverter;
struct SqueezeConverter(&'static str);
struct GatherConverter;
struct GatherElementsConverter;
struct WhereConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[
    &TransposeConverter,
    &SliceConverter,
    &PadConverter,
    &ExpandConverter,
    &SqueezeConverter("Squeeze"),
    &SqueezeConverter("Unsqueeze"),
    &GatherConverter,
    &GatherElementsConverter,
    &WhereConverter,
];

impl Converter for WhereConverter {
    fn op_type(&self) -> &'static str {
        "Where"
    }

    fn import(&self, _ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(Op::Where(secateur_graph::Where))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        // the condition is a 0/1 value in the graph; ONNX wants BOOL
        let cond = ctx.helper_with(
            "Cast",
            vec![node.inputs[0].clone()],
            format!("{}__cond", node.name),
            vec![attrs::int("to", crate::proto::data_type::BOOL as i64)],
        );
        let mut inputs = node.inputs.clone();
        inputs[0] = cond;
        Ok(ExportedNode {
            op_type: "Where",
            attributes: vec![],
            inputs,
        })
    }
}

impl Converter for GatherConverter {
    fn op_type(&self) -> &'static str {
        "Gather"
    }

    /// Indices that are values of the graph (token ids); constant indices were folded or
    /// turned into a slice by the importer.
    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let rank = input_shape(ctx, 0)?.rank();
        let a = axis(ctx.attrs.int("axis", 0)?, rank)?;
        Ok(Op::Gather(Gather { axis: a }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Gather(g) = &node.op else {
            return Err("not a Gather".into());
        };
        Ok(export_gather("Gather", g.axis, node, ctx))
    }
}

/// A gather at indices held as float values in the graph: ONNX wants them as integers, so a
/// `Cast` to INT64 comes first.
fn export_gather(
    op_type: &'static str,
    axis: usize,
    node: &Node,
    ctx: &mut ExportCtx,
) -> ExportedNode {
    let idx = ctx.helper_with(
        "Cast",
        vec![node.inputs[1].clone()],
        format!("{}__indices", node.name),
        vec![attrs::int("to", crate::proto::data_type::INT64 as i64)],
    );
    ExportedNode {
        op_type,
        attributes: vec![attrs::int("axis", axis as i64)],
        inputs: vec![node.inputs[0].clone(), idx],
    }
}

impl Converter for GatherElementsConverter {
    fn op_type(&self) -> &'static str {
        "GatherElements"
    }

    /// Indices computed by the graph (position ids); constant ones were folded by the importer.
    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let rank = input_shape(ctx, 0)?.rank();
        let a = axis(ctx.attrs.int("axis", 0)?, rank)?;
        Ok(Op::GatherElements(GatherElements { axis: a }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::GatherElements(g) = &node.op else {
            return Err("not a GatherElements".into());
        };
        Ok(export_gather("GatherElements", g.axis, node, ctx))
    }
}

/// The shape of input `i`, which import must know.
fn input_shape(ctx: &ImportCtx, i: usize) -> Result<Shape, String> {
    ctx.shapes
        .get(i)
        .cloned()
        .flatten()
        .ok_or_else(|| format!("the shape of input {i} must be known"))
}

/// Known integer values of optional input `i` (`None` when absent or empty).
fn optional_ints(ctx: &ImportCtx, i: usize) -> Result<Option<Vec<i64>>, String> {
    match ctx.inputs.get(i) {
        None => Ok(None),
        Some(n) if n.is_empty() => Ok(None),
        Some(_) => ctx
            .int_input(i)?
            .known_values()
            .map(Some)
            .ok_or_else(|| format!("input {i} must not depend on the batch size")),
    }
}

/// A possibly negative axis against a rank.
fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if !(0..r).contains(&v) {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(v as usize)
}

/// Writes `values` as an int64 initializer named after the node; returns its name.
fn int_initializer(ctx: &mut ExportCtx, node: &Node, what: &str, values: &[i64]) -> String {
    let name = ctx.fresh(format!("{}__{what}", node.name));
    ctx.initializers
        .push(encode_i64(&name, &[values.len()], values));
    name
}

impl Converter for TransposeConverter {
    fn op_type(&self) -> &'static str {
        "Transpose"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let rank = input_shape(ctx, 0)?.rank();
        let perm = match ctx.attrs.ints("perm")? {
            Some(p) => p.iter().map(|&a| axis(a, rank)).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Op::Transpose(Transpose { perm }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Transpose(t) = &node.op else {
            return Err("not a Transpose".into());
        };
        let attributes = if t.perm.is_empty() {
            vec![]
        } else {
            vec![attrs::ints("perm", &t.perm)]
        };
        Ok(ExportedNode::plain("Transpose", node, attributes))
    }
}

impl Converter for SliceConverter {
    fn op_type(&self) -> &'static str {
        "Slice"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let rank = input_shape(ctx, 0)?.rank();
        let (starts, ends, axes, steps) = if ctx.opset < 10 {
            let req = |n: &str| -> Result<Vec<i64>, String> {
                ctx.attrs
                    .ints(n)?
                    .ok_or_else(|| format!("attribute '{n}' is required"))
            };
            (req("starts")?, req("ends")?, ctx.attrs.ints("axes")?, None)
        } else {
            let req = |i: usize, n: &str| {
                optional_ints(ctx, i)?.ok_or_else(|| format!("input '{n}' is required"))
            };
            (
                req(1, "starts")?,
                req(2, "ends")?,
                optional_ints(ctx, 3)?,
                optional_ints(ctx, 4)?,
            )
        };
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&x| axis(x, rank)).collect::<Result<_, _>>()?,
            None => (0..starts.len()).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
        ctx.inputs.truncate(1);
        Ok(Op::Slice(Slice {
            axes,
            starts,
            ends,
            steps,
        }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Slice(s) = &node.op else {
            return Err("not a Slice".into());
        };
        let axes: Vec<i64> = s.axes.iter().map(|&a| a as i64).collect();
        let inputs = vec![
            node.inputs[0].clone(),
            int_initializer(ctx, node, "starts", &s.starts),
            int_initializer(ctx, node, "ends", &s.ends),
            int_initializer(ctx, node, "axes", &axes),
            int_initializer(ctx, node, "steps", &s.steps),
        ];
        Ok(ExportedNode {
            op_type: "Slice",
            attributes: vec![],
            inputs,
        })
    }
}

impl Converter for PadConverter {
    fn op_type(&self) -> &'static str {
        "Pad"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let rank = input_shape(ctx, 0)?.rank();
        let (pads, value) = if ctx.opset < 11 {
            let pads = ctx
                .attrs
                .ints("pads")?
                .ok_or("attribute 'pads' is required")?;
            (pads, ctx.attrs.float("value", 0.0)?)
        } else {
            let pads = optional_ints(ctx, 1)?.ok_or("input 'pads' is required")?;
            (pads, ctx.float_scalar_input(2)?.unwrap_or(0.0))
        };
        let axes: Vec<usize> = match optional_ints(ctx, 3)? {
            Some(a) => a.iter().map(|&x| axis(x, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
        }
        let (mut before, mut after) = (vec![0usize; rank], vec![0usize; rank]);
        for (k, &ax) in axes.iter().enumerate() {
            let (b, e) = (pads[k], pads[k + axes.len()]);
            if b < 0 || e < 0 {
                return Err(format!(
                    "negative pads {pads:?} (cropping) are not supported"
                ));
            }
            before[ax] = b as usize;
            after[ax] = e as usize;
        }
        let mode = match ctx.attrs.string("mode", "constant")?.as_str() {
            "constant" => PadMode::Constant(value),
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            other => return Err(format!("pad mode '{other}' is not supported")),
        };
        ctx.inputs.truncate(1);
        Ok(Op::Pad(Pad {
            before,
            after,
            mode,
        }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Pad(p) = &node.op else {
            return Err("not a Pad".into());
        };
        let pads: Vec<i64> = p.before.iter().chain(&p.after).map(|&v| v as i64).collect();
        let mut inputs = vec![
            node.inputs[0].clone(),
            int_initializer(ctx, node, "pads", &pads),
        ];
        let mode = match p.mode {
            PadMode::Constant(v) => {
                inputs.push(ctx.scalar(format!("{}__value", node.name), v));
                "constant"
            }
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
        };
        Ok(ExportedNode {
            op_type: "Pad",
            attributes: vec![attrs::string("mode", mode)],
            inputs,
        })
    }
}

impl Converter for ExpandConverter {
    fn op_type(&self) -> &'static str {
        "Expand"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let target = ctx.int_input(1)?;
        let mut dims = Vec::with_capacity(target.values.len());
        for v in &target.values {
            dims.push(match v {
                SymInt::Batch => Dim::Batch,
                SymInt::BatchTimes(k) => Dim::batch_times(*k as usize),
                SymInt::Known(n) if *n >= 1 => Dim::Known(*n as usize),
                SymInt::Known(n) => return Err(format!("target size {n} is not positive")),
            });
        }
        let op = Expand { shape: Shape(dims) };
        ctx.inputs.truncate(1);
        if op.needs_batch() {
            let source = ctx
                .batch_source
                .clone()
                .ok_or("the target shape holds the batch size, but no graph input is batched")?;
            ctx.inputs.push(source);
        }
        Ok(Op::Expand(op))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Expand(e) = &node.op else {
            return Err("not an Expand".into());
        };
        let known: Vec<i64> = e
            .shape
            .0
            .iter()
            .map(|d| d.known().map_or(1, |n| n as i64))
            .collect();
        let batch_at = e.shape.0.iter().position(|d| d.batch_factor().is_some());
        let shape = if let (Some(at), true) = (batch_at, node.inputs.len() == 2) {
            // the batch size of the second input (times the multiple), spliced into the
            // constant sizes
            let n = |s: &str| format!("{}__{s}", node.name);
            let source = ctx.helper_with(
                "Shape",
                vec![node.inputs[1].clone()],
                n("batch"),
                vec![attrs::int("start", 0), attrs::int("end", 1)],
            );
            let factor = e.shape.0[at].batch_factor().unwrap_or(1);
            let batch = if factor > 1 {
                let k = int_initializer(ctx, node, "multiple", &[factor as i64]);
                ctx.helper("Mul", vec![source, k], n("batch_times"))
            } else {
                source
            };
            let mut pieces = Vec::new();
            if at > 0 {
                pieces.push(int_initializer(ctx, node, "before", &known[..at]));
            }
            pieces.push(batch);
            if at + 1 < known.len() {
                pieces.push(int_initializer(ctx, node, "after", &known[at + 1..]));
            }
            ctx.helper_with("Concat", pieces, n("shape"), vec![attrs::int("axis", 0)])
        } else {
            int_initializer(ctx, node, "shape", &known)
        };
        Ok(ExportedNode {
            op_type: "Expand",
            attributes: vec![],
            inputs: vec![node.inputs[0].clone(), shape],
        })
    }
}

impl Converter for SqueezeConverter {
    fn op_type(&self) -> &'static str {
        self.0
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let x = input_shape(ctx, 0)?;
        let axes = if ctx.opset >= 13 {
            optional_ints(ctx, 1)?
        } else {
            ctx.attrs.ints("axes")?
        };
        let mut dims = x.0.clone();
        if self.0 == "Unsqueeze" {
            let axes = axes.ok_or("Unsqueeze needs axes")?;
            let rank = dims.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| axis(a, rank))
                .collect::<Result<_, _>>()?;
            axes.sort_unstable();
            for a in axes {
                dims.insert(a.min(dims.len()), Dim::Known(1));
            }
        } else {
            let squeezed: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|&v| axis(v, dims.len()))
                    .collect::<Result<_, _>>()?,
                None => (0..dims.len())
                    .filter(|&i| dims[i] == Dim::Known(1))
                    .collect(),
            };
            if let Some(&a) = squeezed.iter().find(|&&a| dims[a] != Dim::Known(1)) {
                return Err(format!("axis {a} of {x} does not have size 1"));
            }
            dims = (0..dims.len())
                .filter(|i| !squeezed.contains(i))
                .map(|i| dims[i])
                .collect();
        }
        // the batch stays in place (0 copies it) or is inferred
        let shape = dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Known(n) => *n as i64,
                Dim::Batch if i == 0 && x.0.first() == Some(&Dim::Batch) => 0,
                Dim::Batch | Dim::BatchTimes(_) => -1,
            })
            .collect();
        ctx.inputs.truncate(1);
        Ok(Op::Reshape(Reshape {
            shape,
            allowzero: false,
        }))
    }

    fn export(&self, _node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Err(format!(
            "{} imports as Reshape and is exported as one",
            self.0
        ))
    }
}
