//! The training lowering of every element-wise function ([`Pointwise`]) to burn operations,
//! differentiable by burn's autodiff. One match on the function, never on operator types:
//! a new function is one arm here.

use burn::tensor::Tensor;
use burn::tensor::activation::{
    gelu, gelu_approximate, hard_sigmoid, leaky_relu, relu, sigmoid, tanh,
};
use secateur_graph::Pointwise;

/// `f` applied to every element of `t`.
pub fn apply_pointwise<const D: usize>(f: Pointwise, t: Tensor<D>) -> Tensor<D> {
    match f {
        Pointwise::Relu => relu(t),
        Pointwise::Clip { min, max } => t.clamp(min, max),
        Pointwise::Sigmoid => sigmoid(t),
        Pointwise::Silu => t.clone() * sigmoid(t),
        Pointwise::HardSigmoid { alpha, beta } => hard_sigmoid(t, alpha as f64, beta as f64),
        Pointwise::HardSwish => {
            let gate = hard_sigmoid(t.clone(), 1.0 / 6.0, 0.5);
            t * gate
        }
        Pointwise::LeakyRelu { alpha } => leaky_relu(t, alpha as f64),
        Pointwise::Tanh => tanh(t),
        Pointwise::Erf => t.erf(),
        Pointwise::Gelu { tanh: false } => gelu(t),
        Pointwise::Gelu { tanh: true } => gelu_approximate(t),
        Pointwise::Exp => t.exp(),
        Pointwise::Log => t.log(),
        Pointwise::Sqrt => t.sqrt(),
        Pointwise::Reciprocal => t.recip(),
        Pointwise::Neg => t.neg(),
        Pointwise::Abs => t.abs(),
        Pointwise::NonZero => t.not_equal_elem(0.0).float(),
        Pointwise::Not => t.equal_elem(0.0).float(),
        // NaN is the one value unequal to itself
        Pointwise::IsNaN => t.clone().not_equal(t).float(),
        // piecewise constant: no gradient flows through them
        Pointwise::Ceil => t.ceil(),
        Pointwise::Floor => t.floor(),
        Pointwise::Round => t.round(),
        Pointwise::Sign => t.sign(),
        Pointwise::Sin => t.sin(),
        Pointwise::Cos => t.cos(),
        // floor for non-negative values, ceil for negative ones (rounding has no gradient)
        Pointwise::Trunc => {
            let positive = t.clone().greater_equal_elem(0.0).float();
            let down = t.clone().floor();
            let up = t.neg().floor().neg();
            positive.clone() * down + (positive.neg() + 1.0) * up
        }
    }
}
