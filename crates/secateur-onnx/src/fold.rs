//! Integer arithmetic folded at import: the shape computations exporters emit around
//! `Reshape`, `Expand` and `Pad` (`Shape → Gather → Div → Concat`, `ConstantOfShape → Equal →
//! Where`, `Range`, reversed pad lists built with `Slice` and `Transpose`). Values are
//! [`SymConst`]s, whose elements may be the symbolic batch size; arithmetic on the batch size
//! itself is refused (the caller then reports the node as unsupported).

use crate::import::{SymConst, SymInt};

/// A binary integer operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntBinary {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Max,
    Min,
    And,
    Or,
}

impl IntBinary {
    /// The operator of an ONNX op type.
    pub fn from_op_type(op: &str) -> Option<Self> {
        Some(match op {
            "Add" => IntBinary::Add,
            "Sub" => IntBinary::Sub,
            "Mul" => IntBinary::Mul,
            "Div" => IntBinary::Div,
            "Mod" => IntBinary::Mod,
            "Equal" => IntBinary::Equal,
            "Less" => IntBinary::Less,
            "LessOrEqual" => IntBinary::LessOrEqual,
            "Greater" => IntBinary::Greater,
            "GreaterOrEqual" => IntBinary::GreaterOrEqual,
            "Max" => IntBinary::Max,
            "Min" => IntBinary::Min,
            "And" => IntBinary::And,
            "Or" => IntBinary::Or,
            _ => return None,
        })
    }

    fn apply(self, a: SymInt, b: SymInt) -> Option<SymInt> {
        use SymInt::Known;
        // the batch survives scaling by integers (attention folds heads into it)
        let (fa, fb) = (a.batch_factor(), b.batch_factor());
        let v = match (self, a, b) {
            (IntBinary::Mul, _, Known(k)) if fa.is_some() => return SymInt::batch_times(fa? * k),
            (IntBinary::Mul, Known(k), _) if fb.is_some() => return SymInt::batch_times(fb? * k),
            (IntBinary::Div, _, Known(k)) if fa.is_some() && k > 0 && fa? % k == 0 => {
                return SymInt::batch_times(fa? / k);
            }
            (IntBinary::Add | IntBinary::Sub, _, Known(0)) if fa.is_some() => return Some(a),
            // two multiples of the batch: `k·N / m·N = k / m` (a sequence length recovered
            // from a flattened `[N·S]`), sums and differences stay multiples
            (IntBinary::Div, _, _) if fa.is_some() && fb.is_some() => fa? / fb?,
            (IntBinary::Add, _, _) if fa.is_some() && fb.is_some() => {
                return SymInt::batch_times(fa? + fb?);
            }
            (IntBinary::Sub, _, _) if fa.is_some() && fa == fb => 0,
            (IntBinary::Sub, _, _) if fa.is_some() && fb.is_some() => {
                return SymInt::batch_times(fa? - fb?);
            }
            (IntBinary::Equal, _, _) if fa.is_some() && fb.is_some() => (fa == fb) as i64,
            // a batch size is at least 1: it equals no smaller constant (the -1 markers of
            // `Expand` shapes)
            (IntBinary::Equal, _, Known(v)) if fa.is_some() && v < 1 => 0,
            (IntBinary::Equal, Known(v), _) if fb.is_some() && v < 1 => 0,
            (IntBinary::Max | IntBinary::Min, _, Known(1)) if fa.is_some() => {
                // a batch is at least 1: max(N, 1) = N (shape clamps)
                return (self == IntBinary::Max).then_some(a);
            }
            (_, Known(x), Known(y)) => match self {
                IntBinary::Add => x.checked_add(y)?,
                IntBinary::Sub => x.checked_sub(y)?,
                IntBinary::Mul => x.checked_mul(y)?,
                // ONNX integer division truncates toward zero; Mod takes the divisor's sign
                IntBinary::Div => x.checked_div(y)?,
                IntBinary::Mod => {
                    let r = x.checked_rem(y)?;
                    if r != 0 && (r < 0) != (y < 0) {
                        r + y
                    } else {
                        r
                    }
                }
                IntBinary::Equal => (x == y) as i64,
                IntBinary::Less => (x < y) as i64,
                IntBinary::LessOrEqual => (x <= y) as i64,
                IntBinary::Greater => (x > y) as i64,
                IntBinary::GreaterOrEqual => (x >= y) as i64,
                IntBinary::Max => x.max(y),
                IntBinary::Min => x.min(y),
                IntBinary::And => (x != 0 && y != 0) as i64,
                IntBinary::Or => (x != 0 || y != 0) as i64,
            },
            _ => return None,
        };
        Some(Known(v))
    }
}

