//! Int8 quantization as graph data: which weights are quantized (per output channel,
//! symmetric, int8) and the affine uint8 parameters of the activation entering each quantized
//! node. The reference evaluator simulates them exactly as ONNX `QuantizeLinear` /
//! `DequantizeLinear` compute (round half to even, saturation), and export writes them as a QDQ
//! model, so the oracle, training and ONNX Runtime agree.

use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Affine uint8 quantization of one activation: `q = clamp(round(x / scale) + zero_point, 0, 255)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActQuant {
    pub scale: f32,
    pub zero_point: u8,
}

impl ActQuant {
    /// Parameters covering `[lo, hi]` (extended to include 0, as ONNX requires).
    pub fn from_range(lo: f32, hi: f32) -> Self {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let scale = ((hi - lo) / 255.0).max(1e-8);
        let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        ActQuant {
            scale,
            zero_point: zp,
        }
    }

    /// Quantize then dequantize one value.
    pub fn fake(&self, x: f32) -> f32 {
        let q = ((x / self.scale).round_ties_even() + self.zero_point as f32).clamp(0.0, 255.0);
        (q - self.zero_point as f32) * self.scale
    }
}

/// Quantization annotations of a graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// Weight name → axis of its output channels (per-channel symmetric int8).
    pub weights: BTreeMap<String, usize>,
    /// Node name → quantization of the activation entering it (its first input).
    pub activations: BTreeMap<String, ActQuant>,
}

/// Per-channel symmetric int8 quantization of a weight whose output channels run along
/// `out_axis` (the first or last axis): the int8 values and one scale per channel.
/// A zero weight stays exactly zero.
pub fn quantize_weight(w: &Tensor, out_axis: usize) -> (Vec<i8>, Vec<f32>) {
    let shape = w.shape();
    let channels = shape.get(out_axis).copied().unwrap_or(1).max(1);
    let inner: usize = shape[out_axis + 1..].iter().product();
    let ch_of = |i: usize| (i / inner.max(1)) % channels;
    let mut maxabs = vec![0.0f32; channels];
    for (i, v) in w.data().iter().enumerate() {
        let c = ch_of(i);
        maxabs[c] = maxabs[c].max(v.abs());
    }
    let scales: Vec<f32> = maxabs
        .into_iter()
        .map(|m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = w
        .data()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (v / scales[ch_of(i)])
                .round_ties_even()
                .clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

/// The weight as the quantized model sees it (`q · scale`).
pub fn fake_quant_weight(w: &Tensor, out_axis: usize) -> Tensor {
    let (q, scales) = quantize_weight(w, out_axis);
    let shape = w.shape();
    let channels = shape.get(out_axis).copied().unwrap_or(1).max(1);
    let inner: usize = shape[out_axis + 1..].iter().product();
    Tensor::from_fn(shape.to_vec(), |i| {
        q[i] as f32 * scales[(i / inner.max(1)) % channels]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_symmetric() {
        let w = Tensor::new(vec![2, 3], vec![1.27, -0.635, 0.0, 0.0, 0.0, 0.0]).unwrap();
        let (q, s) = quantize_weight(&w, 0);
        assert_eq!(q, vec![127, -64, 0, 0, 0, 0]);
        assert!((s[0] - 0.01).abs() < 1e-7);
        assert_eq!(s[1], 1.0);
        // output axis last (a [in, out] matrix)
        let (q, _) = quantize_weight(
            &Tensor::new(vec![2, 2], vec![1.0, 0.5, -1.0, 0.25]).unwrap(),
            1,
        );
        assert_eq!(q, vec![127, 127, -127, 64]);
    }

    #[test]
    fn activation_round_trip() {
        let a = ActQuant::from_range(-1.0, 3.0);
        assert_eq!(a.zero_point, 64);
        assert!((a.fake(1.0) - 1.0).abs() <= a.scale / 2.0);
        assert_eq!(a.fake(100.0), (255.0 - 64.0) * a.scale);
    }
}
