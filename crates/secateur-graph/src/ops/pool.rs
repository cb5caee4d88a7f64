//! Spatial pooling: `MaxPool`, `AveragePool` (with `count_include_pad` and `ceil_mode`) and
//! `GlobalAveragePool`. Batch and channel axes pass through linked; spatial axes are pinned.

use super::{AxisLink, OpSemantics, Port, expect_rank, known_dim};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Window geometry shared by max and average pooling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolGeometry {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub ceil_mode: bool,
}

impl PoolGeometry {
    /// A square window with stride equal to its size and no padding (the common `pool 2`).
    pub fn square(k: usize) -> Self {
        PoolGeometry {
            kernel: [k, k],
            strides: [k, k],
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
        }
    }

    /// Output size along a spatial axis (PyTorch's rule for `ceil_mode`: the last window must
    /// start inside the input or the leading padding).
    pub fn out_size(&self, input: usize, axis: usize) -> Option<usize> {
        let padded = input + self.pads[axis] + self.pads[axis + 2];
        let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
        let s = self.strides[axis];
        if padded < span || s == 0 {
            return None;
        }
        let num = padded - span;
        let mut out = if self.ceil_mode {
            num.div_ceil(s) + 1
        } else {
            num / s + 1
        };
        if self.ceil_mode && (out - 1) * s >= input + self.pads[axis] {
            out -= 1;
        }
        Some(out)
    }

    /// The latency-table signature of a pooling layer with this window.
    fn signature(&self, op: &'static str, inputs: &[Vec<usize>]) -> (&'static str, String) {
        let spatial = inputs.first().and_then(|s| s.get(2..)).unwrap_or(&[]);
        let geometry = format!(
            "k{:?} s{:?} p{:?} in{spatial:?}",
            self.kernel, self.strides, self.pads
        );
        (op, geometry)
    }

    fn infer(&self, x: &Shape, op: &str) -> Result<Shape, OpError> {
        expect_rank(x, 4, &format!("{op} input (only 2-D pooling is supported)"))?;
        let mut out = vec![x.0[0], x.0[1]];
        for axis in 0..2 {
            let size = known_dim(x, 2 + axis, op)?;
            let o = self.out_size(size, axis).ok_or_else(|| {
                OpError::new(format!("window {:?} does not fit input {x}", self.kernel))
            })?;
            out.push(Dim::Known(o));
        }
        Ok(Shape(out))
    }

    /// Calls `f(c_offset, oy, ox, taps)` for every output element where `taps` lists the flat
    /// input offsets within one channel plane that fall inside the input.
    fn for_each_window(
        &self,
        h: usize,
        w: usize,
        mut f: impl FnMut(usize, usize, &[usize], usize),
    ) -> (usize, usize) {
        let ho = self.out_size(h, 0).unwrap_or(0);
        let wo = self.out_size(w, 1).unwrap_or(0);
        let mut taps = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
        for oy in 0..ho {
            for ox in 0..wo {
                taps.clear();
                let mut padded_count = 0;
                for ky in 0..self.kernel[0] {
                    let iy = (oy * self.strides[0] + ky * self.dilations[0]) as isize
                        - self.pads[0] as isize;
                    for kx in 0..self.kernel[1] {
                        let ix = (ox * self.strides[1] + kx * self.dilations[1]) as isize
                            - self.pads[1] as isize;
                        let in_padded =
                            iy < (h + self.pads[2]) as isize && ix < (w + self.pads[3]) as isize;
                        if in_padded {
                            padded_count += 1;
                        }
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            taps.push(iy as usize * w + ix as usize);
                        }
                    }
                }
                f(oy, ox, &taps, padded_count);
            }
        }
        (ho, wo)
    }

    fn eval(
        &self,
        x: &Tensor,
        reduce: impl Fn(&[f32], &[usize], usize) -> f32,
    ) -> Result<Tensor, OpError> {
        let s = x.shape();
        if s.len() != 4 {
            op_bail!("pooling needs a rank-4 input, got {:?}", s);
        }
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let ho = self
            .out_size(h, 0)
            .ok_or_else(|| OpError::new("window does not fit"))?;
        let wo = self
            .out_size(w, 1)
            .ok_or_else(|| OpError::new("window does not fit"))?;
        let mut out = vec![0.0; n * c * ho * wo];
        for plane in 0..n * c {
            let src = &x.data()[plane * h * w..(plane + 1) * h * w];
            let dst = &mut out[plane * ho * wo..(plane + 1) * ho * wo];
            self.for_each_window(h, w, |oy, ox, taps, padded| {
                dst[oy * wo + ox] = reduce(src, taps, padded);
            });
        }
        Tensor::new(vec![n, c, ho, wo], out).map_err(|e| OpError::new(e.to_string()))
    }
}

fn batch_channel_links() -> Vec<AxisLink> {
    (0..2)
        .map(|ax| AxisLink::identity((Port::Input(0), ax), (Port::Output(0), ax)))
        .collect()
}

/// Maximum over each window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxPool {
    pub geometry: PoolGeometry,
}

impl OpSemantics for MaxPool {
    fn kernel_signature(&self, inputs: &[Vec<usize>]) -> (&'static str, String) {
        self.geometry.signature("MaxPool", inputs)
    }

    fn op_type(&self) -> &'static str {
        "MaxPool"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        Ok(vec![self.geometry.infer(&inputs[0], "MaxPool")?])
    }

    fn axis_links(&self, _inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        batch_channel_links()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        let k = (self.geometry.kernel[0] * self.geometry.kernel[1]) as u64;
        outputs[0].iter().product::<usize>() as u64 * k
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![self.geometry.eval(inputs[0], |src, taps, _| {
            taps.iter()
                .map(|&t| src[t])
                .fold(f32::NEG_INFINITY, f32::max)
        })?])
    }
}

