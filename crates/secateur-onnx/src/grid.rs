//! Index tensors that depend on the batch size, folded at import. Exporters build the
//! positions of a batch-preserving gather from `Range(0, N)` (N the batch size): transformers'
//! attention mask is `GatherND(mask, [arange(N) ⊗ arange(seq)])`, and torch's `as_strided`
//! (torchvision's LayerNorm2d head in ConvNeXt) is `Gather(x.flatten(), arange(N)·S + offsets)`.
//! Such a tensor is affine in the batch coordinate, `value[p] = scale[p̂]·p[axis] + offset[p̂]`
//! (`p̂` is `p` with the batch axis at 0), so it is kept as a [`BatchGrid`] through the
//! unsqueezes, expands, additions and concatenations that build it, and its consumer becomes a
//! gather at constant positions within each sample (or a plain reshape when the positions are
//! the sample's own order).

use crate::fold::{IntBinary, element_count};
use crate::import::{SymConst, SymInt};

/// An integer tensor affine in its batch coordinate (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchGrid {
    /// The axis whose length is the batch size.
    pub axis: usize,
    /// The dims of `scale` and `offset`: the tensor's dims with 1 at `axis`.
    pub dims: Vec<usize>,
    pub scale: Vec<i64>,
    pub offset: Vec<i64>,
}

/// An operand of grid arithmetic: a grid or an integer constant known at import.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    Grid(&'a BatchGrid),
    Const(&'a SymConst),
}

/// The common form of both operands: (rank, batch axis, dims with 1 there, scale, offset).
struct Lifted {
    axis: Option<usize>,
    dims: Vec<usize>,
    scale: Vec<i64>,
    offset: Vec<i64>,
}

impl Operand<'_> {
    fn lift(self) -> Option<Lifted> {
        Some(match self {
            Operand::Grid(g) => Lifted {
                axis: Some(g.axis),
                dims: g.dims.clone(),
                scale: g.scale.clone(),
                offset: g.offset.clone(),
            },
            Operand::Const(c) => Lifted {
                axis: None,
                dims: c.dims.clone(),
                scale: vec![0; c.values.len()],
                offset: c.known_values()?,
            },
        })
    }
}

fn row_major(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Values of `src` (dims `from`, right-aligned) broadcast to `to`.
fn broadcast_to(src: &[i64], from: &[usize], to: &[usize]) -> Option<Vec<i64>> {
    let n = element_count(to)?;
    if from.len() > to.len() {
        return None;
    }
    let off = to.len() - from.len();
    let (st_to, st_from) = (row_major(to), row_major(from));
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let mut idx = 0;
        for ax in 0..from.len() {
            let c = (flat / st_to[ax + off]) % to[ax + off];
            match from[ax] {
                1 => {}
                d if d == to[ax + off] => idx += c * st_from[ax],
                _ => return None,
            }
        }
        out.push(src[idx]);
    }
    Some(out)
}

