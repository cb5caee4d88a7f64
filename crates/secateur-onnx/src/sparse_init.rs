//! Pruned weights stored sparse: the kept values and their int64 linear indices (ONNX
//! `SparseTensorProto`, COO, ascending), 12 bytes per kept weight instead of 4 per weight, used
//! where that is smaller (below one third density). Export writes each as a `Constant` node
//! with `sparse_value` whose output is the dense weight (ONNX shape inference types a graph
//! `sparse_initializer` as a sparse tensor that Gemm or Conv do not accept, so `onnx.checker`
//! would refuse the file; ONNX Runtime runs both). The mask of such a weight is its index set,
//! so its metadata entry says `sparse_initializer` instead of carrying the keep bits. Import
//! reads `Constant` sparse values and graph sparse initializers from any producer, linear or
//! coordinate indices, and checks them before allocating the dense tensor.

use crate::error::{OnnxError, Result};
use crate::proto::{SparseTensorProto, TensorProto, data_type};
use crate::tensor_proto::{Constant, decode, encode_f32, encode_i64};
use secateur_graph::Tensor;

/// The mask field of a weight whose keep set is its sparse initializer's indices.
pub const FROM_INDICES: &str = "sparse_initializer";

/// The `Constant` node that produces weight `name` from its sparse form.
pub fn constant_node(name: &str, t: &Tensor, keep: &[bool]) -> crate::proto::NodeProto {
    crate::proto::NodeProto {
        output: vec![name.to_string()],
        name: format!("{name}.sparse"),
        op_type: "Constant".into(),
        attribute: vec![crate::proto::AttributeProto {
            name: "sparse_value".into(),
            r#type: crate::proto::attribute_type::SPARSE_TENSOR,
            sparse_tensor: Some(encode(name, t, keep)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Whether `kept` of `len` weights take fewer bytes as a sparse initializer than dense f32.
pub fn is_smaller(kept: usize, len: usize) -> bool {
    12 * kept < 4 * len
}

/// The sparse initializer of `t` holding the positions where `keep` is set.
pub fn encode(name: &str, t: &Tensor, keep: &[bool]) -> SparseTensorProto {
    let positions: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
    let values: Vec<f32> = positions.iter().map(|&i| t.data()[i]).collect();
    let n = values.len();
    let values = Tensor::new(vec![n], values).expect("one value per position");
    let indices: Vec<i64> = positions.iter().map(|&i| i as i64).collect();
    SparseTensorProto {
        values: Some(encode_f32(name, &values)),
        indices: Some(encode_i64(&format!("{name}.indices"), &[n], &indices)),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
    }
}

/// Decodes a sparse initializer: its name, the dense tensor and which elements it stores.
pub fn decode_sparse(sp: &SparseTensorProto) -> Result<(String, Tensor, Vec<bool>)> {
    let values = sp
        .values
        .as_ref()
        .ok_or_else(|| OnnxError::Model("a sparse initializer has no values".into()))?;
    let name = values.name.clone();
    if name.is_empty() {
        return Err(OnnxError::Model("a sparse initializer has no name".into()));
    }
    let err = |message: String| OnnxError::Tensor {
        name: name.clone(),
        message,
    };
    if values.data_type != data_type::FLOAT {
        return Err(err(format!(
            "sparse values of type {} are not supported (FLOAT is)",
            data_type::name(values.data_type)
        )));
    }
    let dims: Vec<usize> = sp
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .ok_or_else(|| err(format!("negative dimension in {:?}", sp.dims)))?;
    let limit = secateur_graph::max_elements();
    let len = secateur_graph::checked_product(dims.iter().copied())
        .filter(|&n| n <= limit)
        .ok_or_else(|| {
            err(format!(
                "dims {dims:?} hold more than {limit} elements, the limit on one tensor (SECATEUR_MAX_TENSOR_MB raises it)"
            ))
        })?;
    let Constant::Float(vals) = decode(values)? else {
        return Err(err("sparse values must be FLOAT".into()));
    };
    let positions = linear_indices(sp.indices.as_ref(), &dims, vals.len(), &err)?;
    let mut dense = vec![0.0f32; len];
    let mut keep = vec![false; len];
    for (&p, &v) in positions.iter().zip(vals.data()) {
        dense[p] = v;
        keep[p] = true;
    }
    let t = Tensor::new(dims, dense).map_err(|e| err(e.to_string()))?;
    Ok((name, t, keep))
}

/// The indices as strictly ascending linear positions below the element count.
fn linear_indices(
    indices: Option<&TensorProto>,
    dims: &[usize],
    nnz: usize,
    err: &dyn Fn(String) -> OnnxError,
) -> Result<Vec<usize>> {
    let indices = indices.ok_or_else(|| err("has no indices".into()))?;
    if indices.data_type != data_type::INT64 {
        return Err(err(format!(
            "indices must be INT64, got {}",
            data_type::name(indices.data_type)
        )));
    }
    let Constant::Int {
        dims: idims,
        values,
    } = decode(indices)?
    else {
        return Err(err("indices must be integers".into()));
    };
    let len: usize = dims.iter().product();
    let linear: Vec<i64> = match idims.as_slice() {
        [n] if *n == nnz => values,
        [n, r] if *n == nnz && *r == dims.len() => values
            .chunks_exact(*r)
            .map(|c| {
                c.iter().zip(dims).try_fold(0i64, |acc, (&i, &d)| {
                    (0..d as i64).contains(&i).then(|| acc * d as i64 + i)
                })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| err("a coordinate is out of range".into()))?,
        _ => {
            return Err(err(format!(
                "indices of shape {idims:?} for {nnz} values of a {dims:?} tensor (expected [{nnz}] or [{nnz}, {}])",
                dims.len()
            )));
        }
    };
    let mut out = Vec::with_capacity(linear.len());
    for &i in &linear {
        let p = usize::try_from(i)
            .ok()
            .filter(|&p| p < len)
            .ok_or_else(|| err(format!("index {i} is outside the {len} elements")))?;
        if out.last().is_some_and(|&last| last >= p) {
            return Err(err("indices are not strictly ascending".into()));
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values_and_the_keep_set() {
        let t = Tensor::new(vec![2, 3], vec![0.0, 1.5, 0.0, -2.0, 0.0, 0.0]).unwrap();
        // a kept weight that happens to be zero stays in the keep set
        let keep = vec![true, true, false, true, false, false];
        let sp = encode("w", &t, &keep);
        let (name, back, k) = decode_sparse(&sp).unwrap();
        assert_eq!(name, "w");
        assert_eq!(back, t);
        assert_eq!(k, keep);
        assert!(is_smaller(3, 10) && !is_smaller(4, 12));
    }

    #[test]
    fn coordinates_and_bad_indices() {
        let mut sp = encode(
            "w",
            &Tensor::new(vec![2, 2], vec![0.0, 1.0, 2.0, 0.0]).unwrap(),
            &[false, true, true, false],
        );
        sp.indices = Some(encode_i64("i", &[2, 2], &[0, 1, 1, 0]));
        let (_, t, _) = decode_sparse(&sp).unwrap();
        assert_eq!(t.data(), &[0.0, 1.0, 2.0, 0.0]);
        for (dims, idx) in [
            (vec![2], vec![2, 1]),
            (vec![2], vec![1, 9]),
            (vec![2, 2], vec![0, 5, 1, 0]),
        ] {
            sp.indices = Some(encode_i64("i", &dims, &idx));
            let e = decode_sparse(&sp).unwrap_err().to_string();
            assert!(e.contains("'w'"), "{e}");
        }
    }
}
