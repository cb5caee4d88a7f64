//! `BatchNormalization` converter (inference mode only).

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use secateur_graph::{BatchNorm, Node, Op};

struct BatchNormConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[&BatchNormConverter];

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
