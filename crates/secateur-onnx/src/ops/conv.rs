//! `Conv` converter: kernel shape (from the attribute or the weight), strides, pads (explicit
//! or `auto_pad` resolved against the input size), dilations and groups.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use secateur_graph::{Conv, Node, Op};

struct ConvConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[&ConvConverter];

/// Pads for `auto_pad = SAME_*`: output size `ceil(in / stride)`.
fn same_pads(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    upper: bool,
) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let span = (kernel - 1) * dilation + 1;
    let total = (out.saturating_sub(1) * stride + span).saturating_sub(input);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

impl Converter for ConvConverter {
    fn op_type(&self) -> &'static str {
        "Conv"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let a = &ctx.attrs;
        let w_shape = ctx
            .shapes
            .get(1)
            .cloned()
            .flatten()
            .ok_or("weight input W has no known shape")?;
        if w_shape.rank() != 4 {
            return Err(format!(
                "only 2-D convolution is supported; weight W has shape {w_shape}"
            ));
        }
        let from_w = [w_shape.dim(2).unwrap_or(0), w_shape.dim(3).unwrap_or(0)];
        let kernel = a.window_sizes("kernel_shape", from_w)?;
        let strides = a.window_sizes("strides", [1, 1])?;
        let dilations = a.window_sizes("dilations", [1, 1])?;
        let mut pads = a.pad_sizes("pads", [0; 4])?;
        let groups = a.int("group", 1)?;
        let groups =
            usize::try_from(groups).map_err(|_| format!("group must be positive, got {groups}"))?;
        match a.string("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => {}
            "VALID" => pads = [0; 4],
            mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                let x = ctx
                    .shapes
                    .first()
                    .cloned()
                    .flatten()
                    .ok_or("input X has no known shape")?;
                for axis in 0..2 {
                    let size = x
                        .dim(2 + axis)
                        .ok_or("auto_pad SAME needs known spatial input sizes")?;
                    let (b, e) = same_pads(
                        size,
                        kernel[axis],
                        strides[axis],
                        dilations[axis],
                        mode == "SAME_UPPER",
                    );
                    pads[axis] = b;
                    pads[axis + 2] = e;
                }
            }
            other => return Err(format!("auto_pad '{other}' is not valid")),
        }
        Ok(Op::Conv(Conv {
            kernel,
            strides,
            pads,
            dilations,
            groups,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Conv(c) = &node.op else {
            return Err("not a Conv".into());
        };
        Ok(ExportedNode::plain(
            "Conv",
            node,
            vec![
                attrs::ints("kernel_shape", &c.kernel),
                attrs::ints("strides", &c.strides),
                attrs::ints("pads", &c.pads),
                attrs::ints("dilations", &c.dilations),
                attrs::int("group", c.groups as i64),
            ],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::same_pads;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 5 wide, kernel 3, stride 2: out 3, total pad 2
        assert_eq!(same_pads(5, 3, 2, 1, true), (1, 1));
        // 4 wide, kernel 3, stride 2: out 2, total pad 1, extra at the end for SAME_UPPER
        assert_eq!(same_pads(4, 3, 2, 1, true), (0, 1));
        assert_eq!(same_pads(4, 3, 2, 1, false), (1, 0));
    }
}
