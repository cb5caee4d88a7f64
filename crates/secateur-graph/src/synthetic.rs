//! Synthetic inputs for timing a graph: what each graph input holds (float data, token ids,
//! an attention mask, token types), told by its element type and its name, and values of that
//! kind that any model accepts (token ids below 100 fall inside every vocabulary, a mask of
//! ones, token types of zero). Benchmarks, latency tables and profiles all feed these, so a
//! text model is timed on valid inputs everywhere.

use crate::graph::{ElemType, Graph, ValueInfo};
use serde::Serialize;

/// What a graph input holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Float data (values in [-0.5, 0.5) when synthetic).
    Float,
    /// Token ids (below 100 when synthetic).
    Ids,
    /// An attention mask (ones when synthetic).
    Mask,
    /// Token types (zeros when synthetic).
    Types,
}

/// The token input a name stands for (`input_ids`, `attention_mask`, `token_type_ids`, ...),
/// if any.
pub fn token_kind_of_name(name: &str) -> Option<InputKind> {
    let n = name.to_ascii_lowercase();
    if n.contains("mask") {
        Some(InputKind::Mask)
    } else if n.contains("type") || n.contains("segment") {
        Some(InputKind::Types)
    } else if n.contains("ids") || n.contains("input") || n.contains("token") {
        Some(InputKind::Ids)
    } else {
        None
    }
}

impl InputKind {
    /// The kind of a graph input: float inputs hold data, integer ones tokens named by their
    /// input name (token ids when the name says nothing).
    pub fn of(info: &ValueInfo) -> InputKind {
        match info.dtype {
            ElemType::Float => InputKind::Float,
            _ => token_kind_of_name(&info.name).unwrap_or(InputKind::Ids),
        }
    }

    /// `n` synthetic values of this kind.
    pub fn synthetic(self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| match self {
                InputKind::Float => ((i * 31) % 255) as f32 / 255.0 - 0.5,
                InputKind::Ids => ((i * 31) % 100) as f32,
                InputKind::Mask => 1.0,
                InputKind::Types => 0.0,
            })
            .collect()
    }
}

/// One synthetic input per graph input, for a compiled plan's input `shapes` (graph order).
pub fn synthetic_inputs(g: &Graph, shapes: &[Vec<usize>]) -> Vec<(InputKind, Vec<f32>)> {
    g.inputs
        .iter()
        .zip(shapes)
        .map(|(info, shape)| {
            let kind = InputKind::of(info);
            (kind, kind.synthetic(shape.iter().product()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_inputs_are_told_by_their_names() {
        assert_eq!(token_kind_of_name("input_ids"), Some(InputKind::Ids));
        assert_eq!(token_kind_of_name("attention_mask"), Some(InputKind::Mask));
        assert_eq!(token_kind_of_name("token_type_ids"), Some(InputKind::Types));
        assert_eq!(token_kind_of_name("pixel_values"), None);
        assert!(InputKind::Ids.synthetic(500).iter().all(|&v| v < 100.0));
        assert!(InputKind::Mask.synthetic(7).iter().all(|&v| v == 1.0));
    }
}
