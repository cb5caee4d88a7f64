//! 2-D convolution (ONNX `Conv`) with strides, explicit pads, dilations and groups, depthwise
//! included. Output channels are linked to the weight's first axis and the bias; input channels
//! to the weight's second axis, or, for a depthwise convolution, directly to the output channels
//! (channel `c` feeds output channels `c·k .. c·k+k` for a channel multiplier `k`).

use super::{
    AxisLink, AxisRole, IndexMap, InputRole, OpClass, OpSemantics, Port, expect_rank, known_dim,
};
use crate::error::OpError;
use crate::op_bail;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Attributes of a 2-D convolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    /// Padding as ONNX orders it: top, left, bottom, right.
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub groups: usize,
}

impl Conv {
    /// A convolution with unit stride and dilation, one group and symmetric padding.
    pub fn new(kernel: [usize; 2], pad: usize) -> Self {
        Conv {
            kernel,
            strides: [1, 1],
            pads: [pad; 4],
            dilations: [1, 1],
            groups: 1,
        }
    }

    /// Output spatial size along one axis.
    pub fn out_size(&self, input: usize, axis: usize) -> Option<usize> {
        let padded = input + self.pads[axis] + self.pads[axis + 2];
        let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
        if padded < span || self.strides[axis] == 0 {
            return None;
        }
        Some((padded - span) / self.strides[axis] + 1)
    }

    /// Whether every input channel is its own group (`groups == C_in`).
    pub fn is_depthwise(&self, in_channels: usize) -> bool {
        self.groups > 1 && self.groups == in_channels
    }
}

impl OpSemantics for Conv {
    fn class(&self) -> OpClass {
        OpClass::WeightedLayer
    }

