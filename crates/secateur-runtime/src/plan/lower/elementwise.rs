//! Element-wise ops on the generic vector steps: pointwise functions, broadcasting binaries,
//! and softmax along any axis (or over all trailing axes for the legacy form).

use super::{ChannelsLast, LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::kernels::elementwise::Broadcast;
use crate::plan::err;
use crate::plan::step::StepKind;
use secateur_graph::{Binary, Softmax, Unary, normalize_axis};

impl RuntimeOp for Unary {
    fn channels_last(&self, _cx: &LowerCx) -> ChannelsLast {
        ChannelsLast::Follow
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        Ok(Lowered::plain(cx, StepKind::Pointwise(self.f)))
    }
}

impl RuntimeOp for Binary {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        // a constant operand is laid out as the file gives it: only broadcast ones (a
        // per-channel vector, a scalar) read the same in both layouts
        let node = cx.node();
        let constant_image = node.inputs.iter().any(|v| {
            cx.graph.initializers.get(v).is_some_and(|t| {
                let s = t.shape();
                s.len() >= 3 && s[s.len() - 2] * s[s.len() - 1] > 1 && s[s.len() - 3] > 1
            })
        });
        if cx.out_shape().len() == 4 && !constant_image {
            ChannelsLast::Follow
        } else {
            ChannelsLast::No
        }
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let rank = cx.out_shape().len();
        let (sa, sb) = (cx.in_shape(0), cx.in_shape(1));
        let kind = StepKind::Binary {
            f: self.f,
            bc: Broadcast::new(
                &cx.memory_order(&sa, rank),
                &cx.memory_order(&sb, rank),
                &cx.memory_order(&cx.out_shape(), rank),
            ),
            na: sa.iter().product(),
            nb: sb.iter().product(),
        };
        Ok(Lowered::plain(cx, kind))
    }
}

impl RuntimeOp for secateur_graph::LayerNorm {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let dims = cx.in_shape(0);
        let a = self
            .first_axis(dims.len())
            .map_err(|e| err(&cx.node().name, e.0))?;
        let n: usize = dims[a..].iter().product();
        let full = |k: usize| {
            cx.node()
                .inputs
                .get(k)
                .map(|_| cx.in_shape(k).iter().product::<usize>() == n)
        };
        // scale and bias of the whole normalised shape; anything broadcast runs by reference
        if full(1) != Some(true) || full(2) == Some(false) {
            return cx.reference();
        }
        let kind = StepKind::LayerNorm {
            rows: dims[..a].iter().product(),
            n,
            eps: self.epsilon,
            bias: cx.node().inputs.len() > 2,
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
