//! Data-dependent statistics for pruning criteria, computed on a few batches: first-order
//! Taylor scores (|w · ∂L/∂w| accumulated over batches, per weight element) and the L2 norm of
//! each input channel entering every Conv/Gemm/MatMul (Wanda). Results are keyed by weight name
//! and returned as plain vectors: the pruning crate consumes them as data.

use crate::batch::{check_fit, labels_tensor, to_value};
use crate::error::{Result, TrainError};
use crate::forward::{ActivationObserver, ForwardCtx, check_trainable, forward};
use crate::loss::cross_entropy;
use crate::params::{ParamStore, to_host};
use crate::program::Program;
use crate::value::Value;
use burn::tensor::{Device, Tensor};
use secateur_data::{Dataset, Normalization};
use secateur_graph::{Graph, InputRole, Op, OpClass};
use std::collections::{BTreeMap, HashMap, HashSet};

fn batches_of(data: &Dataset, batch: usize, n: usize) -> Vec<Vec<usize>> {
    let idx: Vec<usize> = (0..data.len()).collect();
    idx.chunks(batch.max(2))
        .take(n.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// Σ over `batches` batches of |w ⊙ ∂L/∂w| for every multiplicative weight (batch-norm in
/// evaluation mode, so the scores do not depend on batch composition).
pub fn taylor_scores(
    graph: &Graph,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
    batches: usize,
    device: &Device,
) -> Result<HashMap<String, Vec<f32>>> {
    check_fit(graph, data)?;
    check_trainable(graph)?;
    let store = ParamStore::from_graph(graph, device, &HashSet::new())?;
    let program = Program::compile(graph, &store)?;
    let weights: Vec<usize> = (0..store.len())
        .filter(|&i| store.roles[i] == InputRole::Weight)
        .collect();
    let mut acc: HashMap<usize, Tensor<1>> = HashMap::new();
    for chunk in batches_of(data, batch, batches) {
        let (x, y) = data.batch(&chunk, norm);
        let leaves: Vec<Tensor<1>> = store
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if weights.contains(&i) {
                    v.clone().autodiff().require_grad()
                } else {
                    v.clone()
                }
            })
            .collect();
        let (_, logits, _) = forward(
            graph,
            &program,
            &leaves,
            &store.shapes,
            &[to_value(x, device)?],
            &mut ForwardCtx::eval(),
        )?;
        let logits = logits
            .into_r2()
            .ok_or_else(|| TrainError::DataMismatch("logits are not [N, classes]".into()))?;
        let grads = cross_entropy(logits, labels_tensor(&y, device)).backward();
        for &i in &weights {
            if let Some(g) = leaves[i].grad(&grads) {
                let s = (g * store.values[i].clone()).abs();
                let e = acc.remove(&i).map_or(s.clone(), |a| a + s);
                acc.insert(i, e);
            }
        }
    }
    Ok(acc
        .into_iter()
        .map(|(i, t)| (store.names[i].clone(), to_host(&t)))
        .collect())
}

/// Sum of squares per input channel of the data entering each weighted node.
struct NormObserver {
    sums: BTreeMap<usize, Vec<f64>>,
}

impl ActivationObserver for NormObserver {
    fn observe(&mut self, node: usize, x: &Value) {
        let dims = x.dims();
        let v = x.to_vec();
        // channels: axis 1 of an image, the last axis otherwise
        let (channels, inner) = if dims.len() == 4 {
            (dims[1], dims[2] * dims[3])
        } else {
            (*dims.last().unwrap_or(&1), 1)
        };
        let e = self.sums.entry(node).or_insert_with(|| vec![0.0; channels]);
        for (i, val) in v.iter().enumerate() {
            let c = if dims.len() == 4 {
                (i / inner) % channels
            } else {
                i % channels
            };
            e[c] += (*val as f64) * (*val as f64);
        }
    }
}

/// ‖x_c‖₂ of every input channel entering each Conv/Gemm/MatMul, keyed by the node's weight.
pub fn input_channel_norms(
    graph: &Graph,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
    batches: usize,
    device: &Device,
) -> Result<HashMap<String, Vec<f32>>> {
    check_fit(graph, data)?;
    check_trainable(graph)?;
    let store = ParamStore::from_graph(graph, device, &HashSet::new())?;
    let program = Program::compile(graph, &store)?;
    let mut obs = NormObserver {
        sums: BTreeMap::new(),
    };
    for chunk in batches_of(data, batch, batches) {
        let (x, _) = data.batch(&chunk, norm);
        let mut ctx = ForwardCtx {
            train: false,
            quant: None,
            observer: Some(&mut obs),
            taps: None,
        };
        forward(
            graph,
            &program,
            &store.values,
            &store.shapes,
            &[to_value(x, device)?],
            &mut ctx,
        )?;
    }
    let mut out = HashMap::new();
    for (node, sums) in obs.sums {
        let n = &graph.nodes[node];
        let grouped = matches!(&n.op, Op::Conv(c) if c.groups > 1);
        if grouped || n.op.class() != OpClass::WeightedLayer {
            continue;
        }
        let roles = n.op.sem().input_roles(n.inputs.len());
        if let Some(w) = n
            .inputs
            .iter()
            .zip(roles)
            .find(|(_, r)| *r == InputRole::Weight)
            .map(|(w, _)| w)
        {
            out.insert(w.clone(), sums.iter().map(|s| s.sqrt() as f32).collect());
        }
    }
    Ok(out)
}
