//! Shape-changing converters: `Flatten`, `Reshape` (target from a constant, possibly computed
//! from the input's shape at import, with the batch dimension kept symbolic) and `Concat`.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use crate::import::SymInt;
use crate::tensor_proto::encode_i64;
use secateur_graph::{Concat, Flatten, Node, Op, Reshape};

struct FlattenConverter;
struct ReshapeConverter;
struct ConcatConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] =
    &[&FlattenConverter, &ReshapeConverter, &ConcatConverter];

impl Converter for FlattenConverter {
    fn op_type(&self) -> &'static str {
        "Flatten"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(Op::Flatten(Flatten {
            axis: ctx.attrs.int("axis", 1)?,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Flatten(f) = &node.op else {
            return Err("not a Flatten".into());
        };
        Ok(ExportedNode::plain(
            "Flatten",
            node,
            vec![attrs::int("axis", f.axis)],
        ))
    }
}

impl Converter for ReshapeConverter {
    fn op_type(&self) -> &'static str {
        "Reshape"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        if ctx.opset < 5 || ctx.inputs.len() < 2 {
            return Err("Reshape needs its target shape as the second input (opset >= 5)".into());
        }
        let target = ctx.int_input(1)?;
        // `allowzero` only changes what a literal 0 means; without one, 0 may copy the batch
        let allowzero =
            ctx.attrs.int("allowzero", 0)? != 0 && target.values.contains(&SymInt::Known(0));
        let input = ctx.shapes.first().cloned().flatten();
        let mut shape = Vec::with_capacity(target.values.len());
        for (i, v) in target.values.iter().enumerate() {
            // a dimension computed from the batch size: copy it when the input has the same
            // dimension at that axis, otherwise let it be inferred
            let same_in_place = input
                .as_ref()
                .and_then(|s| s.0.get(i))
                .and_then(|d| d.batch_factor().map(|f| Some(f as i64) == v.batch_factor()));
            shape.push(match v {
                SymInt::Known(n) => *n,
                _ if same_in_place == Some(true) && !allowzero => 0,
                SymInt::Batch | SymInt::BatchTimes(_) => -1,
            });
        }
        if shape.iter().filter(|d| **d == -1).count() > 1 {
            resolve_literal_inferred(&mut shape, &target.values, input.as_ref());
        }
        if shape.iter().filter(|d| **d == -1).count() > 1 {
            return Err(format!(
                "target shape {:?} would need more than one inferred dimension",
                target.values
            ));
        }
        ctx.inputs.truncate(1);
        Ok(Op::Reshape(Reshape { shape, allowzero }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Reshape(r) = &node.op else {
            return Err("not a Reshape".into());
        };
        let name = ctx.fresh(format!("{}__shape", node.name));
        ctx.initializers
            .push(encode_i64(&name, &[r.shape.len()], &r.shape));
        let mut attributes = vec![];
        if r.allowzero {
            attributes.push(attrs::int("allowzero", 1));
        }
        Ok(ExportedNode {
            op_type: "Reshape",
            attributes,
            inputs: vec![node.inputs[0].clone(), name],
        })
    }
}

/// A target with a literal -1 besides a size computed from the batch (MobileViT's
/// `[N·patches, C, -1]`): the literal one is computed at import from the input's size per
/// sample, so that only the batch-dependent size is left to infer. Leaves `shape` alone when
/// the input shape is not known well enough or the sizes do not divide.
fn resolve_literal_inferred(
    shape: &mut [i64],
    target: &[SymInt],
    input: Option<&secateur_graph::Shape>,
) {
    let Some(input) = input else { return };
    let Some(literal) = target.iter().position(|v| *v == SymInt::Known(-1)) else {
        return;
    };
    let batched: Vec<usize> = (0..target.len())
        .filter(|&i| target[i].batch_factor().is_some() && shape[i] == -1)
        .collect();
    let ([b], Some(in_factor)) = (batched.as_slice(), input.batch_factor()) else {
        return;
    };
    let per_sample: Option<u64> = input
        .0
        .iter()
        .filter_map(|d| d.known())
        .try_fold(in_factor as u64, |acc, d| acc.checked_mul(d as u64));
    let out_factor = target[*b].batch_factor().unwrap_or(1) as u64;
    let others: Option<u64> = (0..target.len())
        .filter(|&i| i != literal && i != *b)
        .map(|i| match (target[i], shape[i]) {
            (SymInt::Known(n), _) if n > 0 => Some(n as u64),
            (_, 0) => input.0.get(i).and_then(|d| d.known()).map(|d| d as u64),
            _ => None,
        })
        .try_fold(out_factor, |acc, d| acc.checked_mul(d?));
    if let (Some(have), Some(per)) = (per_sample, others)
        && per > 0
        && have % per == 0
    {
        shape[literal] = (have / per) as i64;
    }
}

impl Converter for ConcatConverter {
    fn op_type(&self) -> &'static str {
        "Concat"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        if !ctx.attrs.has("axis") {
            return Err("attribute 'axis' is required".into());
        }
        Ok(Op::Concat(Concat {
            axis: ctx.attrs.int("axis", 1)?,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Concat(c) = &node.op else {
            return Err("not a Concat".into());
        };
        Ok(ExportedNode::plain(
            "Concat",
            node,
            vec![attrs::int("axis", c.axis)],
        ))
    }
}
