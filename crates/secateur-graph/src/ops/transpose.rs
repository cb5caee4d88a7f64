//! `Transpose`: output axis `i` is input axis `perm[i]`, of any rank. Each output axis is
//! linked to the input axis it comes from, so channels followed through a permutation (NCHW to
//! NHWC and back, the head split of attention) stay one index space.

use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};

/// A permutation of the axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transpose {
    /// `perm[i]`: the input axis that becomes output axis `i`.
    pub perm: Vec<usize>,
}

impl Transpose {
    /// The permutation of a rank-`rank` input (ONNX's default is the reversal).
    pub fn resolved(&self, rank: usize) -> Result<Vec<usize>, OpError> {
        if self.perm.is_empty() {
            return Ok((0..rank).rev().collect());
        }
        let mut seen = vec![false; rank];
        for &p in &self.perm {
            if p >= rank || std::mem::replace(&mut seen[p], true) {
                op_bail!(
                    "perm {:?} is not a permutation of the {rank} axes of the input",
                    self.perm
                );
            }
        }
        if self.perm.len() != rank {
            op_bail!(
                "perm {:?} has {} axes, the input {rank}",
                self.perm,
                self.perm.len()
            );
        }
        Ok(self.perm.clone())
    }
}

/// `x` with its axes permuted by `perm`.
pub fn transpose_tensor(x: &Tensor, perm: &[usize]) -> Result<Tensor, OpError> {
    let s = x.shape();
    let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let in_strides = strides(s);
    let out_strides = strides(&out_shape);
    let n = x.len();
    let mut out = vec![0.0f32; n];
    for (flat, o) in out.iter_mut().enumerate() {
        let mut src = 0;
        for (ax, &p) in perm.iter().enumerate() {
            let idx = (flat / out_strides[ax]) % out_shape[ax];
            src += idx * in_strides[p];
        }
        *o = x.data()[src];
    }
    Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))
}

impl OpSemantics for Transpose {
    fn op_type(&self) -> &'static str {
        "Transpose"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        let perm = self.resolved(x.rank())?;
        Ok(vec![Shape(perm.iter().map(|&p| x.0[p]).collect())])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let Ok(perm) = self.resolved(inputs[0].rank()) else {
            return Vec::new();
        };
        perm.iter()
            .enumerate()
            .map(|(i, &p)| AxisLink::identity((Port::Input(0), p), (Port::Output(0), i)))
            .collect()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let perm = self.resolved(inputs[0].rank())?;
        Ok(vec![transpose_tensor(inputs[0], &perm)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutes_values_and_links_axes() {
        let x = Tensor::from_fn(vec![2, 3, 4], |i| i as f32);
        let t = Transpose {
            perm: vec![2, 0, 1],
        };
        let y = t.eval(&[&x]).unwrap().remove(0);
        assert_eq!(y.shape(), &[4, 2, 3]);
        // y[k, i, j] = x[i, j, k]
        assert_eq!(y.data()[(3 * 2 + 1) * 3 + 2], x.data()[(3 + 2) * 4 + 3]);
        let links = t.axis_links(&[Shape::batched(&[3, 4])], &[]);
        assert!(links.contains(&AxisLink::identity(
            (Port::Input(0), 2),
            (Port::Output(0), 0)
        )));
        assert!(
            Transpose {
                perm: vec![0, 0, 1]
            }
            .infer(&[Shape::known(&[1, 2, 3])])
            .is_err()
        );
        let rev = Transpose { perm: vec![] };
        assert_eq!(
            rev.infer(&[Shape::known(&[1, 2, 3])]).unwrap()[0],
            Shape::known(&[3, 2, 1])
        );
    }
}
