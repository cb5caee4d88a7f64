//! Concatenation along one axis (ONNX `Concat`). Each input's concatenation axis is linked to
//! the output's with the input's offset, so channels of different branches stay separate groups.

use super::{AxisLink, IndexMap, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Attributes of a concatenation; `axis` may be negative (counted from the end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    pub axis: i64,
}

/// Resolves a possibly negative ONNX axis against a rank.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        op_bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

impl OpSemantics for Concat {
    fn op_type(&self) -> &'static str {
        "Concat"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        1..=usize::MAX
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let first = &inputs[0];
        let axis = normalize_axis(self.axis, first.rank())?;
        let mut total = 0;
        for (i, s) in inputs.iter().enumerate() {
            if s.rank() != first.rank() {
                op_bail!(
                    "input {i} has rank {} but input 0 has rank {}",
                    s.rank(),
                    first.rank()
                );
            }
            for ax in 0..s.rank() {
                if ax != axis && s.0[ax] != first.0[ax] {
                    op_bail!(
                        "input {i} shape {s} differs from input 0 shape {first} outside axis {axis}"
                    );
                }
            }
            total += s.dim(axis).ok_or_else(|| {
                OpError::new(format!("cannot concatenate along the batch axis {axis}"))
            })?;
        }
        let mut out = first.0.clone();
        out[axis] = Dim::Known(total);
        Ok(vec![Shape(out)])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let rank = inputs[0].rank();
        let Ok(axis) = normalize_axis(self.axis, rank) else {
            return Vec::new();
        };
        let mut links = Vec::new();
        let mut offset = 0;
        for (i, s) in inputs.iter().enumerate() {
            for ax in 0..rank {
                let map = if ax == axis {
                    IndexMap::offset(offset)
                } else {
                    IndexMap::IDENTITY
                };
                links.push(AxisLink {
                    a: (Port::Input(i), ax),
                    b: (Port::Output(0), ax),
                    map,
                });
            }
            offset += s.dim(axis).unwrap_or(0);
        }
        links
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let rank = inputs[0].rank();
        let axis = normalize_axis(self.axis, rank)?;
        let outer: usize = inputs[0].shape()[..axis].iter().product();
        let mut shape = inputs[0].shape().to_vec();
        shape[axis] = inputs.iter().map(|t| t.shape()[axis]).sum();
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for t in inputs {
                let chunk: usize = t.shape()[axis..].iter().product();
                data.extend_from_slice(&t.data()[o * chunk..(o + 1) * chunk]);
            }
        }
        Ok(vec![
            Tensor::new(shape, data).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_channels() {
        let a = Tensor::from_fn(vec![1, 1, 2], |i| i as f32);
        let b = Tensor::from_fn(vec![1, 2, 2], |i| 10.0 + i as f32);
        let y = Concat { axis: 1 }.eval(&[&a, &b]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 3, 2]);
        assert_eq!(y.data(), &[0., 1., 10., 11., 12., 13.]);
        let s = Concat { axis: -3 }
            .infer(&[Shape::batched(&[2, 4, 4]), Shape::batched(&[3, 4, 4])])
            .unwrap();
        assert_eq!(s[0], Shape::batched(&[5, 4, 4]));
        assert!(
            Concat { axis: 1 }
                .infer(&[Shape::batched(&[2, 4, 4]), Shape::batched(&[3, 4, 5])])
                .is_err()
        );
    }
}
