//! Data movement with dedicated steps: concatenation along any axis, strided slices, constant
//! padding, gathers at constant positions (a channel shuffle, an index select) and transposes.
//! Concatenation, slices, padding and channel gathers follow their input's layout, with axes
//! mapped to memory order. Edge and reflect padding run by their reference evaluation. A
//! transpose that only changes which layout a channels-last plan reads moves no data.

use super::{ChannelsLast, LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::plan::build::Layout;
use crate::plan::step::StepKind;
use crate::plan::{LayoutPolicy, err};
use secateur_graph::{Concat, Gather, Pad, PadMode, Slice, Transpose, normalize_axis};

/// The memory axis of logical axis `axis` of a rank-4 value under channels-last.
fn memory_axis(cx: &LowerCx, axis: usize, rank: usize) -> usize {
    match (cx.nhwc && rank == 4, axis) {
        (true, 1) => 3,
        (true, a @ (2 | 3)) => a - 1,
        (_, a) => a,
    }
}

impl RuntimeOp for Slice {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        if cx.in_shape(0).len() == 4 {
            ChannelsLast::Follow
        } else {
            ChannelsLast::No
        }
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let dims = cx.in_shape(0);
        let rank = dims.len();
        let logical = self
            .resolved(&dims)
            .map_err(|e| err(&cx.node().name, e.to_string()))?;
        let mut ranges = logical.clone();
        for (ax, r) in logical.into_iter().enumerate() {
            ranges[memory_axis(cx, ax, rank)] = r;
        }
        let kind = StepKind::Slice {
            dims: cx.memory_order(&dims, rank),
            ranges,
        };
        Ok(Lowered::plain(cx, kind))
    }
}

impl RuntimeOp for Pad {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        let constant = matches!(self.mode, PadMode::Constant(_));
        if constant && cx.in_shape(0).len() == 4 {
            ChannelsLast::Follow
        } else {
            ChannelsLast::No
        }
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let PadMode::Constant(fill) = self.mode else {
            return cx.reference();
        };
        let dims = cx.in_shape(0);
        let rank = dims.len();
        let (mut before, mut after) = (vec![0; rank], vec![0; rank]);
        for ax in 0..rank {
            let m = memory_axis(cx, ax, rank);
            before[m] = self.before[ax];
            after[m] = self.after[ax];
        }
        let kind = StepKind::Pad {
            dims: cx.memory_order(&dims, rank),
            before,
            after,
            fill,
        };
        Ok(Lowered::plain(cx, kind))
    }
}

impl RuntimeOp for Gather {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        let idx = &cx.node().inputs[1];
        let constant = cx
            .graph
            .initializers
            .get(idx)
            .is_some_and(|t| t.rank() == 1);
        if constant && self.axis == 1 && cx.in_shape(0).len() == 4 {
            ChannelsLast::Follow
        } else {
            ChannelsLast::No
        }
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let Some(idx) = cx.graph.initializers.get(&cx.node().inputs[1]) else {
            // positions computed by the graph (token ids): read when the step runs
            let dims = cx.in_shape(0);
            let kind = StepKind::GatherIndexed {
                outer: dims[..self.axis].iter().product(),
                n: dims[self.axis],
                inner: dims[self.axis + 1..].iter().product(),
                count: cx.in_shape(1).iter().product(),
            };
            return Ok(Lowered::plain(cx, kind));
        };
        let dims = cx.in_shape(0);
        let rank = dims.len();
        let n = dims[self.axis];
        let positions = idx
            .data()
            .iter()
            .map(|&v| Gather::position(v, n))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| err(&cx.node().name, e.to_string()))?;
        let mem = cx.memory_order(&dims, rank);
        let ax = memory_axis(cx, self.axis, rank);
        let kind = StepKind::GatherBlocks {
            outer: mem[..ax].iter().product(),
            n,
            inner: mem[ax + 1..].iter().product(),
            positions,
        };
        Ok(Lowered::plain(cx, kind))
    }
}

impl RuntimeOp for Transpose {
    /// A rank-4 transpose between the channels-first and channels-last axis orders moves no
    /// data in a channels-last plan when its input is already stored in the target order
    /// (ConvNeXt's permutes around its LayerNorm): `[0, 2, 3, 1]` of a value stored
    /// channels-last is that memory read as a plain array, and `[0, 3, 1, 2]` of a plain array
    /// is that memory read channels-last.
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let dims = cx.in_shape(0);
        let kind = StepKind::Transpose {
            dims: dims.clone(),
            perm: self.perm.clone(),
        };
        let mut lowered = Lowered::plain(cx, kind);
        let channels_last_plan = matches!(
            cx.config.layout,
            LayoutPolicy::ChannelsLast | LayoutPolicy::Mixed
        );
        if dims.len() == 4 && channels_last_plan {
            lowered.relabels = match (self.perm.as_slice(), cx.data_nchw) {
                ([0, 2, 3, 1], false) => Some(Layout::Nchw),
                ([0, 3, 1, 2], true) => Some(Layout::Nhwc),
                _ => None,
            };
        }
        Ok(lowered)
    }
}

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
        let mut total = 0;
        let parts = cx
            .node()
            .inputs
            .iter()
            .map(|v| {
                let len: usize = cx.memory_order(&cx.value_shape(v), rank)[axis..]
                    .iter()
                    .product();
                total += len;
                (total - len, len)
            })
            .collect();
        let kind = StepKind::Concat {
            outer,
            total,
            parts,
        };
        Ok(Lowered::plain(cx, kind))
    }
}
