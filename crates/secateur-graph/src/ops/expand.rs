//! `Expand`: broadcasts its input to a shape (ViT's class token repeated over the batch). When
//! that shape contains the symbolic batch or a multiple of it (`[N·heads, S, S]` in DeBERTa), a
//! second input supplies it: any value whose axis 0 is the batch (the graph input, at import),
//! read for its size only. Axes that keep their size
//! are linked to the output; axes broadcast from size 1 are free: pruning may keep any of
//! their indices (the query heads sharing one key/value head), and the target follows.

use super::broadcast::broadcast_shapes;
use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Broadcast to `shape` (NumPy rules, aligned at the right).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expand {
    pub shape: Shape,
}

impl Expand {
    /// Whether the target needs the batch size from a second input.
    pub fn needs_batch(&self) -> bool {
        self.shape.batch_factor().is_some()
    }

    /// The target with the batch taken from axis 0 of the second input (symbolic in shape
    /// inference, a number when evaluating concrete tensors).
    fn target(&self, inputs: &[Shape]) -> Result<Shape, OpError> {
        if !self.needs_batch() {
            return Ok(self.shape.clone());
        }
        let Some(batch) = inputs.get(1).and_then(|b| b.0.first().copied()) else {
            op_bail!(
                "expanding to {} needs a second input holding the batch",
                self.shape
            );
        };
        let times = |k: usize| -> Result<Dim, OpError> {
            Ok(match batch {
                Dim::Known(b) => Dim::Known(b * k),
                Dim::Batch => Dim::batch_times(k),
                Dim::BatchTimes(_) => op_bail!("the batch source's axis 0 must be the batch"),
            })
        };
        let dims = self
            .shape
            .0
            .iter()
            .map(|d| match d.batch_factor() {
                Some(k) => times(k),
                None => Ok(*d),
            })
            .collect::<Result<_, _>>()?;
        Ok(Shape(dims))
    }
}

