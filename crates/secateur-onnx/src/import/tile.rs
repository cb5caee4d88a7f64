//! `Tile(x, repeats)` of an activation, lowered at import: along an axis repeated `r` times by a
//! constant, a `Concat` of `r` copies; along axis 0 repeated by the batch size (DeBERTa tiles
//! its relative-position projections `[H, 2S, d]` into `[N·H, 2S, d]`), a `Reshape` to
//! `[1, ..]`, an `Expand` over the batch and a `Reshape` merging the batch into axis 0 (batch
//! outermost, as `Tile` orders the copies).

use super::{Importer, SymInt, node_err};
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::{Concat, Dim, Expand, Op, Reshape, Shape};

/// More copies than this along one axis are refused (each is one input of a `Concat`).
const MAX_COPIES: i64 = 4096;

impl Importer {
    /// Lowers a `Tile` node whose repeats are known at import.
    pub(super) fn import_tile(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<()> {
        let [x, repeats] = inputs else {
            return Err(node_err(node, "expected an input and the repeats"));
        };
        let shape = self.shapes.get(x).cloned().ok_or_else(|| {
            let what = if self.int_consts.contains_key(x) {
                "an integer constant, which Tile does not fold"
            } else {
                "not defined before this node"
            };
            node_err(node, format!("input '{x}' is {what}"))
        })?;
        let reps = self
            .int_consts
            .get(repeats)
            .map(|c| c.values.clone())
            .filter(|r| r.len() == shape.rank())
            .ok_or_else(|| {
                node_err(
                    node,
                    format!("repeats must be a constant of {} integers", shape.rank()),
                )
            })?;
        let out = node.output.first().cloned().unwrap_or_default();
        let base = self.unique_name(node, index);
        let steps: Vec<(usize, SymInt)> = reps
            .iter()
            .enumerate()
            .filter(|(_, r)| **r != SymInt::Known(1))
            .map(|(ax, r)| (ax, *r))
            .collect();
        if steps.is_empty() {
            let identity = Op::Identity(secateur_graph::Identity);
            return self.push_node(base, identity, vec![x.clone()], vec![out]);
        }
        let mut current = x.clone();
        for (k, &(ax, r)) in steps.iter().enumerate() {
            let value = if k + 1 == steps.len() {
                out.clone()
            } else {
                format!("{base}.axis{ax}")
            };
            match r {
                SymInt::Known(n) if (1..=MAX_COPIES).contains(&n) => {
                    let copies = vec![current.clone(); n as usize];
                    let concat = Op::Concat(Concat { axis: ax as i64 });
                    self.push_node(
                        format!("{base}.axis{ax}"),
                        concat,
                        copies,
                        vec![value.clone()],
                    )?;
                }
                SymInt::Batch if ax == 0 => {
                    self.tile_over_batch(node, &base, &current, &value)?;
                }
                other => {
                    return Err(node_err(
                        node,
                        format!("repeating axis {ax} of {shape} {other:?} times is not supported"),
                    ));
                }
            }
            current = value;
        }
        Ok(())
    }

    /// `x` of shape `[k, ..]` (no batch) repeated over the batch along axis 0: `[N·k, ..]`.
    fn tile_over_batch(&mut self, node: &NodeProto, base: &str, x: &str, out: &str) -> Result<()> {
        let dims = self.shapes[x].0.clone();
        if dims.iter().any(|d| d.known().is_none()) {
            return Err(node_err(node, "tiling a batched value by the batch size"));
        }
        let batch = self
            .batch_source()
            .ok_or_else(|| node_err(node, "no graph input carries the batch size"))?;
        let lifted = format!("{base}.lifted");
        let mut one_more = vec![1i64];
        one_more.extend(dims.iter().map(|d| d.known().unwrap_or(1) as i64));
        let reshape = |shape: Vec<i64>| {
            Op::Reshape(Reshape {
                shape,
                allowzero: false,
            })
        };
        self.push_node(
            format!("{base}.lift"),
            reshape(one_more),
            vec![x.to_string()],
            vec![lifted.clone()],
        )?;
        let mut target = vec![Dim::Batch];
        target.extend(dims.iter().copied());
        let expanded = format!("{base}.expanded");
        let expand = Op::Expand(Expand {
            shape: Shape(target),
        });
        self.push_node(
            format!("{base}.expand"),
            expand,
            vec![lifted, batch],
            vec![expanded.clone()],
        )?;
        let mut merged = vec![-1i64];
        merged.extend(dims[1..].iter().map(|d| d.known().unwrap_or(1) as i64));
        self.push_node(
            format!("{base}.merge"),
            reshape(merged),
            vec![expanded],
            vec![out.to_string()],
        )
    }
}
