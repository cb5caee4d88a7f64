//! `MatMul` of two activations (attention scores `Q·Kᵀ` and their product with `V`): `A [..., M,
//! K] · B [..., K, N]` with NumPy broadcasting over the leading axes. The contracted axes of A
//! and B are linked to each other (removing index `k` from both equals zeroing it), M and N to
//! the output, and leading axes as in broadcasting. A `MatMul` with a constant 2-D right-hand
//! side is the weighted layer [`super::MatMul`] instead.

use super::broadcast::broadcast_shapes;
use super::{AxisLink, OpSemantics, Port, known_dim};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::Shape;
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// A batched product of two activations.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct BatchMatMul;

/// The leading (batch) part of a shape: all but the last two axes.
fn lead(s: &Shape) -> Shape {
    Shape(s.0[..s.rank() - 2].to_vec())
}

impl OpSemantics for BatchMatMul {
    /// The reduction length times the batch dimensions after the first (attention heads) in,
    /// the columns out: a linear layer's input and output features, whatever the rows
    /// (tokens) are.
    fn kernel_widths(&self, inputs: &[Vec<usize>], output: &[usize]) -> (usize, usize) {
        let a = inputs.first().map_or(&[][..], Vec::as_slice);
        let k = a.last().copied().unwrap_or(1);
        let batch: usize = a
            .get(1..a.len().saturating_sub(2))
            .map_or(1, |d| d.iter().product());
        (k * batch, output.last().copied().unwrap_or(1))
    }

    /// Rows and rank: the widths (which pruning changes) are [`Self::kernel_widths`].
    fn kernel_signature(&self, inputs: &[Vec<usize>]) -> (&'static str, String) {
        let a = inputs.first().map_or(&[][..], Vec::as_slice);
        let rows = a
            .len()
            .checked_sub(2)
            .and_then(|i| a.get(i))
            .copied()
            .unwrap_or(1);
        ("MatMul", format!("m{rows} r{}", a.len()))
    }

