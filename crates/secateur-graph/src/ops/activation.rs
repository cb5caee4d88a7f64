//! Element-wise unary operators: [`Unary`] (every [`Pointwise`] function: ReLU, Clip, Sigmoid,
//! HardSwish, GELU, ...) and `Identity` (also used for inference-mode `Dropout`). Every axis of
//! the input is linked to the same axis of the output.

use super::{AxisLink, OpClass, OpSemantics, Pointwise, all_axes_identity};
use crate::error::OpError;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

fn map_unary(x: &Tensor, f: impl Fn(f32) -> f32) -> Vec<Tensor> {
    let mut y = x.clone();
    y.data_mut().iter_mut().for_each(|v| *v = f(*v));
    vec![y]
}

/// An element-wise function ([`Pointwise`]) applied to every element of its input: ReLU,
/// Clip, Sigmoid, HardSwish, GELU, Erf, ... One op for all of them: adding a function is a
/// [`Pointwise`] variant and its ONNX converter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unary {
    pub f: Pointwise,
}

impl Unary {
    pub const RELU: Unary = Unary { f: Pointwise::Relu };
    pub const SIGMOID: Unary = Unary {
        f: Pointwise::Sigmoid,
    };

    /// `Clip(min, max)`.
    pub fn clip(min: f32, max: f32) -> Self {
        Unary {
            f: Pointwise::Clip { min, max },
        }
    }
}

impl OpSemantics for Unary {
    fn op_type(&self) -> &'static str {
        self.f.op_type()
    }

    fn class(&self) -> OpClass {
        OpClass::Pointwise(self.f)
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        if let Pointwise::Clip { min, max } = self.f
            && min > max
        {
            crate::op_bail!("min {min} is greater than max {max}");
        }
        Ok(vec![inputs[0].clone()])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        all_axes_identity(inputs[0].rank())
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(map_unary(inputs[0], |v| self.f.apply(v)))
    }
}

/// Passes its input through (also inference-mode `Dropout`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Identity;

impl OpSemantics for Identity {
    fn op_type(&self) -> &'static str {
        "Identity"
    }

    fn class(&self) -> OpClass {
        OpClass::View
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        Ok(vec![inputs[0].clone()])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        all_axes_identity(inputs[0].rank())
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![inputs[0].clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_values() {
        let x = Tensor::new(vec![4], vec![-2., 0., 3., 8.]).unwrap();
        assert_eq!(
            Unary::RELU.eval(&[&x]).unwrap()[0].data(),
            &[0., 0., 3., 8.]
        );
        assert_eq!(
            Unary::clip(0., 6.).eval(&[&x]).unwrap()[0].data(),
            &[0., 0., 3., 6.]
        );
        let s = Unary::SIGMOID.eval(&[&x]).unwrap().remove(0);
        assert!((s.data()[1] - 0.5).abs() < 1e-7);
        assert!((s.data()[0] - 0.119_202_92).abs() < 1e-6);
        assert!(Unary::clip(1., 0.).infer(&[Shape::known(&[4])]).is_err());
        assert_eq!(Unary::RELU.op_type(), "Relu");
    }
}
