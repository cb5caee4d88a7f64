//! `Slice` (ranges with steps, negative ones included, on any axes but the batch) and `Pad`
//! (constant, reflect or edge padding). Axes they leave whole are linked to the output; a
//! sliced or padded axis is pinned, so channels are never pruned through a slice of them
//! (ShuffleNet's channel split, the zero channels of a ResNet option-A shortcut).

use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, strides};
use serde::{Deserialize, Serialize};

/// Elements `start, start + step, ...` before `end` along each listed axis (ONNX semantics:
/// negative indices count from the end, out-of-range bounds are clamped).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub axes: Vec<usize>,
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub steps: Vec<i64>,
}

/// One sliced axis, resolved against its size: the indices taken are `start + k·step` for
/// `k < len`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AxisRange {
    start: i64,
    step: i64,
    len: usize,
}

fn resolve_range(dim: usize, start: i64, end: i64, step: i64) -> Result<AxisRange, OpError> {
    if step == 0 {
        op_bail!("a slice step must not be zero");
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v + d } else { v };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1))
    };
    let (span, stride) = if step > 0 {
        (e - s, step)
    } else {
        (s - e, -step)
    };
    let len = (span.max(0) as u64).div_ceil(stride as u64);
    Ok(AxisRange {
        start: s,
        step,
        len: len as usize,
    })
}

impl Slice {
    /// Per axis of concrete input dims `dims`: the first index taken, the step and the count
    /// (`(0, 1, d)` for axes the slice leaves whole).
    pub fn resolved(&self, dims: &[usize]) -> Result<Vec<(i64, i64, usize)>, OpError> {
        let ranges = self.ranges(&Shape::known(dims))?;
        Ok(dims
            .iter()
            .zip(ranges)
            .map(|(&d, r)| r.map_or((0, 1, d), |r| (r.start, r.step, r.len)))
            .collect())
    }

    /// The range taken along each axis of `x` (whole axes for those not listed).
    fn ranges(&self, x: &Shape) -> Result<Vec<Option<AxisRange>>, OpError> {
        let n = self.axes.len();
        if self.starts.len() != n || self.ends.len() != n || self.steps.len() != n {
            op_bail!("axes, starts, ends and steps must have the same length");
        }
        let mut ranges = vec![None; x.rank()];
        for k in 0..n {
            let ax = self.axes[k];
            if ax >= x.rank() {
                op_bail!("axis {ax} is out of range for input {x}");
            }
            let Dim::Known(dim) = x.0[ax] else {
                op_bail!("slicing the batch axis is not supported");
            };
            let r = resolve_range(dim, self.starts[k], self.ends[k], self.steps[k])?;
            let whole = r.start == 0 && r.step == 1 && r.len == dim;
            ranges[ax] = (!whole).then_some(r);
        }
        Ok(ranges)
    }
}

impl OpSemantics for Slice {
    fn op_type(&self) -> &'static str {
        "Slice"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        let ranges = self.ranges(x)?;
        let dims =
            x.0.iter()
                .zip(&ranges)
                .map(|(d, r)| r.map_or(*d, |r| Dim::Known(r.len)))
                .collect();
        Ok(vec![Shape(dims)])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        let Ok(ranges) = self.ranges(&inputs[0]) else {
            return Vec::new();
        };
        (0..inputs[0].rank())
            .filter(|&ax| ranges[ax].is_none())
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let ranges = self.ranges(&Shape::known(x.shape()))?;
        let out_shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&ranges)
            .map(|(&d, r)| r.map_or(d, |r| r.len))
            .collect();
        let (st_in, st_out) = (strides(x.shape()), strides(&out_shape));
        let n: usize = out_shape.iter().product();
        let mut out = Vec::with_capacity(n);
        for flat in 0..n {
            let mut src = 0i64;
            for ax in 0..out_shape.len() {
                let i = ((flat / st_out[ax]) % out_shape[ax]) as i64;
                let j = ranges[ax].map_or(i, |r| r.start + i * r.step);
                src += j * st_in[ax] as i64;
            }
            out.push(x.data()[src as usize]);
        }
        Ok(vec![
            Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

/// How `Pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum PadMode {
    Constant(f32),
    Reflect,
    Edge,
}

/// Padding of every axis by `before[a]` and `after[a]` elements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pad {
    pub before: Vec<usize>,
    pub after: Vec<usize>,
    pub mode: PadMode,
}

impl Pad {
    fn padded(&self, ax: usize) -> bool {
        self.before.get(ax).copied().unwrap_or(0) + self.after.get(ax).copied().unwrap_or(0) > 0
    }

