//! `BatchNormalization` (inference mode only) and `LayerNormalization` converters. A layer
//! normalisation without a scale (what an `InstanceNormalization` imports as) exports with a
//! scale of ones, which ONNX requires.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use secateur_graph::{BatchNorm, LayerNorm, Node, Op};

struct BatchNormConverter;
struct LayerNormConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[&BatchNormConverter, &LayerNormConverter];

impl Converter for LayerNormConverter {
    fn op_type(&self) -> &'static str {
        "LayerNormalization"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("the Mean and InvStdDev outputs are not supported".into());
        }
        if ctx.attrs.int("stash_type", 1)? != 1 {
            return Err("only stash_type=1 (float statistics) is supported".into());
        }
        if ctx.inputs.len() == 3 && ctx.inputs[2].is_empty() {
            ctx.inputs.truncate(2);
        }
        Ok(Op::LayerNorm(LayerNorm {
            axis: ctx.attrs.int("axis", -1)?,
            epsilon: ctx.attrs.float("epsilon", 1e-5)?,
        }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::LayerNorm(ln) = &node.op else {
            return Err("not a LayerNormalization".into());
        };
        let mut exported = ExportedNode::plain(
            "LayerNormalization",
            node,
            vec![
                attrs::int("axis", ln.axis),
                attrs::float("epsilon", ln.epsilon),
            ],
        );
        if node.inputs.len() == 1 {
            let x = ctx
                .shapes
                .get(&node.inputs[0])
                .ok_or("the input shape is unknown")?;
            let first = ln.first_axis(x.rank()).map_err(|e| e.0)?;
            let dims: Vec<usize> = x.0[first..]
                .iter()
                .map(|d| d.known().ok_or("the normalised axes must have known sizes"))
                .collect::<Result<_, _>>()?;
            let name = ctx.fresh(format!("{}__scale", node.name));
            let ones = secateur_graph::Tensor::full(dims, 1.0);
            ctx.initializers
                .push(crate::tensor_proto::encode_f32(&name, &ones));
            exported.inputs.push(name);
        }
        Ok(exported)
    }
}

impl Converter for BatchNormConverter {
    fn op_type(&self) -> &'static str {
        "BatchNormalization"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let a = &ctx.attrs;
        if a.int("training_mode", 0)? != 0 {
            return Err("training_mode=1 is not supported; export the model in eval mode".into());
        }
        if a.int("spatial", 1)? != 1 {
            return Err("spatial=0 is not supported".into());
        }
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(
                "the optional running-statistics outputs are not supported (training mode)".into(),
            );
        }
        Ok(Op::BatchNorm(BatchNorm {
            epsilon: a.float("epsilon", 1e-5)?,
            momentum: a.float("momentum", 0.9)?,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::BatchNorm(b) = &node.op else {
            return Err("not a BatchNormalization".into());
        };
        Ok(ExportedNode::plain(
            "BatchNormalization",
            node,
            vec![
                attrs::float("epsilon", b.epsilon),
                attrs::float("momentum", b.momentum),
            ],
        ))
    }
}
