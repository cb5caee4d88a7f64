//! `Resize` of the spatial axes of an `[N, C, H, W]` (or `[N, C, L]`) activation to fixed
//! sizes, nearest or (bi)linear, with ONNX's coordinate transformations: what `nn.Upsample`
//! and `F.interpolate` export to (HRNet's fusion layers, feature pyramids, segmentation heads).
//! The batch and channel axes are linked to the output; the resized axes are pinned.

use super::{AxisLink, OpSemantics, Port};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How an output coordinate maps to an input coordinate (ONNX
/// `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeCoordinates {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

/// How a fractional input coordinate picks a pixel in nearest mode (ONNX `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NearestRounding {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// The interpolation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeMode {
    Nearest(NearestRounding),
    Linear,
}

/// Resize of the axes from 2 on to `sizes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coordinates: ResizeCoordinates,
    /// Output sizes of the axes from 2 on.
    pub sizes: Vec<usize>,
    /// The scale of each of those axes in the coordinate transformation: the file's `scales`
    /// where it gives them (the output size is their floor), else output / input size.
    pub scales: Vec<f32>,
    /// Whether the file gave output sizes rather than scales (so export writes sizes too).
    pub from_sizes: bool,
}

/// One output position along a resized axis: the input pixels it reads and their weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    pub lo: usize,
    pub hi: usize,
    /// Weight of `hi` (that of `lo` is `1 - w`); 0 in nearest mode.
    pub w: f32,
}

impl Resize {
    /// The taps of every output position along resized axis `k` (of `n_in` pixels), in
    /// single precision as ONNX Runtime computes them.
    pub fn taps(&self, k: usize, n_in: usize) -> Vec<Tap> {
        let n_out = self.sizes[k];
        let scale = self.scales[k];
        let last = n_in.saturating_sub(1) as f32;
        (0..n_out)
            .map(|o| {
                let x = o as f32;
                let src = match self.coordinates {
                    ResizeCoordinates::HalfPixel => (x + 0.5) / scale - 0.5,
                    ResizeCoordinates::PytorchHalfPixel if n_out > 1 => (x + 0.5) / scale - 0.5,
                    ResizeCoordinates::PytorchHalfPixel => 0.0,
                    ResizeCoordinates::AlignCorners if n_out > 1 => x * last / (n_out - 1) as f32,
                    ResizeCoordinates::AlignCorners => 0.0,
                    ResizeCoordinates::Asymmetric => x / scale,
                    ResizeCoordinates::TfHalfPixelForNn => (x + 0.5) / scale,
                };
                match self.mode {
                    ResizeMode::Nearest(r) => {
                        let i = match r {
                            NearestRounding::RoundPreferFloor if src.fract() == 0.5 => src.floor(),
                            NearestRounding::RoundPreferFloor => src.round(),
                            NearestRounding::RoundPreferCeil => (src + 0.5).floor(),
                            NearestRounding::Floor => src.floor(),
                            NearestRounding::Ceil => src.ceil(),
                        };
                        let i = i.clamp(0.0, last) as usize;
                        Tap {
                            lo: i,
                            hi: i,
                            w: 0.0,
                        }
                    }
                    ResizeMode::Linear => {
                        let s = src.clamp(0.0, last);
                        let lo = s.floor() as usize;
                        let hi = (lo + 1).min(n_in - 1);
                        Tap {
                            lo,
                            hi,
                            w: s - lo as f32,
                        }
                    }
                }
            })
            .collect()
    }
}

