//! Values computed from constants alone, evaluated once when a plan compiles instead of on
//! every inference: a sinusoidal position encoding built from a batch-sized constant and the
//! convolution that projects it (EdgeNeXt), attention biases gathered from constant tables
//! with constant indices, a transposed or reshaped weight. A node is precomputed when every
//! input is a weight, a value precomputed before it, or read for its shape only
//! ([`secateur_graph::OpSemantics::shape_only_inputs`]); when none of its outputs is a graph
//! output; and when its inputs and outputs are small enough to hold ([`MAX_VALUES`] each,
//! [`MAX_TOTAL`] together). A quantized node is evaluated with its quantization simulated, as
//! the reference defines it. A plan is compiled for one batch size, so values of batch-sized
//! shapes are computed at that size. The plan then compiles a copy of the graph without those
//! nodes, in which the values they computed and later nodes read are weights.

use secateur_graph::{Graph, Shape, Tensor, evaluate_node};
use std::collections::{HashMap, HashSet};

/// The largest value (in elements) computed at compile time: a larger one stays a step.
const MAX_VALUES: usize = 1 << 22;
/// Elements all precomputed values may hold together (256 MiB): past it, nodes stay steps.
const MAX_TOTAL: usize = 1 << 26;

/// The graph without the nodes computable from constants and the shapes of its values, or
/// `None` when no node is.
pub(super) fn precompute(
    graph: &Graph,
    shapes: &HashMap<String, Shape>,
    batch: usize,
) -> Option<(Graph, HashMap<String, Shape>)> {
    let outputs: HashSet<&str> = graph.outputs.iter().map(String::as_str).collect();
    let mut values: HashMap<String, Tensor> = HashMap::new();
    let mut computed = vec![false; graph.nodes.len()];
    let mut held = 0usize;
    for (ni, node) in graph.nodes.iter().enumerate() {
        let size_only = node.op.sem().shape_only_inputs();
        let constant = node.inputs.iter().enumerate().all(|(k, v)| {
            graph.initializers.contains_key(v) || values.contains_key(v) || size_only.contains(&k)
        });
        let small = |v: &String| {
            shapes
                .get(v)
                .is_some_and(|s| s.resolve(batch).iter().product::<usize>() <= MAX_VALUES)
        };
        let out_len: usize = node
            .outputs
            .iter()
            .filter_map(|o| shapes.get(o))
            .map(|s| s.resolve(batch).iter().product::<usize>())
            .sum();
        if !constant
            || held + out_len > MAX_TOTAL
            || node
                .outputs
                .iter()
                .any(|o| outputs.contains(o.as_str()) || !small(o))
            || size_only
                .iter()
                .any(|&k| node.inputs.get(k).is_some_and(|v| !small(v)))
        {
            continue;
        }
        // shape-only inputs that are activations: zeros of their shape at this batch size
        let stand_ins: Vec<String> = size_only
            .iter()
            .filter_map(|&k| node.inputs.get(k))
            .filter(|v| !graph.initializers.contains_key(*v) && !values.contains_key(*v))
            .cloned()
            .collect();
        for v in &stand_ins {
            values.insert(v.clone(), Tensor::zeros(shapes[v].resolve(batch)));
        }
        let result = evaluate_node(graph, node, &values);
        for v in &stand_ins {
            values.remove(v);
        }
        // an op that cannot evaluate here (bad data) stays a step and reports when it runs
        if let Ok(outs) = result {
            held += out_len;
            values.extend(node.outputs.iter().cloned().zip(outs));
            computed[ni] = true;
        }
    }
    if !computed.contains(&true) {
        return None;
    }
    let mut g = graph.clone();
    g.nodes = graph
        .nodes
        .iter()
        .zip(&computed)
        .filter(|(_, c)| !**c)
        .map(|(n, _)| n.clone())
        .collect();
    let read: HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
        .collect();
    let mut shapes = shapes.clone();
    for (name, t) in values {
        if read.contains(name.as_str()) {
            shapes.insert(name.clone(), Shape::known(t.shape()));
            g.initializers.insert(name, t);
        }
    }
    Some((g, shapes))
}
