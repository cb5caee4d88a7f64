//! Symbolic shapes: every dimension is a known size, the symbolic batch dimension, or a
//! multiple of it (attention folds the heads into the batch: `[L, N·H, d]`). Shape inference
//! runs on these, so one graph serves batch 1 and batch N alike.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One dimension of a value's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// The batch dimension, whose size is chosen when the graph runs.
    Batch,
    /// A fixed size.
    Known(usize),
    /// `k` times the batch size (`k >= 2`; use [`Dim::batch_times`] to build one).
    BatchTimes(usize),
}

impl Dim {
    /// `k` times the batch (the batch itself for `k = 1`).
    pub fn batch_times(k: usize) -> Dim {
        if k == 1 {
            Dim::Batch
        } else {
            Dim::BatchTimes(k)
        }
    }

    /// The size, when it is fixed.
    pub fn known(self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(n),
            Dim::Batch | Dim::BatchTimes(_) => None,
        }
    }

    /// How many times the batch this dimension is, when it depends on the batch.
    pub fn batch_factor(self) -> Option<usize> {
        match self {
            Dim::Known(_) => None,
            Dim::Batch => Some(1),
            Dim::BatchTimes(k) => Some(k),
        }
    }

    /// The size for a given batch.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Known(n) => n,
            Dim::Batch => batch,
            Dim::BatchTimes(k) => k * batch,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Batch => f.write_str("N"),
            Dim::BatchTimes(k) => write!(f, "{k}N"),
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

    /// Whether any dimension is the batch or a multiple of it.
    pub fn has_batch(&self) -> bool {
        self.0.iter().any(|d| d.batch_factor().is_some())
    }

    /// The batch multiple of the batched dimension (`None` without one).
    pub fn batch_factor(&self) -> Option<usize> {
        self.0.iter().find_map(|d| d.batch_factor())
    }

    /// Elements per sample (the batch dimension counts its multiple); `None` when the product
    /// overflows.
    pub fn elements_per_sample(&self) -> Option<usize> {
        checked_product(
            self.0
                .iter()
                .map(|d| d.known().or(d.batch_factor()).unwrap_or(1)),
        )
    }

    /// Product of the known dimensions in a range; `None` if the range holds the batch.
    pub fn known_product(&self, range: std::ops::Range<usize>) -> Option<usize> {
        self.0[range].iter().map(|d| d.known()).product()
    }
}

/// The product of sizes, `None` on overflow (sizes read from files are not to be trusted).
pub fn checked_product(sizes: impl IntoIterator<Item = usize>) -> Option<usize> {
    sizes.into_iter().try_fold(1usize, |a, d| a.checked_mul(d))
}

/// Most elements any one tensor may hold per sample: 256 MiB of f32 (2^26) unless the
/// environment variable `SECATEUR_MAX_TENSOR_MB` sets another size. Shapes past it come from
/// corrupt or hostile files (a 60-byte file can declare a 2^40-pixel input) and are refused
/// before anything is allocated for them.
pub fn max_elements() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("SECATEUR_MAX_TENSOR_MB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(1 << 26, |mb| mb.saturating_mul(1 << 20) / 4)
    })
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
