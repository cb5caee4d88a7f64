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

/// Decodes a metadata value back into a mask.
pub fn decode(weight: &str, value: &str) -> Result<Mask> {
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
        assert_eq!(decode("w", &encode(&m)).unwrap(), m);
        assert!(decode("w", "nm:1:3|0|9|!!").is_err());
        assert!(decode("w", "weird|0|9|AAA=").is_err());
    }
}
