//! Training lowerings of the data-movement, normalisation and attention ops to burn, for values
//! of any supported rank: `Transpose` (permute), `Slice` and `Pad` (index selection and
//! concatenation, both differentiable, any step and every pad mode), `LayerNormalization`,
//! the product of two activations, `Expand`, reductions, `Gather` (embedding lookups) and
//! `GatherElements` (element-wise picking at computed positions) and `Resize` (index selection
//! and weighted sums of the picked rows).
//! Each takes and returns [`Value`]s.

use crate::value::{Value, on_value};
use burn::tensor::{Int, Tensor, TensorData};
use secateur_graph::{
    Gather, GatherElements, LayerNorm, Pad, PadMode, Reduce, ReduceKind, Resize, ResizeMode, Slice,
    Tap, Transpose,
};

/// Why a lowering could not run (the caller names the node).
pub type LowerResult = Result<Value, String>;

fn permute_t<const D: usize>(t: Tensor<D>, perm: &[usize]) -> Result<Tensor<D>, String> {
    let axes: [usize; D] = perm
        .try_into()
        .map_err(|_| format!("permutation {perm:?} does not fit rank {D}"))?;
    Ok(t.permute(axes))
}

/// `Transpose`.
pub fn transpose(op: &Transpose, x: Value) -> LowerResult {
    let perm = op.resolved(x.rank()).map_err(|e| e.to_string())?;
    Ok(match x {
        Value::R1(t) => Value::R1(t),
        Value::R2(t) => Value::R2(permute_t(t, &perm)?),
        Value::R3(t) => Value::R3(permute_t(t, &perm)?),
        Value::R4(t) => Value::R4(permute_t(t, &perm)?),
        Value::R5(t) => Value::R5(permute_t(t, &perm)?),
        Value::R6(t) => Value::R6(permute_t(t, &perm)?),
    })
}

/// The elements at `indices` along `axis` (a differentiable gather).
fn take<const D: usize>(t: Tensor<D>, axis: usize, indices: Vec<i64>) -> Tensor<D> {
    let n = indices.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(indices, [n]), &t.device());
    t.select(axis, idx)
}

fn take_value(x: Value, axis: usize, indices: Vec<i64>) -> Value {
    on_value!(x, |t| take(t, axis, indices.clone()))
}

/// `Slice`: per sliced axis, the indices `start + k·step`.
pub fn slice(op: &Slice, x: Value) -> LowerResult {
    let dims = x.dims();
    let mut v = x;
    for (k, &ax) in op.axes.iter().enumerate() {
        let d = dims[ax] as i64;
        let (start, end, step) = (op.starts[k], op.ends[k], op.steps[k]);
        let norm = |i: i64| if i < 0 { i + d } else { i };
        let mut indices = Vec::new();
        if step > 0 {
            let (mut i, e) = (norm(start).clamp(0, d), norm(end).clamp(0, d));
            while i < e {
                indices.push(i);
                i += step;
            }
        } else if step < 0 {
            let (mut i, e) = (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1));
            while i > e {
                indices.push(i);
                i += step;
            }
        }
        if indices.len() as i64 == d && step == 1 {
            continue;
        }
        if indices.is_empty() {
            return Err("a slice that selects nothing".into());
        }
        v = take_value(v, ax, indices);
    }
    Ok(v)
}

/// Constant padding of one axis by concatenating filled tensors around `t`.
fn pad_constant<const D: usize>(
    t: Tensor<D>,
    axis: usize,
    before: usize,
    after: usize,
    value: f32,
) -> Tensor<D> {
    let mut parts = Vec::with_capacity(3);
    let border = |n: usize| {
        let mut shape: [usize; D] = t.dims();
        shape[axis] = n;
        Tensor::<D>::full(shape, value, &t.device())
    };
    if before > 0 {
        parts.push(border(before));
    }
    let tail = (after > 0).then(|| border(after));
    parts.push(t);
    parts.extend(tail);
    Tensor::cat(parts, axis)
}

