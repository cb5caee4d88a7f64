//! CIFAR-10 binary format: records of one label byte followed by 3×32×32 pixel bytes
//! (channel planes R, G, B). Training data is `data_batch_1..5.bin`, test data `test_batch.bin`.

use crate::error::{Result, format_err};
use std::path::Path;

pub const RECORD: usize = 1 + 3 * 32 * 32;
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one CIFAR-10 batch file into pixels and labels.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(format_err(
            path,
            format!(
                "length {} is not a positive multiple of the {RECORD}-byte CIFAR-10 record (truncated or not a CIFAR-10 binary batch)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] >= 10 {
            return Err(format_err(
                path,
                format!("record {i} has label {}, expected 0..9", rec[0]),
            ));
        }
        labels.push(rec[0] as u32);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((pixels, labels))
}

/// Reads and concatenates several batch files.
pub fn read_batches(paths: &[std::path::PathBuf]) -> Result<(Vec<u8>, Vec<u32>)> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let bytes = crate::io::read_maybe_gz(p)?;
        let (px, lb) = parse(&bytes, p)?;
        pixels.extend(px);
        labels.extend(lb);
    }
    Ok((pixels, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_errors() {
        let mut rec = vec![3u8];
        rec.extend(std::iter::repeat_n(7u8, RECORD - 1));
        let (px, lb) = parse(&rec, Path::new("b.bin")).unwrap();
        assert_eq!((px.len(), lb), (3072, vec![3]));
        assert!(parse(&rec[..100], Path::new("b.bin")).is_err());
        rec[0] = 12;
        assert!(
            parse(&rec, Path::new("b.bin"))
                .unwrap_err()
                .to_string()
                .contains("label 12")
        );
    }
}
