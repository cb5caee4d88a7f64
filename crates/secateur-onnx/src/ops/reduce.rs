//! Converters of `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`, `ReduceL1`, `ReduceL2` and
//! `ReduceSumSquare` (axes as an attribute, or as an input from opset 13 for `ReduceSum` and 18
//! for the others). A mean over the spatial
//! axes of an `[N, C, H, W]` input (what `x.mean([2, 3])` exports to) imports as a global
//! average pool, which the runtime runs as one fused step. `CumSum` (running sums along an axis
//! given as a constant input) lives here too.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use crate::tensor_proto::encode_i64;
use secateur_graph::{CumSum, GlobalAveragePool, Node, Op, Reduce, ReduceKind};

struct ReduceConverter(ReduceKind);
struct CumSumConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[
    &ReduceConverter(ReduceKind::Sum),
    &ReduceConverter(ReduceKind::Mean),
    &ReduceConverter(ReduceKind::Max),
    &ReduceConverter(ReduceKind::Min),
    &ReduceConverter(ReduceKind::L1),
    &ReduceConverter(ReduceKind::L2),
    &ReduceConverter(ReduceKind::SumSquare),
    &CumSumConverter,
];

impl ReduceConverter {
    /// The opset from which the axes are an input rather than an attribute.
    fn axes_input_opset(&self) -> i64 {
        if self.0 == ReduceKind::Sum { 13 } else { 18 }
    }
}

impl Converter for ReduceConverter {
    fn op_type(&self) -> &'static str {
        self.0.op_type()
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let rank = ctx
            .shapes
            .first()
            .and_then(|s| s.as_ref())
            .map(|s| s.rank())
            .ok_or("the input shape must be known")?;
        let noop_empty = ctx.attrs.int("noop_with_empty_axes", 0)? != 0;
        let axes = if ctx.opset >= self.axes_input_opset() {
            let axes = match ctx.inputs.get(1).filter(|n| !n.is_empty()) {
                Some(_) => ctx
                    .int_input(1)?
                    .known_values()
                    .ok_or("axes must not depend on the batch size")?,
                None => Vec::new(),
            };
            ctx.inputs.truncate(1);
            axes
        } else {
            ctx.attrs.ints("axes")?.unwrap_or_default()
        };
        if axes.is_empty() && noop_empty {
            return Ok(Op::Identity(secateur_graph::Identity));
        }
        let mut axes: Vec<usize> = if axes.is_empty() {
            (0..rank).collect()
        } else {
            axes.iter()
                .map(|&a| {
                    let v = if a < 0 { a + rank as i64 } else { a };
                    usize::try_from(v)
                        .ok()
                        .filter(|&v| v < rank)
                        .ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))
                })
                .collect::<Result<_, _>>()?
        };
        axes.sort_unstable();
        axes.dedup();
        let keep_dims = ctx.attrs.int("keepdims", 1)? != 0;
        let spatial = rank == 4 && axes == [2, 3];
        if self.0 == ReduceKind::Mean && spatial {
            return Ok(Op::GlobalAveragePool(GlobalAveragePool { keep_dims }));
        }
        Ok(Op::Reduce(Reduce {
            kind: self.0,
            axes,
            keep_dims,
        }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Reduce(r) = &node.op else {
            return Err(format!("not a {}", self.0.op_type()));
        };
        let mut attributes = vec![attrs::int("keepdims", r.keep_dims as i64)];
        let mut inputs = vec![node.inputs[0].clone()];
        // the export opset (17) takes ReduceSum's axes as an input, the others' as attribute
        if r.kind == ReduceKind::Sum {
            let name = ctx.fresh(format!("{}__axes", node.name));
            let axes: Vec<i64> = r.axes.iter().map(|&a| a as i64).collect();
            ctx.initializers
                .push(encode_i64(&name, &[axes.len()], &axes));
            inputs.push(name);
        } else {
            attributes.push(attrs::ints("axes", &r.axes));
        }
        Ok(ExportedNode {
            op_type: r.kind.op_type(),
            attributes,
            inputs,
        })
    }
}

impl Converter for CumSumConverter {
    fn op_type(&self) -> &'static str {
        "CumSum"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let axis = match ctx.int_input(1)?.known_values().as_deref() {
            Some([a]) => *a,
            _ => return Err("the axis must be a constant scalar".into()),
        };
        ctx.inputs.truncate(1);
        Ok(Op::CumSum(CumSum {
            axis,
            exclusive: ctx.attrs.int("exclusive", 0)? != 0,
            reverse: ctx.attrs.int("reverse", 0)? != 0,
        }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::CumSum(c) = &node.op else {
            return Err("not a CumSum".into());
        };
        let name = ctx.fresh(format!("{}__axis", node.name));
        ctx.initializers.push(encode_i64(&name, &[], &[c.axis]));
        Ok(ExportedNode {
            op_type: "CumSum",
            attributes: vec![
                attrs::int("exclusive", c.exclusive as i64),
                attrs::int("reverse", c.reverse as i64),
            ],
            inputs: vec![node.inputs[0].clone(), name],
        })
    }
}
