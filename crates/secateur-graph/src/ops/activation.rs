//! Element-wise unary operators: `Relu`, `Clip` (Relu6 and friends), `Sigmoid`, and `Identity`
//! (also used for inference-mode `Dropout`). Every axis of the input is linked to the same axis
//! of the output.

use super::{AxisLink, OpSemantics, all_axes_identity};
use crate::error::OpError;
use crate::shape::Shape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

fn map_unary(x: &Tensor, f: impl Fn(f32) -> f32) -> Vec<Tensor> {
    let mut y = x.clone();
    y.data_mut().iter_mut().for_each(|v| *v = f(*v));
    vec![y]
}

macro_rules! unary_op {
    ($name:ident, $onnx:literal, $doc:literal, |$s:ident, $v:ident| $body:expr) => {
        #[doc = $doc]
        #[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
        pub struct $name;

        impl OpSemantics for $name {
            fn op_type(&self) -> &'static str {
                $onnx
            }

            fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
                Ok(vec![inputs[0].clone()])
            }

            fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
                all_axes_identity(inputs[0].rank())
            }

            fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
                let $s = self;
                let _ = $s;
                Ok(map_unary(inputs[0], |$v| $body))
            }
        }
    };
}

unary_op!(Relu, "Relu", "`max(x, 0)`.", |s, v| v.max(0.0));
unary_op!(Sigmoid, "Sigmoid", "`1 / (1 + e^-x)`.", |s, v| 1.0
    / (1.0 + (-v).exp()));
unary_op!(Identity, "Identity", "Passes its input through.", |s, v| v);

/// `min(max(x, min), max)`; `Clip(0, 6)` is ReLU6.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clip {
    pub min: f32,
    pub max: f32,
}

impl OpSemantics for Clip {
    fn op_type(&self) -> &'static str {
        "Clip"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        if self.min > self.max {
            crate::op_bail!("min {} is greater than max {}", self.min, self.max);
        }
        Ok(vec![inputs[0].clone()])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        all_axes_identity(inputs[0].rank())
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(map_unary(inputs[0], |v| v.max(self.min).min(self.max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_values() {
        let x = Tensor::new(vec![4], vec![-2., 0., 3., 8.]).unwrap();
        assert_eq!(Relu.eval(&[&x]).unwrap()[0].data(), &[0., 0., 3., 8.]);
        assert_eq!(
            Clip { min: 0., max: 6. }.eval(&[&x]).unwrap()[0].data(),
            &[0., 0., 3., 6.]
        );
        let s = Sigmoid.eval(&[&x]).unwrap().remove(0);
        assert!((s.data()[1] - 0.5).abs() < 1e-7);
        assert!((s.data()[0] - 0.119_202_92).abs() < 1e-6);
        assert!(
            Clip { min: 1., max: 0. }
                .infer(&[Shape::known(&[4])])
                .is_err()
        );
    }
}