/// Broadcast dims (NumPy rules).
fn broadcast_dims(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i < r - s.len() {
            1
        } else {
            s[i - (r - s.len())]
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn normalize(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

impl BatchGrid {
    /// `Range(0, N, 1)`: the batch coordinate itself.
    pub fn arange() -> Self {
        BatchGrid {
            axis: 0,
            dims: vec![1],
            scale: vec![1],
            offset: vec![0],
        }
    }

    /// The tensor's shape, the batch size at `axis`.
    pub fn shape(&self) -> Vec<SymInt> {
        self.dims
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if i == self.axis {
                    SymInt::Batch
                } else {
                    SymInt::Known(d as i64)
                }
            })
            .collect()
    }

    /// `Unsqueeze` at `axes` (of the result).
    pub fn unsqueeze(&self, axes: &[i64]) -> Option<Self> {
        let rank = self.dims.len() + axes.len();
        let mut inserted = vec![false; rank];
        for &a in axes {
            let a = normalize(a, rank)?;
            if std::mem::replace(&mut inserted[a], true) {
                return None;
            }
        }
        let (mut dims, mut axis, mut old) = (Vec::with_capacity(rank), 0, 0);
        for (pos, &new) in inserted.iter().enumerate() {
            if new {
                dims.push(1);
            } else {
                if old == self.axis {
                    axis = pos;
                }
                dims.push(self.dims[old]);
                old += 1;
            }
        }
        Some(BatchGrid {
            axis,
            dims,
            scale: self.scale.clone(),
            offset: self.offset.clone(),
        })
    }

    /// `Squeeze` of `axes` (every length-1 axis but the batch when `None`).
    pub fn squeeze(&self, axes: Option<&[i64]>) -> Option<Self> {
        let rank = self.dims.len();
        let drop: Vec<usize> = match axes {
            Some(list) => list
                .iter()
                .map(|&a| normalize(a, rank))
                .collect::<Option<_>>()?,
            None => (0..rank)
                .filter(|&i| i != self.axis && self.dims[i] == 1)
                .collect(),
        };
        if drop.iter().any(|&a| a == self.axis || self.dims[a] != 1) {
            return None;
        }
        let axis = self.axis - drop.iter().filter(|&&a| a < self.axis).count();
        let dims = (0..rank)
            .filter(|i| !drop.contains(i))
            .map(|i| self.dims[i])
            .collect();
        Some(BatchGrid {
            axis,
            dims,
            scale: self.scale.clone(),
            offset: self.offset.clone(),
        })
    }

    /// `Expand` of a grid, or of a constant by a shape holding the batch size (a constant
    /// repeated over the batch: zero scale), to `target`.
    pub fn expand(what: Operand, target: &[SymInt]) -> Option<Self> {
        let l = what.lift()?;
        let rank = l.dims.len().max(target.len());
        let axis = match l.axis {
            Some(a) => a + (rank - l.dims.len()),
            None => {
                let at = target.iter().position(|t| *t == SymInt::Batch)?;
                at + (rank - target.len())
            }
        };
        let mut tdims = Vec::with_capacity(target.len());
        for (i, t) in target.iter().enumerate() {
            let at = i + (rank - target.len());
            tdims.push(match *t {
                SymInt::Known(1) => 1,
                SymInt::Batch if at == axis => 1,
                SymInt::Known(n) if n >= 1 && at != axis => n as usize,
                _ => return None,
            });
        }
        let dims = broadcast_dims(&l.dims, &tdims)?;
        if dims[axis] != 1 {
            return None;
        }
        Some(BatchGrid {
            axis,
            scale: broadcast_to(&l.scale, &l.dims, &dims)?,
            offset: broadcast_to(&l.offset, &l.dims, &dims)?,
            dims,
        })
    }

    /// Whether the values do not depend on the batch coordinate (a constant repeated over
    /// the batch).
    pub fn is_repeated_constant(&self) -> bool {
        self.scale.iter().all(|&s| s == 0)
    }

    /// Affine arithmetic: sums and differences of grids and constants, products by constants.
    /// `None` for anything that is not affine in the batch coordinate.
    pub fn binary(op: IntBinary, a: Operand, b: Operand) -> Option<Self> {
        let (la, lb) = (a.lift()?, b.lift()?);
        let rank = la.dims.len().max(lb.dims.len());
        let place = |l: &Lifted| l.axis.map(|ax| ax + rank - l.dims.len());
        let axis = match (place(&la), place(&lb)) {
            (Some(x), Some(y)) if x == y => x,
            (Some(x), None) | (None, Some(x)) => x,
            _ => return None,
        };
        let dims = broadcast_dims(&la.dims, &lb.dims)?;
        if dims[axis] != 1 {
            return None;
        }
        let spread = |l: &Lifted| -> Option<(Vec<i64>, Vec<i64>)> {
            Some((
                broadcast_to(&l.scale, &l.dims, &dims)?,
                broadcast_to(&l.offset, &l.dims, &dims)?,
            ))
        };
        let ((sa, oa), (sb, ob)) = (spread(&la)?, spread(&lb)?);
        let zip = |x: &[i64], y: &[i64], f: fn(i64, i64) -> Option<i64>| -> Option<Vec<i64>> {
            x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect()
        };
        let (scale, offset) = match op {
            IntBinary::Add => (
                zip(&sa, &sb, i64::checked_add)?,
                zip(&oa, &ob, i64::checked_add)?,
            ),
            IntBinary::Sub => (
                zip(&sa, &sb, i64::checked_sub)?,
                zip(&oa, &ob, i64::checked_sub)?,
            ),
            IntBinary::Mul if lb.axis.is_none() => (
                zip(&sa, &ob, i64::checked_mul)?,
                zip(&oa, &ob, i64::checked_mul)?,
            ),
            IntBinary::Mul if la.axis.is_none() => (
                zip(&oa, &sb, i64::checked_mul)?,
                zip(&oa, &ob, i64::checked_mul)?,
            ),
            _ => return None,
        };
        Some(BatchGrid {
            axis,
            dims,
            scale,
            offset,
        })
    }

    /// `Concat` along `axis` (not the batch axis) of grids.
    pub fn concat(parts: &[Operand], axis: i64) -> Option<Self> {
        let lifted: Vec<Lifted> = parts.iter().map(|p| p.lift()).collect::<Option<_>>()?;
        let rank = lifted.first()?.dims.len();
        let ax = normalize(axis, rank)?;
        // every part has the batch axis (a constant has length 1 there, not N)
        let batch = lifted.first()?.axis?;
        if ax == batch
            || lifted
                .iter()
                .any(|l| l.dims.len() != rank || l.axis != Some(batch))
        {
            return None;
        }
        let mut dims = lifted[0].dims.clone();
        dims[ax] = 0;
        for l in &lifted {
            let same = (0..rank).all(|i| i == ax || l.dims[i] == lifted[0].dims[i]);
            if !same || l.dims[batch] != 1 {
                return None;
            }
            dims[ax] += l.dims[ax];
        }
        let outer: usize = dims[..ax].iter().product();
        let inner: usize = dims[ax + 1..].iter().product();
        let (mut scale, mut offset) = (Vec::new(), Vec::new());
        for o in 0..outer {
            for l in &lifted {
                let len = l.dims[ax] * inner;
                scale.extend_from_slice(&l.scale[o * len..(o + 1) * len]);
                offset.extend_from_slice(&l.offset[o * len..(o + 1) * len]);
            }
        }
        element_count(&dims)?;
        Some(BatchGrid {
            axis: batch,
            dims,
            scale,
            offset,
        })
    }

    /// For `GatherND(data, self)` with `batch_dims = 0`, data `[N, d1, …]` (`sample` =
    /// `[d1, …]`): the flat positions within one sample that each output element reads, when
    /// the first index component is the batch coordinate and the others are constants. The
    /// output is `[N, (grid dims between batch and components)…, trailing data dims…]`.
    pub fn gather_nd_positions(&self, sample: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
        let rank = self.dims.len();
        let k = *self.dims.last()?;
        if self.axis != 0 || rank < 2 || k == 0 || k > sample.len() + 1 {
            return None;
        }
        let tuples = self.offset.len() / k;
        let index_dims = &sample[..k - 1];
        let trailing = &sample[k - 1..];
        let inner: usize = trailing.iter().product();
        let st = row_major(sample);
        let mut positions = Vec::with_capacity(tuples * inner);
        for t in 0..tuples {
            let (sc, of) = (
                &self.scale[t * k..(t + 1) * k],
                &self.offset[t * k..(t + 1) * k],
            );
            if sc[0] != 1 || of[0] != 0 || sc[1..].iter().any(|&s| s != 0) {
                return None;
            }
            let mut base = 0;
            for (c, &v) in of[1..].iter().enumerate() {
                let d = index_dims[c] as i64;
                let j = if v < 0 { v + d } else { v };
                if !(0..d).contains(&j) {
                    return None;
                }
                base += j as usize * st[c];
            }
            positions.extend(base..base + inner);
        }
        let mut out = self.dims[1..rank - 1].to_vec();
        out.extend_from_slice(trailing);
        Some((out, positions))
    }

    /// For `Gather(data, self, axis = 0)` of data whose axis 0 is the batch flattened with
    /// `size` sample positions (`[N·size, inner…]`): the flat positions within one sample of
    /// `size · inner` elements, when the grid steps by whole samples. The output is
    /// `[N, grid dims after the batch…, inner dims…]`.
    pub fn flat_gather_positions(&self, size: usize, inner: usize) -> Option<Vec<usize>> {
        if self.axis != 0 || self.scale.iter().any(|&s| s != size as i64) {
            return None;
        }
        let mut positions = Vec::with_capacity(self.offset.len() * inner);
        for &v in &self.offset {
            let j = usize::try_from(v).ok().filter(|&j| j < size)?;
            positions.extend(j * inner..(j + 1) * inner);
        }
        Some(positions)
    }
}

/// Whether `positions` read a sample of `size` elements in its own order (a plain reshape).
pub fn is_identity(positions: &[usize], size: usize) -> bool {
    positions.len() == size && positions.iter().enumerate().all(|(i, &p)| i == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(dims: &[usize], v: &[i64]) -> SymConst {
        SymConst {
            dims: dims.to_vec(),
            values: v.iter().map(|&x| SymInt::Known(x)).collect(),
        }
    }

    /// The grid's values for a concrete batch size, row-major.
    fn values(g: &BatchGrid, n: usize) -> Vec<i64> {
        let mut full = g.dims.clone();
        full[g.axis] = n;
        let st = row_major(&full);
        let total: usize = full.iter().product();
        let mut out = Vec::with_capacity(total);
        for flat in 0..total {
            let mut hat = 0;
            let mut b = 0;
            let st_hat = row_major(&g.dims);
            for ax in 0..full.len() {
                let c = (flat / st[ax]) % full[ax];
                if ax == g.axis {
                    b = c as i64;
                } else {
                    hat += c * st_hat[ax];
                }
            }
            out.push(g.scale[hat] * b + g.offset[hat]);
        }
        out
    }

    #[test]
    fn the_attention_mask_index_of_transformers_is_a_per_sample_identity() {
        // transformers 5: rows = arange(N)[:, None, None, None], cols = arange(S)[None, None,
        // None, :], both expanded to [N, 1, 1, S], unsqueezed and concatenated to
        // [N, 1, 1, S, 2]
        let seq = 3;
        let target = [
            SymInt::Batch,
            SymInt::Known(1),
            SymInt::Known(1),
            SymInt::Known(seq as i64),
        ];
        let rows = BatchGrid::arange().unsqueeze(&[1, 2]).unwrap();
        let rows = rows.unsqueeze(&[3]).unwrap();
        let rows = BatchGrid::expand(Operand::Grid(&rows), &target).unwrap();
        let rows = rows.unsqueeze(&[-1]).unwrap();
        let cols = k(&[1, 1, 1, seq], &[0, 1, 2]);
        let cols = BatchGrid::expand(Operand::Const(&cols), &target).unwrap();
        assert!(cols.is_repeated_constant() && !rows.is_repeated_constant());
        let cols = cols.unsqueeze(&[-1]).unwrap();
        let idx = BatchGrid::concat(&[Operand::Grid(&rows), Operand::Grid(&cols)], -1).unwrap();
        assert_eq!(idx.dims, vec![1, 1, 1, seq, 2]);
        assert_eq!(values(&idx, 2), vec![0, 0, 0, 1, 0, 2, 1, 0, 1, 1, 1, 2]);
        let (out, pos) = idx.gather_nd_positions(&[seq]).unwrap();
        assert_eq!(out, vec![1, 1, seq]);
        assert!(is_identity(&pos, seq));
        // reversed columns read the sample backwards
        let back = BatchGrid::expand(Operand::Const(&k(&[1, 1, 1, seq], &[2, 1, 0])), &target)
            .unwrap()
            .unsqueeze(&[-1])
            .unwrap();
        let idx = BatchGrid::concat(&[Operand::Grid(&rows), Operand::Grid(&back)], -1).unwrap();
        let (_, pos) = idx.gather_nd_positions(&[seq]).unwrap();
        assert_eq!(pos, vec![2, 1, 0]);
        // the batch coordinate must come first
        let swapped = BatchGrid::concat(&[Operand::Grid(&back), Operand::Grid(&rows)], -1).unwrap();
        assert!(swapped.gather_nd_positions(&[seq]).is_none());
        // a constant lacks the batch axis: it does not concatenate with a grid
        let plain = k(&[1, 1, 1, seq, 1], &[0, 1, 2]);
        assert!(BatchGrid::concat(&[Operand::Grid(&rows), Operand::Const(&plain)], -1).is_none());
    }

    #[test]
    fn as_strided_of_a_flattened_batch_steps_by_whole_samples() {
        // arange(N)·4 unsqueezed to [N, 1, 1] plus offsets [[1, 0]] ([1, 1, 2]): reads each
        // sample's elements 1 and 0
        let g = BatchGrid::binary(
            IntBinary::Mul,
            Operand::Grid(&BatchGrid::arange()),
            Operand::Const(&k(&[], &[4])),
        )
        .unwrap()
        .unsqueeze(&[1, 2])
        .unwrap();
        let g = BatchGrid::binary(
            IntBinary::Add,
            Operand::Grid(&g),
            Operand::Const(&k(&[1, 1, 2], &[1, 0])),
        )
        .unwrap();
        assert_eq!(values(&g, 2), vec![1, 0, 5, 4]);
        let pos = g.flat_gather_positions(4, 1).unwrap();
        assert_eq!(pos, vec![1, 0]);
        assert!(!is_identity(&pos, 4));
        assert_eq!(g.flat_gather_positions(4, 2).unwrap(), vec![2, 3, 0, 1]);
        assert!(
            g.flat_gather_positions(3, 1).is_none(),
            "steps are not samples"
        );
        assert!(
            BatchGrid::binary(
                IntBinary::Mul,
                Operand::Grid(&g),
                Operand::Grid(&BatchGrid::arange().unsqueeze(&[1, 2]).unwrap()),
            )
            .is_none(),
            "a product of two grids is not affine"
        );
        assert!(g.squeeze(Some(&[0])).is_none(), "the batch axis stays");
        assert_eq!(g.squeeze(Some(&[1])).unwrap().dims, vec![1, 2]);
    }
}
