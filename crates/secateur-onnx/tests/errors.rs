//! Clear errors for unsupported ops, bad attributes, external data and wrong opsets.

use secateur_graph::Tensor;
use secateur_onnx::proto::*;
use secateur_onnx::tensor_proto::encode_f32;
use secateur_onnx::{OnnxError, import_model};

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, opset: i64) -> ModelProto {
    let vi = |name: &str, dims: &[i64]| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| DimensionProto {
                            dim_value: Some(d),
                            ..Default::default()
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            input: vec![vi("x", &[1, 4])],
            output: vec![vi("y", &[1, 4])],
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        ..Default::default()
    }
}

#[test]
fn unsupported_op_names_node_and_type() {
    let e = import_model(&model(vec![node("LSTM", "rnn_0", &["x"])], vec![], 13)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, OnnxError::UnsupportedOps { .. }));
    assert!(
        msg.contains("rnn_0") && msg.contains("LSTM") && msg.contains("Conv"),
        "{msg}"
    );
}

#[test]
fn every_unsupported_op_type_is_listed_once_with_its_count() {
    let nodes = vec![
        node("LSTM", "rnn_0", &["x"]),
        node("Relu", "ok", &["x"]),
        node("Einsum", "mod_a", &["x"]),
        node("LSTM", "rnn_1", &["x"]),
        node("Einsum", "mod_b", &["x"]),
        node("Einsum", "mod_c", &["x"]),
    ];
    let e = import_model(&model(nodes, vec![], 13)).unwrap_err();
    let OnnxError::UnsupportedOps { ops, .. } = &e else {
        panic!("expected the list of unsupported ops, got {e}");
    };
    let summary: Vec<(&str, usize, &str)> = ops
        .iter()
        .map(|o| (o.op_type.as_str(), o.count, o.first_node.as_str()))
        .collect();
    assert_eq!(summary, [("LSTM", 2, "rnn_0"), ("Einsum", 3, "mod_a")]);
    let msg = e.to_string();
    assert!(msg.contains("2 unsupported op type(s)"), "{msg}");
    assert!(msg.contains("Einsum (3 nodes, first 'mod_a')"), "{msg}");
}

#[test]
fn custom_domain_is_unsupported() {
    let mut n = node("Relu", "r", &["x"]);
    n.domain = "com.microsoft".into();
    let msg = import_model(&model(vec![n], vec![], 13))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("com.microsoft"), "{msg}");
}

#[test]
fn opset_out_of_range() {
    let msg = import_model(&model(vec![node("Relu", "r", &["x"])], vec![], 7))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("opset 7"), "{msg}");
}

#[test]
fn shape_mismatch_names_the_node() {
    let w = encode_f32("w", &Tensor::zeros(vec![3, 5]));
    let mut n = node("Gemm", "fc_bad", &["x", "w"]);
    n.attribute.push(AttributeProto {
        name: "transB".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    });
    let msg = import_model(&model(vec![n], vec![w], 13))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("fc_bad") && msg.contains("Gemm") && msg.contains("features"),
        "{msg}"
    );
}

#[test]
fn nan_weights_are_rejected() {
    let w = encode_f32("w", &Tensor::new(vec![4, 4], vec![f32::NAN; 16]).unwrap());
    let mut n = node("Gemm", "fc", &["x", "w"]);
    n.attribute.push(AttributeProto {
        name: "transB".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    });
    let msg = import_model(&model(vec![n], vec![w], 13))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'w'") && msg.contains("NaN"), "{msg}");
}

#[test]
fn external_data_is_rejected_clearly() {
    let mut w = encode_f32("w", &Tensor::zeros(vec![4, 4]));
    w.raw_data.clear();
    w.data_location = 1;
    let mut n = node("Gemm", "fc", &["x", "w"]);
    n.attribute.push(AttributeProto {
        name: "transB".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    });
    let msg = import_model(&model(vec![n], vec![w], 13))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("external"), "{msg}");
}

#[test]
fn undefined_input_is_reported() {
    let msg = import_model(&model(
        vec![node("Add", "add", &["x", "ghost"])],
        vec![],
        13,
    ))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("ghost"), "{msg}");
}

#[test]
fn constant_subgraphs_with_wrong_shapes_are_errors_not_panics() {
    // a layer norm of a constant is folded at import, but only after its shapes are checked
    // (its evaluation would read past the end of the 3-element scale)
    let t = |name: &str, dims: &[usize]| {
        let n: usize = dims.iter().product();
        encode_f32(name, &Tensor::new(dims.to_vec(), vec![1.0; n]).unwrap())
    };
    let inits = vec![t("c", &[1, 2, 4]), t("s", &[3])];
    let nodes = vec![
        {
            let mut ln = node("LayerNormalization", "ln", &["c", "s"]);
            ln.output = vec!["h".into()];
            ln
        },
        node("Add", "add", &["x", "h"]),
    ];
    let e = import_model(&model(nodes, inits, 17))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ln") && e.contains("scale"), "{e}");
}

#[test]
fn a_huge_constant_of_shape_is_refused_not_allocated() {
    let shape = TensorProto {
        name: "shape".into(),
        dims: vec![2],
        data_type: data_type::INT64,
        int64_data: vec![1 << 20, 1 << 20],
        ..Default::default()
    };
    let mut fill = node("ConstantOfShape", "fill", &["shape"]);
    fill.output = vec!["big".into()];
    let nodes = vec![fill, node("Add", "add", &["x", "big"])];
    let e = import_model(&model(nodes, vec![shape], 13))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fill") && e.contains("too large"), "{e}");
}
