//! Weight masks: which elements of a weight are kept, and the pattern the mask promises
//! (unstructured, N:M or blocks). Patterns are defined on the weight's *matrix view*: rows are
//! output channels (the `out_axis`), columns everything else flattened in order, which is the
//! reduction dimension of the convolution-as-GEMM or of the linear layer. N:M groups run along a
//! row (M consecutive inputs of one output keep exactly N); an R×C block covers R consecutive
//! rows and C consecutive columns.

use crate::error::{GraphError, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The sparsity pattern a mask guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskPattern {
    /// Any element may be pruned.
    Unstructured,
    /// Exactly `n` of every `m` consecutive elements along a row are kept.
    NM { n: usize, m: usize },
    /// Elements are kept or pruned in `rows × cols` blocks of the matrix view.
    Block { rows: usize, cols: usize },
}

impl fmt::Display for MaskPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskPattern::Unstructured => f.write_str("unstructured"),
            MaskPattern::NM { n, m } => write!(f, "{n}:{m}"),
            MaskPattern::Block { rows, cols } => write!(f, "block {rows}x{cols}"),
        }
    }
}

/// The matrix view of a weight tensor: `rows` output channels by `cols` reduction elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixView {
    pub rows: usize,
    pub cols: usize,
    /// Stride between consecutive rows in the flat tensor.
    row_stride: usize,
    /// Stride between consecutive columns in the flat tensor.
    col_stride: usize,
}

impl MatrixView {
    /// The view of a weight whose output channels run along `out_axis`. Only the first or the
    /// last axis may be the output axis (all ONNX conv and linear layouts).
    pub fn new(shape: &[usize], out_axis: usize) -> Result<Self> {
        let n: usize = shape.iter().product();
        if shape.is_empty() || out_axis >= shape.len() {
            return Err(GraphError::Invalid(format!(
                "weight of shape {shape:?} has no output axis {out_axis}"
            )));
        }
        let rows = shape[out_axis];
        let cols = n.checked_div(rows).unwrap_or(0);
        if out_axis == 0 {
            Ok(MatrixView {
                rows,
                cols,
                row_stride: cols,
                col_stride: 1,
            })
        } else if out_axis == shape.len() - 1 {
            Ok(MatrixView {
                rows,
                cols,
                row_stride: 1,
                col_stride: rows,
            })
        } else {
            Err(GraphError::Invalid(format!(
                "weight of shape {shape:?}: output axis {out_axis} must be the first or the last"
            )))
        }
    }

    /// Flat index of element `(row, col)`.
    pub fn index(&self, row: usize, col: usize) -> usize {
        row * self.row_stride + col * self.col_stride
    }
}

/// A mask over one weight tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mask {
    /// One flag per weight element, in the weight's flat order: `true` means kept.
    pub keep: Vec<bool>,
    pub pattern: MaskPattern,
    /// The weight axis holding output channels (defines the matrix view).
    pub out_axis: usize,
}

impl Mask {
    /// A mask keeping everything.
    pub fn dense(len: usize, out_axis: usize) -> Self {
        Mask {
            keep: vec![true; len],
            pattern: MaskPattern::Unstructured,
            out_axis,
        }
    }

    /// Number of kept elements.
    pub fn kept(&self) -> usize {
        self.keep.iter().filter(|k| **k).count()
    }

    /// Fraction of pruned elements.
    pub fn sparsity(&self) -> f64 {
        if self.keep.is_empty() {
            0.0
        } else {
            1.0 - self.kept() as f64 / self.keep.len() as f64
        }
    }

    /// Zeroes the pruned elements of `weight`.
    pub fn apply(&self, name: &str, weight: &mut Tensor) -> Result<()> {
        if weight.len() != self.keep.len() {
            return Err(self.err(
                name,
                format!(
                    "has {} flags but the weight has {} elements",
                    self.keep.len(),
                    weight.len()
                ),
            ));
        }
        for (w, &k) in weight.data_mut().iter_mut().zip(&self.keep) {
            if !k {
                *w = 0.0;
            }
        }
        Ok(())
    }

    fn err(&self, name: &str, message: String) -> GraphError {
        GraphError::Mask {
            name: name.to_string(),
            message,
        }
    }

