//! Depth pruning: removing whole residual blocks (an `Add(x, f(x))` whose branch `f` can be
//! dropped, leaving the skip connection) or shape-preserving Conv/Gemm layers with their
//! batch-norm and activation. Candidates are found from the graph's structure; they are ranked
//! by a caller-supplied damage measure (accuracy drop or output change on a calibration batch),
//! and removal rewires the block's consumers to its input.

use crate::error::{PruneError, Result};
use secateur_graph::{BinaryFn, Graph, OpClass};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A removable block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCandidate {
    /// The node that identifies the block (the residual Add, or the layer).
    pub name: String,
    /// Nodes removed with it.
    pub nodes: Vec<String>,
    /// The value that replaces the block's output.
    pub input: String,
    /// The block's output value.
    pub output: String,
}

fn producers(graph: &Graph) -> HashMap<&str, usize> {
    graph
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// Nodes that `value` depends on (transitively), stopping at `stop`.
fn ancestors(
    graph: &Graph,
    prod: &HashMap<&str, usize>,
    value: &str,
    stop: &str,
) -> Option<HashSet<usize>> {
    let mut seen = HashSet::new();
    let mut stack = vec![value.to_string()];
    let mut reached_stop = false;
    while let Some(v) = stack.pop() {
        if v == stop {
            reached_stop = true;
            continue;
        }
        let Some(&n) = prod.get(v.as_str()) else {
            continue;
        };
        if seen.insert(n) {
            stack.extend(
                graph.nodes[n]
                    .inputs
                    .iter()
                    .filter(|i| !graph.initializers.contains_key(*i))
                    .cloned(),
            );
        }
    }
    reached_stop.then_some(seen)
}

/// Residual blocks `Add(f(x), x)` whose branch nodes are used only inside the block.
pub fn residual_blocks(graph: &Graph) -> Result<Vec<BlockCandidate>> {
    let shapes = graph.infer_shapes()?;
    let prod = producers(graph);
    let mut out = Vec::new();
    for add in graph
        .nodes
        .iter()
        .filter(|n| n.op.class() == OpClass::Binary(BinaryFn::Add) && n.inputs.len() == 2)
    {
        for (branch, skip) in [(0, 1), (1, 0)] {
            let (b, x) = (&add.inputs[branch], &add.inputs[skip]);
            if shapes.get(x) != shapes.get(&add.outputs[0]) || graph.initializers.contains_key(x) {
                continue;
            }
            let Some(body) = ancestors(graph, &prod, b, x) else {
                continue;
            };
            if body.is_empty() {
                continue;
            }
            // the branch must not feed anything outside the block
            let inside: HashSet<&str> = body
                .iter()
                .flat_map(|&i| graph.nodes[i].outputs.iter().map(String::as_str))
                .collect();
            let leaks = graph.nodes.iter().enumerate().any(|(i, n)| {
                !body.contains(&i)
                    && n.name != add.name
                    && n.inputs.iter().any(|v| inside.contains(v.as_str()))
            }) || graph.outputs.iter().any(|o| inside.contains(o.as_str()));
            if leaks {
                continue;
            }
            let mut nodes: Vec<usize> = body.into_iter().collect();
            nodes.sort();
            let mut names: Vec<String> =
                nodes.iter().map(|&i| graph.nodes[i].name.clone()).collect();
            names.push(add.name.clone());
            out.push(BlockCandidate {
                name: add.name.clone(),
                nodes: names,
                input: x.clone(),
                output: add.outputs[0].clone(),
            });
            break;
        }
    }
    Ok(out)
}

/// Conv/Gemm layers whose output has the input's shape, with a following batch norm and
/// activation when they are the layer's only consumers.
pub fn identity_layers(graph: &Graph) -> Result<Vec<BlockCandidate>> {
    let shapes = graph.infer_shapes()?;
    let mut out = Vec::new();
    for node in graph
        .nodes
        .iter()
        .filter(|n| n.op.class() == OpClass::WeightedLayer)
    {
        let x = &node.inputs[0];
        if shapes.get(x) != shapes.get(&node.outputs[0]) {
            continue;
        }
        let mut names = vec![node.name.clone()];
        let mut last = node.outputs[0].clone();
        loop {
            let consumers = graph.consumers(&last);
            if consumers.len() != 1 || graph.outputs.contains(&last) {
                break;
            }
            let c = &graph.nodes[consumers[0]];
            // shape-preserving followers of the layer: normalisation, activation, views
            let follows = match c.op.class() {
                OpClass::ChannelAffine | OpClass::Pointwise(_) => true,
                OpClass::View => shapes.get(&c.outputs[0]) == shapes.get(&last),
                _ => false,
            };
            if !follows {
                break;
            }
            names.push(c.name.clone());
            last = c.outputs[0].clone();
        }
        out.push(BlockCandidate {
            name: node.name.clone(),
            nodes: names,
            input: x.clone(),
            output: last,
        });
    }
    Ok(out)
}

/// The graph without a block: its consumers read the block's input instead.
pub fn remove_block(graph: &Graph, block: &BlockCandidate) -> Result<Graph> {
    let mut g = graph.clone();
    let drop: HashSet<&str> = block.nodes.iter().map(String::as_str).collect();
    if block.nodes.iter().any(|n| g.node_index(n).is_none()) {
        return Err(PruneError::Invalid(format!(
            "block '{}' is not in this graph",
            block.name
        )));
    }
    g.nodes.retain(|n| !drop.contains(n.name.as_str()));
    for n in &mut g.nodes {
        for i in &mut n.inputs {
            if *i == block.output {
                *i = block.input.clone();
            }
        }
    }
    let is_graph_input = g.inputs.iter().any(|i| i.name == block.input);
    for o in &mut g.outputs {
        if *o == block.output {
            if is_graph_input {
                return Err(PruneError::Invalid(format!(
                    "removing '{}' would connect the input straight to the output",
                    block.name
                )));
            }
            *o = block.input.clone();
        }
    }
    if let Some(q) = &mut g.quantization {
        q.activations.retain(|n, _| !drop.contains(n.as_str()));
    }
    g.drop_unused_initializers();
    g.check()?;
    Ok(g)
}

/// Candidates ranked by the damage their removal does (lowest first), per `damage`.
pub fn rank_blocks(
    graph: &Graph,
    candidates: Vec<BlockCandidate>,
    damage: &mut dyn FnMut(&Graph) -> Result<f64>,
) -> Result<Vec<(BlockCandidate, f64)>> {
    let mut ranked = Vec::with_capacity(candidates.len());
    for c in candidates {
        let g = remove_block(graph, &c)?;
        ranked.push((c, damage(&g)?));
    }
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(ranked)
}

/// Removes the `count` least damaging blocks, re-ranking after each removal.
pub fn remove_blocks(
    graph: &Graph,
    count: usize,
    include_layers: bool,
    damage: &mut dyn FnMut(&Graph) -> Result<f64>,
) -> Result<(Graph, Vec<(String, f64)>)> {
    let mut g = graph.clone();
    let mut removed = Vec::new();
    for _ in 0..count {
        let mut cands = residual_blocks(&g)?;
        if include_layers {
            cands.extend(identity_layers(&g)?);
        }
        if cands.is_empty() {
            return Err(PruneError::Unreachable(format!(
                "only {} removable blocks or layers found, {count} requested",
                removed.len()
            )));
        }
        let ranked = rank_blocks(&g, cands, damage)?;
        let (best, d) = ranked.into_iter().next().expect("non-empty");
        g = remove_block(&g, &best)?;
        removed.push((best.name, d));
    }
    Ok((g, removed))
}
