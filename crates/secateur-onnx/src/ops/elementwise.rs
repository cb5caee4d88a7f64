//! `Add` and `Mul` converters (broadcasting binary ops).

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use secateur_graph::{Add, Mul, Node, Op};

struct Binary(&'static str);

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[&Binary("Add"), &Binary("Mul")];

impl Converter for Binary {
    fn op_type(&self) -> &'static str {
        self.0
    }

    fn import(&self, _ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(if self.0 == "Add" {
            Op::Add(Add)
        } else {
            Op::Mul(Mul)
        })
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain(self.0, node, vec![]))
    }
}
