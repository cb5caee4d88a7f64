//! Symbolic shapes: every dimension is a known size or the symbolic batch dimension. Shape
//! inference runs on these, so one graph serves batch 1 and batch N alike.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One dimension of a value's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// The batch dimension, whose size is chosen when the graph runs.
    Batch,
    /// A fixed size.
    Known(usize),
}

impl Dim {
    /// The size, when it is fixed.
    pub fn known(self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(n),
            Dim::Batch => None,
        }
    }

    /// The size for a given batch.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Known(n) => n,
            Dim::Batch => batch,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Batch => f.write_str("N"),
        }
    }
}

/// A shape whose dimensions may include the symbolic batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape whose every dimension is known.
    pub fn known(dims: &[usize]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    /// A shape whose first dimension is the batch.
    pub fn batched(rest: &[usize]) -> Self {
        let mut dims = vec![Dim::Batch];
        dims.extend(rest.iter().map(|&d| Dim::Known(d)));
        Shape(dims)
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Concrete sizes for a batch.
    pub fn resolve(&self, batch: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(batch)).collect()
    }

    /// Known size of an axis, `None` for the batch or an axis out of range.
    pub fn dim(&self, axis: usize) -> Option<usize> {
        self.0.get(axis).and_then(|d| d.known())
    }

    /// Whether any dimension is the batch.
    pub fn has_batch(&self) -> bool {
        self.0.contains(&Dim::Batch)
    }

    /// Product of the known dimensions in a range; `None` if the range holds the batch.
    pub fn known_product(&self, range: std::ops::Range<usize>) -> Option<usize> {
        self.0[range].iter().map(|d| d.known()).product()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
