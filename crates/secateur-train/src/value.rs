//! Activations of dynamic rank flowing through the burn interpreter. burn tensors carry their
//! rank in the type; graph values do not, so a value is one of the ranks training supports
//! (1 to 6: MaxViT's window partition is rank 6), with helpers to reshape, broadcast and read
//! back.

use burn::tensor::Tensor;
use secateur_graph::BinaryFn;

/// The highest rank training supports.
pub const MAX_RANK: usize = 6;

/// A float activation of rank 1–6.
#[derive(Clone, Debug)]
pub enum Value {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
    R6(Tensor<6>),
}

macro_rules! on_value {
    ($v:expr, |$t:ident| $body:expr) => {
        match $v {
            Value::R1($t) => Value::R1($body),
            Value::R2($t) => Value::R2($body),
            Value::R3($t) => Value::R3($body),
            Value::R4($t) => Value::R4($body),
            Value::R5($t) => Value::R5($body),
            Value::R6($t) => Value::R6($body),
        }
    };
}
pub(crate) use on_value;

impl Value {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::R1(t) => t.dims().to_vec(),
            Value::R2(t) => t.dims().to_vec(),
            Value::R3(t) => t.dims().to_vec(),
            Value::R4(t) => t.dims().to_vec(),
            Value::R5(t) => t.dims().to_vec(),
            Value::R6(t) => t.dims().to_vec(),
        }
    }

    pub fn rank(&self) -> usize {
        match self {
            Value::R1(_) => 1,
            Value::R2(_) => 2,
            Value::R3(_) => 3,
            Value::R4(_) => 4,
            Value::R5(_) => 5,
            Value::R6(_) => 6,
        }
    }

    /// Reshapes to any supported rank.
    pub fn reshape(self, dims: &[usize]) -> Option<Value> {
        let flat: Tensor<1> = match self {
            Value::R1(t) => t,
            Value::R2(t) => t.flatten(0, 1),
            Value::R3(t) => t.flatten(0, 2),
            Value::R4(t) => t.flatten(0, 3),
            Value::R5(t) => t.flatten(0, 4),
            Value::R6(t) => t.flatten(0, 5),
        };
        Some(match dims.len() {
            1 => Value::R1(flat.reshape([dims[0]])),
            2 => Value::R2(flat.reshape([dims[0], dims[1]])),
            3 => Value::R3(flat.reshape([dims[0], dims[1], dims[2]])),
            4 => Value::R4(flat.reshape([dims[0], dims[1], dims[2], dims[3]])),
            5 => Value::R5(flat.reshape([dims[0], dims[1], dims[2], dims[3], dims[4]])),
            6 => Value::R6(flat.reshape([dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]])),
            _ => return None,
        })
    }

    /// The same data with leading 1s added up to `rank` (NumPy broadcasting alignment).
    pub fn lift(self, rank: usize) -> Option<Value> {
        if self.rank() >= rank {
            return Some(self);
        }
        let mut dims = vec![1; rank - self.rank()];
        dims.extend(self.dims());
        self.reshape(&dims)
    }

    pub fn into_r2(self) -> Option<Tensor<2>> {
        match self {
            Value::R2(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_r4(self) -> Option<Tensor<4>> {
        match self {
            Value::R4(t) => Some(t),
            _ => None,
        }
    }

    /// Drops autodiff tracking.
    pub fn inner(self) -> Value {
        on_value!(self, |t| t.inner())
    }

    /// Values as f32 on the host.
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Value::R1(t) => t.try_to_vec_as::<f32>(),
            Value::R2(t) => t.try_to_vec_as::<f32>(),
            Value::R3(t) => t.try_to_vec_as::<f32>(),
            Value::R4(t) => t.try_to_vec_as::<f32>(),
            Value::R5(t) => t.try_to_vec_as::<f32>(),
            Value::R6(t) => t.try_to_vec_as::<f32>(),
        }
        .unwrap_or_default()
    }
}

/// Element-wise binary op with NumPy broadcasting (ranks aligned first).
pub fn broadcast_binary(a: Value, b: Value, f: BinaryFn) -> Option<Value> {
    let r = a.rank().max(b.rank());
    let (a, b) = (a.lift(r)?, b.lift(r)?);
    Some(match (a, b) {
        (Value::R1(x), Value::R1(y)) => Value::R1(apply_binary(f, x, y)),
        (Value::R2(x), Value::R2(y)) => Value::R2(apply_binary(f, x, y)),
        (Value::R3(x), Value::R3(y)) => Value::R3(apply_binary(f, x, y)),
        (Value::R4(x), Value::R4(y)) => Value::R4(apply_binary(f, x, y)),
        (Value::R5(x), Value::R5(y)) => Value::R5(apply_binary(f, x, y)),
        (Value::R6(x), Value::R6(y)) => Value::R6(apply_binary(f, x, y)),
        _ => return None,
    })
}

/// A binary op on burn tensors of one rank (broadcasting along size-1 axes). A power with a
/// one-element exponent uses the exponent's value, so that integral powers of negative bases
/// stay defined (`(x - mean)^2` in decomposed normalisations).
fn apply_binary<const D: usize>(f: BinaryFn, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
    match f {
        BinaryFn::Add => x + y,
        BinaryFn::Sub => x - y,
        BinaryFn::Mul => x * y,
        BinaryFn::Div => x / y,
        BinaryFn::Pow => {
            if y.shape().num_elements() == 1 {
                let e = y.clone().try_to_vec_as::<f32>().unwrap_or_default();
                if let Some(&e) = e.first() {
                    if e == 2.0 {
                        return x.clone() * x;
                    }
                    if e.fract() == 0.0 && e.abs() < 64.0 {
                        return x.powi_scalar(e as i32);
                    }
                }
            }
            x.powf(y)
        }
        BinaryFn::Max => x.max_pair(y),
        BinaryFn::Min => x.min_pair(y),
        BinaryFn::Equal => x.equal(y).float(),
        BinaryFn::Less => x.lower(y).float(),
        BinaryFn::LessOrEqual => x.lower_equal(y).float(),
        BinaryFn::Greater => x.greater(y).float(),
        BinaryFn::GreaterOrEqual => x.greater_equal(y).float(),
        BinaryFn::And => x.not_equal_elem(0.0).float() * y.not_equal_elem(0.0).float(),
        BinaryFn::Or => (x.not_equal_elem(0.0).float() + y.not_equal_elem(0.0).float())
            .greater_elem(0.0)
            .float(),
        BinaryFn::Xor => x
            .not_equal_elem(0.0)
            .float()
            .not_equal(y.not_equal_elem(0.0).float())
            .float(),
    }
}
