//! Converters of element-wise unary ops and softmax: `Relu`, `Sigmoid`, `Clip` (bounds as
//! attributes before opset 11, as constant inputs after), `Identity`, `Dropout` (inference:
//! identity) and `Softmax` (axis semantics changed in opset 13).

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use crate::tensor_proto::encode_f32;
use secateur_graph::{Clip, Identity, Node, Op, Relu, Sigmoid, Softmax, Tensor};

struct Simple(&'static str);
struct ClipConverter;
struct DropoutConverter;
struct SoftmaxConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[
    &Simple("Relu"),
    &Simple("Sigmoid"),
    &Simple("Identity"),
    &ClipConverter,
    &DropoutConverter,
    &SoftmaxConverter,
];

impl Converter for Simple {
    fn op_type(&self) -> &'static str {
        self.0
    }

    fn import(&self, _ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(match self.0 {
            "Relu" => Op::Relu(Relu),
            "Sigmoid" => Op::Sigmoid(Sigmoid),
            _ => Op::Identity(Identity),
        })
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain(self.0, node, vec![]))
    }
}

impl Converter for ClipConverter {
    fn op_type(&self) -> &'static str {
        "Clip"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let (min, max) = if ctx.opset < 11 {
            (
                ctx.attrs.float("min", f32::MIN)?,
                ctx.attrs.float("max", f32::MAX)?,
            )
        } else {
            let min = ctx.float_scalar_input(1)?.unwrap_or(f32::MIN);
            let max = ctx.float_scalar_input(2)?.unwrap_or(f32::MAX);
            ctx.inputs.truncate(1);
            (min, max)
        };
        Ok(Op::Clip(Clip { min, max }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Clip(c) = &node.op else {
            return Err("not a Clip".into());
        };
        let min_name = format!("{}__min", node.name);
        let max_name = format!("{}__max", node.name);
        ctx.initializers
            .push(encode_f32(&min_name, &Tensor::scalar(c.min)));
        ctx.initializers
            .push(encode_f32(&max_name, &Tensor::scalar(c.max)));
        Ok(ExportedNode {
            op_type: "Clip",
            attributes: vec![],
            inputs: vec![node.inputs[0].clone(), min_name, max_name],
        })
    }
}

impl Converter for DropoutConverter {
    fn op_type(&self) -> &'static str {
        "Dropout"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("the mask output of Dropout is not supported (training mode)".into());
        }
        ctx.inputs.truncate(1);
        Ok(Op::Dropout(Identity))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain("Dropout", node, vec![]))
    }
}

impl Converter for SoftmaxConverter {
    fn op_type(&self) -> &'static str {
        "Softmax"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let mut legacy = ctx.opset < 13;
        let axis = ctx.attrs.int("axis", if legacy { 1 } else { -1 })?;
        // the old "flatten from axis" meaning equals the new one when axis is the last axis
        if let Some(Some(shape)) = ctx.shapes.first() {
            let rank = shape.rank() as i64;
            if axis == rank - 1 || axis == -1 {
                legacy = false;
            }
        }
        Ok(Op::Softmax(Softmax { axis, legacy }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Softmax(s) = &node.op else {
            return Err("not a Softmax".into());
        };
        if s.legacy {
            return Err("a legacy (opset < 13) Softmax over several axes cannot be exported at opset 14; flatten first".into());
        }
        Ok(ExportedNode::plain(
            "Softmax",
            node,
            vec![attrs::int("axis", s.axis)],
        ))
    }
}
