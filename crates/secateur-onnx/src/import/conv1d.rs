//! One-dimensional `Conv` (audio front ends: wav2vec2, HuBERT, Whisper; 1-D text CNNs),
//! lowered at import to the 2-D convolution every layer of the stack knows: the input
//! `[N, C, L]` is reshaped to `[N, C, 1, L]`, the weight `[M, C/g, k]` becomes the constant
//! `[M, C/g, 1, k]`, the convolution runs with a `1 × k` kernel (strides, dilations, pads and
//! `auto_pad` carried over to the width axis), and the output `[N, M, 1, L']` is reshaped back
//! to `[N, M, L']`. The reshapes link the channel axis through, so channel pruning, cost and
//! the runtime treat the layer like any other convolution; the export writes the 2-D form.

use super::{Importer, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::{Conv, Op, Reshape};

/// The 1-D window attributes of a `Conv` node, resolved against the input length.
struct Window1d {
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: [usize; 2],
    groups: usize,
}

impl Importer {
    /// Lowers a `Conv` whose weight is a constant of rank 3; `Ok(false)` for other convolutions.
    pub(super) fn import_conv1d(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<bool> {
        let (Some(x), Some(w_name)) = (inputs.first(), inputs.get(1)) else {
            return Ok(false);
        };
        let Some(w) = self
            .float_consts
            .get(w_name)
            .filter(|w| w.rank() == 3)
            .cloned()
        else {
            return Ok(false);
        };
        let w4 = w
            .clone()
            .reshape(vec![w.shape()[0], w.shape()[1], 1, w.shape()[2]])
            .map_err(|e| node_err(node, e.to_string()))?;
        let length = match self.shapes.get(x).map(|s| (s.rank(), s.dim(2))) {
            Some((3, Some(length))) => length,
            _ => {
                return Err(node_err(
                    node,
                    format!(
                        "a 1-D convolution needs an input [N, C, L] with a known length L (weight '{w_name}' has shape {:?})",
                        w.shape()
                    ),
                ));
            }
        };
        let win = window(node, w.shape()[2], length)?;
        let base = self.unique_name(node, index);
        let out = node.output.first().cloned().unwrap_or_default();
        let (rows, kernel, image) = (
            format!("{base}.rows"),
            format!("{w_name}.as_2d"),
            format!("{out}.as_2d"),
        );
        self.add_float_const(&kernel, w4);
        let to_2d = Op::Reshape(Reshape {
            shape: vec![0, 0, 1, -1],
            allowzero: false,
        });
        self.push_node(
            format!("{base}.to_2d"),
            to_2d,
            vec![x.clone()],
            vec![rows.clone()],
        )?;
        let conv = Op::Conv(Conv {
            kernel: [1, win.kernel],
            strides: [1, win.stride],
            pads: [0, win.pads[0], 0, win.pads[1]],
            dilations: [1, win.dilation],
            groups: win.groups,
        });
        let mut conv_inputs = vec![rows, kernel];
        conv_inputs.extend(inputs.get(2).filter(|b| !b.is_empty()).cloned());
        self.push_node(base.clone(), conv, conv_inputs, vec![image.clone()])?;
        let to_1d = Op::Reshape(Reshape {
            shape: vec![0, 0, -1],
            allowzero: false,
        });
        self.push_node(format!("{base}.to_1d"), to_1d, vec![image], vec![out])?;
        Ok(true)
    }
}

/// Kernel, stride, dilation, pads and groups of a 1-D `Conv` with a kernel of `from_weight`
/// taps over an input of `length`.
fn window(node: &NodeProto, from_weight: usize, length: usize) -> Result<Window1d> {
    let a = Attrs::new(node);
    let err = |m: String| node_err(node, m);
    let one = |name: &str, default: usize| -> Result<usize> {
        match a.ints(name).map_err(err)? {
            None => Ok(default),
            Some(v) if v.len() == 1 && v[0] >= 1 => Ok(v[0] as usize),
            Some(v) => Err(err(format!(
                "attribute '{name}' of a 1-D convolution must be one positive value, got {v:?}"
            ))),
        }
    };
    let kernel = one("kernel_shape", from_weight)?;
    let stride = one("strides", 1)?;
    let dilation = one("dilations", 1)?;
    let groups = a.int("group", 1).map_err(err)?;
    let groups = usize::try_from(groups)
        .map_err(|_| err(format!("group must be positive, got {groups}")))?;
    let pads = match a.string("auto_pad", "NOTSET").map_err(err)?.as_str() {
        "NOTSET" | "" => match a.ints("pads").map_err(err)? {
            None => [0, 0],
            Some(p) if p.len() == 2 && p.iter().all(|&v| v >= 0) => [p[0] as usize, p[1] as usize],
            Some(p) => {
                return Err(err(format!(
                    "pads of a 1-D convolution must be two non-negative values, got {p:?}"
                )));
            }
        },
        "VALID" => [0, 0],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let out = length.div_ceil(stride);
            let span = (kernel - 1) * dilation + 1;
            let total = (out.saturating_sub(1) * stride + span).saturating_sub(length);
            let small = total / 2;
            if mode == "SAME_UPPER" {
                [small, total - small]
            } else {
                [total - small, small]
            }
        }
        other => return Err(err(format!("auto_pad '{other}' is not valid"))),
    };
    Ok(Window1d {
        kernel,
        stride,
        dilation,
        pads,
        groups,
    })
}
