//! `InstanceNormalization(x, scale, B)` over `[N, C, D...]`: each (sample, channel) row is
//! normalised over `D...`, then scaled and shifted per channel. It becomes a layer
//! normalisation from axis 2 without parameters, followed by a `Mul` by the scale and an `Add`
//! of the shift (each shaped `[C, 1, ...]`, and left out when it is all ones or all zeros, as
//! in PyTorch's export of `GroupNorm`, which normalises `x.reshape(N, groups, -1)` this way
//! and applies its own affine map after reshaping back).

use super::{Importer, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::{Binary, LayerNorm, Op, Tensor};

impl Importer {
    /// Lowers an `InstanceNormalization` node with constant scale and shift.
    pub(super) fn import_instance_norm(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<()> {
        let [x, scale, shift] = inputs else {
            return Err(node_err(node, "expected the input, a scale and a shift"));
        };
        let shape = self
            .shapes
            .get(x)
            .cloned()
            .ok_or_else(|| node_err(node, format!("input '{x}' is not defined before")))?;
        let channels = shape
            .dim(1)
            .filter(|_| shape.rank() >= 3)
            .ok_or_else(|| node_err(node, format!("input {shape} must be [N, C, D...]")))?;
        let param = |name: &String, what: &str| -> Result<Tensor> {
            self.float_consts
                .get(name)
                .filter(|t| t.len() == channels)
                .cloned()
                .ok_or_else(|| {
                    node_err(
                        node,
                        format!("the {what} '{name}' must be a constant of {channels} values"),
                    )
                })
        };
        let (gamma, beta) = (param(scale, "scale")?, param(shift, "shift")?);
        let epsilon = Attrs::new(node)
            .float("epsilon", 1e-5)
            .map_err(|m| node_err(node, m))?;
        let out = node.output.first().cloned().unwrap_or_default();
        let base = self.unique_name(node, index);
        let scaled = gamma.data().iter().any(|&g| g != 1.0);
        let shifted = beta.data().iter().any(|&b| b != 0.0);
        let mut per_channel = vec![1usize; shape.rank() - 1];
        per_channel[0] = channels;
        let norm_out = if scaled || shifted {
            format!("{base}.normalised")
        } else {
            out.clone()
        };
        let norm = Op::LayerNorm(LayerNorm { axis: 2, epsilon });
        self.push_node(base.clone(), norm, vec![x.clone()], vec![norm_out.clone()])?;
        let mut last = norm_out;
        for (used, t, op, what) in [
            (scaled, gamma, Binary::MUL, "scale"),
            (shifted, beta, Binary::ADD, "shift"),
        ] {
            if !used {
                continue;
            }
            let param_name = format!("{base}.{what}");
            self.add_float_const(&param_name, t.reshape(per_channel.clone())?);
            let is_last = what == "shift" || !shifted;
            let value = if is_last {
                out.clone()
            } else {
                format!("{base}.scaled")
            };
            let node_name = format!("{base}.{what}");
            self.push_node(
                node_name,
                Op::Binary(op),
                vec![last, param_name],
                vec![value.clone()],
            )?;
            last = value;
        }
        Ok(())
    }
}
