//! Ensembles as one graph: the members read the same input, their outputs (logits) are
//! averaged. Each member's node, value, weight, mask and quantization names get a `mK/`
//! prefix; the average is taken by scaling each member's final `Gemm` by `1/n` (its `alpha`
//! and `beta`) and summing with `Add` nodes, so the combined model is plain ONNX that any
//! runtime can execute, and its cost is the sum of its members' costs. The ensemble runs in
//! bf16 when any member does (precision is a property of the whole graph).

use crate::error::{GraphError, Result};
use crate::graph::{Graph, Node};
use crate::ops::{Binary, Op};
use crate::quant::Quantization;

fn prefixed(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Combines `members` (same single input and output shapes, each ending in a `Gemm`) into one
/// graph whose output is the mean of their outputs.
pub fn ensemble(name: &str, members: &[&Graph]) -> Result<Graph> {
    if members.len() < 2 {
        return Err(GraphError::Invalid(format!(
            "an ensemble needs at least 2 members, got {}",
            members.len()
        )));
    }
    let first = members[0];
    if first.inputs.len() != 1 || first.outputs.len() != 1 {
        return Err(GraphError::Invalid(format!(
            "ensemble member '{}' must have one input and one output",
            first.name
        )));
    }
    let input = first.inputs[0].clone();
    let out_shape = first.infer_shapes()?[&first.outputs[0]].clone();
    let n = members.len() as f32;
    let mut g = Graph::new(name);
    g.inputs.push(input.clone());
    g.metadata = first.metadata.clone();
    g.metadata
        .insert("secateur.ensemble".into(), members.len().to_string());
    let mut outputs = Vec::new();
    let mut quant: Option<Quantization> = None;
    for (k, m) in members.iter().enumerate() {
        if m.inputs.len() != 1 || m.outputs.len() != 1 {
            return Err(GraphError::Invalid(format!(
                "ensemble member '{}' must have one input and one output",
                m.name
            )));
        }
        if m.inputs[0].shape != input.shape {
            return Err(GraphError::Invalid(format!(
                "ensemble member '{}' takes input of shape {} but the first member takes {}",
                m.name, m.inputs[0].shape, input.shape
            )));
        }
        let shape = m.infer_shapes()?[&m.outputs[0]].clone();
        if shape != out_shape {
            return Err(GraphError::Invalid(format!(
                "ensemble member '{}' returns shape {shape} but the first member returns {out_shape}",
                m.name
            )));
        }
        let p = format!("m{k}/");
        let rename = |v: &str| {
            if v == m.inputs[0].name {
                input.name.clone()
            } else {
                prefixed(&p, v)
            }
        };
        let out = &m.outputs[0];
        let last = m
            .nodes
            .iter()
            .position(|nd| nd.outputs.contains(out))
            .ok_or_else(|| GraphError::MissingOutput(out.clone()))?;
        for (i, nd) in m.nodes.iter().enumerate() {
            let mut op = nd.op.clone();
            if i == last {
                match &mut op {
                    Op::Gemm(gm) => {
                        gm.alpha /= n;
                        gm.beta /= n;
                    }
                    other => {
                        return Err(GraphError::Invalid(format!(
                            "ensemble member '{}': its output comes from '{}' ({}), but averaging needs a Gemm there",
                            m.name,
                            nd.name,
                            other.op_type()
                        )));
                    }
                }
            }
            g.nodes.push(Node {
                name: prefixed(&p, &nd.name),
                op,
                inputs: nd.inputs.iter().map(|v| rename(v)).collect(),
                outputs: nd.outputs.iter().map(|v| rename(v)).collect(),
            });
        }
        for (w, t) in &m.initializers {
            g.initializers.insert(prefixed(&p, w), t.clone());
        }
        for (w, mask) in &m.masks {
            g.masks.insert(prefixed(&p, w), mask.clone());
        }
        if let Some(q) = &m.quantization {
            let dst = quant.get_or_insert_with(Quantization::default);
            for (w, axis) in &q.weights {
                dst.weights.insert(prefixed(&p, w), *axis);
            }
            for (node, a) in &q.activations {
                dst.activations.insert(prefixed(&p, node), *a);
            }
        }
        outputs.push(rename(out));
    }
    let mut acc = outputs[0].clone();
    for (k, o) in outputs.iter().enumerate().skip(1) {
        let out = if k + 1 == outputs.len() {
            "logits".to_string()
        } else {
            format!("ensemble/sum{k}")
        };
        g.nodes.push(Node {
            name: format!("ensemble/add{k}"),
            op: Op::Binary(Binary::ADD),
            inputs: vec![acc, o.clone()],
            outputs: vec![out.clone()],
        });
        acc = out;
    }
    g.outputs = vec![acc];
    g.quantization = quant;
    if members
        .iter()
        .any(|m| m.precision == crate::Precision::Bf16)
    {
        g.precision = crate::Precision::Bf16;
    }
    g.check()?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use crate::zoo::{self, ZooConfig, ZooModel};

    #[test]
    fn output_is_the_mean_of_the_members() {
        let a = zoo::build(
            ZooModel::Lenet5Bn,
            &ZooConfig {
                seed: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let b = zoo::build(
            ZooModel::Mlp,
            &ZooConfig {
                seed: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let e = ensemble("pair", &[&a, &b]).unwrap();
        let x = Tensor::new(
            vec![3, 1, 28, 28],
            (0..3 * 784)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect(),
        )
        .unwrap();
        let run = |g: &Graph| {
            crate::eval::evaluate(g, &[(&g.inputs[0].name, x.clone())])
                .unwrap()
                .remove(0)
        };
        let (ya, yb, ye) = (run(&a), run(&b), run(&e));
        assert_eq!(ye.shape(), ya.shape());
        for ((p, q), r) in ya.data().iter().zip(yb.data()).zip(ye.data()) {
            assert!((0.5 * (p + q) - r).abs() < 1e-5, "{p} {q} {r}");
        }
        assert!(ensemble("one", &[&a]).is_err());
    }
}
