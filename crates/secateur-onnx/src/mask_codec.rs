//! Masks travel inside exported ONNX files as `metadata_props`: key
//! `secateur.mask.<weight>`, value `<pattern>|<out_axis>|<base64 of the keep bits, LSB first>`,
//! so a pruned model keeps its masks through save → load and export → import while staying a
//! plain ONNX file for every other tool.

use crate::error::{OnnxError, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secateur_graph::{Mask, MaskPattern};

pub const PREFIX: &str = "secateur.mask.";

fn pattern_str(p: MaskPattern) -> String {
    match p {
        MaskPattern::Unstructured => "unstructured".into(),
        MaskPattern::NM { n, m } => format!("nm:{n}:{m}"),
        MaskPattern::Block { rows, cols } => format!("block:{rows}:{cols}"),
    }
}

fn parse_pattern(s: &str) -> Option<MaskPattern> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["unstructured"] => Some(MaskPattern::Unstructured),
        ["nm", n, m] => Some(MaskPattern::NM {
            n: n.parse().ok()?,
            m: m.parse().ok()?,
        }),
        ["block", r, c] => Some(MaskPattern::Block {
            rows: r.parse().ok()?,
            cols: c.parse().ok()?,
        }),
        _ => None,
    }
}

/// Encodes the mask of a weight stored as a sparse initializer: its keep set is the
/// initializer's index set, so only the pattern, axis and length are written.
pub fn encode_from_indices(mask: &Mask) -> String {
    format!(
        "{}|{}|{}|{}",
        pattern_str(mask.pattern),
        mask.out_axis,
        mask.keep.len(),
        crate::sparse_init::FROM_INDICES
    )
}

/// Encodes a mask as a metadata value.
pub fn encode(mask: &Mask) -> String {
    let mut bytes = vec![0u8; mask.keep.len().div_ceil(8)];
    for (i, &k) in mask.keep.iter().enumerate() {
        if k {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    format!(
        "{}|{}|{}|{}",
        pattern_str(mask.pattern),
        mask.out_axis,
        mask.keep.len(),
        STANDARD.encode(bytes)
    )
}

/// Decodes a metadata value back into a mask; `stored` is the keep set of the weight's sparse
/// initializer, if it has one.
pub fn decode(weight: &str, value: &str, stored: Option<&[bool]>) -> Result<Mask> {
    let bad = |m: &str| {
        OnnxError::Model(format!(
            "mask metadata for weight '{weight}' is malformed: {m}"
        ))
    };
    let parts: Vec<&str> = value.split('|').collect();
    let [pattern, axis, len, bits] = parts.as_slice() else {
        return Err(bad("expected pattern|out_axis|length|bits"));
    };
    let pattern = parse_pattern(pattern).ok_or_else(|| bad("unknown pattern"))?;
    let out_axis = axis.parse().map_err(|_| bad("out_axis is not a number"))?;
    let len: usize = len.parse().map_err(|_| bad("length is not a number"))?;
    if *bits == crate::sparse_init::FROM_INDICES {
        let keep = stored.ok_or_else(|| bad("it refers to a sparse initializer the file lacks"))?;
        if keep.len() != len {
            return Err(bad(
                "the sparse initializer's size does not match the length",
            ));
        }
        return Ok(Mask {
            keep: keep.to_vec(),
            pattern,
            out_axis,
        });
    }
    let bytes = STANDARD
        .decode(bits)
        .map_err(|_| bad("bits are not base64"))?;
    if bytes.len() != len.div_ceil(8) {
        return Err(bad("bit count does not match the length"));
    }
    let keep = (0..len)
        .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
        .collect();
    Ok(Mask {
        keep,
        pattern,
        out_axis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Mask {
            keep: vec![true, false, false, true, true, false, true, false, true],
            pattern: MaskPattern::NM { n: 1, m: 3 },
            out_axis: 0,
        };
        assert_eq!(decode("w", &encode(&m), None).unwrap(), m);
        assert!(decode("w", "nm:1:3|0|9|!!", None).is_err());
        assert!(decode("w", "unstructured|0|9|sparse_initializer", None).is_err());
        assert!(decode("w", "weird|0|9|AAA=", None).is_err());
    }
}
