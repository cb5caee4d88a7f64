//! `CumSum`: running sums along one axis, inclusive or exclusive (the first output is 0), from
//! the front or from the back. RoBERTa, XLM-R and MPNet number the positions of a padded
//! sentence with it (a cumulative count of the non-padding tokens). Every other axis is linked
//! to the output; the summed axis is pinned, since removing a position changes every later sum.

use super::concat::normalize_axis;
use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// A cumulative sum along `axis` (negative counts from the back).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct CumSum {
    pub axis: i64,
    /// Each output excludes its own element (the sum of those before it).
    pub exclusive: bool,
    /// Sums run from the last element towards the first.
    pub reverse: bool,
}

impl CumSum {
    fn summed_axis(&self, x: &Shape) -> Result<usize, OpError> {
        let axis = normalize_axis(self.axis, x.rank())?;
        if x.0[axis].batch_factor().is_some() {
            op_bail!("a running sum over the batch axis {axis} of {x} is not supported");
        }
        Ok(axis)
    }
}

impl OpSemantics for CumSum {
    fn op_type(&self) -> &'static str {
        "CumSum"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        self.summed_axis(&inputs[0])?;
        Ok(vec![inputs[0].clone()])
    }

    fn mixes_samples(&self, inputs: &[Shape]) -> bool {
        normalize_axis(self.axis, inputs[0].rank()).is_ok_and(|a| a == 0)
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let Ok(summed) = self.summed_axis(&inputs[0]) else {
            return Vec::new();
        };
        (0..inputs[0].rank())
            .filter(|&ax| ax != summed)
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect()
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let axis = normalize_axis(self.axis, x.rank())?;
        let s = x.shape();
        let len = s[axis];
        let inner: usize = s[axis + 1..].iter().product();
        let outer: usize = s[..axis].iter().product();
        let mut y = x.clone();
        let (src, dst) = (x.data(), y.data_mut());
        for o in 0..outer {
            for i in 0..inner {
                let mut running = 0.0f64;
                for step in 0..len {
                    let k = if self.reverse { len - 1 - step } else { step };
                    let at = (o * len + k) * inner + i;
                    let before = running;
                    running += src[at] as f64;
                    dst[at] = if self.exclusive { before } else { running } as f32;
                }
            }
        }
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(axis: i64, exclusive: bool, reverse: bool) -> Vec<f32> {
        let x = Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let op = CumSum {
            axis,
            exclusive,
            reverse,
        };
        op.eval(&[&x]).unwrap().remove(0).data().to_vec()
    }

    #[test]
    fn sums_in_every_mode() {
        assert_eq!(run(1, false, false), [1., 3., 6., 4., 9., 15.]);
        assert_eq!(run(-1, true, false), [0., 1., 3., 0., 4., 9.]);
        assert_eq!(run(1, false, true), [6., 5., 3., 15., 11., 6.]);
        assert_eq!(run(1, true, true), [5., 3., 0., 11., 6., 0.]);
        assert_eq!(run(0, false, false), [1., 2., 3., 5., 7., 9.]);
    }

    #[test]
    fn pins_the_summed_axis_and_refuses_the_batch() {
        let op = CumSum {
            axis: 1,
            ..CumSum::default()
        };
        let x = Shape::batched(&[8, 4]);
        let links = op.axis_links(std::slice::from_ref(&x), std::slice::from_ref(&x));
        let linked: Vec<usize> = links.iter().map(|l| l.a.1).collect();
        assert_eq!(linked, [0, 2]);
        let over_batch = CumSum::default();
        let err = over_batch.infer(&[x]).unwrap_err();
        assert!(err.0.contains("batch axis"), "{}", err.0);
    }
}