/// `Pad` in any mode: constant borders are concatenated, reflect and edge borders gathered.
pub fn pad(op: &Pad, x: Value) -> LowerResult {
    let dims = x.dims();
    let mut v = x;
    for (ax, &size) in dims.iter().enumerate() {
        let (b, a) = (op.before[ax], op.after[ax]);
        if b + a == 0 {
            continue;
        }
        let n = size as i64;
        v = match op.mode {
            PadMode::Constant(c) => on_value!(v, |t| pad_constant(t, ax, b, a, c)),
            PadMode::Edge | PadMode::Reflect => {
                let period = 2 * (n - 1).max(1);
                let source = |i: i64| match op.mode {
                    PadMode::Edge => i.clamp(0, n - 1),
                    _ => {
                        let m = i.rem_euclid(period);
                        if m < n { m } else { period - m }
                    }
                };
                let indices = (-(b as i64)..n + a as i64).map(source).collect();
                take_value(v, ax, indices)
            }
        };
    }
    Ok(v)
}

/// `LayerNormalization` over the axes from `op.axis` on, scaled and shifted.
pub fn layer_norm(
    op: &LayerNorm,
    x: Value,
    scale: Option<Value>,
    bias: Option<Value>,
) -> LowerResult {
    let dims = x.dims();
    let first = op.first_axis(dims.len()).map_err(|e| e.to_string())?;
    // rows of the normalised elements: [outer, inner]
    let outer: usize = dims[..first].iter().product();
    let inner: usize = dims[first..].iter().product();
    let rows = x
        .reshape(&[outer, inner])
        .and_then(Value::into_r2)
        .ok_or("cannot view the input as rows")?;
    let mean = rows.clone().mean_dim(1);
    let centered = rows - mean;
    let var = centered.clone().square().mean_dim(1);
    let normed = centered * (var + op.epsilon as f64).sqrt().recip();
    let flat = |v: Value| {
        v.reshape(&[1, inner])
            .and_then(Value::into_r2)
            .ok_or("the scale and bias must match the normalised axes")
    };
    let mut y = match scale {
        Some(s) => normed * flat(s)?,
        None => normed,
    };
    if let Some(b) = bias {
        y = y + flat(b)?;
    }
    Value::R2(y)
        .reshape(&dims)
        .ok_or_else(|| "cannot restore the input shape".into())
}

/// Left-pads `v` with size-1 axes to `rank`.
fn lift(v: Value, rank: usize) -> Result<Value, String> {
    v.lift(rank)
        .ok_or_else(|| format!("rank {rank} is not supported in training"))
}

/// The product of two activations `[..., M, K] · [..., K, N]` (leading axes broadcast).
pub fn batch_matmul(a: Value, b: Value) -> LowerResult {
    let r = a.rank().max(b.rank()).max(2);
    let (a, b) = (lift(a, r)?, lift(b, r)?);
    Ok(match (a, b) {
        (Value::R2(x), Value::R2(y)) => Value::R2(x.matmul(y)),
        (Value::R3(x), Value::R3(y)) => Value::R3(x.matmul(y)),
        (Value::R4(x), Value::R4(y)) => Value::R4(x.matmul(y)),
        (Value::R5(x), Value::R5(y)) => Value::R5(x.matmul(y)),
        (Value::R6(x), Value::R6(y)) => Value::R6(x.matmul(y)),
        _ => return Err("MatMul operands of unsupported ranks".into()),
    })
}

fn expand_t<const D: usize>(t: Tensor<D>, dims: &[usize]) -> Result<Tensor<D>, String> {
    let shape: [usize; D] = dims
        .try_into()
        .map_err(|_| format!("cannot expand to {dims:?}"))?;
    Ok(t.expand(shape))
}

/// `Expand` to the concrete output dims.
pub fn expand(x: Value, out_dims: &[usize]) -> LowerResult {
    let x = lift(x, out_dims.len())?;
    Ok(match x {
        Value::R1(t) => Value::R1(expand_t(t, out_dims)?),
        Value::R2(t) => Value::R2(expand_t(t, out_dims)?),
        Value::R3(t) => Value::R3(expand_t(t, out_dims)?),
        Value::R4(t) => Value::R4(expand_t(t, out_dims)?),
        Value::R5(t) => Value::R5(expand_t(t, out_dims)?),
        Value::R6(t) => Value::R6(expand_t(t, out_dims)?),
    })
}

