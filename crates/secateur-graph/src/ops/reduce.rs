//! `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`, and the norms `ReduceL1`, `ReduceL2`
//! and `ReduceSumSquare` (`F.normalize` exports as an L2 norm) over any axes but the batch, keeping
//! them as size 1 or dropping them. Axes kept whole are linked to the output; reduced axes are
//! pinned (a spatial mean over `[N, C, H, W]` is imported as [`super::GlobalAveragePool`],
//! which the runtime runs faster).

use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};

/// How the elements of a reduced group combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    /// Sum of absolute values.
    L1,
    /// Square root of the sum of squares.
    L2,
    SumSquare,
}

impl ReduceKind {
    /// The ONNX operator type.
    pub fn op_type(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::SumSquare => "ReduceSumSquare",
        }
    }
}

/// A reduction over `axes` (sorted, distinct).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Vec<usize>,
    pub keep_dims: bool,
}

impl Reduce {
    fn check(&self, x: &Shape) -> Result<(), OpError> {
        for &a in &self.axes {
            match x.0.get(a) {
                None => op_bail!("axis {a} is out of range for input {x}"),
                Some(d) if d.batch_factor().is_some() => {
                    op_bail!("reducing over the batch axis {a} of {x} is not supported")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Output axis of input axis `ax`, if it survives.
    fn out_axis(&self, ax: usize) -> Option<usize> {
        if self.keep_dims {
            return Some(ax);
        }
        (!self.axes.contains(&ax)).then(|| ax - self.axes.iter().filter(|&&a| a < ax).count())
    }
}

impl OpSemantics for Reduce {
    fn op_type(&self) -> &'static str {
        self.kind.op_type()
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        self.check(x)?;
        let dims =
            x.0.iter()
                .enumerate()
                .filter_map(|(i, d)| match (self.axes.contains(&i), self.keep_dims) {
                    (true, true) => Some(Dim::Known(1)),
                    (true, false) => None,
                    (false, _) => Some(*d),
                })
                .collect();
        Ok(vec![Shape(dims)])
    }

    fn mixes_samples(&self, _inputs: &[Shape]) -> bool {
        self.axes.contains(&0)
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        (0..inputs[0].rank())
            .filter(|ax| !self.axes.contains(ax))
            .filter_map(|ax| {
                let o = self.out_axis(ax)?;
                Some(AxisLink::identity(
                    (Port::Input(0), ax),
                    (Port::Output(0), o),
                ))
            })
            .collect()
    }

    fn elementwise_ops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        inputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let s = x.shape();
        let out_shape = self.infer(&[Shape::known(s)])?[0].resolve(1);
        // accumulate into the keep-dims layout, which has the same element order
        let kept: Vec<usize> = s
            .iter()
            .enumerate()
            .map(|(i, &d)| if self.axes.contains(&i) { 1 } else { d })
            .collect();
        let st_kept = strides(&kept);
        let n_out: usize = kept.iter().product();
        let init = match self.kind {
            ReduceKind::Max => f32::NEG_INFINITY,
            ReduceKind::Min => f32::INFINITY,
            _ => 0.0,
        };
        let mut acc = vec![init; n_out];
        // walk the input in order with its index as an odometer: the output offset moves with
        // the kept axes, without a division per element
        let reduced: Vec<bool> = (0..s.len()).map(|a| self.axes.contains(&a)).collect();
        let mut idx = vec![0usize; s.len()];
        let mut o = 0;
        for &v in x.data() {
            acc[o] = match self.kind {
                ReduceKind::Sum | ReduceKind::Mean => acc[o] + v,
                ReduceKind::Max => acc[o].max(v),
                ReduceKind::Min => acc[o].min(v),
                ReduceKind::L1 => acc[o] + v.abs(),
                ReduceKind::L2 | ReduceKind::SumSquare => acc[o] + v * v,
            };
            for ax in (0..s.len()).rev() {
                idx[ax] += 1;
                if !reduced[ax] {
                    o += st_kept[ax];
                }
                if idx[ax] < s[ax] {
                    break;
                }
                if !reduced[ax] {
                    o -= st_kept[ax] * s[ax];
                }
                idx[ax] = 0;
            }
        }
        if self.kind == ReduceKind::Mean {
            let count: usize = self.axes.iter().map(|&a| s[a]).product();
            acc.iter_mut().for_each(|v| *v /= count.max(1) as f32);
        }
        if self.kind == ReduceKind::L2 {
            acc.iter_mut().for_each(|v| *v = v.sqrt());
        }
        Ok(vec![
            Tensor::new(out_shape, acc).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_any_axes_with_or_without_keeping_them() {
        let x = Tensor::from_fn(vec![2, 3, 2], |i| i as f32);
        let sum = Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keep_dims: false,
        };
        let y = sum.eval(&[&x]).unwrap().remove(0);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.data(), &[6., 9., 24., 27.]);
        let max = Reduce {
            kind: ReduceKind::Max,
            axes: vec![1, 2],
            keep_dims: true,
        };
        let y = max.eval(&[&x]).unwrap().remove(0);
        assert_eq!((y.shape(), y.data()), (&[2usize, 1, 1][..], &[5., 11.][..]));
        let mean = Reduce {
            kind: ReduceKind::Mean,
            axes: vec![2],
            keep_dims: false,
        };
        assert_eq!(mean.eval(&[&x]).unwrap()[0].data()[..2], [0.5, 2.5]);
        // the batch axis cannot be reduced; the last axis of a batched input can
        assert!(sum.infer(&[Shape::batched(&[4])]).is_ok());
        let over_batch = Reduce {
            kind: ReduceKind::Sum,
            axes: vec![0],
            keep_dims: false,
        };
        assert!(over_batch.infer(&[Shape::batched(&[4])]).is_err());
        let links = sum.axis_links(&[Shape::batched(&[3, 2])], &[]);
        assert!(links.contains(&AxisLink::identity(
            (Port::Input(0), 2),
            (Port::Output(0), 1)
        )));
    }
}
