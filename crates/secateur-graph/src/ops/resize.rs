//! `Resize` of the spatial axes of an `[N, C, H, W]` (or `[N, C, L]`) activation to fixed
//! sizes, nearest, (bi)linear or (bi)cubic, with ONNX's coordinate transformations: what `nn.Upsample`
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
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ResizeMode {
    Nearest(NearestRounding),
    Linear,
    /// Keys' cubic convolution over four pixels with coefficient `a` (ONNX `cubic_coeff_a`:
    /// -0.75 as PyTorch's bicubic, -0.5 as TensorFlow's); `exclude_outside` gives taps beyond
    /// the border no weight (renormalising the rest) instead of repeating the edge pixel.
    Cubic {
        a: f32,
        exclude_outside: bool,
    },
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

/// Keys' cubic convolution kernel with coefficient `a` at distance `x`.
fn cubic_weight(a: f32, x: f32) -> f32 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

impl Resize {
    /// The input coordinate output position `o` of resized axis `k` maps to (ONNX
    /// `coordinate_transformation_mode`, in single precision as ONNX Runtime computes it).
    fn source(&self, k: usize, o: usize, n_in: usize) -> f32 {
        let (n_out, scale) = (self.sizes[k], self.scales[k]);
        let last = n_in.saturating_sub(1) as f32;
        let x = o as f32;
        match self.coordinates {
            ResizeCoordinates::HalfPixel => (x + 0.5) / scale - 0.5,
            ResizeCoordinates::PytorchHalfPixel if n_out > 1 => (x + 0.5) / scale - 0.5,
            ResizeCoordinates::PytorchHalfPixel => 0.0,
            ResizeCoordinates::AlignCorners if n_out > 1 => x * last / (n_out - 1) as f32,
            ResizeCoordinates::AlignCorners => 0.0,
            ResizeCoordinates::Asymmetric => x / scale,
            ResizeCoordinates::TfHalfPixelForNn => (x + 0.5) / scale,
        }
    }

    /// The four input pixels and weights of every output position along resized axis `k`
    /// (of `n_in` pixels) in cubic mode (empty in the other modes).
    pub fn cubic_taps(&self, k: usize, n_in: usize) -> Vec<[(usize, f32); 4]> {
        let ResizeMode::Cubic { a, exclude_outside } = self.mode else {
            return Vec::new();
        };
        let last = n_in as i64 - 1;
        (0..self.sizes[k])
            .map(|o| {
                let src = self.source(k, o, n_in);
                let (base, t) = (src.floor(), src - src.floor());
                let mut taps = [(0usize, 0.0f32); 4];
                for (j, tap) in taps.iter_mut().enumerate() {
                    let i = base as i64 - 1 + j as i64;
                    let inside = (0..=last).contains(&i);
                    let w = if exclude_outside && !inside {
                        0.0
                    } else {
                        cubic_weight(a, t + 1.0 - j as f32)
                    };
                    *tap = (i.clamp(0, last.max(0)) as usize, w);
                }
                if exclude_outside {
                    let sum: f32 = taps.iter().map(|t| t.1).sum();
                    for tap in &mut taps {
                        tap.1 /= sum;
                    }
                }
                taps
            })
            .collect()
    }

    /// The taps of every output position along resized axis `k` (of `n_in` pixels), in
    /// single precision as ONNX Runtime computes them (nearest and linear modes; cubic mode
    /// reads four pixels: [`Resize::cubic_taps`]).
    pub fn taps(&self, k: usize, n_in: usize) -> Vec<Tap> {
        let last = n_in.saturating_sub(1) as f32;
        (0..self.sizes[k])
            .map(|o| {
                let src = self.source(k, o, n_in);
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
                    ResizeMode::Linear | ResizeMode::Cubic { .. } => {
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
        let taps = match (self.mode, self.sizes.len()) {
            (ResizeMode::Nearest(_), _) => 1,
            (ResizeMode::Linear, _) => 3,
            (ResizeMode::Cubic { .. }, 1) => 7,
            (ResizeMode::Cubic { .. }, _) => 14,
        };
        taps * outputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        if matches!(self.mode, ResizeMode::Cubic { .. }) {
            return self.eval_cubic(inputs[0]);
        }
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

impl Resize {
    /// Cubic mode: each resized axis in turn, four weighted pixels per output position.
    fn eval_cubic(&self, x: &Tensor) -> Result<Vec<Tensor>, OpError> {
        let out_shape = self.infer(&[Shape::known(x.shape())])?[0].resolve(1);
        let mut shape = x.shape().to_vec();
        let mut data = x.data().to_vec();
        for k in 0..self.sizes.len() {
            let ax = 2 + k;
            let (n_in, n_out) = (shape[ax], self.sizes[k]);
            let taps = self.cubic_taps(k, n_in);
            let outer: usize = shape[..ax].iter().product();
            let inner: usize = shape[ax + 1..].iter().product();
            let mut next = vec![0.0f32; outer * n_out * inner];
            for o in 0..outer {
                let src = &data[o * n_in * inner..(o + 1) * n_in * inner];
                let dst = &mut next[o * n_out * inner..(o + 1) * n_out * inner];
                for (p, tap) in taps.iter().enumerate() {
                    let row = &mut dst[p * inner..(p + 1) * inner];
                    for &(i, w) in tap {
                        for (d, s) in row.iter_mut().zip(&src[i * inner..(i + 1) * inner]) {
                            *d += w * s;
                        }
                    }
                }
            }
            shape[ax] = n_out;
            data = next;
        }
        Ok(vec![
            Tensor::new(out_shape, data).map_err(|e| OpError::new(e.to_string()))?,
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
    fn cubic_matches_pytorch_bicubic() {
        // F.interpolate(x, size=(1, 6), mode="bicubic", align_corners=False) and
        // size=(1, 3), align_corners=True on x = [0, 1, 4, 9] (PyTorch 2.15)
        let x = Tensor::new(vec![1, 1, 1, 4], vec![0., 1., 4., 9.]).unwrap();
        let cubic = ResizeMode::Cubic {
            a: -0.75,
            exclude_outside: false,
        };
        let scaled = |coordinates, sizes: Vec<usize>, input: &[usize]| Resize {
            scales: sizes
                .iter()
                .zip(input)
                .map(|(&o, &i)| o as f32 / i as f32)
                .collect(),
            ..resize(cubic, coordinates, sizes)
        };
        let wide = scaled(ResizeCoordinates::HalfPixel, vec![1, 6], &[1, 4]);
        let y = wide.eval(&[&x]).unwrap().remove(0);
        let want = [-0.0868056, 0.21875, 1.430555, 3.1527777, 6.78125, 9.434029];
        for (a, b) in y.data().iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {want:?}", y.data());
        }
        let corners = scaled(ResizeCoordinates::AlignCorners, vec![1, 3], &[1, 4]);
        let y = corners.eval(&[&x]).unwrap().remove(0);
        assert_eq!(y.data(), &[0., 2.125, 9.]);
        // excluding the outside keeps weights summing to one: a constant stays constant
        let flat = Tensor::new(vec![1, 1, 3], vec![2., 2., 2.]).unwrap();
        let inside = ResizeMode::Cubic {
            a: -0.5,
            exclude_outside: true,
        };
        let seven = Resize {
            scales: vec![7.0 / 3.0],
            ..resize(inside, ResizeCoordinates::HalfPixel, vec![7])
        };
        let y = seven.eval(&[&flat]).unwrap().remove(0);
        assert!(y.data().iter().all(|v| (v - 2.0).abs() < 1e-6), "{y:?}");
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
