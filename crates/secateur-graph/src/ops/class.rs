//! What an operator *is*, declared by the operator itself ([`super::OpSemantics::class`]):
//! a weighted layer, an element-wise function, a broadcasting binary operator, a view that
//! moves no data, a per-channel affine normalisation that folds into the layer before it, or
//! anything else. Pruning, cost models, fusion and the runtime read these facts instead of
//! matching on operator types; the element-wise functions carry their own scalar definition.

use serde::{Deserialize, Serialize};

/// An element-wise function of one value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Pointwise {
    Relu,
    /// `min(max(x, min), max)`; `Clip(0, 6)` is ReLU6.
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    /// `x · sigmoid(x)` (SiLU, Swish): exporters write it as `Mul(x, Sigmoid(x))`, fused back
    /// into one function at import.
    Silu,
    /// `max(0, min(1, alpha·x + beta))` (PyTorch's Hardsigmoid is alpha 1/6, beta 1/2).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    /// `x` for `x ≥ 0`, `alpha·x` otherwise.
    LeakyRelu {
        alpha: f32,
    },
    Tanh,
    /// The Gauss error function.
    Erf,
    /// `x·Φ(x)`; with `tanh` the tanh approximation.
    Gelu {
        tanh: bool,
    },
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    /// 1 where the value is not zero, else 0 (a cast to BOOL).
    NonZero,
    /// Rounds toward zero (a cast to an integer type).
    Trunc,
    /// 1 where the value is zero, else 0 (logical `Not` of a 0/1 value).
    Not,
    /// 1 where the value is NaN, else 0 (`IsNaN`: exported attention zeroes the softmax of a
    /// fully masked row with it).
    IsNaN,
    /// Rounding up, down, and to the nearest integer with ties to even (ONNX `Round`), and
    /// the sign (-1, 0 or 1): TensorFlow-style "same" padding and relative-position buckets
    /// compute with them.
    Ceil,
    Floor,
    Round,
    Sign,
    /// Sine and cosine (sinusoidal position encodings).
    Sin,
    Cos,
}

impl Pointwise {
    /// The function's value at `x` (the reference definition every kernel is tested against).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Pointwise::Relu => x.max(0.0),
            Pointwise::Clip { min, max } => x.max(min).min(max),
            Pointwise::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Pointwise::Silu => x / (1.0 + (-x).exp()),
            Pointwise::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Pointwise::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Pointwise::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Pointwise::Tanh => x.tanh(),
            Pointwise::Erf => erf(x as f64) as f32,
            Pointwise::Gelu { tanh: false } => {
                (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32
            }
            Pointwise::Gelu { tanh: true } => {
                let x = x as f64;
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                (0.5 * x * (1.0 + inner.tanh())) as f32
            }
            Pointwise::Exp => x.exp(),
            Pointwise::Log => x.ln(),
            Pointwise::Sqrt => x.sqrt(),
            Pointwise::Reciprocal => 1.0 / x,
            Pointwise::Neg => -x,
            Pointwise::Abs => x.abs(),
            Pointwise::NonZero => (x != 0.0) as u8 as f32,
            Pointwise::Trunc => x.trunc(),
            Pointwise::Not => (x == 0.0) as u8 as f32,
            Pointwise::IsNaN => x.is_nan() as u8 as f32,
            Pointwise::Ceil => x.ceil(),
            Pointwise::Floor => x.floor(),
            Pointwise::Round => x.round_ties_even(),
            Pointwise::Sign if x == 0.0 || x.is_nan() => x,
            Pointwise::Sign => x.signum(),
            Pointwise::Sin => x.sin(),
            Pointwise::Cos => x.cos(),
        }
    }

    /// The ONNX operator type computing this function.
    pub fn op_type(self) -> &'static str {
        match self {
            Pointwise::Relu => "Relu",
            Pointwise::Clip { .. } => "Clip",
            Pointwise::Sigmoid => "Sigmoid",
            Pointwise::Silu => "Swish",
            Pointwise::HardSigmoid { .. } => "HardSigmoid",
            Pointwise::HardSwish => "HardSwish",
            Pointwise::LeakyRelu { .. } => "LeakyRelu",
            Pointwise::Tanh => "Tanh",
            Pointwise::Erf => "Erf",
            Pointwise::Gelu { .. } => "Gelu",
            Pointwise::Exp => "Exp",
            Pointwise::Log => "Log",
            Pointwise::Sqrt => "Sqrt",
            Pointwise::Reciprocal => "Reciprocal",
            Pointwise::Neg => "Neg",
            Pointwise::Abs => "Abs",
            Pointwise::NonZero | Pointwise::Trunc => "Cast",
            Pointwise::Not => "Not",
            Pointwise::IsNaN => "IsNaN",
            Pointwise::Ceil => "Ceil",
            Pointwise::Floor => "Floor",
            Pointwise::Round => "Round",
            Pointwise::Sign => "Sign",
            Pointwise::Sin => "Sin",
            Pointwise::Cos => "Cos",
        }
    }

    /// The bounds `(min, max)` when the function is a clamp (ReLU, Clip): what the layer
    /// kernels apply in their epilogue, so such an activation fuses into the layer before it.
    pub fn clamp_bounds(self) -> Option<(f32, f32)> {
        match self {
            Pointwise::Relu => Some((0.0, f32::INFINITY)),
            Pointwise::Clip { min, max } => Some((min, max)),
            _ => None,
        }
    }

    /// Whether `f(0) = 0`, so zero channels stay zero through the function (what makes a
    /// removed channel and a zeroed one equivalent downstream).
    pub fn keeps_zero(self) -> bool {
        self.apply(0.0) == 0.0
    }
}

