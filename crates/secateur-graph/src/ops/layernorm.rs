//! `LayerNormalization`: each sample is normalised over the trailing axes from `axis` on, then
//! scaled and shifted by parameters of those axes' shape (both optional: an instance or group
//! normalisation imports as a layer normalisation without them, its per-channel affine map
//! following as a multiplication and an addition). The leading axes are linked to the
//! output; the normalised axes are pinned, since removing a channel there changes every other
//! channel's statistics (pruning through it would not equal zeroing).

use super::{AxisLink, AxisRole, InputRole, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Layer normalisation over the axes `axis..rank`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerNorm {
    /// First normalised axis; negative counts from the end.
    pub axis: i64,
    pub epsilon: f32,
}

impl LayerNorm {
    /// The first normalised axis of a rank-`rank` input.
    pub fn first_axis(&self, rank: usize) -> Result<usize, OpError> {
        let a = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        if !(0..rank as i64).contains(&a) || a == 0 {
            op_bail!(
                "axis {} must name a non-batch axis of the rank-{rank} input",
                self.axis
            );
        }
        Ok(a as usize)
    }
}

impl OpSemantics for LayerNorm {
    fn op_type(&self) -> &'static str {
        "LayerNormalization"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        1..=3
    }

    fn input_roles(&self, n: usize) -> Vec<InputRole> {
        let mut r = vec![InputRole::Data];
        if n >= 2 {
            r.push(InputRole::BnScale);
        }
        if n == 3 {
            r.push(InputRole::BnShift);
        }
        r
    }

    fn param_axes(&self, inputs: &[Shape]) -> Vec<(usize, Vec<AxisRole>)> {
        (1..inputs.len())
            .map(|i| (i, vec![AxisRole::Channel; inputs[i].rank()]))
            .collect()
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        let a = self.first_axis(x.rank())?;
        let normalised = Shape(x.0[a..].to_vec());
        for (i, p) in inputs.iter().enumerate().skip(1) {
            let what = if i == 1 { "scale" } else { "bias" };
            if *p != normalised {
                op_bail!("{what} has shape {p}, expected {normalised} (the normalised axes)");
            }
        }
        Ok(vec![x.clone()])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let a = self.first_axis(inputs[0].rank()).unwrap_or(0);
        (0..a)
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect()
    }

    fn elementwise_ops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        // mean, variance, normalise, scale, shift
        5 * inputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let a = self.first_axis(x.rank())?;
        let inner: usize = x.shape()[a..].iter().product();
        let scale = inputs.get(1).map(|s| s.data());
        let bias = inputs.get(2).map(|b| b.data());
        let mut out = x.clone();
        for row in out.data_mut().chunks_mut(inner.max(1)) {
            let n = row.len() as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + self.epsilon as f64).sqrt();
            for (j, v) in row.iter_mut().enumerate() {
                let y = (*v as f64 - mean) * inv * scale.map_or(1.0, |s| s[j] as f64);
                *v = (y + bias.map_or(0.0, |b| b[j] as f64)) as f32;
            }
        }
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_the_trailing_axes() {
        let x = Tensor::new(vec![2, 2], vec![1., 3., 10., 10.]).unwrap();
        let scale = Tensor::new(vec![2], vec![2., 1.]).unwrap();
        let bias = Tensor::new(vec![2], vec![0., 5.]).unwrap();
        let ln = LayerNorm {
            axis: -1,
            epsilon: 0.0,
        };
        let y = ln.eval(&[&x, &scale, &bias]).unwrap().remove(0);
        assert!((y.data()[0] + 2.0).abs() < 1e-6 && (y.data()[1] - 6.0).abs() < 1e-6);
        // a constant row normalises to zero (with epsilon guarding the division)
        let eps = LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        };
        let z = eps.eval(&[&x, &scale, &bias]).unwrap().remove(0);
        assert_eq!(&z.data()[2..], &[0.0, 5.0]);
        assert!(
            ln.infer(&[Shape::batched(&[4]), Shape::known(&[3])])
                .is_err(),
            "a scale of the wrong shape is refused"
        );
    }
}
