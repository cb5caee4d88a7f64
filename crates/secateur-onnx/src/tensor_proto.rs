//! Conversion between ONNX `TensorProto`s and secateur tensors: f32 weights (from raw bytes,
//! `float_data` or doubles), integer constants (shapes, axes), and the little-endian raw
//! encoding used on export.

use crate::error::{OnnxError, Result};
use crate::proto::{TensorProto, data_type};
use secateur_graph::Tensor;

/// A decoded constant: floats become tensors, integers stay integers (shape arguments).
#[derive(Clone, Debug, PartialEq)]
pub enum Constant {
    Float(Tensor),
    Int {
        dims: Vec<usize>,
        values: Vec<i64>,
    },
    /// 8-bit integers (quantized weights, zero points).
    Byte {
        dims: Vec<usize>,
        values: Vec<i32>,
        signed: bool,
    },
}

fn dims_of(t: &TensorProto) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| OnnxError::Tensor {
                name: t.name.clone(),
                message: format!("negative dimension {d} in {:?}", t.dims),
            })
        })
        .collect()
}

fn check_len(t: &TensorProto, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(OnnxError::Tensor {
            name: t.name.clone(),
            message: format!(
                "dims {:?} need {expected} values but the tensor stores {got} (truncated or corrupt data)",
                t.dims
            ),
        });
    }
    Ok(())
}

fn raw_chunks<const N: usize>(t: &TensorProto, n: usize) -> Result<Vec<[u8; N]>> {
    check_len(t, t.raw_data.len() / N, n)?;
    if !t.raw_data.len().is_multiple_of(N) {
        return Err(OnnxError::Tensor {
            name: t.name.clone(),
            message: format!(
                "raw_data length {} is not a multiple of {N}",
                t.raw_data.len()
            ),
        });
    }
    Ok(t.raw_data
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
        .collect())
}

/// Decodes a tensor; integer types become [`Constant::Int`].
pub fn decode(t: &TensorProto) -> Result<Constant> {
    if crate::external::is_external(t) {
        return Err(OnnxError::Tensor {
            name: t.name.clone(),
            message: "stores its data in an external file, read only when the model is loaded from its path (with the data file next to it)".into(),
        });
    }
    let dims = dims_of(t)?;
    let n =
        secateur_graph::checked_product(dims.iter().copied()).ok_or_else(|| OnnxError::Tensor {
            name: t.name.clone(),
            message: format!("dims {dims:?} hold more elements than memory can"),
        })?;
    let raw = !t.raw_data.is_empty();
    match t.data_type {
        data_type::FLOAT => {
            let data: Vec<f32> = if raw {
                raw_chunks::<4>(t, n)?
                    .into_iter()
                    .map(f32::from_le_bytes)
                    .collect()
            } else {
                check_len(t, t.float_data.len(), n)?;
                t.float_data.clone()
            };
            Ok(Constant::Float(Tensor::new(dims, data)?))
        }
        data_type::DOUBLE => {
            let data: Vec<f32> = if raw {
                raw_chunks::<8>(t, n)?
                    .into_iter()
                    .map(|b| f64::from_le_bytes(b) as f32)
                    .collect()
            } else {
                check_len(t, t.double_data.len(), n)?;
                t.double_data.iter().map(|&v| v as f32).collect()
            };
            Ok(Constant::Float(Tensor::new(dims, data)?))
        }
        data_type::INT64 => {
            let values = if raw {
                raw_chunks::<8>(t, n)?
                    .into_iter()
                    .map(i64::from_le_bytes)
                    .collect()
            } else {
                check_len(t, t.int64_data.len(), n)?;
                t.int64_data.clone()
            };
            Ok(Constant::Int { dims, values })
        }
        data_type::BOOL => {
            let values = if raw {
                check_len(t, t.raw_data.len(), n)?;
                t.raw_data.iter().map(|&b| (b != 0) as i64).collect()
            } else {
                check_len(t, t.int32_data.len(), n)?;
                t.int32_data.iter().map(|&v| (v != 0) as i64).collect()
            };
            Ok(Constant::Int { dims, values })
        }
        data_type::INT32 => {
            let values = if raw {
                raw_chunks::<4>(t, n)?
                    .into_iter()
                    .map(|b| i32::from_le_bytes(b) as i64)
                    .collect()
            } else {
                check_len(t, t.int32_data.len(), n)?;
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            Ok(Constant::Int { dims, values })
        }
        data_type::INT8 | data_type::UINT8 => {
            let signed = t.data_type == data_type::INT8;
            let values: Vec<i32> = if raw {
                check_len(t, t.raw_data.len(), n)?;
                t.raw_data
                    .iter()
                    .map(|&b| if signed { b as i8 as i32 } else { b as i32 })
                    .collect()
            } else {
                check_len(t, t.int32_data.len(), n)?;
                t.int32_data.clone()
            };
            Ok(Constant::Byte {
                dims,
                values,
                signed,
            })
        }
        other => Err(OnnxError::Tensor {
            name: t.name.clone(),
            message: format!(
                "data type {} ({other}) is not supported (FLOAT, DOUBLE, INT32, INT64, INT8, UINT8, BOOL are)",
                data_type::name(other)
            ),
        }),
    }
}

/// Encodes an f32 tensor as raw little-endian data.
pub fn encode_f32(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Encodes an int64 tensor.
pub fn encode_i64(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::INT64,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Encodes an 8-bit integer tensor (`INT8` or `UINT8`).
pub fn encode_i8(name: &str, dims: &[usize], values: &[i8], signed: bool) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: if signed {
            data_type::INT8
        } else {
            data_type::UINT8
        },
        raw_data: values.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_round_trip_and_truncation() {
        let t = Tensor::from_fn(vec![2, 3], |i| i as f32 * 0.5);
        let p = encode_f32("w", &t);
        assert_eq!(decode(&p).unwrap(), Constant::Float(t));
        let mut cut = p.clone();
        cut.raw_data.truncate(10);
        let err = decode(&cut).unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("truncated"), "{err}");
    }

    #[test]
    fn ints_and_float_data() {
        let p = encode_i64("s", &[2], &[-1, 1024]);
        assert_eq!(
            decode(&p).unwrap(),
            Constant::Int {
                dims: vec![2],
                values: vec![-1, 1024]
            }
        );
        let f = TensorProto {
            name: "f".into(),
            dims: vec![2],
            data_type: data_type::FLOAT,
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        assert!(matches!(decode(&f).unwrap(), Constant::Float(_)));
        let flags = TensorProto {
            name: "b".into(),
            dims: vec![3],
            data_type: data_type::BOOL,
            raw_data: vec![1, 0, 7],
            ..Default::default()
        };
        assert_eq!(
            decode(&flags).unwrap(),
            Constant::Int {
                dims: vec![3],
                values: vec![1, 0, 1]
            }
        );
        let truncated = TensorProto {
            raw_data: vec![1],
            ..flags
        };
        assert!(decode(&truncated).is_err());
        let bad = TensorProto {
            name: "s".into(),
            dims: vec![1],
            data_type: 8,
            ..Default::default()
        };
        assert!(decode(&bad).unwrap_err().to_string().contains("STRING"));
    }
}
