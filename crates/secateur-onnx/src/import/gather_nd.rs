//! `GatherND` of an activation at constant indices (a static-shape dynamo export builds the
//! attention mask `mask[:, None, None, :]` this way): the first `k` axes (known sizes) are
//! merged by a `Reshape`, and one `Gather` along the merged axis picks the rows at the linear
//! positions of the index tuples. Indices computed from a symbolic batch take the per-sample
//! path of `batch_index`.

use super::{Importer, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::{Gather, Op, Reshape, Tensor};

/// Linear positions of the index tuples (last axis of `index_dims`, length `k`) in the first
/// `k` axes of sizes `lead`; negative indices count from the end.
fn linear_positions(
    lead: &[usize],
    index_dims: &[usize],
    indices: &[i64],
) -> std::result::Result<Vec<i64>, String> {
    let k = lead.len();
    if index_dims.last() != Some(&k) || k == 0 {
        return Err(format!(
            "index tuples {index_dims:?} do not fit {k} leading axes"
        ));
    }
    indices
        .chunks(k)
        .map(|tuple| {
            tuple.iter().zip(lead).try_fold(0i64, |acc, (&i, &d)| {
                let d = d as i64;
                let i = if i < 0 { i + d } else { i };
                if !(0..d).contains(&i) {
                    return Err(format!("index {tuple:?} is out of range for axes {lead:?}"));
                }
                Ok(acc * d + i)
            })
        })
        .collect()
}

impl Importer {
    /// Lowers `GatherND(data, constant indices)`; `Ok(false)` when the indices are not
    /// constant integers (left to the other paths).
    pub(super) fn gather_nd_constant(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<bool> {
        let [data, idx] = inputs else {
            return Ok(false);
        };
        let (Some(shape), Some((index_dims, values))) =
            (self.shapes.get(data).cloned(), self.int_values(idx))
        else {
            return Ok(false);
        };
        if Attrs::new(node)
            .int("batch_dims", 0)
            .map_err(|m| node_err(node, m))?
            != 0
        {
            return Err(node_err(node, "only batch_dims = 0 is supported"));
        }
        let k = index_dims.last().copied().unwrap_or(0).min(shape.rank());
        let lead: Option<Vec<usize>> = (0..k).map(|a| shape.dim(a)).collect();
        let Some(lead) = lead else {
            return Err(node_err(
                node,
                format!(
                    "constant indices into the batch axis of {shape}: export with a dynamic batch"
                ),
            ));
        };
        let rows: usize = lead.iter().product();
        if rows > 1 << 24 {
            // positions are held as f32 values, exact up to 2^24
            return Err(node_err(
                node,
                format!("{rows} indexed rows: more than 2^24 positions are not exact"),
            ));
        }
        let positions =
            linear_positions(&lead, &index_dims, &values).map_err(|m| node_err(node, m))?;
        let out = node.output.first().cloned().unwrap_or_default();
        let base = self.unique_name(node, index);
        let mut target = vec![rows as i64];
        target.extend(
            shape.0[k..]
                .iter()
                .map(|d| d.known().map_or(-1, |n| n as i64)),
        );
        let merged = format!("{out}__rows");
        let reshape = Op::Reshape(Reshape {
            shape: target,
            allowzero: false,
        });
        self.push_node(
            format!("{base}.rows"),
            reshape,
            vec![data.clone()],
            vec![merged.clone()],
        )?;
        let tuples = index_dims[..index_dims.len() - 1].to_vec();
        let idx_name = format!("{out}__positions");
        let t = Tensor::new(tuples, positions.iter().map(|&p| p as f32).collect())
            .map_err(|e| node_err(node, e.to_string()))?;
        self.add_integer_const(&idx_name, t);
        let gather = Op::Gather(Gather { axis: 0 });
        self.push_node(base, gather, vec![merged, idx_name], vec![out])?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_become_row_positions() {
        // mask[:, None, None, :] of a [2, 3] mask, as dynamo writes it
        let idx = [0, 0, 0, 1, 0, 2, 1, 0, 1, 1, 1, 2];
        let p = linear_positions(&[2, 3], &[2, 1, 1, 3, 2], &idx).unwrap();
        assert_eq!(p, [0, 1, 2, 3, 4, 5]);
        assert_eq!(linear_positions(&[4], &[2, 1], &[-1, 0]).unwrap(), [3, 0]);
        assert!(
            linear_positions(&[2, 3], &[1, 2], &[2, 0])
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            linear_positions(&[2], &[1, 2], &[0, 0])
                .unwrap_err()
                .contains("do not fit")
        );
    }
}
