//! Binary element-wise operators with NumPy broadcasting ([`Binary`]): `Add` (residual
//! connections, where both branches' channels become one group), `Mul` (gating,
//! squeeze-excitation), `Sub`, `Div`, `Pow` (decomposed normalisations and GELU), comparisons
//! and logic (attention masks, as 0/1 values), `Max`, `Min`. Every output axis is linked to the
//! matching axis of each input that is not broadcast along it.

use super::{AxisLink, BinaryFn, OpClass, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Broadcast output shape of two shapes, aligned at the right.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, OpError> {
    let r = a.rank().max(b.rank());
    let dim_at = |s: &Shape, i: usize| -> Dim {
        let off = r - s.rank();
        if i < off { Dim::Known(1) } else { s.0[i - off] }
    };
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let (x, y) = (dim_at(a, i), dim_at(b, i));
        out.push(match (x, y) {
            (x, y) if x == y => x,
            (Dim::Known(1), y) => y,
            (x, Dim::Known(1)) => x,
            _ => op_bail!("shapes {a} and {b} do not broadcast (axis {i}: {x} vs {y})"),
        });
    }
    Ok(Shape(out))
}

pub(crate) fn broadcast_links(inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
    let out = &outputs[0];
    let mut links = Vec::new();
    for (i, s) in inputs.iter().enumerate() {
        let off = out.rank() - s.rank();
        for ax in 0..s.rank() {
            if s.0[ax] == out.0[ax + off] {
                links.push(AxisLink::identity(
                    (Port::Input(i), ax),
                    (Port::Output(0), ax + off),
                ));
            }
        }
    }
    links
}

fn broadcast_eval(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Result<Tensor, OpError> {
    let sa = Shape::known(a.shape());
    let sb = Shape::known(b.shape());
    let out_shape = broadcast_shapes(&sa, &sb)?.resolve(1);
    let r = out_shape.len();
    let padded = |s: &[usize]| -> Vec<usize> {
        let mut p = vec![1; r - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (padded(a.shape()), padded(b.shape()));
    let (st_a, st_b) = (strides(&pa), strides(&pb));
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if r == 0 {
        out.push(f(a.data()[0], b.data()[0]));
        return Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()));
    }
    // runs along the last axis (each operand contiguous or repeated), the leading axes
    // counted by an odometer that moves each operand's offset by its stride
    let last = out_shape[r - 1];
    let (da, db) = (usize::from(pa[r - 1] != 1), usize::from(pb[r - 1] != 1));
    let mut index = vec![0usize; r - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for _ in 0..n.checked_div(last).unwrap_or(0) {
        for j in 0..last {
            out.push(f(a.data()[oa + j * da], b.data()[ob + j * db]));
        }
        for ax in (0..r - 1).rev() {
            let (sa, sb) = (
                if pa[ax] != 1 { st_a[ax] } else { 0 },
                if pb[ax] != 1 { st_b[ax] } else { 0 },
            );
            index[ax] += 1;
            oa += sa;
            ob += sb;
            if index[ax] < out_shape[ax] {
                break;
            }
            index[ax] = 0;
            oa -= sa * out_shape[ax];
            ob -= sb * out_shape[ax];
        }
    }
    Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))
}

/// A broadcasting binary operator ([`BinaryFn`]): arithmetic (`Add` for residual
/// connections, `Mul` for gating, `Sub`, `Div`, `Pow`), comparisons and logic on 0/1 masks,
/// `Max` and `Min`. One op for all of them: adding one is a [`BinaryFn`] variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    pub f: BinaryFn,
}

impl Binary {
    pub const ADD: Binary = Binary { f: BinaryFn::Add };
    pub const SUB: Binary = Binary { f: BinaryFn::Sub };
    pub const MUL: Binary = Binary { f: BinaryFn::Mul };
    pub const DIV: Binary = Binary { f: BinaryFn::Div };
    pub const POW: Binary = Binary { f: BinaryFn::Pow };
}

impl OpSemantics for Binary {
    fn op_type(&self) -> &'static str {
        self.f.op_type()
    }

    fn class(&self) -> OpClass {
        OpClass::Binary(self.f)
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=2
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        Ok(vec![broadcast_shapes(&inputs[0], &inputs[1])?])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        broadcast_links(inputs, outputs)
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![broadcast_eval(inputs[0], inputs[1], |a, b| {
            self.f.apply(a, b)
        })?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The odometer walk reads the same operand elements as the per-element index arithmetic
    /// of the broadcasting rule, on shapes broadcast along every axis and rank.
    #[test]
    fn broadcast_walk_matches_per_element_indexing() {
        let shapes: [(&[usize], &[usize]); 7] = [
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 1, 4], &[1, 3, 1]),
            (&[5], &[1]),
            (&[1, 3, 1, 2], &[4, 1, 5, 1]),
            (&[], &[2, 2]),
        ];
        for (sa, sb) in shapes {
            let a = Tensor::from_fn(sa.to_vec(), |i| i as f32 + 1.0);
            let b = Tensor::from_fn(sb.to_vec(), |i| 100.0 * (i as f32 + 1.0));
            let got = broadcast_eval(&a, &b, |x, y| x + y).unwrap();
            let out = got.shape().to_vec();
            let r = out.len();
            let pad = |s: &[usize]| [vec![1; r - s.len()], s.to_vec()].concat();
            let (pa, pb) = (pad(sa), pad(sb));
            let (st_a, st_b, st_o) = (strides(&pa), strides(&pb), strides(&out));
            for (flat, v) in got.data().iter().enumerate() {
                let (mut ia, mut ib) = (0, 0);
                for ax in 0..r {
                    let idx = (flat / st_o[ax]) % out[ax];
                    ia += if pa[ax] != 1 { idx * st_a[ax] } else { 0 };
                    ib += if pb[ax] != 1 { idx * st_b[ax] } else { 0 };
                }
                assert_eq!(*v, a.data()[ia] + b.data()[ib], "{sa:?} + {sb:?} at {flat}");
            }
        }
    }

    #[test]
    fn broadcasting_rules() {
        let s = broadcast_shapes(&Shape::batched(&[8, 4, 4]), &Shape::known(&[8, 1, 1])).unwrap();
        assert_eq!(s, Shape::batched(&[8, 4, 4]));
        assert!(broadcast_shapes(&Shape::known(&[3]), &Shape::known(&[4])).is_err());
        let a = Tensor::from_fn(vec![2, 3], |i| i as f32);
        let b = Tensor::new(vec![3], vec![10., 20., 30.]).unwrap();
        assert_eq!(
            Binary::ADD.eval(&[&a, &b]).unwrap()[0].data(),
            &[10., 21., 32., 13., 24., 35.]
        );
        let c = Tensor::new(vec![2, 1], vec![2., 3.]).unwrap();
        assert_eq!(
            Binary::MUL.eval(&[&a, &c]).unwrap()[0].data(),
            &[0., 2., 4., 9., 12., 15.]
        );
    }

    #[test]
    fn broadcast_axis_is_not_linked() {
        let links = Binary::MUL.axis_links(
            &[Shape::batched(&[8, 4, 4]), Shape::batched(&[8, 1, 1])],
            &[Shape::batched(&[8, 4, 4])],
        );
        assert!(links.iter().any(|l| l.a == (Port::Input(1), 1)));
        assert!(!links.iter().any(|l| l.a == (Port::Input(1), 2)));
    }
}
