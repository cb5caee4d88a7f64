//! Softmax along an axis (ONNX `Softmax`). Before opset 13 ONNX flattened every axis from
//! `axis` on into one; `legacy` keeps that meaning. The normalised axes are pinned.

use super::concat::normalize_axis;
use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Attributes of a softmax.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Softmax {
    pub axis: i64,
    /// Opset < 13: normalise over all axes from `axis` to the end.
    pub legacy: bool,
}

impl Softmax {
    fn reduced_from(&self, rank: usize) -> Result<(usize, usize), OpError> {
        let a = normalize_axis(self.axis, rank)?;
        Ok(if self.legacy { (a, rank) } else { (a, a + 1) })
    }
}

impl OpSemantics for Softmax {
    fn op_type(&self) -> &'static str {
        "Softmax"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        self.reduced_from(inputs[0].rank())?;
        Ok(vec![inputs[0].clone()])
    }

    fn mixes_samples(&self, inputs: &[Shape]) -> bool {
        self.reduced_from(inputs[0].rank())
            .is_ok_and(|(lo, _)| lo == 0)
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let rank = inputs[0].rank();
        let Ok((lo, hi)) = self.reduced_from(rank) else {
            return Vec::new();
        };
        (0..rank)
            .filter(|ax| !(lo..hi).contains(ax))
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        3 * outputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let (lo, hi) = self.reduced_from(x.rank())?;
        let s = x.shape();
        let outer: usize = s[..lo].iter().product();
        let red: usize = s[lo..hi].iter().product();
        let inner: usize = s[hi..].iter().product();
        let mut y = x.clone();
        let d = y.data_mut();
        for o in 0..outer {
            for i in 0..inner {
                let idx = |r: usize| (o * red + r) * inner + i;
                let m = (0..red)
                    .map(|r| d[idx(r)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for r in 0..red {
                    let e = (d[idx(r)] - m).exp();
                    d[idx(r)] = e;
                    sum += e;
                }
                for r in 0..red {
                    d[idx(r)] /= sum;
                }
            }
        }
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_sum_to_one() {
        let x = Tensor::new(vec![2, 2], vec![0., 0., 0., (3.0f32).ln()]).unwrap();
        let y = Softmax {
            axis: -1,
            legacy: false,
        }
        .eval(&[&x])
        .unwrap()
        .remove(0);
        for (a, b) in y.data().iter().zip([0.5, 0.5, 0.25, 0.75]) {
            assert!((a - b).abs() < 1e-6);
        }
        let links = Softmax {
            axis: 1,
            legacy: false,
        }
        .axis_links(&[Shape::batched(&[10])], &[Shape::batched(&[10])]);
        assert_eq!(links.len(), 1);
    }
}
