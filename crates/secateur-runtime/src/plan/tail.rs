//! The batched tail of a network whose batch otherwise runs as one-sample plans: the layers
//! after the last spatial value (a classifier on `[N, F]` features) hold most of a CNN's
//! weights (4–6 MB for a 1000-class head) and little of its work, so running them once per
//! sample re-reads those weights for every sample, while one batched product reads them once.
//! [`split_flat_tail`] finds the longest suffix of the graph that reads a single rank-2
//! activation from the rest and holds enough weights to matter.

use secateur_graph::{Graph, Shape};
use std::collections::HashSet;

/// Weights (values) a tail must hold to be run batched: below this the one-sample plans
/// keep them in cache anyway.
const MIN_TAIL_WEIGHTS: usize = 256 * 1024;

/// The graph cut before its flat tail: the head (every node before the cut, returning the
/// cut value) and the tail (the rest, reading the cut value as its only input), or `None`
/// when the graph has no such tail (several outputs, no rank-2 cut, too few weights).
pub(crate) fn split_flat_tail(graph: &Graph) -> Option<(Graph, Graph)> {
    if graph.outputs.len() != 1 || graph.inputs.is_empty() {
        return None;
    }
    let shapes = graph.infer_shapes().ok()?;
    let inputs: HashSet<&str> = graph.inputs.iter().map(|v| v.name.as_str()).collect();
    let mut best: Option<(usize, String)> = None;
    let mut produced: HashSet<&str> = HashSet::new();
    for t in (1..graph.nodes.len()).rev() {
        produced.extend(graph.nodes[t].outputs.iter().map(String::as_str));
        let external: HashSet<&str> = graph.nodes[t..]
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .filter(|v| !produced.contains(v) && !graph.initializers.contains_key(*v))
            .collect();
        let [cut] = external.into_iter().collect::<Vec<_>>()[..] else {
            break;
        };
        if inputs.contains(cut) || shapes.get(cut).is_none_or(|s| s.rank() != 2) {
            break;
        }
        best = Some((t, cut.to_string()));
    }
    let (t, cut) = best?;
    let weights: usize = graph.nodes[t..]
        .iter()
        .flat_map(|n| n.inputs.iter())
        .filter_map(|v| graph.initializers.get(v))
        .map(|w| w.len())
        .sum();
    if weights < MIN_TAIL_WEIGHTS {
        return None;
    }
    let features = shapes[&cut].dim(1)?;
    let mut head = graph.clone();
    head.nodes.truncate(t);
    head.outputs = vec![cut.clone()];
    let mut tail = graph.clone();
    tail.nodes.drain(..t);
    tail.inputs.clear();
    tail.add_input(cut, Shape::batched(&[features]));
    Some((head, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secateur_graph::GraphBuilder;

    /// conv → pool → flatten → linear (`width` outputs) → relu → linear (10).
    fn cnn(width: usize) -> Graph {
        let (mut b, x) = GraphBuilder::new("cnn", &[3, 8, 8], 1);
        let c = b.conv("conv", &x, 512, 3, 1, 1, 1, true).unwrap();
        let p = b.global_avg_pool("gap", &c).unwrap();
        let f = b.flatten("flat", &p).unwrap();
        let l = b.linear("fc1", &f, width).unwrap();
        let r = b.relu("act", &l).unwrap();
        let o = b.linear("fc2", &r, 10).unwrap();
        b.finish(&o).unwrap()
    }

    #[test]
    fn a_cnn_splits_before_its_classifier() {
        let g = cnn(600);
        let (head, tail) = split_flat_tail(&g).expect("512 x 600 weights in the head");
        let flat = &g.nodes.iter().find(|n| n.name == "flat").unwrap().outputs[0];
        assert_eq!(head.outputs, vec![flat.clone()]);
        assert_eq!(head.nodes.last().unwrap().name, "flat");
        assert_eq!(tail.inputs.len(), 1);
        assert_eq!(&tail.inputs[0].name, flat);
        let names: Vec<&str> = tail.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["fc1", "act", "fc2"]);
        assert_eq!(tail.outputs, g.outputs);
    }

    #[test]
    fn small_heads_and_graphs_without_a_flat_cut_stay_whole() {
        // 512 x 100 weights: below the threshold
        assert!(split_flat_tail(&cnn(100)).is_none());
        // a convolution as the last node: no rank-2 cut
        let (mut b, x) = GraphBuilder::new("conv-only", &[3, 8, 8], 1);
        let c = b.conv("conv", &x, 4, 3, 1, 1, 1, true).unwrap();
        assert!(split_flat_tail(&b.finish(&c).unwrap()).is_none());
    }
}
