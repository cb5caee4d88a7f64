//! Shape changes without data movement: `Flatten` and `Reshape`. Axes are linked by
//! decomposing the reshape into groups of input axes and output axes with equal size: a single
//! axis on both sides is an identity link, several input axes merged into one output axis link
//! the first input axis to the output with a block map (a channel becomes `H·W` features of a
//! following linear layer), one axis split into several links the other way. Anything else is
//! pinned. An axis of size 1 on one side only (an unsqueeze, `[H, S, S] → [1, H, S, S]`)
//! starts no group of its own, so the axes around it still link. Literal sizes in a `Reshape`
//! target follow when linked axes shrink.

use super::{AxisLink, IndexMap, OpClass, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// `[d0..dk-1, dk..] → [d0·…·dk-1, dk·…]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flatten {
    pub axis: i64,
}

/// Reshape to a target in ONNX notation: `0` copies the input dimension (unless `allowzero`),
/// `-1` is inferred.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    pub shape: Vec<i64>,
    pub allowzero: bool,
}

/// A group of consecutive input axes and output axes with the same number of elements.
#[derive(Clone, Debug, PartialEq)]
struct AxisGroup {
    inputs: std::ops::Range<usize>,
    outputs: std::ops::Range<usize>,
}

/// Splits a reshape into axis groups; `None` when the batch dimension moves.
fn decompose(input: &Shape, output: &Shape) -> Option<Vec<AxisGroup>> {
    let (a, b) = (input.dims(), output.dims());
    let mut groups = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i].batch_factor().is_some() && a[i] == b[j] {
            groups.push(AxisGroup {
                inputs: i..i + 1,
                outputs: j..j + 1,
            });
            i += 1;
            j += 1;
            continue;
        }
        // a size-1 axis facing a larger one is an inserted or dropped unit axis
        let unit = |d: Option<&Dim>| d == Some(&Dim::Known(1));
        if unit(a.get(i)) && !unit(b.get(j)) {
            i += 1;
            continue;
        }
        if unit(b.get(j)) && !unit(a.get(i)) {
            j += 1;
            continue;
        }
        let (i0, j0) = (i, j);
        let (mut pa, mut pb) = (1usize, 1usize);
        loop {
            let a_next = a.get(i).and_then(|d| d.known());
            let b_next = b.get(j).and_then(|d| d.known());
            if pa == pb && i > i0 && j > j0 {
                break;
            }
            if pa == pb && (i > i0 || j > j0) && (a_next.is_none() || b_next.is_none()) {
                break;
            }
            if (pa <= pb || b_next.is_none()) && a_next.is_some() {
                pa *= a_next?;
                i += 1;
            } else if b_next.is_some() {
                pb *= b_next?;
                j += 1;
            } else {
                return None;
            }
        }
        if pa != pb {
            return None;
        }
        groups.push(AxisGroup {
            inputs: i0..i,
            outputs: j0..j,
        });
    }
    Some(groups)
}

fn reshape_links(input: &Shape, output: &Shape) -> Vec<AxisLink> {
    let Some(groups) = decompose(input, output) else {
        return Vec::new();
    };
    let mut links = Vec::new();
    for g in groups {
        match (g.inputs.len(), g.outputs.len()) {
            (1, 1) => links.push(AxisLink::identity(
                (Port::Input(0), g.inputs.start),
                (Port::Output(0), g.outputs.start),
            )),
            (n, 1) if n > 1 => {
                let inner = input
                    .known_product(g.inputs.start + 1..g.inputs.end)
                    .unwrap_or(0);
                links.push(AxisLink {
                    a: (Port::Input(0), g.inputs.start),
                    b: (Port::Output(0), g.outputs.start),
                    map: IndexMap::block(inner),
                });
            }
            (1, n) if n > 1 => {
                let inner = output
                    .known_product(g.outputs.start + 1..g.outputs.end)
                    .unwrap_or(0);
                links.push(AxisLink {
                    a: (Port::Output(0), g.outputs.start),
                    b: (Port::Input(0), g.inputs.start),
                    map: IndexMap::block(inner),
                });
            }
            _ => {}
        }
    }
    links
}

fn reshape_eval(x: &Tensor, shape: Vec<usize>) -> Result<Vec<Tensor>, OpError> {
    Ok(vec![
        x.clone()
            .reshape(shape)
            .map_err(|e| OpError::new(e.to_string()))?,
    ])
}

