//! Element-wise ops on the generic vector steps: pointwise functions, broadcasting binaries,
//! and softmax along any axis (or over all trailing axes for the legacy form).

use super::{LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::plan::err;
use crate::plan::step::StepKind;
use secateur_graph::{Binary, Softmax, Unary, normalize_axis};

impl RuntimeOp for Unary {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        Ok(Lowered::plain(cx, StepKind::Pointwise(self.f)))
    }
}

impl RuntimeOp for Binary {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let kind = StepKind::Binary {
            f: self.f,
            sa: cx.in_shape(0),
            sb: cx.in_shape(1),
            so: cx.out_shape(),
        };
        Ok(Lowered::plain(cx, kind))
    }
}

impl RuntimeOp for Softmax {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let out = cx.out_shape();
        let rank = out.len();
        let a = normalize_axis(self.axis, rank).map_err(|e| err(&cx.node().name, e.0))?;
        let hi = if self.legacy { rank } else { a + 1 };
        let kind = StepKind::Softmax {
            outer: out[..a].iter().product(),
            red: out[a..hi].iter().product(),
            inner: out[hi..].iter().product(),
        };
        Ok(Lowered::plain(cx, kind))
    }
}
