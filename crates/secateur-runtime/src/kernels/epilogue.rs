//! What a kernel does to each output value before storing it: add the row's bias (a folded
//! batch norm ends up here) and apply the activation, so a Conv/Gemm + BN + ReLU is one pass.

use secateur_graph::Pointwise;
use serde::{Deserialize, Serialize};

/// An activation fused into a kernel's store.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    None,
    Relu,
    Clip { min: f32, max: f32 },
}

impl Activation {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            Activation::Clip { min, max } => v.max(min).min(max),
        }
    }
}

/// Bias (one value per output row) and activation.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        act: Activation::None,
    };

    #[inline(always)]
    pub fn bias(&self, row: usize) -> f32 {
        self.bias.map_or(0.0, |b| b[row])
    }

    /// Applies bias and activation to rows `r0..` of a row-major output with `n` columns.
    pub fn apply_rows(&self, y: &mut [f32], n: usize, r0: usize) {
        if self.bias.is_none() && self.act == Activation::None {
            return;
        }
        for (i, row) in y.chunks_mut(n.max(1)).enumerate() {
            let b = self.bias(r0 + i);
            for v in row {
                *v = self.act.apply(*v + b);
            }
        }
    }
}

/// `a · b + c`, fused where the instruction set has FMA.
#[inline(always)]
pub fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// What a fused layer applies to its output after the bias: an element-wise function, the
/// addition of a residual value of the same shape, and an element-wise function after it
/// (`y = post(act(x·W + b) + r)`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tail {
    pub act: Option<Pointwise>,
    pub residual: bool,
    pub post: Option<Pointwise>,
}

impl Tail {
    /// The clamp activation kernels without a general epilogue apply in their store: the
    /// first function when it is a clamp (ReLU, Clip).
    pub fn in_kernel_activation(&self) -> Activation {
        match self.act.and_then(|f| f.clamp_bounds()) {
            Some((min, max)) if min == 0.0 && max == f32::INFINITY => Activation::Relu,
            Some((min, max)) => Activation::Clip { min, max },
            None => Activation::None,
        }
    }

    /// Whether anything remains after the in-kernel activation.
    pub fn has_rest(&self) -> bool {
        self.residual
            || self.post.is_some()
            || (self.act.is_some() && self.in_kernel_activation() == Activation::None)
    }

    /// Applies the whole tail to `y` (laid out like `residual`): function, residual addition,
    /// function after it, each as one vector pass (kernels whose tail is more than a clamp
    /// store raw sums of a block and finish it here, so the functions' long dependency chains
    /// of consecutive vectors overlap).
    pub fn apply(&self, isa: super::Isa, y: &mut [f32], residual: Option<&[f32]>) {
        if let Some(f) = self.act {
            super::elementwise::pointwise_in_place(isa, f, y);
        }
        if let Some(r) = residual.filter(|_| self.residual) {
            y.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        if let Some(f) = self.post {
            super::elementwise::pointwise_in_place(isa, f, y);
        }
    }

    /// Applies what the in-kernel activation left out to `y` (laid out like `residual`).
    pub fn apply_rest(&self, isa: super::Isa, y: &mut [f32], residual: Option<&[f32]>) {
        if self.in_kernel_activation() == Activation::None
            && let Some(f) = self.act
        {
            super::elementwise::pointwise_in_place(isa, f, y);
        }
        if let Some(r) = residual.filter(|_| self.residual) {
            y.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        if let Some(f) = self.post {
            super::elementwise::pointwise_in_place(isa, f, y);
        }
    }
}
