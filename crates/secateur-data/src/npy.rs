//! NumPy `.npy` arrays (format versions 1–3, C order): unsigned bytes, f32/f64 and integer
//! types, little- or big-endian. Used for user data sets (`x_train.npy`, `y_train.npy`, ...).

use crate::error::{Result, format_err};
use std::path::Path;

/// A decoded array: shape and values (as f64, exact for every supported type in range).
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub data: NpyData,
}

/// Values by storage class.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    U8(Vec<u8>),
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("'{key}':");
    let start = header.find(&k)? + k.len();
    Some(header[start..].trim_start())
}

/// Parses `.npy` bytes.
pub fn parse(bytes: &[u8], path: &Path) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(format_err(
            path,
            "not a .npy file (missing \\x93NUMPY magic)",
        ));
    }
    let major = bytes[6];
    let (hlen, hstart): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format_err(path, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(format_err(
                path,
                format!(".npy format version {v} is not supported"),
            ));
        }
    };
    let hend = hstart
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format_err(path, "truncated .npy header"))?;
    let header = std::str::from_utf8(&bytes[hstart..hend])
        .map_err(|_| format_err(path, ".npy header is not text"))?;
    let descr = header_value(header, "descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| format_err(path, "header has no 'descr'"))?
        .to_string();
    if header_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(format_err(
            path,
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let shape_txt = header_value(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| format_err(path, "header has no 'shape'"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format_err(path, format!("bad shape ({shape_txt})")))?;
    let n = secateur_graph::checked_product(shape.iter().copied())
        .ok_or_else(|| format_err(path, format!("shape ({shape_txt}) is too large")))?;
    let body = &bytes[hend..];
    let (big, kind) = match descr.chars().next() {
        Some('>') => (true, &descr[1..]),
        Some('<' | '|' | '=') => (false, &descr[1..]),
        _ => (false, descr.as_str()),
    };
    let need = |size: usize| -> Result<()> {
        let want = n.checked_mul(size);
        if want != Some(body.len()) {
            return Err(format_err(
                path,
                format!(
                    "shape {shape:?} of {descr} needs {} data bytes, found {} (truncated or corrupt)",
                    want.map_or_else(|| "more than 2^64".to_string(), |w| w.to_string()),
                    body.len()
                ),
            ));
        }
        Ok(())
    };
    macro_rules! conv {
        ($t:ty, $size:expr) => {{
            need($size)?;
            body.chunks_exact($size)
                .map(|c| {
                    let a: [u8; $size] = c.try_into().expect("chunk size");
                    if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }
                })
                .collect::<Vec<$t>>()
        }};
    }
    let data = match kind {
        "u1" | "b1" => {
            need(1)?;
            NpyData::U8(body.to_vec())
        }
        "f4" => NpyData::F32(conv!(f32, 4)),
        "f8" => NpyData::F32(conv!(f64, 8).into_iter().map(|v| v as f32).collect()),
        "i8" => NpyData::I64(conv!(i64, 8)),
        "i4" => NpyData::I64(conv!(i32, 4).into_iter().map(i64::from).collect()),
        "u4" => NpyData::I64(conv!(u32, 4).into_iter().map(i64::from).collect()),
        "i1" => {
            need(1)?;
            NpyData::I64(body.iter().map(|&b| b as i8 as i64).collect())
        }
        _ => {
            return Err(format_err(
                path,
                format!("dtype '{descr}' is not supported (u1, i1, i4, u4, i8, f4, f8 are)"),
            ));
        }
    };
    Ok(NpyArray {
        shape,
        dtype: descr,
        data,
    })
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<NpyArray> {
    parse(&crate::io::read_maybe_gz(path)?, path)
}

/// Encodes a little-endian f32 or u8 array as `.npy` version 1.
pub fn encode(shape: &[usize], data: &NpyData) -> Vec<u8> {
    let descr = match data {
        NpyData::U8(_) => "|u1",
        NpyData::F32(_) => "<f4",
        NpyData::I64(_) => "<i8",
    };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    match data {
        NpyData::U8(v) => out.extend(v),
        NpyData::F32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        NpyData::I64(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let p = Path::new("a.npy");
        let bytes = encode(&[2, 3], &NpyData::F32(vec![1., 2., 3., 4., 5., 6.]));
        let a = parse(&bytes, p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::F32(vec![1., 2., 3., 4., 5., 6.]));
        assert!(
            parse(&bytes[..bytes.len() - 2], p)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let with_header = |header: &str, body: &[u8]| {
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend((header.len() as u16).to_le_bytes());
            out.extend(header.as_bytes());
            out.extend(body);
            out
        };
        for descr in ["", "\u{e9}", "<", ">f9"] {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
            let err = parse(&with_header(&header, &[7]), p)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a.npy"), "{descr:?}: {err}");
        }
        let header =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }";
        let err = parse(&with_header(header, &[0; 8]), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too large"), "{err}");
        let header =
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2147483648, 2147483648), }";
        let err = parse(&with_header(header, &[0; 8]), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(
            parse(b"hello world", p)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let l = encode(&[3], &NpyData::I64(vec![0, 9, 4]));
        assert_eq!(parse(&l, p).unwrap().data, NpyData::I64(vec![0, 9, 4]));
    }
}
