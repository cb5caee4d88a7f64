//! Lowering of reductions: over one run of adjacent axes (a mean pooling over tokens, a norm
//! over features) the vectorised kernel of [`crate::kernels::reduce`]; over axes apart, the
//! op's reference evaluation.

use super::{LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::plan::step::StepKind;
use secateur_graph::Reduce;

impl RuntimeOp for Reduce {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let dims = cx.in_shape(0);
        let (Some(&from), Some(&to)) = (self.axes.first(), self.axes.last()) else {
            return cx.reference();
        };
        let adjacent = self.axes.windows(2).all(|w| w[1] == w[0] + 1);
        if !adjacent || to >= dims.len() {
            return cx.reference();
        }
        let kind = StepKind::Reduce {
            kind: self.kind,
            outer: dims[..from].iter().product(),
            red: dims[from..=to].iter().product(),
            inner: dims[to + 1..].iter().product(),
        };
        Ok(Lowered::plain(cx, kind))
    }
}
