//! Analytic costs per layer: parameters (total and non-zero), dense MACs, MACs executed given
//! sparsity, and the bytes a weight takes in every storage format — dense f32, CSR with its
//! index overhead, blocks, N:M with its offsets, and int8 (dense and sparse, with per-channel
//! scales). Counting follows the runtime's formats exactly (`secateur-runtime::kernels`).

use secateur_graph::{AxisRole, Graph, InputRole, MaskPattern, OpClass, summarize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Storage of one weight in each format, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageBytes {
    pub dense_f32: u64,
    pub csr_f32: u64,
    /// Present when the weight has a block mask.
    pub block_f32: Option<u64>,
    /// Present when the weight has an N:M mask.
    pub nm_f32: Option<u64>,
    pub dense_int8: u64,
    pub csr_int8: u64,
}

impl StorageBytes {
    /// The smallest f32 and int8 representations.
    pub fn best(&self, int8: bool) -> u64 {
        if int8 {
            self.dense_int8.min(self.csr_int8)
        } else {
            [
                Some(self.dense_f32),
                Some(self.csr_f32),
                self.block_f32,
                self.nm_f32,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.dense_f32)
        }
    }
}

/// Costs of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCount {
    pub node: String,
    pub op: String,
    pub params: u64,
    pub nonzero_params: u64,
    /// Dense multiply-accumulates per sample.
    pub macs: u64,
    /// Multiply-accumulates per sample when zero weights are skipped.
    pub sparse_macs: u64,
    /// Element-wise operations per sample (additions, comparisons, normalisation).
    pub elementwise_ops: u64,
    /// Bytes of the layer's multiplicative weight in each format (layers without one: zero).
    pub weight: StorageBytes,
    /// Bytes of other parameters (biases, batch-norm vectors) in f32.
    pub other_param_bytes: u64,
    /// Input and output activation bytes per sample.
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Whether the weight is quantized to int8 in the graph.
    pub int8: bool,
}

/// Bytes of a `rows × cols` weight with `nnz` non-zeros in every format.
pub fn storage(rows: u64, cols: u64, nnz: u64, pattern: Option<MaskPattern>) -> StorageBytes {
    let n = rows * cols;
    let idx = if cols <= 65_536 { 2 } else { 4 };
    let ptrs = 4 * (rows + 1);
    let block_f32 = match pattern {
        Some(MaskPattern::Block { rows: r, cols: c }) => {
            let (r, c) = (r as u64, c as u64);
            let blocks = nnz.div_ceil(r * c);
            Some(4 * blocks * r * c + idx * blocks + 4 * (rows.div_ceil(r) + 1))
        }
        _ => None,
    };
    let nm_f32 = match pattern {
        Some(MaskPattern::NM { n: keep, m }) => {
            let kept = rows * (cols / m as u64) * keep as u64;
            // one byte per offset, as the runtime stores them
            Some(4 * kept + kept)
        }
        _ => None,
    };
    StorageBytes {
        dense_f32: 4 * n,
        csr_f32: 4 * nnz + idx * nnz + ptrs,
        block_f32,
        nm_f32,
        dense_int8: n + 4 * rows,
        csr_int8: nnz + idx * nnz + ptrs + 4 * rows,
    }
}

/// Counts for every node of a graph at batch 1.
pub fn layer_counts(graph: &Graph) -> secateur_graph::Result<Vec<LayerCount>> {
    let summary = summarize(graph)?;
    let shapes = graph.infer_shapes()?;
    let q = graph.quantization.as_ref();
    let mut out = Vec::with_capacity(graph.nodes.len());
    for (node, s) in graph.nodes.iter().zip(&summary.layers) {
        let ins: Vec<_> = node.inputs.iter().map(|v| shapes[v].clone()).collect();
        let roles = node.op.sem().input_roles(node.inputs.len());
        let mut weight = StorageBytes::default();
        let mut other = 0u64;
        let mut sparse_macs = s.macs;
        let mut int8 = false;
        for (idx, axes) in node.op.sem().param_axes(&ins) {
            let Some(t) = graph.initializers.get(&node.inputs[idx]) else {
                continue;
            };
            if roles[idx] == InputRole::Weight {
                let out_axis = axes
                    .iter()
                    .position(|a| *a == AxisRole::OutChannels)
                    .unwrap_or(0);
                let rows = t.shape()[out_axis] as u64;
                let cols = t.len() as u64 / rows.max(1);
                let nnz = (t.len() - t.count_zeros()) as u64;
                weight = storage(
                    rows,
                    cols,
                    nnz,
                    graph.masks.get(&node.inputs[idx]).map(|m| m.pattern),
                );
                if !t.is_empty() {
                    sparse_macs = (s.macs as u128 * nnz as u128 / t.len() as u128) as u64;
                }
                int8 = q.is_some_and(|q| q.weights.contains_key(&node.inputs[idx]));
            } else if roles[idx] != InputRole::Data {
                other += 4 * t.len() as u64;
            }
        }
        let act = |v: &str| shapes[v].resolve(1).iter().product::<usize>() as u64 * 4;
        let input_bytes = node
            .inputs
            .iter()
            .filter(|v| !graph.initializers.contains_key(*v))
            .map(|v| act(v))
            .sum();
        let outs: Vec<Vec<usize>> = node.outputs.iter().map(|v| shapes[v].resolve(1)).collect();
        let ins1: Vec<Vec<usize>> = ins.iter().map(|x| x.resolve(1)).collect();
        let elementwise_ops = if node.op.class() == OpClass::View {
            0
        } else {
            node.op.sem().elementwise_ops(&ins1, &outs)
        };
        out.push(LayerCount {
            node: node.name.clone(),
            op: node.op.op_type().to_string(),
            params: s.params,
            nonzero_params: s.nonzero_params,
            macs: s.macs,
            sparse_macs,
            elementwise_ops,
            weight,
            other_param_bytes: other,
            input_bytes,
            output_bytes: node.outputs.iter().map(|v| act(v)).sum(),
            int8,
        });
    }
    Ok(out)
}

/// Totals over layers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountTotals {
    pub params: u64,
    pub nonzero_params: u64,
    pub macs: u64,
    pub sparse_macs: u64,
    /// Model size in each representation.
    pub bytes: BTreeMap<String, u64>,
}

/// Sums the counts; `bytes` lists dense f32, best f32, dense int8 and best int8 sizes.
pub fn totals(layers: &[LayerCount]) -> CountTotals {
    let mut t = CountTotals::default();
    let (mut dense, mut best, mut d8, mut b8) = (0u64, 0u64, 0u64, 0u64);
    for l in layers {
        t.params += l.params;
        t.nonzero_params += l.nonzero_params;
        t.macs += l.macs;
        t.sparse_macs += l.sparse_macs;
        dense += l.weight.dense_f32 + l.other_param_bytes;
        best += l.weight.best(false) + l.other_param_bytes;
        d8 += l.weight.dense_int8 + l.other_param_bytes;
        b8 += l.weight.best(true) + l.other_param_bytes;
    }
    t.bytes.insert("dense_f32".into(), dense);
    t.bytes.insert("sparse_f32".into(), best);
    t.bytes.insert("dense_int8".into(), d8);
    t.bytes.insert("sparse_int8".into(), b8);
    t
}
