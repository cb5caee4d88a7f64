//! The IDX format of MNIST and Fashion-MNIST: big-endian magic `0x0000 <type> <ndims>`, the
//! dimension sizes, then the values. Images are unsigned bytes with 3 dimensions, labels
//! unsigned bytes with 1. Wrong magic, truncation and trailing bytes are errors.

use crate::error::{Result, format_err};
use crate::io::gunzip_if_needed;
use std::path::Path;

/// A decoded IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes (gzipped or not) expecting `ndims` dimensions of unsigned bytes.
pub fn parse(raw: &[u8], path: &Path, ndims: usize) -> Result<IdxArray> {
    let bytes = gunzip_if_needed(raw, path)?;
    if bytes.len() < 4 {
        return Err(format_err(path, "file is too short for an IDX header"));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_err(
            path,
            format!(
                "bad IDX magic {:02x}{:02x}{:02x}{:02x}: expected 0x0000 followed by type and rank",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format_err(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported (expected 0x08, unsigned byte)",
                bytes[2]
            ),
        ));
    }
    if bytes[3] as usize != ndims {
        return Err(format_err(
            path,
            format!("IDX file has {} dimensions, expected {ndims}", bytes[3]),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format_err(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    let body = bytes.len() - header;
    let Some(n) = secateur_graph::checked_product(dims.iter().copied()) else {
        return Err(format_err(
            path,
            format!("IDX dimensions {dims:?} describe more bytes than memory can hold"),
        ));
    };
    if body != n {
        let what = if body < n {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(format_err(
            path,
            format!("IDX file {what}: dimensions {dims:?} need {n} bytes, found {body}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an images file and a labels file and checks they agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<(Vec<usize>, Vec<u8>, Vec<u32>)> {
    let img = parse(&crate::io::read_maybe_gz(images)?, images, 3)?;
    let lab = parse(&crate::io::read_maybe_gz(labels)?, labels, 1)?;
    from_arrays(img, lab, labels)
}

/// Checks image and label arrays against each other.
pub fn from_arrays(
    img: IdxArray,
    lab: IdxArray,
    labels_path: &Path,
) -> Result<(Vec<usize>, Vec<u8>, Vec<u32>)> {
    if img.dims[0] != lab.dims[0] {
        return Err(format_err(
            labels_path,
            format!("{} labels for {} images", lab.dims[0], img.dims[0]),
        ));
    }
    Ok((
        vec![1, img.dims[1], img.dims[2]],
        img.data,
        lab.data.iter().map(|&l| l as u32).collect(),
    ))
}

/// Encodes an IDX array (used by tests and by the subset tool).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        let p = Path::new("x.idx");
        let good = encode(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parse(&good, p, 3).unwrap().dims, vec![2, 2, 2]);
        assert!(
            parse(&good[..good.len() - 1], p, 3)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let mut bad = good.clone();
        bad[0] = 1;
        assert!(parse(&bad, p, 3).unwrap_err().to_string().contains("magic"));
        assert!(
            parse(&good, p, 1)
                .unwrap_err()
                .to_string()
                .contains("dimensions")
        );
        let mut extra = good.clone();
        extra.push(0);
        assert!(
            parse(&extra, p, 3)
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
    }
}