/// A broadcasting binary operator. Comparisons and logic produce 0/1 (booleans are values
/// 0 and 1 in the graph, as attention masks are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl BinaryFn {
    /// Every operator.
    pub const ALL: [BinaryFn; 15] = [
        BinaryFn::Add,
        BinaryFn::Sub,
        BinaryFn::Mul,
        BinaryFn::Div,
        BinaryFn::Pow,
        BinaryFn::Max,
        BinaryFn::Min,
        BinaryFn::Equal,
        BinaryFn::Less,
        BinaryFn::LessOrEqual,
        BinaryFn::Greater,
        BinaryFn::GreaterOrEqual,
        BinaryFn::And,
        BinaryFn::Or,
        BinaryFn::Xor,
    ];

    /// The operator's value (the reference definition).
    pub fn apply(self, a: f32, b: f32) -> f32 {
        let truth = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            BinaryFn::Add => a + b,
            BinaryFn::Sub => a - b,
            BinaryFn::Mul => a * b,
            BinaryFn::Div => a / b,
            BinaryFn::Pow => pow(a, b),
            BinaryFn::Max => a.max(b),
            BinaryFn::Min => a.min(b),
            BinaryFn::Equal => truth(a == b),
            BinaryFn::Less => truth(a < b),
            BinaryFn::LessOrEqual => truth(a <= b),
            BinaryFn::Greater => truth(a > b),
            BinaryFn::GreaterOrEqual => truth(a >= b),
            BinaryFn::And => truth(a != 0.0 && b != 0.0),
            BinaryFn::Or => truth(a != 0.0 || b != 0.0),
            BinaryFn::Xor => truth((a != 0.0) != (b != 0.0)),
        }
    }

    /// The ONNX operator type.
    pub fn op_type(self) -> &'static str {
        match self {
            BinaryFn::Add => "Add",
            BinaryFn::Sub => "Sub",
            BinaryFn::Mul => "Mul",
            BinaryFn::Div => "Div",
            BinaryFn::Pow => "Pow",
            BinaryFn::Max => "Max",
            BinaryFn::Min => "Min",
            BinaryFn::Equal => "Equal",
            BinaryFn::Less => "Less",
            BinaryFn::LessOrEqual => "LessOrEqual",
            BinaryFn::Greater => "Greater",
            BinaryFn::GreaterOrEqual => "GreaterOrEqual",
            BinaryFn::And => "And",
            BinaryFn::Or => "Or",
            BinaryFn::Xor => "Xor",
        }
    }

    /// Whether the result is a 0/1 truth value (ONNX BOOL).
    pub fn is_predicate(self) -> bool {
        !matches!(
            self,
            BinaryFn::Add
                | BinaryFn::Sub
                | BinaryFn::Mul
                | BinaryFn::Div
                | BinaryFn::Pow
                | BinaryFn::Max
                | BinaryFn::Min
        )
    }
}

/// `a^b` as ONNX defines it: integral exponents of negative bases are exact powers.
fn pow(a: f32, b: f32) -> f32 {
    if b == 2.0 {
        a * a
    } else if b.fract() == 0.0 && b.abs() < 64.0 {
        a.powi(b as i32)
    } else {
        a.powf(b)
    }
}

/// The category of an operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpClass {
    /// A layer multiplying its data input by a constant weight at input 1 (Conv, Gemm,
    /// MatMul): what masks, sparse kernels, quantization and epilogue fusion act on.
    WeightedLayer,
    /// An element-wise function of its one input.
    Pointwise(Pointwise),
    /// A broadcasting binary arithmetic operator.
    Binary(BinaryFn),
    /// Reinterprets its input's data without moving it (Reshape, Flatten, Identity, Dropout at
    /// inference, Squeeze, Unsqueeze): the output may share the input's buffer.
    View,
    /// An inference-time per-channel affine map over axis 1 (batch normalisation) that folds
    /// into a weighted layer right before it.
    ChannelAffine,
    /// Anything else (pooling, concatenation, softmax, normalisation over other axes, ...).
    Other,
}