    /// The input index read by output index `o` along an axis of size `n` padded by `before`,
    /// or `None` for the constant border.
    fn source(&self, o: usize, before: usize, n: usize) -> Option<usize> {
        let i = o as i64 - before as i64;
        if (0..n as i64).contains(&i) {
            return Some(i as usize);
        }
        match self.mode {
            PadMode::Constant(_) => None,
            PadMode::Edge => Some(i.clamp(0, n as i64 - 1) as usize),
            PadMode::Reflect => {
                let period = 2 * (n as i64 - 1).max(1);
                let m = i.rem_euclid(period);
                Some(if m < n as i64 { m } else { period - m } as usize)
            }
        }
    }
}

impl OpSemantics for Pad {
    fn op_type(&self) -> &'static str {
        "Pad"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        if self.before.len() != x.rank() || self.after.len() != x.rank() {
            op_bail!(
                "pads must give a begin and an end for each of the {} axes",
                x.rank()
            );
        }
        let mut dims = Vec::with_capacity(x.rank());
        for (ax, d) in x.0.iter().enumerate() {
            dims.push(match *d {
                Dim::Known(n) => {
                    if self.mode == PadMode::Reflect && self.padded(ax) && n < 2 {
                        op_bail!("reflect padding needs at least 2 elements on axis {ax}");
                    }
                    Dim::Known(n + self.before[ax] + self.after[ax])
                }
                _ if self.padded(ax) => op_bail!("padding the batch axis is not supported"),
                batched => batched,
            });
        }
        Ok(vec![Shape(dims)])
    }

    fn axis_links(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        (0..inputs[0].rank())
            .filter(|&ax| !self.padded(ax))
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let s = x.shape();
        let out_shape = self.infer(&[Shape::known(s)])?[0].resolve(1);
        let (st_in, st_out) = (strides(s), strides(&out_shape));
        let fill = match self.mode {
            PadMode::Constant(v) => v,
            _ => 0.0,
        };
        let n: usize = out_shape.iter().product();
        let mut out = Vec::with_capacity(n);
        for flat in 0..n {
            let mut src = Some(0usize);
            for ax in 0..s.len() {
                let o = (flat / st_out[ax]) % out_shape[ax];
                src = match (src, self.source(o, self.before[ax], s[ax])) {
                    (Some(acc), Some(i)) => Some(acc + i * st_in[ax]),
                    _ => None,
                };
            }
            out.push(src.map_or(fill, |i| x.data()[i]));
        }
        Ok(vec![
            Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_with_steps_like_numpy() {
        let x = Tensor::from_fn(vec![2, 6], |i| i as f32);
        let every_other = Slice {
            axes: vec![1],
            starts: vec![0],
            ends: vec![i64::MAX],
            steps: vec![2],
        };
        assert_eq!(
            every_other.eval(&[&x]).unwrap()[0].data(),
            &[0., 2., 4., 6., 8., 10.]
        );
        let reversed = Slice {
            axes: vec![1],
            starts: vec![-1],
            ends: vec![i64::MIN],
            steps: vec![-1],
        };
        let r = reversed.eval(&[&x]).unwrap().remove(0);
        assert_eq!(&r.data()[..6], &[5., 4., 3., 2., 1., 0.]);
        let tail = Slice {
            axes: vec![1],
            starts: vec![4],
            ends: vec![100],
            steps: vec![1],
        };
        assert_eq!(
            tail.infer(&[Shape::batched(&[6])]).unwrap()[0],
            Shape::batched(&[2])
        );
        // the sliced axis is pinned, the batch axis linked
        let links = tail.axis_links(&[Shape::batched(&[6])], &[]);
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].a, (Port::Input(0), 0));
    }

    #[test]
    fn pads_in_every_mode() {
        let x = Tensor::new(vec![1, 3], vec![1., 2., 3.]).unwrap();
        let pad = |mode| Pad {
            before: vec![0, 2],
            after: vec![0, 1],
            mode,
        };
        let y = |p: Pad| p.eval(&[&x]).unwrap().remove(0).into_data();
        assert_eq!(y(pad(PadMode::Constant(9.))), vec![9., 9., 1., 2., 3., 9.]);
        assert_eq!(y(pad(PadMode::Edge)), vec![1., 1., 1., 2., 3., 3.]);
        assert_eq!(y(pad(PadMode::Reflect)), vec![3., 2., 1., 2., 3., 2.]);
        assert!(
            pad(PadMode::Edge).infer(&[Shape::batched(&[3])]).is_ok(),
            "padding a non-batch axis of a batched input is fine"
        );
    }
}