/// Mean over each window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AveragePool {
    pub geometry: PoolGeometry,
    pub count_include_pad: bool,
}

impl OpSemantics for AveragePool {
    fn kernel_signature(&self, inputs: &[Vec<usize>]) -> (&'static str, String) {
        self.geometry.signature("AveragePool", inputs)
    }

    fn op_type(&self) -> &'static str {
        "AveragePool"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        Ok(vec![self.geometry.infer(&inputs[0], "AveragePool")?])
    }

    fn axis_links(&self, _inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        batch_channel_links()
    }

    fn elementwise_ops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        let k = (self.geometry.kernel[0] * self.geometry.kernel[1]) as u64;
        outputs[0].iter().product::<usize>() as u64 * k
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let include = self.count_include_pad;
        Ok(vec![self.geometry.eval(
            inputs[0],
            |src, taps, padded| {
                let sum: f32 = taps.iter().map(|&t| src[t]).sum();
                let count = if include { padded } else { taps.len() };
                if count == 0 { 0.0 } else { sum / count as f32 }
            },
        )?])
    }
}

/// Mean over all spatial positions: `[N, C, H, W] → [N, C, 1, 1]`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct GlobalAveragePool {
    /// Whether the spatial axes stay as size-1 axes (`[N, C, 1, 1]`, ONNX `GlobalAveragePool`)
    /// or are dropped (`[N, C]`, a `ReduceMean` over the spatial axes with `keepdims=0`).
    #[serde(default = "keep_dims_default")]
    pub keep_dims: bool,
}

fn keep_dims_default() -> bool {
    true
}

impl GlobalAveragePool {
    /// The ONNX op: spatial axes kept as size 1.
    pub const KEEP: GlobalAveragePool = GlobalAveragePool { keep_dims: true };
}

impl OpSemantics for GlobalAveragePool {
    fn op_type(&self) -> &'static str {
        "GlobalAveragePool"
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let x = &inputs[0];
        if x.rank() < 3 {
            op_bail!("input must have rank >= 3 (N, C, spatial...), got {x}");
        }
        let mut out = vec![x.0[0], x.0[1]];
        if self.keep_dims {
            out.extend(std::iter::repeat_n(Dim::Known(1), x.rank() - 2));
        }
        Ok(vec![Shape(out)])
    }

    fn axis_links(&self, _inputs: &[Shape], _outputs: &[Shape]) -> Vec<AxisLink> {
        batch_channel_links()
    }

    fn elementwise_ops(&self, inputs: &[Vec<usize>], _outputs: &[Vec<usize>]) -> u64 {
        inputs[0].iter().product::<usize>() as u64
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let x = inputs[0];
        let s = x.shape();
        let planes = s[0] * s[1];
        let inner: usize = s[2..].iter().product();
        let data: Vec<f32> = (0..planes)
            .map(|p| x.data()[p * inner..(p + 1) * inner].iter().sum::<f32>() / inner as f32)
            .collect();
        let mut shape = vec![s[0], s[1]];
        if self.keep_dims {
            shape.extend(std::iter::repeat_n(1, s.len() - 2));
        }
        Ok(vec![
            Tensor::new(shape, data).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_average_pool_values() {
        let x = Tensor::from_fn(vec![1, 1, 4, 4], |i| i as f32);
        let mp = MaxPool {
            geometry: PoolGeometry::square(2),
        };
        assert_eq!(mp.eval(&[&x]).unwrap()[0].data(), &[5., 7., 13., 15.]);
        let ap = AveragePool {
            geometry: PoolGeometry::square(2),
            count_include_pad: false,
        };
        assert_eq!(ap.eval(&[&x]).unwrap()[0].data(), &[2.5, 4.5, 10.5, 12.5]);
        let g = GlobalAveragePool::KEEP.eval(&[&x]).unwrap().remove(0);
        assert_eq!(g.shape(), &[1, 1, 1, 1]);
        assert_eq!(g.data(), &[7.5]);
        let flat = GlobalAveragePool { keep_dims: false };
        let g = flat.eval(&[&x]).unwrap().remove(0);
        assert_eq!(g.shape(), &[1, 1]);
        assert_eq!(g.data(), &[7.5]);
        assert_eq!(
            flat.infer(&[Shape::known(&[2, 3, 4, 4])]).unwrap()[0],
            Shape::known(&[2, 3])
        );
    }

    #[test]
    fn padding_and_ceil_mode() {
        let mut geo = PoolGeometry::square(3);
        geo.strides = [2, 2];
        geo.pads = [1; 4];
        // PyTorch: AvgPool2d(3, 2, 1) on 4x4 -> 2x2, with ceil_mode -> 3x3; on 3x3 with
        // ceil_mode the third window would start in the trailing padding and is dropped.
        assert_eq!(geo.out_size(4, 0), Some(2));
        geo.ceil_mode = true;
        assert_eq!(geo.out_size(4, 0), Some(3));
        geo.pads = [0; 4];
        geo.kernel = [2, 2];
        assert_eq!(geo.out_size(5, 0), Some(3));
        geo.pads = [1; 4];
        geo.kernel = [3, 3];
        geo.ceil_mode = false;
        let x = Tensor::full(vec![1, 1, 4, 4], 1.0);
        let with_pad = AveragePool {
            geometry: geo.clone(),
            count_include_pad: true,
        };
        let without = AveragePool {
            geometry: geo,
            count_include_pad: false,
        };
        // top-left window covers 2x2 real pixels out of 3x3
        assert!((with_pad.eval(&[&x]).unwrap()[0].data()[0] - 4.0 / 9.0).abs() < 1e-6);
        assert_eq!(without.eval(&[&x]).unwrap()[0].data()[0], 1.0);
    }
}
