//! Index tensors computed from the batch size (`Range(0, N)`): a per-sample reversal written
//! as torch's `as_strided` (`Gather` of the flattened batch) and as `GatherND` over
//! `[arange(N), columns]` import as gathers within each sample, equal the expected values and
//! ONNX Runtime; a value that is not affine in the batch coordinate is refused with the node
//! named when anything but `Shape` reads it.

mod common;

use common::{float_value, opset17_model};
use prost::Message;
use secateur_graph::{Tensor, evaluate};
use secateur_onnx::import_model;
use secateur_onnx::proto::*;
use secateur_testkit::{ort_run, require_python};

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn ints(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::INT64,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn value(name: &str) -> ValueInfoProto {
    float_value(name, &[None, Some(4)])
}

/// `arange(N)` from the batch size of `x` (`Shape → Squeeze → Range`).
fn arange_nodes() -> Vec<NodeProto> {
    let mut shape = node("Shape", &["x"], "n1");
    shape.attribute.push(AttributeProto {
        name: "end".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    });
    vec![
        shape,
        node("Squeeze", &["n1"], "n"),
        node("Range", &["zero", "n", "one"], "rows"),
    ]
}

fn model(mut nodes: Vec<NodeProto>, mut inits: Vec<TensorProto>) -> ModelProto {
    let mut all = arange_nodes();
    all.append(&mut nodes);
    inits.extend([ints("zero", &[], &[0]), ints("one", &[], &[1])]);
    opset17_model(GraphProto {
        node: all,
        input: vec![value("x")],
        output: vec![value("y")],
        initializer: inits,
        name: "batch_index".into(),
        ..Default::default()
    })
}

/// `y = x.flatten()[arange(N)·4 + [3, 2, 1, 0]]`: each row reversed.
fn as_strided_model() -> ModelProto {
    model(
        vec![
            node("Mul", &["rows", "four"], "starts"),
            node("Unsqueeze", &["starts", "axis1"], "starts2"),
            node("Add", &["starts2", "reverse"], "idx"),
            node("Reshape", &["x", "flat"], "xf"),
            node("Gather", &["xf", "idx"], "y"),
        ],
        vec![
            ints("four", &[], &[4]),
            ints("axis1", &[1], &[1]),
            ints("reverse", &[1, 4], &[3, 2, 1, 0]),
            ints("flat", &[1], &[-1]),
        ],
    )
}

/// `y = GatherND(x, stack(rows ⊗ 1, [3, 2, 1, 0]))`: each row reversed.
fn gather_nd_model() -> ModelProto {
    let mut target = node("Concat", &["n1", "four"], "target");
    target.attribute.push(AttributeProto {
        name: "axis".into(),
        r#type: 2,
        i: 0,
        ..Default::default()
    });
    model(
        vec![
            target,
            node("Unsqueeze", &["rows", "axis1"], "r2"),
            node("Expand", &["r2", "target"], "r3"),
            node("Unsqueeze", &["r3", "last"], "r4"),
            node("Expand", &["reverse", "target"], "c3"),
            node("Unsqueeze", &["c3", "last"], "c4"),
            {
                let mut c = node("Concat", &["r4", "c4"], "idx");
                c.attribute.push(AttributeProto {
                    name: "axis".into(),
                    r#type: 2,
                    i: -1,
                    ..Default::default()
                });
                c
            },
            node("GatherND", &["x", "idx"], "y"),
        ],
        vec![
            ints("axis1", &[1], &[1]),
            ints("last", &[1], &[-1]),
            ints("reverse", &[1, 4], &[3, 2, 1, 0]),
            ints("four", &[1], &[4]),
        ],
    )
}

#[test]
fn gathers_through_the_batch_coordinate_read_within_each_sample() {
    let x = Tensor::from_fn(vec![3, 4], |i| i as f32);
    let reversed: Vec<f32> = (0..3)
        .flat_map(|r| (0..4).rev().map(move |c| (r * 4 + c) as f32))
        .collect();
    for m in [as_strided_model(), gather_nd_model()] {
        let g = import_model(&m).unwrap();
        let y = evaluate(&g, &[("x", x.clone())]).unwrap().remove(0);
        assert_eq!(y.shape(), &[3, 4]);
        assert_eq!(y.data(), &reversed[..]);
        let Some(py) = require_python() else { continue };
        let ort = ort_run(&py, &m.encode_to_vec(), "x", &x).unwrap().remove(0);
        assert_eq!(ort.data(), &reversed[..]);
        let exported = secateur_onnx::to_bytes(&g).unwrap();
        let again = ort_run(&py, &exported, "x", &x).unwrap().remove(0);
        assert_eq!(again.data(), &reversed[..]);
    }
}

#[test]
fn a_non_affine_batch_index_is_refused_where_it_is_used() {
    // max(arange(N), 2) is not affine in the batch coordinate: only its shape is kept, and
    // adding it to x names the Add node
    let m = model(
        vec![
            node("Max", &["rows", "two"], "clamped"),
            node("Unsqueeze", &["clamped", "axis1"], "c2"),
            node("Cast", &["c2"], "cf"),
            node("Add", &["x", "cf"], "y"),
        ],
        vec![ints("two", &[], &[2]), ints("axis1", &[1], &[1])],
    );
    let e = import_model(&m).unwrap_err().to_string();
    assert!(
        e.contains("Unsqueeze_c2") && e.contains("only its shape"),
        "{e}"
    );
}