/// The most elements a constant computed at import may have (a shape computation never needs
/// more; a hostile file asking for more gets an error, not an allocation).
pub const MAX_FOLDED_ELEMENTS: usize = 1 << 26;

/// The number of elements of `dims`, if it is at most [`MAX_FOLDED_ELEMENTS`].
pub fn element_count(dims: &[usize]) -> Option<usize> {
    secateur_graph::checked_product(dims.iter().copied()).filter(|&n| n <= MAX_FOLDED_ELEMENTS)
}

/// Broadcast dims of two integer constants (NumPy rules).
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

/// The flat index into a constant of dims `src` (right-aligned, broadcast) for output `flat`.
fn broadcast_index(flat: usize, out: &[usize], src: &[usize]) -> usize {
    let off = out.len() - src.len();
    let (mut idx, mut stride_out, mut stride_src) = (0, 1, 1);
    for ax in (0..out.len()).rev() {
        let i = (flat / stride_out) % out[ax];
        stride_out *= out[ax];
        if ax >= off {
            let d = src[ax - off];
            if d != 1 {
                idx += i * stride_src;
            }
            stride_src *= d;
        }
    }
    idx
}

/// `op(a, b)` element-wise with broadcasting.
pub fn binary(op: IntBinary, a: &SymConst, b: &SymConst) -> Option<SymConst> {
    let dims = broadcast_dims(&a.dims, &b.dims)?;
    let n = element_count(&dims)?;
    let values = (0..n)
        .map(|f| {
            op.apply(
                a.values[broadcast_index(f, &dims, &a.dims)],
                b.values[broadcast_index(f, &dims, &b.dims)],
            )
        })
        .collect::<Option<Vec<_>>>()?;
    Some(SymConst { dims, values })
}

