//! `BatchNormalization` in training mode over a constant, folded at import: NF-ResNets and
//! NFNets standardise their convolution weights on every forward pass with
//! `F.batch_norm(w.reshape(1, out, -1), None, None, gain, training=True)`, which exports as a
//! training-mode batch norm whose input is the weight. Over a constant the batch statistics are
//! constants too, so the standardised weight becomes an initializer (and the running
//! statistics, where the node names them, follow ONNX's update rule). A training-mode batch
//! norm over an activation is still refused by the converter.

use super::{Importer, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::Tensor;

impl Importer {
    /// Folds a training-mode `BatchNormalization` whose inputs are all float constants;
    /// `Ok(false)` for any other node.
    pub(super) fn fold_batch_statistics(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
    ) -> Result<bool> {
        let a = Attrs::new(node);
        let training = a.int("training_mode", 0).map_err(|m| node_err(node, m))?;
        let consts: Option<Vec<Tensor>> = inputs
            .iter()
            .map(|i| self.float_consts.get(i).cloned())
            .collect();
        let (1, Some(consts)) = (training, consts) else {
            return Ok(false);
        };
        let [x, scale, bias, mean, var] = consts.as_slice() else {
            return Err(node_err(node, "expected X, scale, B, mean and var"));
        };
        let dims = x.shape();
        let channels = dims.get(1).copied().unwrap_or(0);
        if dims.len() < 2 || [scale, bias, mean, var].iter().any(|t| t.len() != channels) {
            return Err(node_err(
                node,
                format!("X {dims:?} needs per-channel scale, B, mean and var"),
            ));
        }
        let eps = a.float("epsilon", 1e-5).map_err(|m| node_err(node, m))?;
        let momentum = a.float("momentum", 0.9).map_err(|m| node_err(node, m))?;
        let (batch_mean, batch_var) = channel_statistics(x);
        let inner: usize = dims[2..].iter().product();
        let y = Tensor::from_fn(dims.to_vec(), |i| {
            let c = (i / inner) % channels;
            let normal = (x.data()[i] - batch_mean[c]) / (batch_var[c] + eps).sqrt();
            normal * scale.data()[c] + bias.data()[c]
        });
        let running = |old: &Tensor, now: &[f32]| {
            let v = old.data().iter().zip(now);
            Tensor::new(
                vec![channels],
                v.map(|(o, n)| o * momentum + n * (1.0 - momentum))
                    .collect(),
            )
        };
        let outputs = [Ok(y), running(mean, &batch_mean), running(var, &batch_var)];
        for (name, value) in node.output.iter().zip(outputs) {
            if !name.is_empty() {
                let value = value.map_err(|e| node_err(node, e.to_string()))?;
                self.add_float_const(name, value);
            }
        }
        Ok(true)
    }
}

/// Mean and population variance of each channel (axis 1) over every other axis.
fn channel_statistics(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let dims = x.shape();
    let channels = dims[1];
    let inner: usize = dims[2..].iter().product();
    let count = (x.len() / channels.max(1)).max(1) as f64;
    let mut sum = vec![0.0f64; channels];
    let mut squares = vec![0.0f64; channels];
    for (i, &v) in x.data().iter().enumerate() {
        let c = (i / inner.max(1)) % channels;
        sum[c] += v as f64;
        squares[c] += (v as f64) * (v as f64);
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let var = squares
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / count - m * m).max(0.0)) as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), var)
}

#[cfg(test)]
mod tests {
    use super::channel_statistics;
    use secateur_graph::Tensor;

    #[test]
    fn statistics_are_per_channel_over_every_other_axis() {
        // [1, 2, 3]: channel 0 = 1, 2, 3; channel 1 = 4, 4, 4
        let x = Tensor::new(vec![1, 2, 3], vec![1., 2., 3., 4., 4., 4.]).unwrap();
        let (mean, var) = channel_statistics(&x);
        assert_eq!(mean, vec![2.0, 4.0]);
        assert!(
            (var[0] - 2.0 / 3.0).abs() < 1e-6 && var[1] == 0.0,
            "{var:?}"
        );
    }
}
