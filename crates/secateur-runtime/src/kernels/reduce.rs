//! Reductions over one run of adjacent axes (`ReduceSum`, `ReduceMean`, the norms, maximum
//! and minimum): the input seen as `[outer, red, inner]`, each output row of `inner` values
//! accumulates the `red` input rows in order, a contiguous loop the compiler vectorises. The
//! sums run in the reference evaluation's order, so the results are the same bit for bit.

use secateur_graph::ReduceKind;

/// `y[o][i] = reduce over r of x[o][r][i]` for `outer` blocks of `red` rows of `inner`
/// values; `y` holds `outer · inner` values.
pub fn reduce(
    kind: ReduceKind,
    x: &[f32],
    (outer, red, inner): (usize, usize, usize),
    y: &mut [f32],
) {
    assert!(
        x.len() >= outer * red * inner && y.len() >= outer * inner,
        "reduce: buffers do not hold {outer} x {red} x {inner}"
    );
    let init = match kind {
        ReduceKind::Max => f32::NEG_INFINITY,
        ReduceKind::Min => f32::INFINITY,
        _ => 0.0,
    };
    for (o, acc) in y.chunks_exact_mut(inner.max(1)).take(outer).enumerate() {
        acc.fill(init);
        let block = &x[o * red * inner..(o + 1) * red * inner];
        for row in block.chunks_exact(inner.max(1)) {
            match kind {
                ReduceKind::Sum | ReduceKind::Mean => fold(acc, row, |a, v| a + v),
                ReduceKind::Max => fold(acc, row, f32::max),
                ReduceKind::Min => fold(acc, row, f32::min),
                ReduceKind::L1 => fold(acc, row, |a, v| a + v.abs()),
                ReduceKind::L2 | ReduceKind::SumSquare => fold(acc, row, |a, v| a + v * v),
            }
        }
        match kind {
            ReduceKind::Mean => acc.iter_mut().for_each(|v| *v /= red.max(1) as f32),
            ReduceKind::L2 => acc.iter_mut().for_each(|v| *v = v.sqrt()),
            _ => {}
        }
    }
}

#[inline(always)]
fn fold(acc: &mut [f32], row: &[f32], f: impl Fn(f32, f32) -> f32) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a = f(*a, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secateur_graph::{OpSemantics, Reduce, Tensor};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every kind over a run of adjacent axes equals the op's reference evaluation exactly.
        #[test]
        fn runs_of_axes_match_the_reference(
            dims in proptest::collection::vec(1usize..5, 1..5),
            from in 0usize..4,
            len in 1usize..4,
            kind in 0usize..7,
            keep_dims in any::<bool>(),
        ) {
            let from = from.min(dims.len() - 1);
            let to = (from + len).min(dims.len());
            let kind = [
                ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min,
                ReduceKind::L1, ReduceKind::L2, ReduceKind::SumSquare,
            ][kind];
            let n: usize = dims.iter().product();
            let x = Tensor::from_fn(dims.clone(), |i| ((i * 37 % 23) as f32 - 11.0) * 0.37);
            let op = Reduce { kind, axes: (from..to).collect(), keep_dims };
            let want = op.eval(&[&x]).unwrap().remove(0);
            let outer: usize = dims[..from].iter().product();
            let red: usize = dims[from..to].iter().product();
            let mut got = vec![f32::NAN; n / red];
            reduce(kind, x.data(), (outer, red, n / red / outer), &mut got);
            prop_assert_eq!(got.as_slice(), want.data());
        }
    }
}
