//! Converters of the broadcasting binary ops ([`BinaryFn`]): arithmetic (`Add`, `Sub`, `Mul`,
//! `Div`, `Pow`), two-input `Max` / `Min`, comparisons (`Equal`, `Less`, `LessOrEqual`,
//! `Greater`, `GreaterOrEqual`) and logic (`And`, `Or`, `Xor`), whose 0/1 results are exported
//! as the BOOL values ONNX expects through a `Cast` back to float.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use crate::proto::data_type;
use secateur_graph::{Binary, BinaryFn, Node, Op};

struct BinaryConverter(BinaryFn);

macro_rules! converters {
    ($($f:ident),*) => {
        &[$(&BinaryConverter(BinaryFn::$f)),*]
    };
}

pub(super) const CONVERTERS: &[&dyn super::Converter] = converters!(
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor
);

/// Whether ONNX defines the operator on BOOL inputs only (logic), so float 0/1 values must be
/// cast to BOOL on export.
fn takes_bool(f: BinaryFn) -> bool {
    matches!(f, BinaryFn::And | BinaryFn::Or | BinaryFn::Xor)
}

impl Converter for BinaryConverter {
    fn op_type(&self) -> &'static str {
        self.0.op_type()
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        if ctx.inputs.len() != 2 {
            return Err(format!(
                "{} of {} inputs is not supported (2 are)",
                self.0.op_type(),
                ctx.inputs.len()
            ));
        }
        if self.0 == BinaryFn::Div && ctx.node.attribute.iter().any(|a| a.name == "integer") {
            return Err("integer division is not supported".into());
        }
        Ok(Op::Binary(Binary { f: self.0 }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let f = self.0;
        if !f.is_predicate() {
            return Ok(ExportedNode::plain(f.op_type(), node, vec![]));
        }
        // float 0/1 in the graph; ONNX comparisons give BOOL and logic takes BOOL
        let to_bool = |ctx: &mut ExportCtx, v: &str, k: usize| {
            ctx.helper_with(
                "Cast",
                vec![v.to_string()],
                format!("{}__bool{k}", node.name),
                vec![attrs::int("to", data_type::BOOL as i64)],
            )
        };
        let inputs: Vec<String> = if takes_bool(f) {
            (0..2).map(|k| to_bool(ctx, &node.inputs[k], k)).collect()
        } else {
            node.inputs.clone()
        };
        let truth = ctx.helper(f.op_type(), inputs, format!("{}__truth", node.name));
        Ok(ExportedNode {
            op_type: "Cast",
            attributes: vec![attrs::int("to", data_type::FLOAT as i64)],
            inputs: vec![truth],
        })
    }
}