    fn op_type(&self) -> &'static str {
        "Conv"
    }

    fn input_count(&self) -> RangeInclusive<usize> {
        2..=3
    }

    fn kernel_signature(&self, inputs: &[Vec<usize>]) -> (&'static str, String) {
        let x = &inputs[0];
        let kind = if self.is_depthwise(x.get(1).copied().unwrap_or(1)) {
            "Conv-dw"
        } else {
            "Conv"
        };
        let groups = if self.groups > 1 { "x" } else { "1" };
        let geometry = format!(
            "k{:?} s{:?} p{:?} d{:?} g{groups} in{:?}",
            self.kernel,
            self.strides,
            self.pads,
            self.dilations,
            x.get(2..).unwrap_or(&[])
        );
        (kind, geometry)
    }

    fn input_roles(&self, n: usize) -> Vec<InputRole> {
        let mut r = vec![InputRole::Data, InputRole::Weight];
        if n == 3 {
            r.push(InputRole::Bias);
        }
        r
    }

    fn param_axes(&self, inputs: &[Shape]) -> Vec<(usize, Vec<AxisRole>)> {
        let mut v = vec![(
            1,
            vec![
                AxisRole::OutChannels,
                AxisRole::InChannels,
                AxisRole::Kernel,
                AxisRole::Kernel,
            ],
        )];
        if inputs.len() == 3 {
            v.push((2, vec![AxisRole::Channel]));
        }
        v
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Vec<Shape>, OpError> {
        let (x, w) = (&inputs[0], &inputs[1]);
        expect_rank(x, 4, "Conv input X (only 2-D convolution is supported)")?;
        expect_rank(w, 4, "Conv weight W")?;
        let c_in = known_dim(x, 1, "Conv input X")?;
        let m = known_dim(w, 0, "Conv weight W")?;
        let w_in = known_dim(w, 1, "Conv weight W")?;
        let kernel = [
            known_dim(w, 2, "Conv weight W")?,
            known_dim(w, 3, "Conv weight W")?,
        ];
        if kernel != self.kernel {
            op_bail!(
                "weight kernel {kernel:?} differs from kernel_shape {:?}",
                self.kernel
            );
        }
        if self.groups == 0 || c_in % self.groups != 0 || m % self.groups != 0 {
            op_bail!(
                "group={} must divide input channels {c_in} and output channels {m}",
                self.groups
            );
        }
        if w_in != c_in / self.groups {
            op_bail!(
                "weight has {w_in} input channels per group, expected {} (= {c_in} input channels / {} groups)",
                c_in / self.groups,
                self.groups
            );
        }
        if let Some(b) = inputs.get(2)
            && (b.rank() != 1 || b.dim(0) != Some(m))
        {
            op_bail!("bias must have shape [{m}], got {b}");
        }
        let mut out = vec![x.0[0], Dim::Known(m)];
        for axis in 0..2 {
            let size = known_dim(x, 2 + axis, "Conv input X")?;
            let o = self.out_size(size, axis).ok_or_else(|| {
                OpError::new(format!(
                    "kernel {:?} with dilation {:?} does not fit padded input {x}",
                    self.kernel, self.dilations
                ))
            })?;
            out.push(Dim::Known(o));
        }
        Ok(vec![Shape(out)])
    }

    fn axis_links(&self, inputs: &[Shape], outputs: &[Shape]) -> Vec<AxisLink> {
        let out = (Port::Output(0), 1);
        let mut links = vec![AxisLink::identity(out, (Port::Input(1), 0))];
        if inputs.len() == 3 {
            links.push(AxisLink::identity(out, (Port::Input(2), 0)));
        }
        let c_in = inputs[0].dim(1).unwrap_or(0);
        let m = outputs[0].dim(1).unwrap_or(0);
        if self.groups == 1 {
            links.push(AxisLink::identity((Port::Input(0), 1), (Port::Input(1), 1)));
        } else if self.is_depthwise(c_in) && c_in > 0 {
            let multiplier = m / c_in;
            links.push(AxisLink {
                a: (Port::Input(0), 1),
                b: out,
                map: IndexMap::block(multiplier),
            });
        }
        // Grouped (non-depthwise) convolutions leave the input channel axis pinned (each
        // group reads its own slice); their output channels stay prunable, evenly per group
        // (`axis_blocks`).
        links
    }

    fn axis_blocks(&self, inputs: &[Shape], _outputs: &[Shape]) -> Vec<(Port, usize, usize)> {
        let c_in = inputs[0].dim(1).unwrap_or(0);
        if self.groups > 1 && !self.is_depthwise(c_in) {
            vec![(Port::Output(0), 1, self.groups)]
        } else {
            Vec::new()
        }
    }

    fn refit(&mut self, old: &[Shape], new: &[Shape]) -> Result<(), OpError> {
        let old_c = old[0].dim(1).unwrap_or(0);
        let new_c = new[0].dim(1).unwrap_or(0);
        if self.groups > 1 && old_c != new_c {
            if self.is_depthwise(old_c) {
                self.groups = new_c;
            } else {
                op_bail!(
                    "cannot change the input channels of a grouped convolution ({} groups)",
                    self.groups
                );
            }
        }
        Ok(())
    }

    fn macs(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        let w = &inputs[1];
        let per_output = (w[1] * w[2] * w[3]) as u64;
        outputs[0].iter().product::<usize>() as u64 * per_output
    }

    fn elementwise_ops(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> u64 {
        // the bias addition
        if inputs.len() == 3 {
            outputs[0].iter().product::<usize>() as u64
        } else {
            0
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (inputs[0], inputs[1]);
        let xs = x.shape();
        let ws = w.shape();
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let m = ws[0];
        let cg = ws[1];
        let g = self.groups;
        let mg = m / g;
        let ho = self
            .out_size(h, 0)
            .ok_or_else(|| OpError::new("kernel does not fit"))?;
        let wo = self
            .out_size(wd, 1)
            .ok_or_else(|| OpError::new("kernel does not fit"))?;
        let [kh, kw] = self.kernel;
        let bias = inputs.get(2).map(|b| b.data());
        let mut out = vec![0.0f32; n * m * ho * wo];
        let xd = x.data();
        let wdta = w.data();
        for b in 0..n {
            for oc in 0..m {
                let group = oc / mg;
                let bias_v = bias.map_or(0.0, |bb| bb[oc]);
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0.0f32;
                        for icg in 0..cg {
                            let ic = group * cg + icg;
                            for ky in 0..kh {
                                let iy = (oy * self.strides[0] + ky * self.dilations[0]) as isize
                                    - self.pads[0] as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = (ox * self.strides[1] + kx * self.dilations[1])
                                        as isize
                                        - self.pads[1] as isize;
                                    if ix < 0 || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv =
                                        xd[((b * c + ic) * h + iy as usize) * wd + ix as usize];
                                    let wv = wdta[((oc * cg + icg) * kh + ky) * kw + kx];
                                    acc += xv * wv;
                                }
                            }
                        }
                        out[((b * m + oc) * ho + oy) * wo + ox] = acc + bias_v;
                    }
                }
            }
        }
        Ok(vec![
            Tensor::new(vec![n, m, ho, wo], out).map_err(|e| OpError::new(e.to_string()))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_conv() {
        // 1x1x3x3 input, 1x1x2x2 kernel of ones, no padding: sums of 2x2 windows.
        let x = Tensor::from_fn(vec![1, 1, 3, 3], |i| i as f32);
        let w = Tensor::full(vec![1, 1, 2, 2], 1.0);
        let b = Tensor::new(vec![1], vec![0.5]).unwrap();
        let conv = Conv::new([2, 2], 0);
        let y = conv.eval(&[&x, &w, &b]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.data(), &[8.5, 12.5, 20.5, 24.5]);
    }

    #[test]
    fn padding_stride_and_shape_inference() {
        let mut conv = Conv::new([3, 3], 1);
        conv.strides = [2, 2];
        let out = conv
            .infer(&[Shape::batched(&[3, 32, 32]), Shape::known(&[8, 3, 3, 3])])
            .unwrap();
        assert_eq!(out[0], Shape::batched(&[8, 16, 16]));
        // ones everywhere: corner output sees a 2x2 window of ones per channel
        let x = Tensor::full(vec![1, 3, 4, 4], 1.0);
        let w = Tensor::full(vec![1, 3, 3, 3], 1.0);
        let y = conv.eval(&[&x, &w]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.data()[0], 12.0); // 3 channels x 2x2
        assert_eq!(y.data()[3], 27.0); // (1,1) centred at (2,2): full 3x3
        assert_eq!(
            conv.macs(
                &[vec![1, 3, 32, 32], vec![8, 3, 3, 3]],
                &[vec![1, 8, 16, 16]]
            ),
            8 * 256 * 27
        );
    }

    #[test]
    fn depthwise_with_dilation() {
        let mut conv = Conv::new([3, 3], 2);
        conv.groups = 2;
        conv.dilations = [2, 2];
        let x = Tensor::from_fn(vec![1, 2, 5, 5], |i| (i % 7) as f32);
        let w = Tensor::from_fn(vec![2, 1, 3, 3], |i| (i % 3) as f32 - 1.0);
        let out = conv
            .infer(&[Shape::batched(&[2, 5, 5]), Shape::known(&[2, 1, 3, 3])])
            .unwrap();
        assert_eq!(out[0], Shape::batched(&[2, 5, 5]));
        let y = conv.eval(&[&x, &w]).unwrap().remove(0);
        // channel 1 output at (2,2): taps at rows/cols 0,2,4 of channel 1
        let mut expect = 0.0;
        for ky in 0..3 {
            for kx in 0..3 {
                let xv = ((25 + ky * 2 * 5 + kx * 2) % 7) as f32;
                let wv = ((9 + ky * 3 + kx) % 3) as f32 - 1.0;
                expect += xv * wv;
            }
        }
        assert_eq!(y.data()[25 + 12], expect);
        assert!(conv.is_depthwise(2));
    }

    #[test]
    fn rejects_mismatched_channels() {
        let conv = Conv::new([3, 3], 0);
        let err = conv
            .infer(&[Shape::batched(&[3, 8, 8]), Shape::known(&[4, 2, 3, 3])])
            .unwrap_err();
        assert!(err.0.contains("input channels"), "{err}");
    }
}