/// Concatenation of values of equal rank along `axis`.
pub fn concat(parts: Vec<Value>, axis: usize) -> LowerResult {
    macro_rules! cat_rank {
        ($variant:ident) => {{
            let ts = parts
                .into_iter()
                .map(|p| match p {
                    Value::$variant(t) => Ok(t),
                    _ => Err("Concat inputs have different ranks".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::$variant(Tensor::cat(ts, axis))
        }};
    }
    Ok(match parts.first().map(Value::rank) {
        Some(1) => cat_rank!(R1),
        Some(2) => cat_rank!(R2),
        Some(3) => cat_rank!(R3),
        Some(4) => cat_rank!(R4),
        Some(5) => cat_rank!(R5),
        Some(6) => cat_rank!(R6),
        _ => return Err("Concat of no inputs".into()),
    })
}

fn reduce_t<const D: usize>(t: Tensor<D>, kind: ReduceKind, axes: &[usize]) -> Tensor<D> {
    let sum = |t: Tensor<D>| axes.iter().fold(t, |t, &a| t.sum_dim(a));
    match kind {
        ReduceKind::Sum => sum(t),
        ReduceKind::Mean => axes.iter().fold(t, |t, &a| t.mean_dim(a)),
        ReduceKind::Max => axes.iter().fold(t, |t, &a| t.max_dim(a)),
        ReduceKind::Min => axes.iter().fold(t, |t, &a| t.min_dim(a)),
        ReduceKind::L1 => sum(t.abs()),
        ReduceKind::L2 => sum(t.clone() * t).sqrt(),
        ReduceKind::SumSquare => sum(t.clone() * t),
    }
}

/// `ReduceSum` / `ReduceMean` / `ReduceMax` / `ReduceMin` and the norms (axes kept, then dropped by a
/// reshape to the output dims when the op drops them).
pub fn reduce(op: &Reduce, x: Value, out_dims: &[usize]) -> LowerResult {
    let kept = on_value!(x, |t| reduce_t(t, op.kind, &op.axes));
    kept.reshape(out_dims)
        .ok_or_else(|| format!("cannot reshape the reduction to {out_dims:?}"))
}

/// `Gather` of `data` along `op.axis` at the integer positions held by the float `indices`
/// (differentiable with respect to `data`).
pub fn gather(op: &Gather, data: Value, indices: Value, out_dims: &[usize]) -> LowerResult {
    let n_idx: usize = indices.dims().iter().product();
    let axis_len = data.dims()[op.axis] as f32;
    let Some(Value::R1(flat)) = indices.reshape(&[n_idx]) else {
        return Err("cannot flatten the indices".into());
    };
    // negative indices count from the end; out-of-range ones are refused, not clamped
    let host = flat.clone().try_to_vec_as::<f32>().unwrap_or_default();
    if let Some(bad) = host
        .iter()
        .find(|&&v| v.fract() != 0.0 || v >= axis_len || v < -axis_len)
    {
        return Err(format!(
            "index {bad} is out of range for an axis of {axis_len}"
        ));
    }
    let wrapped = flat.clone().lower_elem(0.0).float() * axis_len + flat;
    let idx = wrapped.int();
    let picked = on_value!(data, |t| t.select(op.axis, idx.clone()));
    picked
        .reshape(out_dims)
        .ok_or_else(|| format!("cannot reshape the gathered rows to {out_dims:?}"))
}

/// `GatherElements`: the data is first cut to the indices' size along the other axes (the
/// indices may be shorter there), then picked along the axis; gradients flow to the data.
pub fn gather_elements(op: &GatherElements, data: Value, indices: Value) -> LowerResult {
    let idx_dims = indices.dims();
    let data_dims = data.dims();
    let axis_len = data_dims[op.axis] as f32;
    let n_idx: usize = idx_dims.iter().product();
    let Some(Value::R1(flat)) = indices.clone().reshape(&[n_idx]) else {
        return Err("cannot flatten the indices".into());
    };
    let host = flat.try_to_vec_as::<f32>().unwrap_or_default();
    if let Some(bad) = host
        .iter()
        .find(|&&v| v.fract() != 0.0 || v >= axis_len || v < -axis_len)
    {
        return Err(format!(
            "index {bad} is out of range for an axis of {axis_len}"
        ));
    }
    macro_rules! pick {
        ($($v:ident),*) => {
            match (data, indices) {
                $((Value::$v(mut d), Value::$v(i)) => {
                    for (ax, (&have, &want)) in data_dims.iter().zip(&idx_dims).enumerate() {
                        if ax != op.axis && want < have {
                            d = d.narrow(ax, 0, want);
                        }
                    }
                    let wrapped = i.clone().lower_elem(0.0).float() * axis_len + i;
                    Value::$v(d.gather(op.axis, wrapped.int()))
                })*
                _ => return Err("data and indices of different ranks".into()),
            }
        };
    }
    Ok(pick!(R1, R2, R3, R4, R5, R6))
}

/// `Resize`: along each resized axis, the rows each output position reads, picked by index
/// and (linear and cubic modes) blended by their weights; differentiable with respect to the
/// input.
pub fn resize(op: &Resize, x: Value) -> LowerResult {
    fn along<const D: usize>(op: &Resize, t: Tensor<D>, k: usize) -> Tensor<D> {
        let ax = 2 + k;
        if matches!(op.mode, ResizeMode::Cubic { .. }) {
            return cubic_along(op, t, k);
        }
        let taps = op.taps(k, t.dims()[ax]);
        let n_out = taps.len();
        let device = t.device();
        let index = |pick: fn(&Tap) -> usize| {
            let v: Vec<i64> = taps.iter().map(|tp| pick(tp) as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n_out]), &device)
        };
        let lo = t.clone().select(ax, index(|tp| tp.lo));
        if op.mode != ResizeMode::Linear {
            return lo;
        }
        let hi = t.select(ax, index(|tp| tp.hi));
        let mut shape = [1usize; D];
        shape[ax] = n_out;
        let w: Vec<f32> = taps.iter().map(|tp| tp.w).collect();
        let w = Tensor::<1>::from_data(TensorData::new(w, [n_out]), &device).reshape(shape);
        lo.clone() + (hi - lo) * w
    }
    /// Four rows per output position, each scaled by its weight.
    fn cubic_along<const D: usize>(op: &Resize, t: Tensor<D>, k: usize) -> Tensor<D> {
        let ax = 2 + k;
        let taps = op.cubic_taps(k, t.dims()[ax]);
        let n_out = taps.len();
        let device = t.device();
        let mut shape = [1usize; D];
        shape[ax] = n_out;
        let term = |j: usize| {
            let idx: Vec<i64> = taps.iter().map(|tp| tp[j].0 as i64).collect();
            let w: Vec<f32> = taps.iter().map(|tp| tp[j].1).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n_out]), &device);
            let w = Tensor::<1>::from_data(TensorData::new(w, [n_out]), &device).reshape(shape);
            t.clone().select(ax, idx) * w
        };
        (1..4).fold(term(0), |acc, j| acc + term(j))
    }
    fn all<const D: usize>(op: &Resize, t: Tensor<D>) -> Tensor<D> {
        (0..op.sizes.len()).fold(t, |t, k| along(op, t, k))
    }
    match x {
        Value::R3(t) if op.sizes.len() == 1 => Ok(Value::R3(all(op, t))),
        Value::R4(t) if op.sizes.len() == 2 => Ok(Value::R4(all(op, t))),
        other => Err(format!(
            "resizing a rank-{} value to {:?} is not supported",
            other.rank(),
            op.sizes
        )),
    }
}

/// `Where(cond, x, y)`: all three broadcast to the output dims, `x` where `cond` is non-zero.
pub fn select(cond: Value, x: Value, y: Value, out_dims: &[usize]) -> LowerResult {
    let (c, x, y) = (
        expand(cond, out_dims)?,
        expand(x, out_dims)?,
        expand(y, out_dims)?,
    );
    macro_rules! pick {
        ($($v:ident),*) => {
            match (c, x, y) {
                $((Value::$v(c), Value::$v(x), Value::$v(y)) => {
                    Value::$v(y.mask_where(c.not_equal_elem(0.0), x))
                })*
                _ => return Err("Where operands of different ranks".into()),
            }
        };
    }
    Ok(pick!(R1, R2, R3, R4, R5, R6))
}
