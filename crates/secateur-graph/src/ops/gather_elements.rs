//! `GatherElements`: element-wise picking along one axis, `out[.., i, ..] = data[.., idx[.., i,
//! ..], ..]` with the output shaped like the indices (PyTorch's `torch.gather`). RoBERTa and
//! XLM-R read their token-type ids from a buffer at the computed position ids this way. The
//! indices are values of the graph (f32 holding integers, negative ones counting from the end);
//! constant ones are folded at import. Along the other axes the indices may be shorter than the
//! data (only the leading part of the data is read). The gathered axis is pinned; the other
//! axes of the indices are linked to the output, and so are those of the data where they have
//! the output's size.

use super::gather::Gather;
use super::{AxisLink, InputRole, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Element-wise gather along `axis` (non-negative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatherElements {
    pub axis: usize,
}

impl OpSemantics for GatherElements {
    fn op_type(&self) -> &'static str {
        "GatherElements"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=2
    }

    fn input_roles(&self, _n: usize) -> Vec<InputRole> {
        vec![InputRole::Data, InputRole::Indices]
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let (data, idx) = (&inputs[0], &inputs[1]);
        if data.rank() != idx.rank() {
            op_bail!("data {data} and indices {idx} must have the same rank");
        }
        if self.axis >= data.rank() {
            op_bail!("axis {} is out of range for data {data}", self.axis);
        }
        if data.0[self.axis].known().is_none() {
            op_bail!("gathering along the batch axis of {data} is not supported");
        }
        for ax in (0..data.rank()).filter(|&ax| ax != self.axis) {
            let fits = match (data.0[ax].known(), idx.0[ax].known()) {
                (Some(d), Some(i)) => i <= d,
                _ => data.0[ax] == idx.0[ax],
            };
            if !fits {
                op_bail!("indices {idx} are larger than data {data} along axis {ax}");
            }
        }
        Ok(vec![idx.clone()])
    }

    fn mixes_samples(&self, _inputs: &[Shape]) -> bool {
        self.axis == 0
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        let (data, out) = (&inputs[0], &outputs[0]);
        let mut links = Vec::new();
        for ax in (0..out.rank()).filter(|&ax| ax != self.axis) {
            links.push(AxisLink::identity(
                (Port::Input(1), ax),
                (Port::Output(0), ax),
            ));
            if data.0.get(ax) == out.0.get(ax) {
                links.push(AxisLink::identity(
                    (Port::Input(0), ax),
                    (Port::Output(0), ax),
                ));
            }
        }
        links
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (data, idx) = (inputs[0], inputs[1]);
        let shapes = [Shape::known(data.shape()), Shape::known(idx.shape())];
        let out_shape = self.infer(&shapes)?[0].resolve(1);
        let (st_data, st_idx) = (strides(data.shape()), strides(idx.shape()));
        let n = data.shape()[self.axis];
        let out = idx
            .data()
            .iter()
            .enumerate()
            .map(|(flat, &v)| {
                let p = Gather::position(v, n)?;
                let at: usize = (0..idx.rank())
                    .map(|ax| {
                        let coord = (flat / st_idx[ax]) % idx.shape()[ax];
                        (if ax == self.axis { p } else { coord }) * st_data[ax]
                    })
                    .sum();
                Ok(data.data()[at])
            })
            .collect::<Result<Vec<f32>, OpError>>()?;
        Ok(vec![
            Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_along_the_axis_from_a_larger_table() {
        // data [2, 4], indices [2, 3]: torch.gather(data, 1, idx)
        let data = Tensor::from_fn(vec![2, 4], |i| i as f32);
        let idx = Tensor::new(vec![2, 3], vec![3., 0., -1., 1., 1., 2.]).unwrap();
        let g = GatherElements { axis: 1 };
        let y = g.eval(&[&data, &idx]).unwrap().remove(0);
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.data(), &[3., 0., 3., 5., 5., 6.]);
        // along axis 0 with fewer columns than the data
        let rows = Tensor::new(vec![1, 2], vec![1., 0.]).unwrap();
        let y = GatherElements { axis: 0 }
            .eval(&[&data, &rows])
            .unwrap()
            .remove(0);
        assert_eq!(y.data(), &[4., 1.]);
    }

    #[test]
    fn refuses_bad_indices_and_shapes() {
        let data = Tensor::from_fn(vec![2, 4], |i| i as f32);
        let g = GatherElements { axis: 1 };
        let out_of_range = Tensor::new(vec![2, 1], vec![4., 0.]).unwrap();
        assert!(g.eval(&[&data, &out_of_range]).is_err());
        let wider = Shape::known(&[3, 1]);
        assert!(g.infer(&[Shape::known(&[2, 4]), wider]).is_err());
        let rank = Shape::known(&[2]);
        assert!(g.infer(&[Shape::known(&[2, 4]), rank]).is_err());
        let batched = g
            .infer(&[Shape::batched(&[512]), Shape::batched(&[8])])
            .unwrap();
        assert_eq!(batched[0], Shape::batched(&[8]));
    }
}
