//! Element-wise steps at memory speed: a broadcasting binary operator is reduced to its
//! canonical form once (size-1 axes of the output dropped, neighbouring axes with the same
//! broadcast pattern merged), then run as contiguous inner loops — both operands full, or one
//! of them a scalar repeated along the run (a squeeze-excitation scale, a per-channel bias) —
//! compiled per instruction set so they vectorise; element-wise functions use the vector math
//! of [`super::vmath`].

use super::isa::{Isa, dispatch};
use super::vmath;
use secateur_graph::{BinaryFn, Pointwise};

/// A broadcast in canonical form: output dims and, per axis, whether each operand steps along
/// it (its stride) or repeats (stride 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broadcast {
    dims: Vec<usize>,
    stride_a: Vec<usize>,
    stride_b: Vec<usize>,
}

impl Broadcast {
    /// The canonical form of `a` (dims `sa`) ∘ `b` (dims `sb`) into dims `so` (NumPy rules).
    pub fn new(sa: &[usize], sb: &[usize], so: &[usize]) -> Self {
        let r = so.len();
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut p = vec![1; r - s.len().min(r)];
            p.extend_from_slice(&s[s.len().saturating_sub(r)..]);
            p
        };
        let (pa, pb) = (pad(sa), pad(sb));
        // per axis: (dim, a steps, b steps), size-1 output axes dropped
        let mut axes: Vec<(usize, bool, bool)> = (0..r)
            .filter(|&i| so[i] != 1)
            .map(|i| (so[i], pa[i] != 1, pb[i] != 1))
            .collect();
        // merge neighbours with the same pattern
        let mut merged: Vec<(usize, bool, bool)> = Vec::new();
        for ax in axes.drain(..) {
            match merged.last_mut() {
                Some(last) if last.1 == ax.1 && last.2 == ax.2 => last.0 *= ax.0,
                _ => merged.push(ax),
            }
        }
        if merged.is_empty() {
            merged.push((1, true, true));
        }
        let strides = |steps: fn(&(usize, bool, bool)) -> bool| {
            let mut st = vec![0; merged.len()];
            let mut acc = 1;
            for (i, ax) in merged.iter().enumerate().rev() {
                if steps(ax) {
                    st[i] = acc;
                    acc *= ax.0;
                }
            }
            st
        };
        Broadcast {
            stride_a: strides(|a| a.1),
            stride_b: strides(|a| a.2),
            dims: merged.iter().map(|a| a.0).collect(),
        }
    }

    /// Elements of the output.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the output's rows: the runs along the last (merged) axis that every kernel
    /// walks as one inner loop.
    pub fn row(&self) -> usize {
        self.dims.last().copied().unwrap_or(1)
    }
}

/// `y = f(a, b)` with the broadcast `bc`.
pub fn binary(isa: Isa, f: BinaryFn, bc: &Broadcast, a: &[f32], b: &[f32], y: &mut [f32]) {
    binary_dispatch(isa, f, bc, a, b, y, 0)
}

/// Rows `first_row..` of `y = f(a, b)` (rows of [`Broadcast::row`] values), as many as `y`
/// holds whole: a piece of the output for one thread.
pub fn binary_rows(
    isa: Isa,
    f: BinaryFn,
    bc: &Broadcast,
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
    first_row: usize,
) {
    binary_dispatch(isa, f, bc, a, b, y, first_row)
}

dispatch!(
    fn binary_dispatch[][](f: BinaryFn, bc: &Broadcast, a: &[f32], b: &[f32], y: &mut [f32], first_row: usize) => binary_body
);

#[inline(always)]
fn binary_body<const FMA: bool>(
    f: BinaryFn,
    bc: &Broadcast,
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
    first: usize,
) {
    match f {
        BinaryFn::Add => walk(bc, a, b, y, first, |p, q| p + q),
        BinaryFn::Sub => walk(bc, a, b, y, first, |p, q| p - q),
        BinaryFn::Mul => walk(bc, a, b, y, first, |p, q| p * q),
        BinaryFn::Div => walk(bc, a, b, y, first, |p, q| p / q),
        BinaryFn::Max => walk(bc, a, b, y, first, |p, q| p.max(q)),
        BinaryFn::Min => walk(bc, a, b, y, first, |p, q| p.min(q)),
        // masks: comparisons and logic on 0/1 values, each its own loop so it vectorises
        BinaryFn::Equal => walk(bc, a, b, y, first, |p, q| truth(p == q)),
        BinaryFn::Less => walk(bc, a, b, y, first, |p, q| truth(p < q)),
        BinaryFn::Greater => walk(bc, a, b, y, first, |p, q| truth(p > q)),
        BinaryFn::And => walk(bc, a, b, y, first, |p, q| truth(p != 0.0 && q != 0.0)),
        BinaryFn::Or => walk(bc, a, b, y, first, |p, q| truth(p != 0.0 || q != 0.0)),
        other => walk(bc, a, b, y, first, |p, q| other.apply(p, q)),
    }
}

