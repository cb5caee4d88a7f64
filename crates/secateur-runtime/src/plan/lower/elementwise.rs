//! Element-wise ops on the generic vector steps: pointwise functions, broadcasting binaries,
//! `Expand` (a broadcast copy), `Where` (a broadcast selection), batch norms that no layer
//! absorbs (a per-channel affine step with the function after it), and softmax along any axis
//! (or over all trailing axes for the legacy form), with the scaling and masking of attention
//! scores before it fused in.

use super::{ChannelsLast, LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::fold::batch_norm_affine;
use crate::kernels::elementwise::Broadcast;
use crate::kernels::select::Select;
use crate::kernels::softmax::MaskRows;
use crate::plan::err;
use crate::plan::step::{MaskValues, StepKind};
use secateur_graph::{
    BatchNorm, Binary, Expand, ScaledSoftmax, Softmax, Unary, Where, normalize_axis,
};

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
        if let Some(chain) = cx.graph.scaled_softmax(cx.node, cx.shapes)
            && let Some(lowered) = scaled_softmax(cx, &chain)
        {
            return Ok(lowered);
        }
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

/// A scaling and masking of attention scores with the softmax after them as one step (the
/// graph's scaled-softmax rule), unless the scores are channels-last here or the mask does not
/// broadcast to them.
fn scaled_softmax(cx: &LowerCx, chain: &ScaledSoftmax) -> Option<Lowered> {
    let dims = cx.value_shape(&chain.scores);
    let n = *dims.last()?;
    let mask = match &chain.mask {
        Some((_, v)) => {
            let rows = MaskRows::new(&cx.value_shape(v), &dims)?;
            let values = match cx.graph.initializers.get(v) {
                Some(t) => MaskValues::Constant(t.data().to_vec()),
                None => MaskValues::Input,
            };
            Some((rows, values))
        }
        None => None,
    };
    if cx.nhwc || n == 0 {
        return None;
    }
    let kind = StepKind::Softmax {
        outer: dims.iter().product::<usize>() / n,
        red: n,
        inner: 1,
        scale: chain.factor(),
        mask,
    };
    let mut lowered = Lowered::plain(cx, kind);
    lowered.absorbed = chain.absorbed();
    lowered.output = chain.output.clone();
    lowered.out_len = dims.iter().product();
    lowered.data_only = true;
    lowered.residual = chain
        .mask
        .as_ref()
        .filter(|m| !cx.graph.initializers.contains_key(&m.1))
        .map(|m| m.1.clone());
    Some(lowered)
}

impl RuntimeOp for Expand {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let (dims, out) = (cx.in_shape(0), cx.out_shape());
        let kind = StepKind::Expand {
            bc: Broadcast::new(&dims, &dims, &out),
            n: dims.iter().product(),
        };
        Ok(Lowered::plain(cx, kind))
    }
}

impl RuntimeOp for Where {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let shapes = [cx.in_shape(0), cx.in_shape(1), cx.in_shape(2)];
        let sel = Select::new(&shapes[0], &shapes[1], &shapes[2], &cx.out_shape());
        let lens = shapes.map(|s| s.iter().product());
        Ok(Lowered::plain(cx, StepKind::Select { sel, lens }))
    }
}

impl RuntimeOp for BatchNorm {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        if cx.out_shape().len() == 4 {
            ChannelsLast::Follow
        } else {
            ChannelsLast::No
        }
    }

    /// A batch norm no weighted layer absorbed (one after a concatenation or an addition, as
    /// in DenseNet's pre-activation layers): one pass of `x·scale + shift` per channel, with
    /// the element-wise function that alone reads it; with statistics that are not
    /// constants, its reference evaluation.
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let node = cx.node();
        let dims = cx.in_shape(0);
        let channels = dims.get(1).copied().unwrap_or(0);
        let params: Option<Vec<&[f32]>> = node.inputs[1..]
            .iter()
            .map(|v| cx.graph.initializers.get(v).map(|t| t.data()))
            .collect();
        let Some(p) = params.filter(|p| p.len() == 4 && p.iter().all(|v| v.len() == channels))
        else {
            return cx.reference();
        };
        let (scale, shift) = batch_norm_affine(p[0], p[1], p[2], p[3], self.epsilon);
        let inner = if cx.nhwc {
            1
        } else {
            dims[2..].iter().product()
        };
        let next = cx.graph.next_pointwise(&node.outputs[0]);
        let mut lowered = Lowered::plain(
            cx,
            StepKind::ChannelAffine {
                scale,
                shift,
                inner,
                post: next.map(|(_, f)| f),
                n: dims.iter().product(),
            },
        );
        if let Some((c, _)) = next {
            lowered.absorbed.push(c);
            lowered.output = cx.graph.nodes[c].outputs[0].clone();
        }
        lowered.data_only = true;
        Ok(lowered)
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
        if full(1) == Some(false) || full(2) == Some(false) {
            return cx.reference();
        }
        let kind = StepKind::LayerNorm {
            rows: dims[..a].iter().product(),
            n,
            eps: self.epsilon,
            scale: cx.node().inputs.len() > 1,
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
            scale: 1.0,
            mask: None,
        };
        Ok(Lowered::plain(cx, kind))
    }
}
