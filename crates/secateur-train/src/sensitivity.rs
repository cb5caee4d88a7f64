//! Per-sample sensitivities of weight slices, for the Fisher information of channel masks
//! (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers") without
//! labels. For each calibration sample `s` the model's output `y_s` is projected on a seeded
//! random Gaussian direction `v_s`; for every linear-layer weight `w` and each of its axes
//! `a`, the sum over the other axes of `w ⊙ ∂(v_s·y_s)/∂w` is kept. A mask `m` scaling the
//! channels a layer reads along axis `a` has `∂(v·y)/∂m` equal to the sum of those entries over
//! the channel's slices, and since `E_v[(v·J)²] = ‖J‖²`, the squares summed over samples are
//! the Gauss–Newton (squared-error) estimate of how far removing the channel moves the output.

use crate::batch::to_value;
use crate::error::{Result, TrainError};
use crate::forward::{ForwardCtx, check_trainable, forward};
use crate::params::{ParamStore, to_host};
use crate::program::Program;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::{Graph, InputRole, OpClass, Tensor as GTensor};
use std::collections::{HashMap, HashSet};

/// Slice sensitivities of one weight: for each axis, `samples × dim(axis)` values, sample-major.
pub type SliceSensitivities = Vec<Vec<f32>>;

/// The weights of the graph's linear layers (input 1 of a weighted layer).
fn linear_weights(graph: &Graph) -> HashSet<String> {
    graph
        .nodes
        .iter()
        .filter(|n| n.op.class() == OpClass::WeightedLayer)
        .filter_map(|n| n.inputs.get(1).cloned())
        .filter(|w| graph.initializers.contains_key(w))
        .collect()
}

/// Standard normal values (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// Adds `w ⊙ g` summed over all axes but each axis into `sums[axis][offset + index]`.
fn add_axis_sums(w: &[f32], g: &[f32], shape: &[usize], sums: &mut [Vec<f32>], sample: usize) {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    for (i, (x, d)) in w.iter().zip(g).enumerate() {
        let v = x * d;
        for a in 0..rank {
            let idx = (i / strides[a]) % shape[a];
            sums[a][sample * shape[a] + idx] += v;
        }
    }
}

/// The slice sensitivities of every linear-layer weight over `samples` (each one tensor per
/// graph input, batch 1), keyed by weight name.
pub fn slice_sensitivities(
    graph: &Graph,
    samples: &[Vec<GTensor>],
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, SliceSensitivities>> {
    check_trainable(graph)?;
    let store = ParamStore::from_graph(graph, device, &HashSet::new())?;
    let program = Program::compile(graph, &store)?;
    let linear = linear_weights(graph);
    let tracked: Vec<usize> = (0..store.len())
        .filter(|&i| store.roles[i] == InputRole::Weight && linear.contains(&store.names[i]))
        .collect();
    let host: HashMap<usize, Vec<f32>> = tracked
        .iter()
        .map(|&i| (i, to_host(&store.values[i])))
        .collect();
    let mut out: HashMap<usize, SliceSensitivities> = tracked
        .iter()
        .map(|&i| {
            let sums = store.shapes[i]
                .iter()
                .map(|d| vec![0.0f32; d * samples.len()])
                .collect();
            (i, sums)
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (s, inputs) in samples.iter().enumerate() {
        let leaves: Vec<Tensor<1>> = store
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if host.contains_key(&i) {
                    v.clone().autodiff().require_grad()
                } else {
                    v.clone()
                }
            })
            .collect();
        let values = inputs
            .iter()
            .map(|x| to_value(x.clone(), device))
            .collect::<Result<Vec<_>>>()?;
        let (y, _, _) = forward(
            graph,
            &program,
            &leaves,
            &store.shapes,
            &values,
            &mut ForwardCtx::eval(),
        )?;
        let n: usize = y.dims().iter().product();
        let flat = y
            .reshape(&[n])
            .and_then(|v| match v {
                crate::value::Value::R1(t) => Some(t),
                _ => None,
            })
            .ok_or_else(|| TrainError::Config("the output cannot be flattened".into()))?;
        let v = Tensor::<1>::from_data(TensorData::new(gaussian(&mut rng, n), [n]), device);
        let grads = (flat * v).sum().backward();
        for &i in &tracked {
            if let Some(g) = leaves[i].grad(&grads) {
                let sums = out.get_mut(&i).expect("tracked weight");
                add_axis_sums(&host[&i], &to_host(&g), &store.shapes[i], sums, s);
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(i, v)| (store.names[i].clone(), v))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_sums_reduce_every_other_axis() {
        // w ⊙ g = [[1, 2, 3], [4, 5, 6]]
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let g = [1.0; 6];
        let mut sums = vec![vec![0.0; 4], vec![0.0; 6]];
        add_axis_sums(&w, &g, &[2, 3], &mut sums, 1);
        assert_eq!(sums[0], vec![0.0, 0.0, 6.0, 15.0]);
        assert_eq!(sums[1], vec![0.0, 0.0, 0.0, 5.0, 7.0, 9.0]);
    }
}
