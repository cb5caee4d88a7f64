//! `Gemm` and `MatMul` converters. A `MatMul` whose right-hand side is a constant matrix is a
//! weighted layer ([`MatMul`]); one of two activations is a [`BatchMatMul`].

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use secateur_graph::{BatchMatMul, Gemm, MatMul, Node, Op};

struct GemmConverter;
struct MatMulConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[&GemmConverter, &MatMulConverter];

impl Converter for GemmConverter {
    fn op_type(&self) -> &'static str {
        "Gemm"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let a = &ctx.attrs;
        if ctx.inputs.len() == 3 && ctx.inputs[2].is_empty() {
            ctx.inputs.truncate(2);
        }
        Ok(Op::Gemm(Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Gemm(g) = &node.op else {
            return Err("not a Gemm".into());
        };
        Ok(ExportedNode::plain(
            "Gemm",
            node,
            vec![
                attrs::float("alpha", g.alpha),
                attrs::float("beta", g.beta),
                attrs::int("transA", g.trans_a as i64),
                attrs::int("transB", g.trans_b as i64),
            ],
        ))
    }
}

impl Converter for MatMulConverter {
    fn op_type(&self) -> &'static str {
        "MatMul"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let weight = ctx
            .inputs
            .get(1)
            .and_then(|n| ctx.float_consts.get(n))
            .is_some_and(|w| w.rank() == 2);
        Ok(if weight {
            Op::MatMul(MatMul)
        } else {
            Op::BatchMatMul(BatchMatMul)
        })
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain("MatMul", node, vec![]))
    }
}
