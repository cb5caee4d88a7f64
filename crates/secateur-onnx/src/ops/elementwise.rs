//! Converters of the broadcasting binary ops: `Add`, `Sub`, `Mul`, `Div` and `Pow`.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use secateur_graph::{Add, Div, Mul, Node, Op, Pow, Sub};

struct Binary(&'static str);

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[
    &Binary("Add"),
    &Binary("Sub"),
    &Binary("Mul"),
    &Binary("Div"),
    &Binary("Pow"),
];

impl Converter for Binary {
    fn op_type(&self) -> &'static str {
        self.0
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(match self.0 {
            "Add" => Op::Add(Add),
            "Sub" => Op::Sub(Sub),
            "Mul" => Op::Mul(Mul),
            "Div" => {
                if ctx.node.attribute.iter().any(|a| a.name == "integer") {
                    return Err("integer division is not supported".into());
                }
                Op::Div(Div)
            }
            _ => Op::Pow(Pow),
        })
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain(self.0, node, vec![]))
    }
}
