//! `Where(cond, x, y)` with NumPy broadcasting of all three operands, in the canonical form of
//! [`super::elementwise::Broadcast`] extended to three strides: output axes of size 1
//! dropped, neighbours with the same stepping pattern merged, the last axis walked as one inner
//! loop. Attention masks (`Where(mask, scores, -inf)`, the NaN guard of exported
//! `scaled_dot_product_attention`) run through it at memory speed instead of the reference's
//! per-element index arithmetic.

/// The broadcast of a three-operand selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select {
    dims: Vec<usize>,
    /// Per operand (condition, x, y) and merged axis: its stride, 0 where it repeats.
    strides: [Vec<usize>; 3],
}

impl Select {
    /// The canonical form for operands of dims `sc`, `sx`, `sy` into output dims `so`.
    pub fn new(sc: &[usize], sx: &[usize], sy: &[usize], so: &[usize]) -> Self {
        let r = so.len();
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut p = vec![1; r - s.len().min(r)];
            p.extend_from_slice(&s[s.len().saturating_sub(r)..]);
            p
        };
        let padded = [pad(sc), pad(sx), pad(sy)];
        let mut merged: Vec<(usize, [bool; 3])> = Vec::new();
        for i in (0..r).filter(|&i| so[i] != 1) {
            let steps = [0, 1, 2].map(|k| padded[k][i] != 1);
            match merged.last_mut() {
                Some(last) if last.1 == steps => last.0 *= so[i],
                _ => merged.push((so[i], steps)),
            }
        }
        if merged.is_empty() {
            merged.push((1, [true; 3]));
        }
        let strides = [0, 1, 2].map(|k| {
            let mut st = vec![0; merged.len()];
            let mut acc = 1;
            for (i, ax) in merged.iter().enumerate().rev() {
                if ax.1[k] {
                    st[i] = acc;
                    acc *= ax.0;
                }
            }
            st
        });
        Select {
            dims: merged.iter().map(|a| a.0).collect(),
            strides,
        }
    }

    /// Elements of the output.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the output's rows (the inner loop).
    pub fn row(&self) -> usize {
        self.dims.last().copied().unwrap_or(1)
    }

    /// Rows `first..` of `out = cond ? x : y` (as many whole rows as `out` holds): a piece of
    /// the output for one thread.
    pub fn rows(&self, cond: &[f32], x: &[f32], y: &[f32], out: &mut [f32], first: usize) {
        let r = self.dims.len();
        let inner = self.dims[r - 1];
        let outer: usize = self.dims[..r - 1].iter().product();
        let rows = (out.len() / inner.max(1)).min(outer.saturating_sub(first));
        let ops = [cond, x, y];
        let step = [0, 1, 2].map(|k| self.strides[k][r - 1]);
        // the odometer's position at row `first`
        let mut idx = vec![0usize; r - 1];
        let mut at = [0usize; 3];
        let mut rest = first;
        for ax in (0..r - 1).rev() {
            idx[ax] = rest % self.dims[ax];
            rest /= self.dims[ax];
            for k in 0..3 {
                at[k] += idx[ax] * self.strides[k][ax];
            }
        }
        for o in 0..rows {
            let row = &mut out[o * inner..(o + 1) * inner];
            if step == [1, 1, 1] {
                let (c, a, b) = (
                    &cond[at[0]..at[0] + inner],
                    &x[at[1]..at[1] + inner],
                    &y[at[2]..at[2] + inner],
                );
                for (((v, &c), &a), &b) in row.iter_mut().zip(c).zip(a).zip(b) {
                    *v = if c != 0.0 { a } else { b };
                }
            } else {
                for (j, v) in row.iter_mut().enumerate() {
                    let pick = |k: usize| ops[k][at[k] + j * step[k]];
                    *v = if pick(0) != 0.0 { pick(1) } else { pick(2) };
                }
            }
            for ax in (0..r - 1).rev() {
                idx[ax] += 1;
                for k in 0..3 {
                    at[k] += self.strides[k][ax];
                }
                if idx[ax] < self.dims[ax] {
                    break;
                }
                for k in 0..3 {
                    at[k] -= self.strides[k][ax] * self.dims[ax];
                }
                idx[ax] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secateur_graph::{OpSemantics, Tensor, Where};

    /// Three operand shapes that broadcast together: one output shape of `rank` axes, each
    /// operand with some of its axes set to 1 and some leading ones dropped.
    fn shapes() -> impl Strategy<Value = [Vec<usize>; 3]> {
        (1usize..=4)
            .prop_flat_map(|rank| {
                (
                    proptest::collection::vec(1usize..5, rank),
                    proptest::collection::vec(any::<u8>(), 3),
                )
            })
            .prop_map(|(out, masks)| {
                let operand = |m: u8| {
                    let kept: Vec<usize> = out
                        .iter()
                        .enumerate()
                        .map(|(i, &d)| if m >> i & 1 == 1 { 1 } else { d })
                        .collect();
                    let drop = (m >> 4) as usize % (out.len() + 1);
                    kept[drop..].to_vec()
                };
                [operand(masks[0]), operand(masks[1]), operand(masks[2])]
            })
    }

    proptest! {
        #[test]
        fn equals_the_reference_on_random_broadcasts(ops in shapes(), seed in 0u64..1000) {
            let t = |s: &[usize], k: u64| {
                Tensor::from_fn(s.to_vec(), |i| {
                    let h = (i as u64 + 1) * 2654435761 + seed * 97 + k * 13;
                    if k == 0 { h.is_multiple_of(3) as u8 as f32 } else { (h % 1000) as f32 - 500.0 }
                })
            };
            let (c, x, y) = (t(&ops[0], 0), t(&ops[1], 1), t(&ops[2], 2));
            let want = Where.eval(&[&c, &x, &y]).unwrap().remove(0);
            // the output is `out` but where all three operands repeat an axis
            let out = want.shape().to_vec();
            let sel = Select::new(&ops[0], &ops[1], &ops[2], &out);
            let mut got = vec![f32::NAN; sel.len()];
            // in two pieces, as two threads would
            let split = (sel.len() / sel.row()).div_ceil(2) * sel.row();
            let (lo, hi) = got.split_at_mut(split);
            sel.rows(c.data(), x.data(), y.data(), lo, 0);
            sel.rows(c.data(), x.data(), y.data(), hi, split / sel.row());
            prop_assert_eq!(got.as_slice(), want.data());
        }
    }
}