impl OpSemantics for Expand {
    fn op_type(&self) -> &'static str {
        "Expand"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        1..=2
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        Ok(vec![broadcast_shapes(&inputs[0], &self.target(inputs)?)?])
    }

    fn shape_only_inputs(&self) -> Vec<usize> {
        vec![1]
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        let (x, out) = (&inputs[0], &outputs[0]);
        let off = out.rank() - x.rank();
        let mut links: Vec<AxisLink> = (0..x.rank())
            .filter(|&ax| x.0[ax] == out.0[ax + off])
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax + off)))
            .collect();
        if inputs.len() == 2 && out.0.first() == Some(&Dim::Batch) {
            links.push(AxisLink::identity(
                (Port::Input(1), 0),
                (Port::Output(0), 0),
            ));
        }
        links
    }

    /// A kept axis (linked: the input's size equals the target's) follows its input when
    /// pruning resizes it: the key/value heads a grouped-query attention repeats for its query
    /// heads (`[N, kv, 1, S, d] → [N, kv, r, S, d]`).
    fn refit(&mut self, old: &[Shape], new: &[Shape]) -> Result<(), OpError> {
        let (x_old, x_new) = (&old[0], &new[0]);
        let off = self.shape.rank().saturating_sub(x_old.rank());
        for ax in 0..x_old.rank().min(self.shape.rank()) {
            let target = &mut self.shape.0[ax + off];
            if *target == x_old.0[ax] && x_old.0[ax] != Dim::Known(1) {
                *target = x_new.0[ax];
            }
        }
        Ok(())
    }

    /// Axes broadcast from size 1 to a known size: each index is a copy of the same values,
    /// so pruning may keep any of them.
    fn free_axes(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<(Port, usize)> {
        let (x, out) = (&inputs[0], &outputs[0]);
        let off = out.rank().saturating_sub(x.rank());
        (0..out.rank())
            .filter(|&ax| {
                let from = if ax < off {
                    Dim::Known(1)
                } else {
                    x.0[ax - off]
                };
                from == Dim::Known(1) && matches!(out.0[ax], Dim::Known(n) if n > 1)
            })
            .map(|ax| (Port::Output(0), ax))
            .collect()
    }

    fn refit_outputs(&mut self, new: &[Shape]) -> Result<(), OpError> {
        let out = &new[0];
        let off = out.rank().saturating_sub(self.shape.rank());
        for (ax, target) in self.shape.0.iter_mut().enumerate() {
            if let (Dim::Known(_), Some(Dim::Known(n))) = (*target, out.0.get(ax + off)) {
                *target = Dim::Known(*n);
            }
        }
        Ok(())
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let shapes: Vec<Shape> = inputs.iter().map(|t| Shape::known(t.shape())).collect();
        let out_shape = self.infer(&shapes)?[0].resolve(1);
        let r = out_shape.len();
        let padded: Vec<usize> = std::iter::repeat_n(1, r - x.rank())
            .chain(x.shape().iter().copied())
            .collect();
        let (st_in, st_out) = (strides(&padded), strides(&out_shape));
        let n: usize = out_shape.iter().product();
        let mut out = Vec::with_capacity(n);
        for flat in 0..n {
            let src: usize = (0..r)
                .filter(|&ax| padded[ax] != 1)
                .map(|ax| ((flat / st_out[ax]) % out_shape[ax]) * st_in[ax])
                .sum();
            out.push(x.data()[src]);
        }
        Ok(vec![
            Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_to_a_multiple_of_the_batch() {
        // a relative-position index [1, 1, 2] repeated for 2 heads of every sample: [2N, 1, 2]
        let idx = Tensor::new(vec![1, 1, 2], vec![4., 5.]).unwrap();
        let e = Expand {
            shape: Shape(vec![Dim::BatchTimes(2), Dim::Known(1), Dim::Known(2)]),
        };
        assert!(e.needs_batch());
        let batch = Tensor::zeros(vec![3, 5]);
        let y = e.eval(&[&idx, &batch]).unwrap().remove(0);
        assert_eq!(y.shape(), &[6, 1, 2]);
        let out = e
            .infer(&[Shape::known(&[1, 1, 2]), Shape::batched(&[5])])
            .unwrap();
        assert_eq!(out[0].0[0], Dim::BatchTimes(2));
    }

    #[test]
    fn refit_follows_a_pruned_kept_axis_and_keeps_the_repeats() {
        // grouped-query attention: 2 key/value heads, each repeated for 2 query heads
        let dims = |kv: usize| {
            Shape(vec![
                Dim::Batch,
                Dim::Known(kv),
                Dim::Known(2),
                Dim::Known(5),
                Dim::Known(8),
            ])
        };
        let mut e = Expand { shape: dims(2) };
        e.refit(
            &[Shape::batched(&[2, 1, 5, 8])],
            &[Shape::batched(&[1, 1, 5, 8])],
        )
        .unwrap();
        assert_eq!(e.shape, dims(1));
    }

    #[test]
    fn an_axis_broadcast_from_one_is_free_and_its_target_follows_the_pruning() {
        // multi-query attention: one key/value head repeated for 4 query heads
        let e = Expand {
            shape: Shape(vec![
                Dim::Batch,
                Dim::Known(1),
                Dim::Known(4),
                Dim::Known(5),
                Dim::Known(8),
            ]),
        };
        let ins = [Shape::batched(&[1, 1, 5, 8]), Shape::batched(&[5])];
        let out = e.infer(&ins).unwrap().remove(0);
        assert_eq!(e.free_axes(&ins, &[out]), vec![(Port::Output(0), 2)]);
        let mut pruned = e.clone();
        pruned
            .refit_outputs(&[Shape::batched(&[1, 2, 5, 8])])
            .unwrap();
        assert_eq!(pruned.shape.0[2], Dim::Known(2));
        assert_eq!(pruned.shape.0[0], Dim::Batch);
        // the class token repeated over the batch has no free axis
        let token = Expand {
            shape: Shape(vec![Dim::Batch, Dim::Known(1), Dim::Known(8)]),
        };
        let ins = [Shape::known(&[1, 1, 8]), Shape::batched(&[3])];
        let out = token.infer(&ins).unwrap().remove(0);
        assert!(token.free_axes(&ins, &[out]).is_empty());
    }

    #[test]
    fn expands_over_the_batch_of_the_second_input() {
        let token = Tensor::new(vec![1, 1, 2], vec![7., 8.]).unwrap();
        let e = Expand {
            shape: Shape(vec![Dim::Batch, Dim::Known(1), Dim::Known(2)]),
        };
        let batch = Tensor::zeros(vec![3, 5]);
        let y = e.eval(&[&token, &batch]).unwrap().remove(0);
        assert_eq!(y.shape(), &[3, 1, 2]);
        assert_eq!(y.data(), &[7., 8., 7., 8., 7., 8.]);
        assert!(e.infer(&[Shape::known(&[1, 1, 2])]).is_err());
        assert_eq!(
            e.infer(&[Shape::known(&[1, 1, 2]), Shape::known(&[4, 5])])
                .unwrap()[0],
            Shape::known(&[4, 1, 2])
        );
        let out = e
            .infer(&[Shape::known(&[1, 1, 2]), Shape::batched(&[5])])
            .unwrap();
        assert_eq!(
            out[0],
            Shape(vec![Dim::Batch, Dim::Known(1), Dim::Known(2)])
        );
    }
}
