//! Inference-mode batch normalisation (ONNX `BatchNormalization`): per channel,
//! `y = scale · (x − mean) / sqrt(var + ε) + shift`. All four parameter vectors are linked to
//! the channel axis of input and output.

use super::{AxisLink, AxisRole, InputRole, OpClass, OpSemantics, Port, known_dim};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Attributes of batch normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    pub epsilon: f32,
    /// Running-statistics momentum as ONNX defines it (weight of the old value), used in training.
    pub momentum: f32,
}

impl Default for BatchNorm {
    fn default() -> Self {
        BatchNorm {
            epsilon: 1e-5,
            momentum: 0.9,
        }
    }
}

impl OpSemantics for BatchNorm {
    fn class(&self) -> OpClass {
        OpClass::ChannelAffine
    }

    fn op_type(&self) -> &'static str {
        "BatchNormalization"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        5..=5
    }

    fn input_roles(&self, _n: usize) -> Vec<InputRole> {
        vec![
            InputRole::Data,
            InputRole::BnScale,
            InputRole::BnShift,
            InputRole::BnMean,
            InputRole::BnVar,
        ]
    }

    fn param_axes(&self, _inputs: &[Shape]) -> Vec<(usize, Vec<AxisRole>)> {
        (1..5).map(|i| (i, vec![AxisRole::Channel])).collect()
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        if x.rank() < 2 {
            op_bail!("input must have rank >= 2 (N, C, ...), got {x}");
        }
        let c = known_dim(x, 1, "BatchNormalization input")?;
        for (i, p) in inputs[1..].iter().enumerate() {
            if p.rank() != 1 || p.dim(0) != Some(c) {
                let names = ["scale", "B", "input_mean", "input_var"];
                op_bail!("{} must have shape [{c}], got {p}", names[i]);
            }
        }
        Ok(vec![x.clone()])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let mut links: Vec<AxisLink> = (0..inputs[0].rank())
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect();
        links.extend((1..5).map(|i| AxisLink::identity((Port::Output(0), 1), (Port::Input(i), 0))));
        links
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        // one multiply and one add per element once folded
        2 * outputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let (scale, shift, mean, var) = (
            inputs[1].data(),
            inputs[2].data(),
            inputs[3].data(),
            inputs[4].data(),
        );
        let c = x.shape()[1];
        let inner: usize = x.shape()[2..].iter().product();
        let mut out = x.clone();
        for (i, v) in out.data_mut().iter_mut().enumerate() {
            let ch = (i / inner) % c;
            *v = scale[ch] * (*v - mean[ch]) / (var[ch] + self.epsilon).sqrt() + shift[ch];
        }
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_per_channel() {
        let x = Tensor::new(vec![1, 2, 1, 2], vec![1., 3., 10., 20.]).unwrap();
        let p = |v: [f32; 2]| Tensor::new(vec![2], v.to_vec()).unwrap();
        let bn = BatchNorm {
            epsilon: 0.0,
            momentum: 0.9,
        };
        let y = bn
            .eval(&[&x, &p([2., 1.]), &p([1., 0.]), &p([2., 15.]), &p([1., 25.])])
            .unwrap()
            .remove(0);
        assert_eq!(y.data(), &[-1., 3., -1., 1.]);
        assert!(
            bn.infer(&[
                Shape::batched(&[3, 4, 4]),
                Shape::known(&[2]),
                Shape::known(&[3]),
                Shape::known(&[3]),
                Shape::known(&[3])
            ])
            .is_err()
        );
    }
}
