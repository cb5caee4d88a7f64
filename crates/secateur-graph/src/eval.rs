//! The reference evaluator: runs any supported graph on the CPU with each op's plain
//! `eval`. Slow and obviously correct; every faster path (training engine, runtime kernels,
//! ONNX Runtime after export) is tested against it.

use crate::error::{GraphError, Result};
use crate::graph::Graph;
use crate::shape::Dim;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Checks a fed tensor against the declared input shape (any size for the batch dimension).
fn check_feed(graph: &Graph, name: &str, t: &Tensor) -> Result<()> {
    let info = graph
        .inputs
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| GraphError::Input {
            name: name.into(),
            message: "the graph has no such input".into(),
        })?;
    let ok = info.shape.rank() == t.rank()
        && info
            .shape
            .dims()
            .iter()
            .zip(t.shape())
            .all(|(d, &n)| match d {
                Dim::Batch => true,
                Dim::BatchTimes(k) => n % k == 0,
                Dim::Known(k) => *k == n,
            });
    if !ok {
        return Err(GraphError::Input {
            name: name.into(),
            message: format!("expected shape {}, got {:?}", info.shape, t.shape()),
        });
    }
    Ok(())
}

/// Evaluates one node of `graph` on the values computed so far (initializers are read from
/// the graph; quantized weights and activations are simulated as ONNX QDQ computes them).
pub fn evaluate_node(
    graph: &Graph,
    node: &crate::graph::Node,
    values: &HashMap<String, Tensor>,
) -> Result<Vec<Tensor>> {
    let quant = graph.quantization.as_ref();
    let mut simulated: Vec<Option<Tensor>> = vec![None; node.inputs.len()];
    let mut ins = Vec::with_capacity(node.inputs.len());
    for (k, v) in node.inputs.iter().enumerate() {
        let t = values
            .get(v)
            .or_else(|| graph.initializers.get(v))
            .ok_or_else(|| GraphError::UndefinedValue {
                value: v.clone(),
                node: node.name.clone(),
            })?;
        if let Some(q) = quant {
            if let Some(axis) = q.weights.get(v) {
                simulated[k] = Some(crate::quant::fake_quant_weight(t, *axis));
            } else if let (0, Some(a)) = (k, q.activations.get(&node.name)) {
                let mut x = t.clone();
                x.data_mut().iter_mut().for_each(|e| *e = a.fake(*e));
                simulated[k] = Some(x);
            }
        }
        ins.push(t);
    }
    for (slot, s) in ins.iter_mut().zip(&simulated) {
        if let Some(s) = s {
            *slot = s;
        }
    }
    let shapes: Vec<_> = ins.iter().map(|t| crate::Shape::known(t.shape())).collect();
    graph.infer_node(node, &shapes)?;
    node.op.sem().eval(&ins).map_err(|e| GraphError::Op {
        node: node.name.clone(),
        op: node.op.op_type(),
        message: e.0,
    })
}

/// Evaluates the graph and returns every value by name.
pub fn evaluate_all(graph: &Graph, feeds: &[(&str, Tensor)]) -> Result<HashMap<String, Tensor>> {
    let mut values = feed_values(graph, feeds)?;
    for node in &graph.nodes {
        let outs = evaluate_node(graph, node, &values)?;
        for (name, t) in node.outputs.iter().zip(outs) {
            values.insert(name.clone(), t);
        }
    }
    Ok(values)
}

/// The graph's inputs from named feeds, each checked against its declared shape.
pub fn feed_values(graph: &Graph, feeds: &[(&str, Tensor)]) -> Result<HashMap<String, Tensor>> {
    let mut values: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in feeds {
        check_feed(graph, name, t)?;
        values.insert(name.to_string(), t.clone());
    }
    for input in &graph.inputs {
        if !values.contains_key(&input.name) {
            return Err(GraphError::Input {
                name: input.name.clone(),
                message: "no tensor was supplied".into(),
            });
        }
    }
    Ok(values)
}

/// Evaluates the graph and returns its outputs in order.
///
/// ```
/// use secateur_graph::{evaluate, Graph, Op, Shape, Tensor, Unary};
/// let mut g = Graph::new("relu");
/// g.add_input("x", Shape::batched(&[2]));
/// g.add_node("r", Op::Unary(Unary::RELU), &["x"], &["y"]);
/// g.outputs.push("y".into());
/// let x = Tensor::new(vec![1, 2], vec![-1.0, 2.0]).unwrap();
/// let y = evaluate(&g, &[("x", x)]).unwrap();
/// assert_eq!(y[0].data(), &[0.0, 2.0]);
/// ```
pub fn evaluate(graph: &Graph, feeds: &[(&str, Tensor)]) -> Result<Vec<Tensor>> {
    let mut values = evaluate_all(graph, feeds)?;
    graph
        .outputs
        .iter()
        .map(|o| {
            values
                .remove(o)
                .or_else(|| graph.initializers.get(o).cloned())
                .ok_or_else(|| GraphError::MissingOutput(o.clone()))
        })
        .collect()
}