/// The Gauss error function in double precision (W. J. Cody's rational approximations, as in
/// most libm implementations; relative error below 1e-15).
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 0.5 {
        const P: [f64; 5] = [
            3.209_377_589_138_469_4e3,
            3.774_852_376_853_02e2,
            1.138_641_541_510_501_6e2,
            3.161_123_743_870_565_6,
            1.857_777_061_846_031_5e-1,
        ];
        const Q: [f64; 5] = [
            2.844_236_833_439_171e3,
            1.282_616_526_077_372_3e3,
            2.440_246_379_344_441_7e2,
            2.360_129_095_234_412_1e1,
            1.0,
        ];
        let z = x * x;
        let num = (((P[4] * z + P[3]) * z + P[2]) * z + P[1]) * z + P[0];
        let den = (((Q[4] * z + Q[3]) * z + Q[2]) * z + Q[1]) * z + Q[0];
        return x * num / den;
    }
    let erfc = if ax < 4.0 {
        const P: [f64; 9] = [
            1.230_339_354_797_997_2e3,
            2.051_078_377_826_071_6e3,
            1.712_047_612_634_070_7e3,
            8.819_522_212_417_69e2,
            2.986_351_381_974_001e2,
            6.611_919_063_714_163e1,
            8.883_149_794_388_376,
            5.641_884_969_886_701e-1,
            2.153_115_354_744_038_3e-8,
        ];
        const Q: [f64; 9] = [
            1.230_339_354_803_749_5e3,
            3.439_367_674_143_721_6e3,
            4.362_619_090_143_247e3,
            3.290_799_235_733_459_7e3,
            1.621_389_574_566_690_3e3,
            5.371_811_018_620_099e2,
            1.176_939_508_913_125e2,
            1.574_492_611_070_983_4e1,
            1.0,
        ];
        let mut num = P[8];
        let mut den = Q[8];
        for i in (0..8).rev() {
            num = num * ax + P[i];
            den = den * ax + Q[i];
        }
        (-ax * ax).exp() * num / den
    } else {
        const P: [f64; 6] = [
            -6.587_491_615_298_378e-4,
            -1.608_378_514_874_227_5e-2,
            -1.257_817_261_112_292_6e-1,
            -3.603_448_999_498_044_4e-1,
            -3.053_266_349_612_323_4e-1,
            -1.631_538_713_730_709_7e-2,
        ];
        const Q: [f64; 6] = [
            2.335_204_976_268_691_8e-3,
            6.051_834_131_244_132e-2,
            5.279_051_029_514_284e-1,
            1.872_952_849_923_460_4,
            2.568_520_192_289_822,
            1.0,
        ];
        let z = 1.0 / (ax * ax);
        let mut num = P[5];
        let mut den = Q[5];
        for i in (0..5).rev() {
            num = num * z + P[i];
            den = den * z + Q[i];
        }
        let r = z * num / den;
        (-ax * ax).exp() / ax * (1.0 / std::f64::consts::PI.sqrt() + r)
    };
    if x > 0.0 { 1.0 - erfc } else { erfc - 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // values from tables of erf (Abramowitz & Stegun 7.1)
        for (x, want) in [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ] {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-13);
        }
    }

    #[test]
    fn pointwise_definitions() {
        let hs = |x| Pointwise::HardSwish.apply(x);
        assert_eq!((hs(-4.0), hs(0.0), hs(4.0)), (0.0, 0.0, 4.0));
        assert!((hs(1.0) - 1.0 * (1.0 / 6.0 + 0.5)).abs() < 1e-7);
        let torch_hsig = Pointwise::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        };
        assert_eq!(torch_hsig.apply(3.0), 1.0);
        assert_eq!(torch_hsig.apply(0.0), 0.5);
        assert!((Pointwise::Gelu { tanh: false }.apply(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((Pointwise::Gelu { tanh: true }.apply(1.0) - 0.841_192).abs() < 1e-5);
        assert_eq!(Pointwise::LeakyRelu { alpha: 0.1 }.apply(-2.0), -0.2);
        assert!(Pointwise::Relu.keeps_zero() && !Pointwise::Sigmoid.keeps_zero());
        assert_eq!(Pointwise::Relu.clamp_bounds(), Some((0.0, f32::INFINITY)));
        assert_eq!(Pointwise::Tanh.clamp_bounds(), None);
        assert_eq!(BinaryFn::Pow.apply(-2.0, 3.0), -8.0);
        assert_eq!(BinaryFn::Div.apply(1.0, 4.0), 0.25);
    }
}
