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
            for (i, row) in y.chunks_mut(n.max(1)).enumerate() {
                for q in 0..k {
                    let av = xa[i * k + q];
                    for (o, bv) in row.iter_mut().zip(&xb[q * n..(q + 1) * n]) {
                        *o += av * bv;
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