    /// Checks that the mask fits the weight, that pruned weights are zero, and the pattern.
    pub fn check_against(&self, name: &str, weight: &Tensor) -> Result<()> {
        if weight.len() != self.keep.len() {
            return Err(self.err(
                name,
                format!(
                    "has {} flags but the weight has {} elements",
                    self.keep.len(),
                    weight.len()
                ),
            ));
        }
        if let Some(i) = self
            .keep
            .iter()
            .zip(weight.data())
            .position(|(k, w)| !k && *w != 0.0)
        {
            return Err(self.err(
                name,
                format!("element {i} is masked but non-zero ({})", weight.data()[i]),
            ));
        }
        self.check_pattern(name, weight.shape())
    }

    /// Checks the declared pattern on a weight shape.
    pub fn check_pattern(&self, name: &str, shape: &[usize]) -> Result<()> {
        let view = MatrixView::new(shape, self.out_axis)?;
        match self.pattern {
            MaskPattern::Unstructured => Ok(()),
            MaskPattern::NM { n, m } => {
                if n >= m || m == 0 {
                    return Err(self.err(name, format!("N:M needs 0 <= N < M, got {n}:{m}")));
                }
                if view.cols % m != 0 {
                    return Err(self.err(
                        name,
                        format!("row length {} is not a multiple of M={m}", view.cols),
                    ));
                }
                for r in 0..view.rows {
                    for g in 0..view.cols / m {
                        let kept = (0..m)
                            .filter(|j| self.keep[view.index(r, g * m + j)])
                            .count();
                        if kept != n {
                            return Err(self.err(
                                name,
                                format!(
                                    "row {r}, group {g} keeps {kept} of {m}, expected exactly {n}"
                                ),
                            ));
                        }
                    }
                }
                Ok(())
            }
            MaskPattern::Block { rows, cols } => {
                if rows == 0 || cols == 0 || view.rows % rows != 0 || view.cols % cols != 0 {
                    return Err(self.err(
                        name,
                        format!(
                            "block {rows}x{cols} does not divide the {}x{} matrix view",
                            view.rows, view.cols
                        ),
                    ));
                }
                for br in 0..view.rows / rows {
                    for bc in 0..view.cols / cols {
                        let first = self.keep[view.index(br * rows, bc * cols)];
                        for i in 0..rows {
                            for j in 0..cols {
                                if self.keep[view.index(br * rows + i, bc * cols + j)] != first {
                                    return Err(self.err(
                                        name,
                                        format!("block ({br}, {bc}) is partly pruned"),
                                    ));
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nm_pattern_checked_on_rows() {
        // 2 outputs x 4 inputs, 2:4
        let keep = vec![true, false, true, false, false, true, true, false];
        let m = Mask {
            keep,
            pattern: MaskPattern::NM { n: 2, m: 4 },
            out_axis: 0,
        };
        assert!(m.check_pattern("w", &[2, 4]).is_ok());
        let mut bad = m.clone();
        bad.keep[1] = true;
        assert!(bad.check_pattern("w", &[2, 4]).is_err());
        // the same flags read with the output axis last are columns: groups differ
        assert!(m.check_pattern("w", &[4, 2]).is_err());
    }

    #[test]
    fn block_pattern_and_apply() {
        let keep = vec![true, true, false, false, true, true, false, false];
        let m = Mask {
            keep,
            pattern: MaskPattern::Block { rows: 2, cols: 2 },
            out_axis: 0,
        };
        assert!(m.check_pattern("w", &[2, 4]).is_ok());
        assert!(m.check_pattern("w", &[2, 2, 2]).is_ok());
        let wrong = Mask {
            pattern: MaskPattern::Block { rows: 4, cols: 1 },
            ..m.clone()
        };
        assert!(wrong.check_pattern("w", &[2, 4]).is_err());
        let mut w = Tensor::full(vec![2, 4], 1.0);
        m.apply("w", &mut w).unwrap();
        assert_eq!(w.count_zeros(), 4);
        assert!(m.check_against("w", &w).is_ok());
        assert!((m.sparsity() - 0.5).abs() < 1e-12);
    }
}
