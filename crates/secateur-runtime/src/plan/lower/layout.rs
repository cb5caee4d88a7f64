//! Data movement with a dedicated step: concatenation along any axis.

use super::{ChannelsLast, LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::plan::err;
use crate::plan::step::StepKind;
use secateur_graph::{Concat, normalize_axis};

impl RuntimeOp for Concat {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        let constant = cx
            .node()
            .inputs
            .iter()
            .any(|v| cx.graph.initializers.contains_key(v));
        if cx.out_shape().len() == 4 && !constant {
            ChannelsLast::Follow
        } else {
            ChannelsLast::No
        }
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let logical = cx.out_shape();
        let rank = logical.len();
        let axis = normalize_axis(self.axis, rank).map_err(|e| err(&cx.node().name, e.0))?;
        // the axis in memory order: channels-last moves C to the end
        let axis = match (cx.nhwc, axis) {
            (true, 1) => 3,
            (true, a @ (2 | 3)) => a - 1,
            (_, a) => a,
        };
        let out = cx.memory_order(&logical, rank);
        let outer: usize = out[..axis].iter().product();
        let chunks = cx
            .node()
            .inputs
            .iter()
            .map(|v| {
                cx.memory_order(&cx.value_shape(v), rank)[axis..]
                    .iter()
                    .product()
            })
            .collect();
        Ok(Lowered::plain(cx, StepKind::Concat { outer, chunks }))
    }
}
