//! Per-layer summary of a graph: op type, output shape, parameters (total and non-zero) and
//! dense MACs at batch 1. This is what `secateur inspect` prints; cost models build on it.

use crate::error::Result;
use crate::graph::Graph;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// One node's line in the summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub node: String,
    pub op: String,
    pub output_shape: String,
    /// Trainable parameters read by this node (each weight counted at its first reader).
    pub params: u64,
    pub nonzero_params: u64,
    /// Dense multiply-accumulates per sample.
    pub macs: u64,
}

/// The whole graph's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphSummary {
    pub name: String,
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    pub layers: Vec<LayerSummary>,
    pub total_params: u64,
    pub total_nonzero_params: u64,
    pub total_macs: u64,
}

/// Summarises a graph at batch 1.
pub fn summarize(graph: &Graph) -> Result<GraphSummary> {
    let shapes = graph.infer_shapes()?;
    let mut seen = HashSet::new();
    let mut layers = Vec::new();
    for node in &graph.nodes {
        let sem = node.op.sem();
        let roles = sem.input_roles(node.inputs.len());
        let (mut params, mut nonzero) = (0u64, 0u64);
        for (v, role) in node.inputs.iter().zip(&roles) {
            if let Some(t) = graph.initializers.get(v)
                && graph.is_parameter(v, *role)
                && seen.insert(v.clone())
            {
                params += t.len() as u64;
                nonzero += (t.len() - t.count_zeros()) as u64;
            }
        }
        let ins: Vec<Vec<usize>> = node.inputs.iter().map(|v| shapes[v].resolve(1)).collect();
        let outs: Vec<Vec<usize>> = node.outputs.iter().map(|v| shapes[v].resolve(1)).collect();
        layers.push(LayerSummary {
            node: node.name.clone(),
            op: node.op.op_type().to_string(),
            output_shape: node
                .outputs
                .first()
                .map(|o| shapes[o].to_string())
                .unwrap_or_default(),
            params,
            nonzero_params: nonzero,
            macs: sem.macs(&ins, &outs),
        });
    }
    Ok(GraphSummary {
        name: graph.name.clone(),
        inputs: graph
            .inputs
            .iter()
            .map(|i| (i.name.clone(), i.shape.to_string()))
            .collect(),
        outputs: graph
            .outputs
            .iter()
            .map(|o| {
                (
                    o.clone(),
                    shapes.get(o).map(|s| s.to_string()).unwrap_or_default(),
                )
            })
            .collect(),
        total_params: layers.iter().map(|l| l.params).sum(),
        total_nonzero_params: layers.iter().map(|l| l.nonzero_params).sum(),
        total_macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    })
}
