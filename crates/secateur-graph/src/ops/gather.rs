//! `Gather`: the slices of `data` along `axis` at the positions `indices` holds (an embedding
//! lookup of token ids, an index select). Indices are values of the graph like any other: f32
//! holding integers (exact below 2^24), negative ones counting from the end. The gathered axis
//! of `data` is pinned; its other axes and the indices' axes are linked to the output.

use super::{AxisLink, InputRole, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Gather along `axis` (non-negative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gather {
    pub axis: usize,
}

impl Gather {
    /// The position an index value names along an axis of `n` elements.
    pub fn position(v: f32, n: usize) -> Result<usize, OpError> {
        if v.fract() != 0.0 || !v.is_finite() {
            op_bail!("index {v} is not an integer");
        }
        let i = v as i64;
        let j = if i < 0 { i + n as i64 } else { i };
        if !(0..n as i64).contains(&j) {
            op_bail!("index {i} is out of range for an axis of {n}");
        }
        Ok(j as usize)
    }
}

impl OpSemantics for Gather {
    fn op_type(&self) -> &'static str {
        "Gather"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=2
    }

    fn input_roles(&self, _n: usize) -> Vec<InputRole> {
        vec![InputRole::Data, InputRole::Indices]
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let (data, idx) = (&inputs[0], &inputs[1]);
        if self.axis >= data.rank() {
            op_bail!("axis {} is out of range for data {data}", self.axis);
        }
        if data.0[self.axis].known().is_none() {
            op_bail!("gathering along the batch axis of {data} is not supported");
        }
        let mut dims = data.0[..self.axis].to_vec();
        dims.extend_from_slice(&idx.0);
        dims.extend_from_slice(&data.0[self.axis + 1..]);
        Ok(vec![Shape(dims)])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let (data, idx) = (&inputs[0], &inputs[1]);
        let a = self.axis;
        let mut links = Vec::new();
        for ax in (0..data.rank()).filter(|&ax| ax != a) {
            let o = if ax < a { ax } else { ax - 1 + idx.rank() };
            links.push(AxisLink::identity(
                (Port::Input(0), ax),
                (Port::Output(0), o),
            ));
        }
        for ax in 0..idx.rank() {
            links.push(AxisLink::identity(
                (Port::Input(1), ax),
                (Port::Output(0), a + ax),
            ));
        }
        links
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (data, idx) = (inputs[0], inputs[1]);
        let s = data.shape();
        let out_shape = self.infer(&[Shape::known(s), Shape::known(idx.shape())])?[0].resolve(1);
        let outer: usize = s[..self.axis].iter().product();
        let inner: usize = s[self.axis + 1..].iter().product();
        let n = s[self.axis];
        let positions = idx
            .data()
            .iter()
            .map(|&v| Gather::position(v, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(out_shape.iter().product());
        for o in 0..outer {
            for &p in &positions {
                let base = (o * n + p) * inner;
                out.extend_from_slice(&data.data()[base..base + inner]);
            }
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
    fn looks_up_embeddings_and_refuses_bad_indices() {
        let table = Tensor::from_fn(vec![4, 2], |i| i as f32);
        let ids = Tensor::new(vec![1, 3], vec![3., 0., -1.]).unwrap();
        let g = Gather { axis: 0 };
        let y = g.eval(&[&table, &ids]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 3, 2]);
        assert_eq!(y.data(), &[6., 7., 0., 1., 6., 7.]);
        let bad = Tensor::new(vec![1], vec![4.]).unwrap();
        assert!(g.eval(&[&table, &bad]).is_err());
        let half = Tensor::new(vec![1], vec![0.5]).unwrap();
        assert!(g.eval(&[&table, &half]).is_err());
        let out = g
            .infer(&[Shape::known(&[4, 2]), Shape::batched(&[3])])
            .unwrap();
        assert_eq!(out[0], Shape::batched(&[3, 2]));
    }
}