impl Flatten {
    fn split(&self, rank: usize) -> Result<usize, OpError> {
        let a = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        if a < 0 || a > rank as i64 {
            op_bail!("axis {} is out of range for rank {rank}", self.axis);
        }
        Ok(a as usize)
    }
}

fn product_dim(dims: &[Dim]) -> Result<Dim, OpError> {
    let mut factor = None;
    let mut p = 1;
    for d in dims {
        match (d.batch_factor(), factor) {
            (Some(_), Some(_)) => op_bail!("two batch dimensions cannot be merged"),
            (Some(k), None) => factor = Some(k),
            (None, _) => p *= d.known().unwrap_or(1),
        }
    }
    Ok(match factor {
        None => Dim::Known(p),
        Some(k) => Dim::batch_times(k * p),
    })
}

impl OpSemantics for Flatten {
    fn class(&self) -> OpClass {
        OpClass::View
    }

    fn op_type(&self) -> &'static str {
        "Flatten"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        let k = self.split(x.rank())?;
        Ok(vec![Shape(vec![
            product_dim(&x.0[..k])?,
            product_dim(&x.0[k..])?,
        ])])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        reshape_links(&inputs[0], &outputs[0])
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let s = inputs[0].shape();
        let k = self.split(s.len())?;
        reshape_eval(
            inputs[0],
            vec![s[..k].iter().product(), s[k..].iter().product()],
        )
    }
}

impl Reshape {
    /// Resolves the target against a concrete or symbolic input shape.
    fn target(&self, x: &Shape) -> Result<Shape, OpError> {
        let mut out = Vec::with_capacity(self.shape.len());
        let mut infer_at = None;
        for (i, &d) in self.shape.iter().enumerate() {
            match d {
                -1 if infer_at.is_some() => op_bail!("shape {:?} has more than one -1", self.shape),
                -1 => {
                    infer_at = Some(i);
                    out.push(Dim::Known(1));
                }
                0 if !self.allowzero => out.push(*x.0.get(i).ok_or_else(|| {
                    OpError::new(format!(
                        "shape {:?} copies axis {i} that input {x} lacks",
                        self.shape
                    ))
                })?),
                d if d < 0 => op_bail!("invalid dimension {d} in shape {:?}", self.shape),
                d => out.push(Dim::Known(d as usize)),
            }
        }
        if out.iter().filter(|d| d.batch_factor().is_some()).count() > 1 {
            op_bail!("shape {:?} copies two batch dimensions", self.shape);
        }
        let in_factor = x.batch_factor();
        let out_factor = Shape(out.clone()).batch_factor();
        let count = |dims: &[Dim], factor: Option<usize>| {
            crate::shape::checked_product(dims.iter().filter_map(|d| d.known()).chain(factor))
        };
        // element counts: in_factor·in_known (times the batch) against out_factor·out_known
        let (Some(have), Some(per)) = (count(&x.0, in_factor), count(&out, out_factor)) else {
            op_bail!("shape {:?} is too large for input {x}", self.shape);
        };
        if let Some(i) = infer_at {
            if per == 0 || !have.is_multiple_of(per) {
                op_bail!(
                    "cannot infer -1 in {:?} for input {x}: {have} is not divisible by {per}",
                    self.shape
                );
            }
            let rest = have / per;
            out[i] = match (in_factor, out_factor) {
                (Some(_), None) => Dim::batch_times(rest),
                (None, Some(_)) => op_bail!(
                    "reshape {:?} of {x} copies a batch the input does not have",
                    self.shape
                ),
                _ => Dim::Known(rest),
            };
        } else if in_factor.is_some() != out_factor.is_some() || have != per {
            op_bail!(
                "cannot reshape {x} into {:?}: element counts differ",
                self.shape
            );
        }
        Ok(Shape(out))
    }
}

impl OpSemantics for Reshape {
    fn class(&self) -> OpClass {
        OpClass::View
    }

