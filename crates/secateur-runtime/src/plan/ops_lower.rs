//! Lowering of the operators that are not weighted layers to steps: element-wise functions and
//! broadcasting binaries from their class, pooling, global average pooling, concatenation and
//! softmax to their kernels, and every other operator to its reference evaluation (checked on
//! zeros of its input shapes when the plan is compiled).

use super::err;
use super::step::{StepKind, reference_step};
use crate::error::Result;
use secateur_graph::{Graph, Op, OpClass, Shape, normalize_axis};
use std::collections::HashMap;

/// The step of node `ni` (not a weighted layer and not a view) at batch `batch`.
pub(super) fn lower_op(
    graph: &Graph,
    shapes: &HashMap<String, Shape>,
    ni: usize,
    batch: usize,
) -> Result<StepKind> {
    let node = &graph.nodes[ni];
    let name = &node.name;
    let concrete = |v: &str| -> Vec<usize> { shapes[v].resolve(batch) };
    let in_shape = |k: usize| concrete(&node.inputs[k]);
    let out_shape = concrete(&node.outputs[0]);
    Ok(match &node.op {
        op if matches!(op.class(), OpClass::Pointwise(_)) => {
            let OpClass::Pointwise(f) = op.class() else {
                unreachable!("matched a pointwise op")
            };
            StepKind::Pointwise(f)
        }
        Op::MaxPool(secateur_graph::MaxPool { geometry: p })
        | Op::AveragePool(secateur_graph::AveragePool { geometry: p, .. })
            if in_shape(0).len() == 4 =>
        {
            let xs = in_shape(0);
            let (max, include_pad) = match &node.op {
                Op::AveragePool(a) => (false, a.count_include_pad),
                _ => (true, false),
            };
            StepKind::Pool {
                geo: p.clone(),
                max,
                include_pad,
                planes: xs[0] * xs[1],
                h: xs[2],
                w: xs[3],
                ho: out_shape[2],
                wo: out_shape[3],
            }
        }
        Op::GlobalAveragePool(_) => {
            let xs = in_shape(0);
            StepKind::Gap {
                planes: xs[0] * xs[1],
                inner: xs[2..].iter().product(),
            }
        }
        op if matches!(op.class(), OpClass::Binary(_)) => StepKind::Binary {
            f: match op.class() {
                OpClass::Binary(f) => f,
                _ => unreachable!("matched a binary op"),
            },
            sa: in_shape(0),
            sb: in_shape(1),
            so: out_shape.clone(),
        },
        Op::Concat(c) => {
            let axis = normalize_axis(c.axis, out_shape.len()).map_err(|e| err(name, e.0))?;
            let outer: usize = out_shape[..axis].iter().product();
            let chunks = node
                .inputs
                .iter()
                .map(|v| concrete(v)[axis..].iter().product())
                .collect();
            StepKind::Concat { outer, chunks }
        }
        Op::Softmax(s) => {
            let rank = out_shape.len();
            let a = normalize_axis(s.axis, rank).map_err(|e| err(name, e.0))?;
            let hi = if s.legacy { rank } else { a + 1 };
            StepKind::Softmax {
                outer: out_shape[..a].iter().product(),
                red: out_shape[a..hi].iter().product(),
                inner: out_shape[hi..].iter().product(),
            }
        }
        other => reference_step(name, other, node.inputs.iter().map(|v| concrete(v)))?,
    })
}
