//! `Where(cond, x, y)`: `x` where `cond` is non-zero, else `y`, with NumPy broadcasting of all
//! three (attention masks filled with a large negative value). Axes are linked as in
//! broadcasting: every output axis to each input axis not broadcast along it.

use super::broadcast::{broadcast_links, broadcast_shapes};
use super::{AxisLink, OpSemantics};
use crate::error::OpError;
use crate::shape::Shape;
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Element-wise selection between two values by a 0/1 condition.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Where;

/// The flat index into a tensor of shape `s` (right-aligned, broadcast) for output `flat`.
fn source_index(flat: usize, out: &[usize], st_out: &[usize], s: &[usize]) -> usize {
    let off = out.len() - s.len();
    let st = strides(s);
    (0..s.len())
        .filter(|&ax| s[ax] != 1)
        .map(|ax| ((flat / st_out[ax + off]) % out[ax + off]) * st[ax])
        .sum()
}

impl OpSemantics for Where {
    fn op_type(&self) -> &'static str {
        "Where"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        3..=3
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let cx = broadcast_shapes(&inputs[0], &inputs[1])?;
        Ok(vec![broadcast_shapes(&cx, &inputs[2])?])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        broadcast_links(inputs, outputs)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let shapes: Vec<Shape> = inputs.iter().map(|t| Shape::known(t.shape())).collect();
        let out = self.infer(&shapes)?[0].resolve(1);
        let st_out = strides(&out);
        let n: usize = out.iter().product();
        let (c, x, y) = (inputs[0], inputs[1], inputs[2]);
        let data = (0..n)
            .map(|f| {
                let pick = |t: &Tensor| t.data()[source_index(f, &out, &st_out, t.shape())];
                if pick(c) != 0.0 { pick(x) } else { pick(y) }
            })
            .collect();
        Ok(vec![
            Tensor::new(out, data).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_with_broadcasting() {
        let cond = Tensor::new(vec![1, 3], vec![1., 0., 1.]).unwrap();
        let x = Tensor::from_fn(vec![2, 3], |i| i as f32);
        let fill = Tensor::scalar(-9.0);
        let y = Where.eval(&[&cond, &x, &fill]).unwrap().remove(0);
        assert_eq!(y.data(), &[0., -9., 2., 3., -9., 5.]);
        assert!(
            Where
                .infer(&[Shape::known(&[2]), Shape::known(&[3]), Shape::known(&[1])])
                .is_err()
        );
    }
}
