//! Data movement without arithmetic: strided slices (any start and step per axis, contiguous
//! runs copied whole), constant padding (the border filled, each innermost run copied whole),
//! gathers of whole blocks along one axis at constant positions (an index select; a channel
//! shuffle of channels-last values as a transpose of each pixel's channels), and transposes of
//! any rank (the output walked in order, the input read through permuted strides).

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// `y` = `x` (dims `dims`) with `before[a]` and `after[a]` values of `fill` around axis `a`.
pub fn pad_constant(
    x: &[f32],
    dims: &[usize],
    before: &[usize],
    after: &[usize],
    fill: f32,
    y: &mut [f32],
) {
    let r = dims.len();
    let out: Vec<usize> = (0..r).map(|a| before[a] + dims[a] + after[a]).collect();
    let n: usize = out.iter().product();
    y[..n].fill(fill);
    if dims.contains(&0) {
        return;
    }
    if r == 0 {
        y[0] = x[0];
        return;
    }
    let st = strides(&out);
    let inner = dims[r - 1];
    let outer: usize = dims[..r - 1].iter().product();
    let mut idx = vec![0usize; r - 1];
    for o in 0..outer {
        let at: usize = before[r - 1]
            + (0..r - 1)
                .map(|a| (idx[a] + before[a]) * st[a])
                .sum::<usize>();
        y[at..at + inner].copy_from_slice(&x[o * inner..(o + 1) * inner]);
        for a in (0..r - 1).rev() {
            idx[a] += 1;
            if idx[a] < dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// `y` = the slice of `x` (dims `dims`) taking `(start, step, count)` along each axis.
pub fn slice(x: &[f32], dims: &[usize], ranges: &[(i64, i64, usize)], y: &mut [f32]) {
    let r = dims.len();
    let st = strides(dims);
    let (start, step, count): (Vec<i64>, Vec<i64>, Vec<usize>) = (
        ranges.iter().map(|q| q.0).collect(),
        ranges.iter().map(|q| q.1).collect(),
        ranges.iter().map(|q| q.2).collect(),
    );
    if r == 0 || count.contains(&0) {
        return;
    }
    let inner = count[r - 1];
    let outer: usize = count[..r - 1].iter().product();
    let mut idx = vec![0usize; r - 1];
    for o in 0..outer {
        let mut base = start[r - 1];
        for ax in 0..r - 1 {
            base += (start[ax] + idx[ax] as i64 * step[ax]) * st[ax] as i64;
        }
        let out = &mut y[o * inner..(o + 1) * inner];
        if step[r - 1] == 1 {
            let b = base as usize;
            out.copy_from_slice(&x[b..b + inner]);
        } else {
            for (k, v) in out.iter_mut().enumerate() {
                *v = x[(base + k as i64 * step[r - 1]) as usize];
            }
        }
        for ax in (0..r - 1).rev() {
            idx[ax] += 1;
            if idx[ax] < count[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// `y[o][j][i] = x[o][positions[j]][i]` for `x` of `outer × n × inner`.
/// Blocks of `inner` values gathered along an axis of `n` at positions read at run time (token
/// ids held as exact floats; negative ones count from the end): `y[o][j] = x[o][idx[j]]`.
pub fn gather_indexed(
    x: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    indices: &[f32],
    y: &mut [f32],
) -> Result<(), String> {
    let m = indices.len();
    for (j, &v) in indices.iter().enumerate() {
        let i = v as i64;
        let p = if i < 0 { i + n as i64 } else { i };
        if v.fract() != 0.0 || !(0..n as i64).contains(&p) {
            return Err(format!(
                "index {v} is out of range for an axis of {n} (position {j})"
            ));
        }
        let p = p as usize;
        for o in 0..outer {
            let src = &x[(o * n + p) * inner..(o * n + p + 1) * inner];
            y[(o * m + j) * inner..(o * m + j + 1) * inner].copy_from_slice(src);
        }
    }
    Ok(())
}

pub fn gather_blocks(
    x: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    positions: &[usize],
    y: &mut [f32],
) {
    let m = positions.len();
    // a channel shuffle on channels-last values: each pixel's channels transposed as g × n/g
    if let Some(g) = shuffle_groups(positions, n).filter(|_| inner == 1) {
        for o in 0..outer {
            let src = &x[o * n..(o + 1) * n];
            super::nhwc_ops::to_nhwc(src, g, n / g, &mut y[o * n..(o + 1) * n]);
        }
        return;
    }
    for o in 0..outer {
        let src = &x[o * n * inner..(o + 1) * n * inner];
        let dst = &mut y[o * m * inner..(o + 1) * m * inner];
        if inner == 1 {
            for (v, &p) in dst.iter_mut().zip(positions) {
                *v = src[p];
            }
        } else {
            for (j, &p) in positions.iter().enumerate() {
                dst[j * inner..(j + 1) * inner].copy_from_slice(&src[p * inner..(p + 1) * inner]);
            }
        }
    }
}

/// The `g` of a channel shuffle when `positions` is one: `positions[j·g + k] = k·n/g + j`
/// (all `n` values, `g` from 2 to 4).
fn shuffle_groups(positions: &[usize], n: usize) -> Option<usize> {
    if positions.len() != n {
        return None;
    }
    (2..=4).filter(|&g| n.is_multiple_of(g)).find(|&g| {
        let h = n / g;
        positions
            .iter()
            .enumerate()
            .all(|(i, &p)| p == (i % g) * h + i / g)
    })
}

/// `y` = `x` (dims `dims`) with its axes permuted: output axis `i` is input axis `perm[i]`.
pub fn transpose(x: &[f32], dims: &[usize], perm: &[usize], y: &mut [f32]) {
    let r = dims.len();
    if r == 0 {
        y[0] = x[0];
        return;
    }
    let st = strides(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let src_st: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let inner = out_dims[r - 1];
    let outer: usize = out_dims[..r - 1].iter().product();
    let mut idx = vec![0usize; r - 1];
    let mut base = 0usize;
    for o in 0..outer {
        let out = &mut y[o * inner..(o + 1) * inner];
        let s = src_st[r - 1];
        if s == 1 {
            out.copy_from_slice(&x[base..base + inner]);
        } else {
            for (k, v) in out.iter_mut().enumerate() {
                *v = x[base + k * s];
            }
        }
        for ax in (0..r - 1).rev() {
            idx[ax] += 1;
            base += src_st[ax];
            if idx[ax] < out_dims[ax] {
                break;
            }
            base -= src_st[ax] * out_dims[ax];
            idx[ax] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secateur_graph::{OpSemantics, Slice, Tensor, Transpose};

    #[test]
    fn slices_and_transposes_match_the_reference_ops() {
        let dims = [2usize, 3, 4, 5];
        let x = Tensor::from_fn(dims.to_vec(), |i| i as f32);
        let s = Slice {
            axes: vec![1, 3, 2],
            starts: vec![1, -1, 0],
            ends: vec![3, 0, 4],
            steps: vec![1, -2, 3],
        };
        let want = s.eval(&[&x]).unwrap().remove(0);
        let mut y = vec![0.0; want.len()];
        slice(x.data(), &dims, &s.resolved(&dims).unwrap(), &mut y);
        assert_eq!(y, want.data());
        for perm in [vec![0, 2, 1, 3], vec![3, 1, 0, 2], vec![0, 1, 2, 3]] {
            let t = Transpose { perm: perm.clone() };
            let want = t.eval(&[&x]).unwrap().remove(0);
            let mut y = vec![0.0; want.len()];
            transpose(x.data(), &dims, &perm, &mut y);
            assert_eq!(y, want.data(), "{perm:?}");
        }
        let mut g = vec![0.0; 2 * 2 * 20];
        gather_blocks(x.data(), 2, 3, 20, &[2, 0], &mut g);
        assert_eq!(&g[..20], &x.data()[40..60]);
        assert_eq!(&g[20..40], &x.data()[..20]);
    }
}