/// `Where(cond, x, y)` element-wise with broadcasting.
pub fn select(cond: &SymConst, x: &SymConst, y: &SymConst) -> Option<SymConst> {
    let dims = broadcast_dims(&broadcast_dims(&cond.dims, &x.dims)?, &y.dims)?;
    let n = element_count(&dims)?;
    let values = (0..n)
        .map(|f| {
            let c = cond.values[broadcast_index(f, &dims, &cond.dims)];
            match c {
                SymInt::Known(0) => Some(y.values[broadcast_index(f, &dims, &y.dims)]),
                SymInt::Known(_) => Some(x.values[broadcast_index(f, &dims, &x.dims)]),
                SymInt::Batch | SymInt::BatchTimes(_) => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some(SymConst { dims, values })
}

/// `a` broadcast to `dims` (`Expand`).
pub fn expand(a: &SymConst, target: &[usize]) -> Option<SymConst> {
    let dims = broadcast_dims(&a.dims, target)?;
    let n = element_count(&dims)?;
    let values = (0..n)
        .map(|f| a.values[broadcast_index(f, &dims, &a.dims)])
        .collect();
    Some(SymConst { dims, values })
}

/// `OneHot(indices, depth, [off, on])` with the new axis at `axis` (negative counts from the
/// end of the output): `on` where the position along it equals the index (negative indices
/// count from `depth`), `off` elsewhere. Exporters use it in shape arithmetic (GCViT's
/// `repeat` by a computed count).
pub fn one_hot(
    indices: &SymConst,
    depth: i64,
    off: SymInt,
    on: SymInt,
    axis: i64,
) -> Option<SymConst> {
    let rank = indices.dims.len() as i64 + 1;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) || depth < 1 {
        return None;
    }
    let axis = axis as usize;
    let mut dims = indices.dims.clone();
    dims.insert(axis, depth as usize);
    let n = element_count(&dims)?;
    let inner: usize = dims[axis + 1..].iter().product();
    let values = (0..n)
        .map(|f| {
            let (outer, at, rest) = (
                f / (inner * depth as usize),
                (f / inner) % depth as usize,
                f % inner,
            );
            let SymInt::Known(i) = indices.values[outer * inner + rest] else {
                return None;
            };
            let i = if i < 0 { i + depth } else { i };
            Some(if i == at as i64 { on } else { off })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(SymConst { dims, values })
}

/// `Range(start, limit, delta)`.
pub fn range(start: i64, limit: i64, delta: i64) -> Option<SymConst> {
    if delta == 0 {
        return None;
    }
    let n = ((limit - start) as f64 / delta as f64).ceil().max(0.0) as usize;
    if n > 1 << 24 {
        return None;
    }
    let values: Vec<SymInt> = (0..n as i64)
        .map(|k| SymInt::Known(start + k * delta))
        .collect();
    Some(SymConst {
        dims: vec![values.len()],
        values,
    })
}

/// A slice of an integer constant along `axes` (ONNX clamping rules, any step).
pub fn slice(
    a: &SymConst,
    axes: &[usize],
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
) -> Option<SymConst> {
    let mut cur = a.clone();
    for k in 0..axes.len() {
        let ax = *axes.get(k)?;
        let d = *cur.dims.get(ax)? as i64;
        let (start, end, step) = (*starts.get(k)?, *ends.get(k)?, *steps.get(k)?);
        if step == 0 {
            return None;
        }
        let norm = |v: i64| if v < 0 { v + d } else { v };
        let mut picked = Vec::new();
        if step > 0 {
            let (mut i, e) = (norm(start).clamp(0, d), norm(end).clamp(0, d));
            while i < e {
                picked.push(i as usize);
                i += step;
            }
        } else {
            let (mut i, e) = (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1));
            while i > e {
                picked.push(i as usize);
                i += step;
            }
        }
        let inner: usize = cur.dims[ax + 1..].iter().product();
        let outer: usize = cur.dims[..ax].iter().product();
        let mut values = Vec::with_capacity(outer * picked.len() * inner);
        for o in 0..outer {
            for &p in &picked {
                let base = (o * d as usize + p) * inner;
                values.extend_from_slice(&cur.values[base..base + inner]);
            }
        }
        cur.dims[ax] = picked.len();
        cur.values = values;
    }
    Some(cur)
}

/// `GatherElements(data, indices)` along `axis`: `out[i] = data[i with axis coordinate
/// indices[i]]`.
pub fn gather_elements(
    data: &SymConst,
    idx: &[i64],
    idx_dims: &[usize],
    axis: usize,
) -> Option<SymConst> {
    if data.dims.len() != idx_dims.len() || axis >= data.dims.len() {
        return None;
    }
    let d = data.dims[axis] as i64;
    let st_data = row_major(&data.dims);
    let st_idx = row_major(idx_dims);
    let mut values = Vec::with_capacity(idx.len());
    for (flat, &v) in idx.iter().enumerate() {
        let j = if v < 0 { v + d } else { v };
        if !(0..d).contains(&j) {
            return None;
        }
        let mut src = 0;
        for ax in 0..idx_dims.len() {
            let c = (flat / st_idx[ax]) % idx_dims[ax];
            let c = if ax == axis { j as usize } else { c };
            if c >= data.dims[ax] {
                return None;
            }
            src += c * st_data[ax];
        }
        values.push(data.values[src]);
    }
    Some(SymConst {
        dims: idx_dims.to_vec(),
        values,
    })
}

fn row_major(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// A 2-D transpose of an integer constant (pads reordered by `Transpose`); 1-D is identity.
pub fn transpose(a: &SymConst, perm: Option<&[i64]>) -> Option<SymConst> {
    match a.dims.len() {
        0 | 1 => Some(a.clone()),
        2 if perm.is_none_or(|p| p == [1, 0]) => {
            let (r, c) = (a.dims[0], a.dims[1]);
            let values = (0..r * c).map(|k| a.values[(k % r) * c + k / r]).collect();
            Some(SymConst {
                dims: vec![c, r],
                values,
            })
        }
        2 if perm == Some(&[0, 1]) => Some(a.clone()),
        _ => None,
    }
}

/// `Concat` of integer tensors along `axis` (negative counts from the end); `None` if the
/// ranks differ or the other axes do not match. Rank-0 parts (scalars written by older
/// exporters) join as one-element vectors.
pub fn concat(parts: &[&SymConst], axis: i64) -> Option<SymConst> {
    let dims_of = |p: &SymConst| {
        if p.dims.is_empty() {
            vec![1]
        } else {
            p.dims.clone()
        }
    };
    let first = dims_of(parts.first()?);
    let rank = first.len() as i64;
    let ax = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&ax) {
        return None;
    }
    let ax = ax as usize;
    let outer: usize = first[..ax].iter().product();
    let mut dims = first.clone();
    dims[ax] = 0;
    let mut rows: Vec<(usize, &[SymInt])> = Vec::with_capacity(parts.len());
    for p in parts {
        let d = dims_of(p);
        if d.len() != first.len() || d.iter().enumerate().any(|(i, &n)| i != ax && n != first[i]) {
            return None;
        }
        dims[ax] += d[ax];
        // each part contributes a run of d[ax]·inner values per outer index
        rows.push((d[ax..].iter().product(), &p.values));
    }
    let mut values = Vec::with_capacity(rows.iter().map(|(r, _)| r * outer).sum());
    for o in 0..outer {
        for (run, v) in &rows {
            values.extend_from_slice(v.get(o * run..(o + 1) * run)?);
        }
    }
    Some(SymConst { dims, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_joins_along_any_axis() {
        let m = |dims: Vec<usize>, v: &[i64]| SymConst {
            dims,
            values: v.iter().map(|&x| SymInt::Known(x)).collect(),
        };
        let a = m(vec![2, 2, 1], &[1, 2, 3, 4]);
        let b = m(vec![2, 2, 1], &[5, 6, 7, 8]);
        let c = concat(&[&a, &b], -1).unwrap();
        assert_eq!(c, m(vec![2, 2, 2], &[1, 5, 2, 6, 3, 7, 4, 8]));
        let c = concat(&[&a, &b], 0).unwrap();
        assert_eq!(c, m(vec![4, 2, 1], &[1, 2, 3, 4, 5, 6, 7, 8]));
        let c = concat(&[&a, &b], 1).unwrap();
        assert_eq!(c, m(vec![2, 4, 1], &[1, 2, 5, 6, 3, 4, 7, 8]));
        // scalars and vectors, as shape arithmetic writes them
        let c = concat(&[&m(vec![], &[3]), &m(vec![2], &[4, 5])], 0).unwrap();
        assert_eq!(c, m(vec![3], &[3, 4, 5]));
        assert!(concat(&[&a, &m(vec![2, 1, 1], &[1, 2])], -1).is_none());
        assert!(concat(&[&a, &b], 3).is_none());
    }

    fn k(v: &[i64]) -> SymConst {
        SymConst {
            dims: vec![v.len()],
            values: v.iter().map(|&x| SymInt::Known(x)).collect(),
        }
    }

    #[test]
    fn shape_arithmetic_keeps_the_batch_where_it_is_unchanged() {
        let shape = SymConst {
            dims: vec![4],
            values: vec![
                SymInt::Batch,
                SymInt::Known(116),
                SymInt::Known(7),
                SymInt::Known(7),
            ],
        };
        let half = binary(IntBinary::Div, &shape, &k(&[1, 2, 1, 1])).unwrap();
        assert_eq!(half.values[0], SymInt::Batch);
        assert_eq!(half.values[1], SymInt::Known(58));
        let doubled = binary(IntBinary::Mul, &shape, &k(&[2])).unwrap();
        assert_eq!(doubled.values[0], SymInt::BatchTimes(2));
        let back = binary(IntBinary::Div, &doubled, &k(&[2])).unwrap();
        assert_eq!(back.values[0], SymInt::Batch);
        assert!(
            binary(IntBinary::Add, &shape, &k(&[1])).is_none(),
            "N + 1 is not a SymInt"
        );
        // GPT-2's dynamo export recovers the sequence length as (N·S) / N
        let of = |v: SymInt| SymConst {
            dims: vec![],
            values: vec![v],
        };
        let flat = of(SymInt::BatchTimes(16));
        let seq = binary(IntBinary::Div, &flat, &of(SymInt::Batch)).unwrap();
        assert_eq!(seq.values, vec![SymInt::Known(16)]);
        let sum = binary(IntBinary::Add, &flat, &of(SymInt::Batch)).unwrap();
        assert_eq!(sum.values, vec![SymInt::BatchTimes(17)]);
        let none = binary(IntBinary::Sub, &flat, &flat).unwrap();
        assert_eq!(none.values, vec![SymInt::Known(0)]);
        assert!(
            binary(IntBinary::Sub, &of(SymInt::Batch), &flat).is_none(),
            "N - 16·N is not a SymInt"
        );
        assert_eq!(
            binary(IntBinary::Div, &k(&[-7]), &k(&[2])).unwrap().values,
            vec![SymInt::Known(-3)],
            "integer division truncates toward zero"
        );
        let hot = one_hot(&k(&[2, -1]), 3, SymInt::Known(0), SymInt::Batch, -1).unwrap();
        assert_eq!(hot.dims, vec![2, 3]);
        let b = SymInt::Batch;
        let z = SymInt::Known(0);
        assert_eq!(hot.values, vec![z, z, b, z, z, b]);
        let columns = one_hot(&k(&[0, 1]), 2, z, SymInt::Known(7), 0).unwrap();
        assert_eq!(columns.values, k(&[7, 0, 0, 7]).values);
        let picked = select(&k(&[1, 0]), &k(&[5, 6]), &k(&[-1])).unwrap();
        assert_eq!(picked.values, k(&[5, -1]).values);
        assert_eq!(range(0, 5, 2).unwrap().values, k(&[0, 2, 4]).values);
        let reversed = slice(&k(&[1, 2, 3, 4]), &[0], &[-1], &[i64::MIN], &[-2]).unwrap();
        assert_eq!(reversed.values, k(&[4, 2]).values);
        let rows = SymConst {
            dims: vec![3, 2],
            values: k(&[1, 2, 3, 4, 5, 6]).values,
        };
        let flipped = slice(&rows, &[0], &[-1], &[i64::MIN], &[-1]).unwrap();
        assert_eq!(flipped.values, k(&[5, 6, 3, 4, 1, 2]).values);
        let pads = SymConst {
            dims: vec![2, 2],
            values: k(&[1, 2, 3, 4]).values,
        };
        assert_eq!(
            transpose(&pads, None).unwrap().values,
            k(&[1, 3, 2, 4]).values
        );
        assert_eq!(expand(&k(&[3]), &[2]).unwrap().values, k(&[3, 3]).values);
    }
}