    fn op_type(&self) -> &'static str {
        "MatMul"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=2
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let (a, b) = (&inputs[0], &inputs[1]);
        if a.rank() < 2 || b.rank() < 2 {
            op_bail!("MatMul inputs must have rank >= 2, got {a} and {b}");
        }
        let k = known_dim(a, a.rank() - 1, "MatMul input A")?;
        let kb = known_dim(b, b.rank() - 2, "MatMul input B")?;
        if k != kb {
            op_bail!("MatMul inner sizes differ: {a} · {b}");
        }
        let mut out = broadcast_shapes(&lead(a), &lead(b))?.0;
        out.push(a.0[a.rank() - 2]);
        out.push(b.0[b.rank() - 1]);
        Ok(vec![Shape(out)])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        let (a, b, o) = (&inputs[0], &inputs[1], &outputs[0]);
        let (ra, rb, ro) = (a.rank(), b.rank(), o.rank());
        let mut links = vec![
            AxisLink::identity((Port::Input(0), ra - 2), (Port::Output(0), ro - 2)),
            AxisLink::identity((Port::Input(1), rb - 1), (Port::Output(0), ro - 1)),
            AxisLink::identity((Port::Input(0), ra - 1), (Port::Input(1), rb - 2)),
        ];
        for (i, s) in [a, b].into_iter().enumerate() {
            let off = ro - s.rank();
            for ax in 0..s.rank() - 2 {
                if s.0[ax] == o.0[ax + off] {
                    links.push(AxisLink::identity(
                        (Port::Input(i), ax),
                        (Port::Output(0), ax + off),
                    ));
                }
            }
        }
        links
    }

    fn product_axes(&self, inputs: &[Shape]) -> Vec<(usize, usize)> {
        inputs
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (1..s.rank().saturating_sub(2)).map(move |ax| (i, ax)))
            .collect()
    }

    fn macs(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        let k = *inputs[0].last().unwrap_or(&0) as u64;
        outputs[0].iter().product::<usize>() as u64 * k
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (inputs[0], inputs[1]);
        let p = self.products(a.shape(), b.shape())?;
        let (m, k, n) = (p.m, p.k, p.n);
        let mut out = vec![0.0f32; p.out_shape.iter().product()];
        for (l, y) in out.chunks_mut((m * n).max(1)).enumerate() {
            let (xa, xb) = (&a.data()[p.a_offsets[l]..], &b.data()[p.b_offsets[l]..]);
            // contiguous rows of B, each output summed over q in order (as the triple loop)
            accumulate_rows(y, xa, xb, k, n);
        }
        Ok(vec![
            Tensor::new(p.out_shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

/// The matrix products a [`BatchMatMul`] performs on concrete shapes: `A[l]·B[l]` for each
/// leading index `l` of the output, with the offsets of each broadcast operand matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixProducts {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub out_shape: Vec<usize>,
    /// Offset of the `M×K` matrix of A (and `K×N` of B) read by output matrix `l`.
    pub a_offsets: Vec<usize>,
    pub b_offsets: Vec<usize>,
}

impl BatchMatMul {
    /// The products on inputs of these concrete shapes.
    pub fn products(&self, a: &[usize], b: &[usize]) -> Result<MatrixProducts, OpError> {
        let out_shape = self.infer(&[Shape::known(a), Shape::known(b)])?[0].resolve(1);
        let ro = out_shape.len();
        let lead_out = &out_shape[..ro - 2];
        let offsets = |s: &[usize]| -> Vec<usize> {
            let l = &s[..s.len() - 2];
            let padded: Vec<usize> = std::iter::repeat_n(1, lead_out.len() - l.len())
                .chain(l.iter().copied())
                .collect();
            let st = strides(&padded);
            let mat = s[s.len() - 2] * s[s.len() - 1];
            let so = strides(lead_out);
            (0..lead_out.iter().product::<usize>())
                .map(|flat| {
                    (0..lead_out.len())
                        .filter(|&ax| padded[ax] != 1)
                        .map(|ax| ((flat / so[ax]) % lead_out[ax]) * st[ax])
                        .sum::<usize>()
                        * mat
                })
                .collect()
        };
        Ok(MatrixProducts {
            m: out_shape[ro - 2],
            k: a[a.len() - 1],
            n: out_shape[ro - 1],
            a_offsets: offsets(a),
            b_offsets: offsets(b),
            out_shape,
        })
    }
}

/// `y[i] += Σ_q a[i][q] · b[q]` for every row `i` of `y` (`a` row-major with `k` columns, `b`
/// row-major `k × n`), each output summed over `q` in order: the textbook triple loop's sum,
/// bit for bit. Tiles of [`TILE_ROWS`] × [`TILE_COLS`] outputs stay in registers over the
/// whole sum (each row of `b` read once per tile of rows, not once per row); the edges go one
/// output row at a time.
pub(crate) fn accumulate_rows(y: &mut [f32], a: &[f32], b: &[f32], k: usize, n: usize) {
    let n = n.max(1);
    let rows = y.len() / n;
    let full_cols = n - n % TILE_COLS;
    let mut i = 0;
    while i + TILE_ROWS <= rows {
        for c in (0..full_cols).step_by(TILE_COLS) {
            let mut acc = [[0.0f32; TILE_COLS]; TILE_ROWS];
            for (r, t) in acc.iter_mut().enumerate() {
                t.copy_from_slice(&y[(i + r) * n + c..(i + r) * n + c + TILE_COLS]);
            }
            let a_rows: [&[f32]; TILE_ROWS] =
                std::array::from_fn(|r| &a[(i + r) * k..(i + r + 1) * k]);
            for (q, bq) in b.chunks_exact(n).take(k).enumerate() {
                let bq: [f32; TILE_COLS] = bq[c..c + TILE_COLS].try_into().expect("tile width");
                for (t, ar) in acc.iter_mut().zip(&a_rows) {
                    let av = ar[q];
                    for (o, bv) in t.iter_mut().zip(bq) {
                        *o += av * bv;
                    }
                }
            }
            for (r, t) in acc.iter().enumerate() {
                y[(i + r) * n + c..(i + r) * n + c + TILE_COLS].copy_from_slice(t);
            }
        }
        if full_cols < n {
            for r in i..i + TILE_ROWS {
                accumulate_row(
                    &mut y[r * n + full_cols..(r + 1) * n],
                    &a[r * k..],
                    b,
                    k,
                    n,
                    full_cols,
                );
            }
        }
        i += TILE_ROWS;
    }
    for r in i..rows {
        accumulate_row(&mut y[r * n..(r + 1) * n], &a[r * k..], b, k, n, 0);
    }
}

/// One output row's columns from `c0` on: `y[j] += Σ_q a[q] · b[q][c0 + j]`, over `q` in order.
fn accumulate_row(y: &mut [f32], a: &[f32], b: &[f32], k: usize, n: usize, c0: usize) {
    for q in 0..k {
        let av = a[q];
        for (o, bv) in y.iter_mut().zip(&b[q * n + c0..(q + 1) * n]) {
            *o += av * bv;
        }
    }
}

/// Output rows and columns of a reference product's register tile.
const TILE_ROWS: usize = 4;
const TILE_COLS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiled product gives the textbook triple loop's sums bit for bit, on every shape
    /// around the tile sizes (full tiles, edge rows, edge columns, empty sums).
    #[test]
    fn tiled_rows_equal_the_triple_loop_bit_for_bit() {
        let value = |i: usize| ((i * 2654435761) % 1000) as f32 / 333.0 - 1.5;
        for rows in [0, 1, 3, 4, 5, 9] {
            for k in [0, 1, 7, 33] {
                for n in [1, 7, 8, 9, 17] {
                    let a: Vec<f32> = (0..rows * k).map(value).collect();
                    let b: Vec<f32> = (0..k * n).map(|i| value(i + 7)).collect();
                    let start: Vec<f32> = (0..rows * n).map(|i| value(i + 3)).collect();
                    let mut got = start.clone();
                    accumulate_rows(&mut got, &a, &b, k, n);
                    for i in 0..rows {
                        for j in 0..n {
                            let mut acc = start[i * n + j];
                            for q in 0..k {
                                acc += a[i * k + q] * b[q * n + j];
                            }
                            assert_eq!(got[i * n + j].to_bits(), acc.to_bits(), "{rows}x{k}x{n}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn batched_product_with_broadcasting() {
        // A [2, 1, 2, 3] · B [2, 3, 1] -> [2, 2, 2, 1]
        let a = Tensor::from_fn(vec![2, 1, 2, 3], |i| i as f32);
        let b = Tensor::from_fn(vec![2, 3, 1], |i| (i % 3) as f32 + 1.0);
        let y = BatchMatMul.eval(&[&a, &b]).unwrap().remove(0);
        assert_eq!(y.shape(), &[2, 2, 2, 1]);
        // first matrix of A is [[0,1,2],[3,4,5]], B[0] = [1,2,3]ᵀ
        assert_eq!(&y.data()[..2], &[8.0, 26.0]);
        // A's second leading index pairs with B's second matrix (the same values here)
        assert_eq!(&y.data()[4..6], &[44.0, 62.0]);
        let links = BatchMatMul.axis_links(
            &[Shape::batched(&[4, 5, 8]), Shape::batched(&[4, 8, 5])],
            &[Shape::batched(&[4, 5, 5])],
        );
        assert!(links.contains(&AxisLink::identity(
            (Port::Input(0), 3),
            (Port::Input(1), 2)
        )));
    }
}
