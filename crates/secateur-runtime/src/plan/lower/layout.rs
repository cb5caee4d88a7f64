//! Data movement with a dedicated step: concatenation along any axis.

use super::{LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::plan::err;
use crate::plan::step::StepKind;
use secateur_graph::{Concat, normalize_axis};

impl RuntimeOp for Concat {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let out = cx.out_shape();
        let axis = normalize_axis(self.axis, out.len()).map_err(|e| err(&cx.node().name, e.0))?;
        let outer: usize = out[..axis].iter().product();
        let chunks = cx
            .node()
            .inputs
            .iter()
            .map(|v| cx.value_shape(v)[axis..].iter().product())
            .collect();
        Ok(Lowered::plain(cx, StepKind::Concat { outer, chunks }))
    }
}
