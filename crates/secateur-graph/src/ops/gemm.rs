//! Fully connected layers: ONNX `Gemm` (`Y = alpha·A·B + beta·C`, optional transposes) and
//! `MatMul` with a 2-D right-hand side. Output features are linked to the weight's output axis
//! and the bias; input features to the weight's input axis.

use super::{AxisLink, AxisRole, InputRole, OpClass, OpSemantics, Port, expect_rank, known_dim};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Attributes of a general matrix multiplication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Gemm {
    /// `Y = A·Bᵀ + C`, the layout PyTorch exports for `nn.Linear`.
    pub fn linear() -> Self {
        Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        }
    }

    /// Axis of B that runs over the reduction (input features).
    pub fn b_in_axis(&self) -> usize {
        usize::from(self.trans_b)
    }

    /// Axis of B that runs over output features.
    pub fn b_out_axis(&self) -> usize {
        1 - self.b_in_axis()
    }

    fn a_axes(&self) -> (usize, usize) {
        if self.trans_a { (1, 0) } else { (0, 1) }
    }
}

impl OpSemantics for Gemm {
    fn class(&self) -> OpClass {
        OpClass::WeightedLayer
    }

    fn op_type(&self) -> &'static str {
        "Gemm"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=3
    }

    fn input_roles(&self, n: usize) -> Vec<InputRole> {
        let mut r = vec![InputRole::Data, InputRole::Weight];
        if n == 3 {
            r.push(InputRole::Bias);
        }
        r
    }

    fn param_axes(&self, inputs: &[Shape]) -> Vec<(usize, Vec<AxisRole>)> {
        let mut b = vec![AxisRole::InChannels; 2];
        b[self.b_out_axis()] = AxisRole::OutChannels;
        let mut v = vec![(1, b)];
        if let Some(c) = inputs.get(2) {
            let mut roles = vec![AxisRole::Channel; c.rank()];
            if c.rank() == 2 {
                roles[0] = AxisRole::Kernel;
            }
            v.push((2, roles));
        }
        v
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let (a, b) = (&inputs[0], &inputs[1]);
        expect_rank(a, 2, "Gemm input A")?;
        expect_rank(b, 2, "Gemm input B")?;
        let (am, ak) = self.a_axes();
        let k = known_dim(a, ak, "Gemm input A")?;
        let kb = known_dim(b, self.b_in_axis(), "Gemm input B")?;
        if k != kb {
            op_bail!(
                "A has {k} input features but B expects {kb} (A {a}, B {b}, transB={})",
                self.trans_b
            );
        }
        let n = known_dim(b, self.b_out_axis(), "Gemm input B")?;
        if let Some(c) = inputs.get(2) {
            let ok = match c.rank() {
                0 => true,
                1 => matches!(c.dim(0), Some(d) if d == n || d == 1),
                2 => {
                    matches!(c.dim(1), Some(d) if d == n || d == 1)
                        && (c.dim(0) == Some(1) || c.0[0] == a.0[am])
                }
                _ => false,
            };
            if !ok {
                op_bail!("bias C of shape {c} does not broadcast to [M, {n}]");
            }
        }
        Ok(vec![Shape(vec![a.0[am], Dim::Known(n)])])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        let (am, ak) = self.a_axes();
        let out = (Port::Output(0), 1);
        let n = outputs[0].dim(1);
        let mut links = vec![
            AxisLink::identity((Port::Input(0), ak), (Port::Input(1), self.b_in_axis())),
            AxisLink::identity(out, (Port::Input(1), self.b_out_axis())),
            AxisLink::identity((Port::Input(0), am), (Port::Output(0), 0)),
        ];
        if let Some(c) = inputs.get(2) {
            let last = c.rank().wrapping_sub(1);
            if c.rank() >= 1 && c.dim(last) == n {
                links.push(AxisLink::identity(out, (Port::Input(2), last)));
            }
        }
        links
    }

    fn macs(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        let k = inputs[1][self.b_in_axis()];
        (outputs[0][0] * outputs[0][1] * k) as u64
    }

    fn elementwise_ops(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        if inputs.len() == 3 {
            outputs[0].iter().product::<usize>() as u64
        } else {
            0
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (inputs[0], inputs[1]);
        let (am, ak) = self.a_axes();
        let m = a.shape()[am];
        let k = a.shape()[ak];
        let n = b.shape()[self.b_out_axis()];
        let a_at = |i: usize, p: usize| {
            if self.trans_a {
                a.data()[p * m + i]
            } else {
                a.data()[i * k + p]
            }
        };
        let b_at = |p: usize, j: usize| {
            if self.trans_b {
                b.data()[j * k + p]
            } else {
                b.data()[p * n + j]
            }
        };
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k {
                    acc += a_at(i, p) * b_at(p, j);
                }
                out[i * n + j] = self.alpha * acc;
            }
        }
        if let Some(c) = inputs.get(2) {
            let cs = c.shape();
            for i in 0..m {
                for j in 0..n {
                    let ci = match cs.len() {
                        0 => 0,
                        1 => {
                            if cs[0] == 1 {
                                0
                            } else {
                                j
                            }
                        }
                        _ => {
                            let r = if cs[0] == 1 { 0 } else { i };
                            let col = if cs[1] == 1 { 0 } else { j };
                            r * cs[1] + col
                        }
                    };
                    out[i * n + j] += self.beta * c.data()[ci];
                }
            }
        }
        Ok(vec![
            Tensor::new(vec![m, n], out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

/// Matrix product of an activation `[..., K]` with a 2-D weight `[K, N]`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct MatMul;

impl OpSemantics for MatMul {
    fn class(&self) -> OpClass {
        OpClass::WeightedLayer
    }

    /// The rows (every axis but the last: tokens of a sequence) tell kernels apart; the
    /// widths pruning changes are [`Self::kernel_widths`].
    fn kernel_signature(&self, inputs: &[Vec<usize>]) -> (&'static str, String) {
        let a = inputs.first().map_or(&[][..], Vec::as_slice);
        let rows: usize = a.split_last().map_or(1, |(_, lead)| lead.iter().product());
        ("MatMul", format!("m{rows} linear"))
    }

    /// Input features (the reduction length `K`) and output features (`N`).
    fn kernel_widths(&self, inputs: &[Vec<usize>], output: &[usize]) -> (usize, usize) {
        let k = inputs.first().and_then(|a| a.last()).copied().unwrap_or(1);
        (k, output.last().copied().unwrap_or(1))
    }

    fn op_type(&self) -> &'static str {
        "MatMul"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=2
    }

    fn input_roles(&self, _n: usize) -> Vec<InputRole> {
        vec![InputRole::Data, InputRole::Weight]
    }

    fn param_axes(&self, _inputs: &[Shape]) -> Vec<(usize, Vec<AxisRole>)> {
        vec![(1, vec![AxisRole::InChannels, AxisRole::OutChannels])]
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let (a, b) = (&inputs[0], &inputs[1]);
        if a.rank() < 2 {
            op_bail!("MatMul input A must have rank >= 2, got {a}");
        }
        expect_rank(
            b,
            2,
            "MatMul input B (only a 2-D right-hand side is supported)",
        )?;
        let k = known_dim(a, a.rank() - 1, "MatMul input A")?;
        let kb = known_dim(b, 0, "MatMul input B")?;
        if k != kb {
            op_bail!("A has {k} columns but B has {kb} rows");
        }
        let mut out = a.0.clone();
        let last = out.len() - 1;
        out[last] = b.0[1];
        Ok(vec![Shape(out)])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let r = inputs[0].rank();
        let mut links = vec![
            AxisLink::identity((Port::Input(0), r - 1), (Port::Input(1), 0)),
            AxisLink::identity((Port::Output(0), r - 1), (Port::Input(1), 1)),
        ];
        for ax in 0..r - 1 {
            links.push(AxisLink::identity(
                (Port::Input(0), ax),
                (Port::Output(0), ax),
            ));
        }
        links
    }

    fn macs(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        outputs[0].iter().product::<usize>() as u64 * inputs[1][0] as u64
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (inputs[0], inputs[1]);
        let k = b.shape()[0];
        let n = b.shape()[1];
        let rows = a.len() / k;
        // row i of the output accumulates a[i][p] · (row p of b) for p in order: the same
        // sum in the same order as the textbook triple loop, with contiguous rows
        let mut out = vec![0.0f32; rows * n];
        super::matmul::accumulate_rows(&mut out, a.data(), b.data(), k, n);
        let mut shape = a.shape().to_vec();
        let last = shape.len() - 1;
        shape[last] = n;
        Ok(vec![
            Tensor::new(shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_matches_hand_computation() {
        // A = [[1,2],[3,4]], B^T stored as [[1,0],[1,1],[0,2]] (3 outputs), C = [1,2,3]
        let a = Tensor::new(vec![2, 2], vec![1., 2., 3., 4.]).unwrap();
        let b = Tensor::new(vec![3, 2], vec![1., 0., 1., 1., 0., 2.]).unwrap();
        let c = Tensor::new(vec![3], vec![1., 2., 3.]).unwrap();
        let y = Gemm::linear().eval(&[&a, &b, &c]).unwrap().remove(0);
        assert_eq!(y.data(), &[2., 5., 7., 4., 9., 11.]);
        let s = Gemm::linear()
            .infer(&[
                Shape::batched(&[2]),
                Shape::known(&[3, 2]),
                Shape::known(&[3]),
            ])
            .unwrap();
        assert_eq!(s[0], Shape::batched(&[3]));
    }

    #[test]
    fn gemm_alpha_beta_no_transpose() {
        let g = Gemm {
            alpha: 2.0,
            beta: 0.5,
            trans_a: false,
            trans_b: false,
        };
        let a = Tensor::new(vec![1, 2], vec![1., 1.]).unwrap();
        let b = Tensor::new(vec![2, 2], vec![1., 2., 3., 4.]).unwrap();
        let c = Tensor::new(vec![1, 2], vec![2., 4.]).unwrap();
        let y = g.eval(&[&a, &b, &c]).unwrap().remove(0);
        assert_eq!(y.data(), &[2.0 * 4.0 + 1.0, 2.0 * 6.0 + 2.0]);
        assert!(
            g.infer(&[Shape::known(&[1, 3]), Shape::known(&[2, 2])])
                .is_err()
        );
    }

    #[test]
    fn matmul_batched_rows() {
        let a = Tensor::from_fn(vec![2, 1, 3], |i| i as f32);
        let b = Tensor::full(vec![3, 2], 1.0);
        let y = MatMul.eval(&[&a, &b]).unwrap().remove(0);
        assert_eq!(y.shape(), &[2, 1, 2]);
        assert_eq!(y.data(), &[3., 3., 12., 12.]);
    }
}