/// 1 for true, 0 for false.
#[inline(always)]
fn truth(c: bool) -> f32 {
    if c { 1.0 } else { 0.0 }
}

/// The output's rows from `first` (as many as `y` holds), the last axis as an inner loop of
/// one of four shapes.
#[inline(always)]
fn walk(
    bc: &Broadcast,
    a: &[f32],
    b: &[f32],
    y: &mut [f32],
    first: usize,
    f: impl Fn(f32, f32) -> f32,
) {
    let r = bc.dims.len();
    let inner = bc.dims[r - 1];
    let (ia, ib) = (bc.stride_a[r - 1] != 0, bc.stride_b[r - 1] != 0);
    let outer: usize = bc.dims[..r - 1].iter().product();
    let rows = (y.len() / inner.max(1)).min(outer.saturating_sub(first));
    // the odometer's position at row `first`
    let mut idx = vec![0usize; r - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    let mut rest = first;
    for ax in (0..r - 1).rev() {
        idx[ax] = rest % bc.dims[ax];
        rest /= bc.dims[ax];
        oa += idx[ax] * bc.stride_a[ax];
        ob += idx[ax] * bc.stride_b[ax];
    }
    for o in 0..rows {
        let out = &mut y[o * inner..(o + 1) * inner];
        match (ia, ib) {
            (true, true) => {
                for ((v, p), q) in out
                    .iter_mut()
                    .zip(&a[oa..oa + inner])
                    .zip(&b[ob..ob + inner])
                {
                    *v = f(*p, *q);
                }
            }
            (true, false) => {
                let q = b[ob];
                for (v, p) in out.iter_mut().zip(&a[oa..oa + inner]) {
                    *v = f(*p, q);
                }
            }
            (false, true) => {
                let p = a[oa];
                for (v, q) in out.iter_mut().zip(&b[ob..ob + inner]) {
                    *v = f(p, *q);
                }
            }
            (false, false) => out.fill(f(a[oa], b[ob])),
        }
        // odometer over the outer axes
        for ax in (0..r - 1).rev() {
            idx[ax] += 1;
            oa += bc.stride_a[ax];
            ob += bc.stride_b[ax];
            if idx[ax] < bc.dims[ax] {
                break;
            }
            oa -= bc.stride_a[ax] * bc.dims[ax];
            ob -= bc.stride_b[ax] * bc.dims[ax];
            idx[ax] = 0;
        }
    }
}

/// Rows `first_row..` of `a` broadcast to the output of `bc` (built with `a`'s dims for
/// both operands), as many rows as `y` holds whole: `Expand`.
pub fn broadcast_rows(bc: &Broadcast, a: &[f32], y: &mut [f32], first_row: usize) {
    walk(bc, a, a, y, first_row, |p, _| p)
}

dispatch!(
    /// `y = x·scale[c] + shift[c]` over whole rows of `scale.len()` channels × `inner` values
    /// (`inner` 1: channels-last; the plane size: channels-first), with `RELU` clamped at
    /// zero in the same pass.
    pub fn channel_affine[const RELU: bool][RELU,](
        scale: &[f32],
        shift: &[f32],
        inner: usize,
        x: &[f32],
        y: &mut [f32],
    ) => channel_affine_body
);

#[inline(always)]
fn channel_affine_body<const RELU: bool, const FMA: bool>(
    scale: &[f32],
    shift: &[f32],
    inner: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let affine = |v: f32, s: f32, b: f32| {
        let r = if FMA { v.mul_add(s, b) } else { v * s + b };
        if RELU { r.max(0.0) } else { r }
    };
    let row = scale.len() * inner;
    for (yr, xr) in y.chunks_exact_mut(row).zip(x.chunks_exact(row)) {
        if inner == 1 {
            for ((o, v), (s, b)) in yr.iter_mut().zip(xr).zip(scale.iter().zip(shift)) {
                *o = affine(*v, *s, *b);
            }
            continue;
        }
        for ((yp, xp), (s, b)) in yr
            .chunks_exact_mut(inner)
            .zip(xr.chunks_exact(inner))
            .zip(scale.iter().zip(shift))
        {
            for (o, v) in yp.iter_mut().zip(xp) {
                *o = affine(*v, *s, *b);
            }
        }
    }
}

/// `y = f(y)` element-wise, in place.
pub fn pointwise_in_place(isa: Isa, f: Pointwise, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the instruction set was detected on this CPU (`Isa::detect`).
        Isa::Avx512 => return unsafe { vmath::map_in_place(f, y) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { vmath::v256::map_in_place(f, y) },
        Isa::Portable => {}
    }
    let _ = isa;
    for v in y.iter_mut() {
        *v = f.apply(*v);
    }
}

/// `y = f(x)` element-wise.
pub fn pointwise(isa: Isa, f: Pointwise, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: the instruction set was detected on this CPU (`Isa::detect`).
        Isa::Avx512 => return unsafe { vmath::map(f, &x[..n], &mut y[..n]) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { vmath::v256::map(f, &x[..n], &mut y[..n]) },
        Isa::Portable => {}
    }
    let _ = isa;
    for (o, v) in y[..n].iter_mut().zip(&x[..n]) {
        *o = f.apply(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize], so: &[usize]) -> Vec<f32> {
        let r = so.len();
        let pad = |s: &[usize]| {
            let mut p = vec![1; r - s.len()];
            p.extend_from_slice(s);
            p
        };
        let (pa, pb) = (pad(sa), pad(sb));
        let n: usize = so.iter().product();
        (0..n)
            .map(|flat| {
                let (mut ia, mut ib, mut rest) = (0, 0, flat);
                let (mut ma, mut mb) = (1, 1);
                for ax in (0..r).rev() {
                    let i = rest % so[ax];
                    rest /= so[ax];
                    if pa[ax] != 1 {
                        ia += i * ma;
                    }
                    if pb[ax] != 1 {
                        ib += i * mb;
                    }
                    ma *= pa[ax];
                    mb *= pb[ax];
                }
                a[ia] * 10.0 + b[ib]
            })
            .collect()
    }

    #[test]
    fn broadcasts_match_the_index_by_index_definition() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[2, 3, 4, 5], &[2, 3, 1, 1], &[2, 3, 4, 5]),
            (&[2, 4, 5, 3], &[2, 1, 1, 3], &[2, 4, 5, 3]),
            (&[3, 1], &[1, 4], &[3, 4]),
            (&[1], &[2, 3], &[2, 3]),
            (&[2, 1, 5], &[2, 3, 1], &[2, 3, 5]),
            (&[4], &[4], &[4]),
            (&[1, 1], &[1, 1], &[1, 1]),
        ];
        for &(sa, sb, so) in cases {
            let a: Vec<f32> = (0..sa.iter().product::<usize>())
                .map(|i| i as f32)
                .collect();
            let b: Vec<f32> = (0..sb.iter().product::<usize>())
                .map(|i| i as f32 * 0.5)
                .collect();
            let bc = Broadcast::new(sa, sb, so);
            let want = reference(&a, sa, &b, sb, so);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; bc.len()];
                let a10: Vec<f32> = a.iter().map(|v| v * 10.0).collect();
                binary(isa, BinaryFn::Add, &bc, &a10, &b, &mut y);
                assert_eq!(y, want, "{sa:?} {sb:?} {so:?} {isa}");
                // the same output in pieces of whole rows, as threads compute it
                let row = bc.row();
                for rows in 1..4 {
                    let mut pieces = vec![f32::NAN; bc.len()];
                    for (i, ys) in pieces.chunks_mut(rows * row).enumerate() {
                        binary_rows(isa, BinaryFn::Add, &bc, &a10, &b, ys, i * rows);
                    }
                    assert_eq!(pieces, want, "{sa:?} {sb:?} {so:?} {isa} by {rows} rows");
                }
            }
            // `Expand`: `a` alone broadcast to the output, in pieces of rows
            let copy = Broadcast::new(sa, sa, so);
            let want = reference(&a, sa, &[0.0], &[1], so);
            let a10: Vec<f32> = a.iter().map(|v| v * 10.0).collect();
            let mut got = vec![f32::NAN; copy.len()];
            for (i, ys) in got.chunks_mut(copy.row()).enumerate() {
                broadcast_rows(&copy, &a10, ys, i);
            }
            assert_eq!(got, want, "expand {sa:?} to {so:?}");
        }
    }

    /// Every operator's loop equals its scalar definition on values that include 0/1 masks,
    /// equal pairs, signed zeros and NaN.
    #[test]
    fn every_operator_matches_its_definition() {
        let vals = [0.0, -0.0, 1.0, 2.0, -3.5, f32::NAN, 1.0, 0.0];
        let a: Vec<f32> = (0..64).map(|i| vals[i % 8]).collect();
        let b: Vec<f32> = (0..64).map(|i| vals[(i / 8) % 8]).collect();
        let bc = Broadcast::new(&[64], &[64], &[64]);
        for f in BinaryFn::ALL {
            for isa in Isa::available() {
                let mut y = vec![0.0; 64];
                binary(isa, f, &bc, &a, &b, &mut y);
                for ((&p, &q), &v) in a.iter().zip(&b).zip(&y) {
                    let want = f.apply(p, q);
                    let same = v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan());
                    assert!(same, "{f:?}({p}, {q}) = {v}, want {want} ({isa})");
                }
            }
        }
    }
}
