//! `Einsum` lowered at import: for equations as exporters write them (MaxViT's attention,
//! `x·W` with a constant weight, ellipses, implicit outputs, sums, outer products, three
//! operands, a constant on the left) the imported graph equals a direct summation over every
//! subscript assignment, ONNX Runtime on the original file and ONNX Runtime on secateur's
//! export; a constant right-hand matrix becomes a prunable weighted `MatMul`.

mod common;

use common::{float_initializer, float_value, opset17_model};
use prost::Message;
use secateur_graph::{Op, Tensor, evaluate};
use secateur_onnx::import_model;
use secateur_onnx::proto::*;
use secateur_testkit::{ort_run_inputs, require_python};
use std::collections::HashMap;

/// A float value whose negative dims are the symbolic batch.
fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Option<i64>> = dims.iter().map(|&d| (d >= 0).then_some(d)).collect();
    float_value(name, &dims)
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Tensor::from_fn(shape.to_vec(), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// One `Einsum` node; operands marked constant are initializers, the others graph inputs
/// (axis 0 is the symbolic batch where `batched` says so).
fn einsum_model(
    equation: &str,
    operands: &[(&Tensor, bool)],
    batched: &[bool],
    out_rank: usize,
) -> ModelProto {
    let names: Vec<String> = (0..operands.len()).map(|i| format!("x{i}")).collect();
    let mut inputs = Vec::new();
    let mut inits = Vec::new();
    for (k, ((t, constant), name)) in operands.iter().zip(&names).enumerate() {
        if *constant {
            inits.push(float_initializer(name, t));
        } else {
            let dims: Vec<i64> = t
                .shape()
                .iter()
                .enumerate()
                .map(|(a, &d)| if batched[k] && a == 0 { -1 } else { d as i64 })
                .collect();
            inputs.push(value(name, &dims));
        }
    }
    let node = NodeProto {
        op_type: "Einsum".into(),
        name: "einsum".into(),
        input: names.clone(),
        output: vec!["y".into()],
        attribute: vec![AttributeProto {
            name: "equation".into(),
            r#type: 3,
            s: equation.as_bytes().to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // output dims named, not sized: the importer infers them
    let mut out = value("y", &vec![0; out_rank]);
    if let Some(shape) = out
        .r#type
        .as_mut()
        .and_then(|t| t.tensor_type.as_mut())
        .and_then(|t| t.shape.as_mut())
    {
        for (i, d) in shape.dim.iter_mut().enumerate() {
            *d = DimensionProto {
                dim_param: Some(format!("y{i}")),
                ..Default::default()
            };
        }
    }
    opset17_model(GraphProto {
        node: vec![node],
        input: inputs,
        output: vec![out],
        initializer: inits,
        name: "einsum".into(),
        ..Default::default()
    })
}

/// The subscripts of each term of an explicit equation (no ellipsis).
fn terms(equation: &str) -> (Vec<Vec<char>>, Vec<char>) {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = eq.split_once("->").expect("explicit equation");
    (
        lhs.split(',').map(|t| t.chars().collect()).collect(),
        rhs.chars().collect(),
    )
}

/// Direct summation over every assignment of the subscripts.
fn naive_einsum(equation: &str, operands: &[&Tensor]) -> Tensor {
    let (ins, out) = terms(equation);
    let mut size: HashMap<char, usize> = HashMap::new();
    for (labels, t) in ins.iter().zip(operands) {
        for (l, &d) in labels.iter().zip(t.shape()) {
            size.insert(*l, d);
        }
    }
    let all: Vec<char> = {
        let mut v: Vec<char> = size.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let out_shape: Vec<usize> = out.iter().map(|l| size[l]).collect();
    let mut y = Tensor::zeros(out_shape.clone());
    let total: usize = all.iter().map(|l| size[l]).product();
    let flat = |labels: &[char], shape: &[usize], at: &HashMap<char, usize>| {
        labels
            .iter()
            .zip(shape)
            .fold(0, |acc, (l, &d)| acc * d + at[l])
    };
    for mut n in 0..total {
        let mut at = HashMap::new();
        for l in all.iter().rev() {
            at.insert(*l, n % size[l]);
            n /= size[l];
        }
        let p: f32 = ins
            .iter()
            .zip(operands)
            .map(|(labels, t)| t.data()[flat(labels, t.shape(), &at)])
            .product();
        let o = flat(&out, &out_shape, &at);
        y.data_mut()[o] += p;
    }
    y
}

fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.data().iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.data()
        .iter()
        .zip(b.data())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

struct Case {
    equation: &'static str,
    /// The equation with its ellipsis or implicit output spelled out, for the reference.
    explicit: &'static str,
    shapes: &'static [&'static [usize]],
    constant: &'static [bool],
}

const CASES: &[Case] = &[
    Case {
        equation: "B G H I D, B G H J D -> B G H I J",
        explicit: "bghid,bghjd->bghij",
        shapes: &[&[2, 3, 2, 4, 5], &[2, 3, 2, 6, 5]],
        constant: &[false, false],
    },
    Case {
        equation: "B G H I J, B G H J D -> B G H I D",
        explicit: "bghij,bghjd->bghid",
        shapes: &[&[2, 3, 2, 4, 6], &[2, 3, 2, 6, 5]],
        constant: &[false, false],
    },
    Case {
        equation: "bij,jk->bik",
        explicit: "bij,jk->bik",
        shapes: &[&[2, 3, 4], &[4, 5]],
        constant: &[false, true],
    },
    Case {
        equation: "bik,kj",
        explicit: "bik,kj->bij",
        shapes: &[&[2, 3, 4], &[4, 5]],
        constant: &[false, false],
    },
    Case {
        equation: "...ij,...jk->...ik",
        explicit: "xyij,xyjk->xyik",
        shapes: &[&[2, 3, 4, 5], &[2, 3, 5, 2]],
        constant: &[false, false],
    },
    Case {
        equation: "bi,bi->b",
        explicit: "bi,bi->b",
        shapes: &[&[3, 7], &[3, 7]],
        constant: &[false, false],
    },
    Case {
        equation: "bij->bji",
        explicit: "bij->bji",
        shapes: &[&[2, 3, 4]],
        constant: &[false],
    },
    Case {
        equation: "bij->b",
        explicit: "bij->b",
        shapes: &[&[2, 3, 4]],
        constant: &[false],
    },
    Case {
        equation: "bij->bij",
        explicit: "bij->bij",
        shapes: &[&[2, 3, 4]],
        constant: &[false],
    },
    Case {
        equation: "bi,bj->bij",
        explicit: "bi,bj->bij",
        shapes: &[&[2, 3], &[2, 4]],
        constant: &[false, false],
    },
    Case {
        equation: "bhqd,bkhd->bhqk",
        explicit: "bhqd,bkhd->bhqk",
        shapes: &[&[2, 3, 4, 5], &[2, 6, 3, 5]],
        constant: &[false, false],
    },
    Case {
        equation: "bn,nd,de->be",
        explicit: "bn,nd,de->be",
        shapes: &[&[2, 3], &[3, 4], &[4, 5]],
        constant: &[false, true, true],
    },
    Case {
        equation: "bn,kj,bnk->bj",
        explicit: "bn,kj,bnk->bj",
        shapes: &[&[2, 3], &[4, 5], &[2, 3, 4]],
        constant: &[false, true, false],
    },
    Case {
        equation: "bijk,bjl->bil",
        explicit: "bijk,bjl->bil",
        shapes: &[&[2, 3, 4, 5], &[2, 4, 6]],
        constant: &[false, false],
    },
];

#[test]
fn einsum_equations_equal_direct_summation_and_onnx_runtime() {
    let py = require_python();
    for (c, case) in CASES.iter().enumerate() {
        let tensors: Vec<Tensor> = case
            .shapes
            .iter()
            .enumerate()
            .map(|(k, s)| random(s, 10 * c as u64 + k as u64))
            .collect();
        let operands: Vec<(&Tensor, bool)> =
            tensors.iter().zip(case.constant.iter().copied()).collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let expected = naive_einsum(case.explicit, &refs);
        // operands whose first subscript is `b` take the batch from the graph input
        let batched: Vec<bool> = terms(case.explicit)
            .0
            .iter()
            .zip(case.constant)
            .map(|(t, constant)| !constant && t.first() == Some(&'b'))
            .collect();
        let m = einsum_model(case.equation, &operands, &batched, expected.shape().len());
        let g = import_model(&m).unwrap_or_else(|e| panic!("{}: {e}", case.equation));
        let feeds: Vec<(String, Tensor)> = operands
            .iter()
            .enumerate()
            .filter(|(_, (_, constant))| !constant)
            .map(|(k, (t, _))| (format!("x{k}"), (*t).clone()))
            .collect();
        let feed_refs: Vec<(&str, Tensor)> =
            feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let y = evaluate(&g, &feed_refs).unwrap().remove(0);
        let e = relative_error(&y, &expected);
        assert!(e < 1e-5, "{}: graph vs direct summation {e}", case.equation);
        let Some(py) = &py else { continue };
        let named: Vec<(&str, &Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let ort = ort_run_inputs(py, &m.encode_to_vec(), &named)
            .unwrap()
            .remove(0);
        let e = relative_error(&ort, &expected);
        assert!(e < 1e-5, "{}: ORT vs direct summation {e}", case.equation);
        let exported = secateur_onnx::to_bytes(&g).unwrap();
        let again = ort_run_inputs(py, &exported, &named).unwrap().remove(0);
        let e = relative_error(&again, &expected);
        assert!(e < 1e-5, "{}: ORT on the export {e}", case.equation);
    }
}

#[test]
fn a_constant_right_hand_matrix_becomes_a_weighted_layer() {
    for (equation, constant_first) in [("bij,jk->bik", false), ("jk,bij->bik", true)] {
        let x = random(&[2, 3, 4], 1);
        let w = random(&[4, 5], 2);
        let operands = if constant_first {
            vec![(&w, true), (&x, false)]
        } else {
            vec![(&x, false), (&w, true)]
        };
        let m = einsum_model(equation, &operands, &[true, true], 3);
        let g = import_model(&m).unwrap();
        assert!(
            g.nodes.iter().any(|n| matches!(n.op, Op::MatMul(_))),
            "{equation}: {:?}",
            g.nodes
                .iter()
                .map(|n| n.op.sem().op_type())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn unsupported_einsums_name_the_node_and_the_reason() {
    let x = random(&[2, 3, 3], 1);
    for (equation, needle) in [
        ("bii->bi", "diagonals"),
        ("bij,jk->bik", "operand"),
        ("bijk->b", "rank 3"),
    ] {
        let m = einsum_model(equation, &[(&x, false)], &[true], 2);
        let e = import_model(&m).unwrap_err().to_string();
        assert!(
            e.contains("einsum") && e.contains(needle),
            "{equation}: {e}"
        );
    }
}