    fn op_type(&self) -> &'static str {
        "Reshape"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        Ok(vec![self.target(&inputs[0])?])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        reshape_links(&inputs[0], &outputs[0])
    }

    fn refit(&mut self, old: &[Shape], new: &[Shape]) -> Result<(), OpError> {
        let old_out = self.target(&old[0])?;
        let Some(groups) = decompose(&old[0], &old_out) else {
            return Ok(());
        };
        let mut new_out = old_out.0.clone();
        for g in groups {
            let new_in = &new[0].0[g.inputs.clone()];
            if g.outputs.len() == 1 {
                new_out[g.outputs.start] = product_dim(new_in)?;
            } else if g.inputs.len() == 1 && g.outputs.len() > 1 {
                let rest = old_out
                    .known_product(g.outputs.start + 1..g.outputs.end)
                    .unwrap_or(1);
                if let Dim::Known(n) = new_in[0] {
                    new_out[g.outputs.start] = Dim::Known(n / rest.max(1));
                }
            }
        }
        for (i, d) in self.shape.iter_mut().enumerate() {
            if *d > 0
                && let Dim::Known(n) = new_out[i]
            {
                *d = n as i64;
            }
        }
        Ok(())
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        0
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let shape = self.target(&Shape::known(inputs[0].shape()))?.resolve(1);
        reshape_eval(inputs[0], shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_links_channels_to_feature_blocks() {
        let x = Shape::batched(&[64, 4, 4]);
        let f = Flatten { axis: 1 };
        let out = f.infer(std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0], Shape::batched(&[1024]));
        let links = f.axis_links(&[x], &out);
        assert_eq!(links.len(), 2);
        let l = links.iter().find(|l| l.a == (Port::Input(0), 1)).unwrap();
        assert_eq!(l.map, IndexMap::block(16));
        assert_eq!(l.b, (Port::Output(0), 1));
    }

    #[test]
    fn reshape_targets() {
        let r = Reshape {
            shape: vec![-1, 1024],
            allowzero: false,
        };
        assert_eq!(
            r.infer(&[Shape::batched(&[64, 4, 4])]).unwrap()[0],
            Shape::batched(&[1024])
        );
        let r0 = Reshape {
            shape: vec![0, -1],
            allowzero: false,
        };
        assert_eq!(
            r0.infer(&[Shape::batched(&[8, 1, 1])]).unwrap()[0],
            Shape::batched(&[8])
        );
        let bad = Reshape {
            shape: vec![-1, 1000],
            allowzero: false,
        };
        assert!(bad.infer(&[Shape::batched(&[64, 4, 4])]).is_err());
        // [N, 8, 1, 1] -> [N, 8]: channels identity, trailing ones dropped
        let links = r0.axis_links(&[Shape::batched(&[8, 1, 1])], &[Shape::batched(&[8])]);
        assert!(
            links
                .iter()
                .any(|l| l.a == (Port::Input(0), 1) && l.map == IndexMap::IDENTITY)
        );
    }

    #[test]
    fn inserted_unit_axes_keep_the_others_linked() {
        // [H, S, S] -> [1, H, S, S] (an unsqueeze of a per-head bias) and back
        let (x, y) = (Shape::known(&[2, 8, 8]), Shape::known(&[1, 2, 8, 8]));
        let links = reshape_links(&x, &y);
        for ax in 0..3 {
            assert!(
                links.iter().any(|l| l.a == (Port::Input(0), ax)
                    && l.b == (Port::Output(0), ax + 1)
                    && l.map == IndexMap::IDENTITY),
                "axis {ax}: {links:?}"
            );
        }
        let back = reshape_links(&y, &x);
        assert!(
            back.iter()
                .any(|l| l.a == (Port::Input(0), 1) && l.b == (Port::Output(0), 0))
        );
        let mut r = Reshape {
            shape: vec![1, 2, 8, 8],
            allowzero: false,
        };
        r.refit(&[x], &[Shape::known(&[1, 8, 8])]).unwrap();
        assert_eq!(r.shape, vec![1, 1, 8, 8]);
    }

    #[test]
    fn reshape_refit_updates_literals() {
        let mut r = Reshape {
            shape: vec![-1, 1024],
            allowzero: false,
        };
        r.refit(
            &[Shape::batched(&[64, 4, 4])],
            &[Shape::batched(&[32, 4, 4])],
        )
        .unwrap();
        assert_eq!(r.shape, vec![-1, 512]);
        let mut split = Reshape {
            shape: vec![0, 64, 4, 4],
            allowzero: false,
        };
        split
            .refit(&[Shape::batched(&[1024])], &[Shape::batched(&[512])])
            .unwrap();
        assert_eq!(split.shape, vec![0, 32, 4, 4]);
    }
}