impl OpSemantics for Resize {
    fn op_type(&self) -> &'static str {
        "Resize"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        let n = self.sizes.len();
        if x.rank() != 2 + n || !(1..=2).contains(&n) || self.scales.len() != n {
            op_bail!(
                "resizing {x} to spatial sizes {:?}: only the 1 or 2 axes after [N, C] resize",
                self.sizes
            );
        }
        let bad_scale = self.scales.iter().any(|s| !(s.is_finite() && *s > 0.0));
        if x.0[2..].iter().any(|d| d.known().is_none_or(|n| n == 0))
            || self.sizes.contains(&0)
            || bad_scale
        {
            op_bail!(
                "resizing {x} to {:?}: sizes must be known and non-zero",
                self.sizes
            );
        }
        let mut dims = x.0[..2].to_vec();
        dims.extend(self.sizes.iter().map(|&n| Dim::Known(n)));
        Ok(vec![Shape(dims)])
    }

    fn axis_links(&self, _inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        (0..2)
            .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
            .collect()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        let taps = if self.mode == ResizeMode::Linear {
            3
        } else {
            1
        };
        taps * outputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let out_shape = self.infer(&[Shape::known(x.shape())])?[0].resolve(1);
        let s = x.shape();
        let (h, w) = if s.len() == 4 {
            (s[2], s[3])
        } else {
            (1, s[2])
        };
        let one = [Tap {
            lo: 0,
            hi: 0,
            w: 0.0,
        }];
        let (th, tw) = if s.len() == 4 {
            (self.taps(0, h), self.taps(1, w))
        } else {
            (one.to_vec(), self.taps(0, w))
        };
        let (ho, wo) = (th.len(), tw.len());
        let planes = s[0] * s[1];
        let mut out = Vec::with_capacity(planes * ho * wo);
        for p in 0..planes {
            let plane = &x.data()[p * h * w..(p + 1) * h * w];
            for ty in &th {
                let row = |r: usize, tx: &Tap| {
                    let v = &plane[r * w..(r + 1) * w];
                    v[tx.lo] * (1.0 - tx.w) + v[tx.hi] * tx.w
                };
                for tx in &tw {
                    out.push(row(ty.lo, tx) * (1.0 - ty.w) + row(ty.hi, tx) * ty.w);
                }
            }
        }
        Ok(vec![
            Tensor::new(out_shape, out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resize of `[.., 2, 2]`-style inputs whose scales are output / input size.
    fn resize(mode: ResizeMode, coordinates: ResizeCoordinates, sizes: Vec<usize>) -> Resize {
        let scales = sizes.iter().map(|&n| n as f32 / 2.0).collect();
        Resize {
            mode,
            coordinates,
            sizes,
            scales,
            from_sizes: true,
        }
    }

    #[test]
    fn nearest_doubling_repeats_pixels() {
        let x = Tensor::new(vec![1, 1, 2, 2], vec![1., 2., 3., 4.]).unwrap();
        let r = resize(
            ResizeMode::Nearest(NearestRounding::Floor),
            ResizeCoordinates::Asymmetric,
            vec![4, 4],
        );
        let y = r.eval(&[&x]).unwrap().remove(0);
        assert_eq!(
            y.data(),
            &[
                1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.
            ]
        );
    }

    #[test]
    fn linear_half_pixel_matches_hand_values() {
        // [0, 1] doubled with half-pixel centres: 0, 0.25, 0.75, 1 (edges clamped)
        let x = Tensor::new(vec![1, 1, 2], vec![0., 1.]).unwrap();
        let r = resize(ResizeMode::Linear, ResizeCoordinates::HalfPixel, vec![4]);
        let y = r.eval(&[&x]).unwrap().remove(0);
        assert_eq!(y.data(), &[0., 0.25, 0.75, 1.]);
        let corners = resize(ResizeMode::Linear, ResizeCoordinates::AlignCorners, vec![3]);
        let y = corners.eval(&[&x]).unwrap().remove(0);
        assert_eq!(y.data(), &[0., 0.5, 1.]);
    }

    #[test]
    fn refuses_other_ranks_and_zero_sizes() {
        let r = resize(ResizeMode::Linear, ResizeCoordinates::HalfPixel, vec![4, 4]);
        assert!(r.infer(&[Shape::batched(&[3, 8])]).is_err());
        let zero = resize(ResizeMode::Linear, ResizeCoordinates::HalfPixel, vec![0, 4]);
        assert!(zero.infer(&[Shape::batched(&[3, 8, 8])]).is_err());
        let ok = r.infer(&[Shape::batched(&[3, 8, 8])]).unwrap();
        assert_eq!(ok[0], Shape::batched(&[3, 4, 4]));
    }
}
