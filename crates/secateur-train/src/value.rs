//! Activations of dynamic rank flowing through the burn interpreter. burn tensors carry their
//! rank in the type; graph values do not, so a value is one of the ranks training supports
//! (1 to 4), with helpers to reshape, broadcast and read back.

use burn::tensor::Tensor;

/// A float activation of rank 1–4.
#[derive(Clone, Debug)]
pub enum Value {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
}

macro_rules! on_value {
    ($v:expr, |$t:ident| $body:expr) => {
        match $v {
            Value::R1($t) => Value::R1($body),
            Value::R2($t) => Value::R2($body),
            Value::R3($t) => Value::R3($body),
            Value::R4($t) => Value::R4($body),
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
        }
    }

    pub fn rank(&self) -> usize {
        match self {
            Value::R1(_) => 1,
            Value::R2(_) => 2,
            Value::R3(_) => 3,
            Value::R4(_) => 4,
        }
    }

    /// Reshapes to any supported rank.
    pub fn reshape(self, dims: &[usize]) -> Option<Value> {
        let flat: Tensor<1> = match self {
            Value::R1(t) => t,
            Value::R2(t) => t.flatten(0, 1),
            Value::R3(t) => t.flatten(0, 2),
            Value::R4(t) => t.flatten(0, 3),
        };
        Some(match dims.len() {
            1 => Value::R1(flat.reshape([dims[0]])),
            2 => Value::R2(flat.reshape([dims[0], dims[1]])),
            3 => Value::R3(flat.reshape([dims[0], dims[1], dims[2]])),
            4 => Value::R4(flat.reshape([dims[0], dims[1], dims[2], dims[3]])),
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
        }
        .unwrap_or_default()
    }
}

/// Element-wise binary op with NumPy broadcasting (ranks aligned first).
pub fn broadcast_binary(a: Value, b: Value, f: BinaryOp) -> Option<Value> {
    let r = a.rank().max(b.rank());
    let (a, b) = (a.lift(r)?, b.lift(r)?);
    Some(match (a, b) {
        (Value::R1(x), Value::R1(y)) => Value::R1(f.apply(x, y)),
        (Value::R2(x), Value::R2(y)) => Value::R2(f.apply(x, y)),
        (Value::R3(x), Value::R3(y)) => Value::R3(f.apply(x, y)),
        (Value::R4(x), Value::R4(y)) => Value::R4(f.apply(x, y)),
        _ => return None,
    })
}

/// The broadcasting binary ops of the IR.
#[derive(Clone, Copy, Debug)]
pub enum BinaryOp {
    Add,
    Mul,
}

impl BinaryOp {
    fn apply<const D: usize>(self, x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Mul => x * y,
        }
    }
}
