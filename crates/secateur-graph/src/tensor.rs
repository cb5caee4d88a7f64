//! Dense f32 tensors in row-major order: the storage of weights, activations and test data.
//! Shape and length are checked on construction; slicing along an axis (keep a list of indices)
//! is the primitive that structured pruning uses to shrink weights.

use crate::error::{GraphError, Result};
use serde::{Deserialize, Serialize};

/// A dense, row-major f32 tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Tensor {
    /// A tensor from a shape and its data; the lengths must agree.
    ///
    /// ```
    /// let t = secateur_graph::Tensor::new(vec![2, 3], vec![1.0; 6]).unwrap();
    /// assert_eq!(t.len(), 6);
    /// assert!(secateur_graph::Tensor::new(vec![2, 3], vec![1.0; 5]).is_err());
    /// ```
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = numel(&shape);
        if expected != data.len() {
            return Err(GraphError::TensorSize {
                name: String::new(),
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = numel(&shape);
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// A tensor filled with one value.
    pub fn full(shape: Vec<usize>, value: f32) -> Self {
        let n = numel(&shape);
        Self {
            shape,
            data: vec![value; n],
        }
    }

    /// A one-element tensor of rank 0.
    pub fn scalar(value: f32) -> Self {
        Self {
            shape: vec![],
            data: vec![value],
        }
    }

    /// A tensor whose elements are produced from their flat index.
    pub fn from_fn(shape: Vec<usize>, f: impl FnMut(usize) -> f32) -> Self {
        let n = numel(&shape);
        Self {
            shape,
            data: (0..n).map(f).collect(),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(mut self, shape: Vec<usize>) -> Result<Self> {
        if numel(&shape) != self.data.len() {
            return Err(GraphError::TensorSize {
                name: String::new(),
                shape,
                expected: self.data.len(),
                actual: self.data.len(),
            });
        }
        self.shape = shape;
        Ok(self)
    }

    /// Keeps only the given indices (in the given order) along `axis`.
    ///
    /// ```
    /// use secateur_graph::Tensor;
    /// let t = Tensor::from_fn(vec![2, 3], |i| i as f32);
    /// let s = t.select_axis(1, &[0, 2]).unwrap();
    /// assert_eq!(s.shape(), &[2, 2]);
    /// assert_eq!(s.data(), &[0.0, 2.0, 3.0, 5.0]);
    /// ```
    pub fn select_axis(&self, axis: usize, keep: &[usize]) -> Result<Self> {
        if axis >= self.rank() {
            return Err(GraphError::Invalid(format!(
                "cannot select along axis {axis} of a rank-{} tensor",
                self.rank()
            )));
        }
        let dim = self.shape[axis];
        if let Some(&bad) = keep.iter().find(|&&k| k >= dim) {
            return Err(GraphError::Invalid(format!(
                "index {bad} out of range for axis {axis} of size {dim}"
            )));
        }
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let mut data = Vec::with_capacity(outer * keep.len() * inner);
        for o in 0..outer {
            let base = o * dim * inner;
            for &k in keep {
                data.extend_from_slice(&self.data[base + k * inner..base + (k + 1) * inner]);
            }
        }
        let mut shape = self.shape.clone();
        shape[axis] = keep.len();
        Ok(Self { shape, data })
    }

    /// Sets every element whose index along `axis` is in `indices` to zero.
    pub fn zero_axis(&mut self, axis: usize, indices: &[usize]) -> Result<()> {
        if axis >= self.rank() {
            return Err(GraphError::Invalid(format!(
                "cannot zero along axis {axis} of a rank-{} tensor",
                self.rank()
            )));
        }
        let dim = self.shape[axis];
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        for &k in indices {
            if k >= dim {
                return Err(GraphError::Invalid(format!(
                    "index {k} out of range for axis {axis} of size {dim}"
                )));
            }
            for o in 0..outer {
                let base = o * dim * inner + k * inner;
                self.data[base..base + inner].fill(0.0);
            }
        }
        Ok(())
    }

    /// Largest absolute element-wise difference; `f32::INFINITY` when the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        if self.shape != other.shape {
            return f32::INFINITY;
        }
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// Index and value of the first non-finite element, if any.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        self.data
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .map(|(i, v)| (i, *v))
    }

    /// Number of elements that are exactly zero.
    pub fn count_zeros(&self) -> usize {
        self.data.iter().filter(|v| **v == 0.0).count()
    }

    /// Transposed copy of a rank-2 tensor.
    pub fn transpose2(&self) -> Result<Self> {
        if self.rank() != 2 {
            return Err(GraphError::Invalid(format!(
                "transpose2 needs a rank-2 tensor, got shape {:?}",
                self.shape
            )));
        }
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                data[j * r + i] = self.data[i * c + j];
            }
        }
        Ok(Self {
            shape: vec![c, r],
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_and_zero_agree_on_kept_part() {
        let t = Tensor::from_fn(vec![3, 4, 2], |i| i as f32 + 1.0);
        let s = t.select_axis(1, &[1, 3]).unwrap();
        assert_eq!(s.shape(), &[3, 2, 2]);
        assert_eq!(&s.data()[..4], &[3.0, 4.0, 7.0, 8.0]);
        let mut z = t.clone();
        z.zero_axis(1, &[0, 2]).unwrap();
        assert_eq!(z.count_zeros(), 12);
        assert!(t.select_axis(3, &[0]).is_err());
        assert!(t.select_axis(1, &[4]).is_err());
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
