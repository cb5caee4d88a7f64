//! File reading shared by the format readers: whole-file reads with the path in the error,
//! transparent gunzip when the content starts with the gzip magic.

use crate::error::{DataError, Result, format_err};
use std::io::Read;
use std::path::Path;

/// Reads a file, decompressing it when it is gzipped.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|cause| DataError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    gunzip_if_needed(&raw, path)
}

/// Decompresses bytes that start with the gzip magic; others are returned unchanged.
pub fn gunzip_if_needed(raw: &[u8], path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| format_err(path, format!("corrupt or truncated gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}
