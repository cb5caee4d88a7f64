//! Clear errors for unsupported ops, bad attributes, external data and wrong opsets.

use secateur_graph::Tensor;
use secateur_onnx::proto::*;
use secateur_onnx::tensor_proto::encode_f32;
use secateur_onnx::{OnnxError, import_model};

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, opset: i64) -> ModelProto {
    shaped_model(nodes, inits, opset, &[1, 4])
}

fn shaped_model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    opset: i64,
    input: &[i64],
) -> ModelProto {
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
            input: vec![vi("x", input)],
            output: vec![vi("y", input)],
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
        node("GRU", "mod_a", &["x"]),
        node("LSTM", "rnn_1", &["x"]),
        node("GRU", "mod_b", &["x"]),
        node("GRU", "mod_c", &["x"]),
    ];
    let e = import_model(&model(nodes, vec![], 13)).unwrap_err();
    let OnnxError::UnsupportedOps { ops, .. } = &e else {
        panic!("expected the list of unsupported ops, got {e}");
    };
    let summary: Vec<(&str, usize, &str)> = ops
        .iter()
        .map(|o| (o.op_type.as_str(), o.count, o.first_node.as_str()))
        .collect();
    assert_eq!(summary, [("LSTM", 2, "rnn_0"), ("GRU", 3, "mod_a")]);
    let msg = e.to_string();
    assert!(msg.contains("2 unsupported op type(s)"), "{msg}");
    assert!(msg.contains("GRU (3 nodes, first 'mod_a')"), "{msg}");
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

fn conv_with(attrs: Vec<AttributeProto>) -> ModelProto {
    let w = Tensor::new(vec![2, 1, 3, 3], vec![0.1; 18]).unwrap();
    let mut conv = node("Conv", "conv_0", &["x", "w"]);
    conv.attribute = attrs;
    shaped_model(vec![conv], vec![encode_f32("w", &w)], 17, &[1, 1, 6, 6])
}

#[test]
fn zero_or_huge_strides_and_kernels_are_named_not_divided_by() {
    use secateur_onnx::attrs::{ints, string};
    let with = |name: &str, v: &[usize]| vec![ints(name, v), string("auto_pad", "SAME_UPPER")];
    for attrs in [
        with("strides", &[0, 1]),
        with("kernel_shape", &[0, 3]),
        with("dilations", &[1, 0]),
        with("strides", &[1 << 40, 1]),
        vec![ints("pads", &[1 << 40, 0, 0, 0])],
    ] {
        let name = attrs[0].name.clone();
        let e = import_model(&conv_with(attrs)).unwrap_err().to_string();
        assert!(e.contains("conv_0") && e.contains(&name), "{e}");
    }
}

/// `QuantizeLinear → DequantizeLinear` of the input with the given zero point, then `Neg`.
fn activation_qdq(zero_point: TensorProto) -> ModelProto {
    let scale = encode_f32("s", &Tensor::new(vec![], vec![0.1]).unwrap());
    let with_output = |n: NodeProto, out: &str| NodeProto {
        output: vec![out.into()],
        ..n
    };
    let nodes = vec![
        with_output(node("QuantizeLinear", "q", &["x", "s", "zp"]), "x_q"),
        with_output(node("DequantizeLinear", "dq", &["x_q", "s", "zp"]), "x_dq"),
        node("Neg", "neg", &["x_dq"]),
    ];
    model(nodes, vec![scale, zero_point], 17)
}

#[test]
fn an_int8_activation_with_zero_point_zero_keeps_its_negative_range() {
    use secateur_onnx::tensor_proto::encode_i8;
    let x = Tensor::new(vec![1, 4], vec![-5.0, 3.0, 20.0, -20.0]).unwrap();
    for (signed, want) in [
        (true, [5.0, -3.0, -12.7, 12.8]),
        (false, [0.0, -3.0, -20.0, 0.0]),
    ] {
        let g = import_model(&activation_qdq(encode_i8("zp", &[], &[0], signed))).unwrap();
        let y = secateur_graph::evaluate(&g, &[("x", x.clone())]).unwrap();
        for (a, b) in y[0].data().iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "signed {signed}: {:?}", y[0].data());
        }
    }
}

#[test]
fn zero_points_must_match_the_scales() {
    use secateur_onnx::tensor_proto::encode_i8;
    let m = activation_qdq(encode_i8("zp", &[3], &[0, 0, 0], true));
    let e = import_model(&m).unwrap_err().to_string();
    assert!(e.contains("3 zero points for 1 scales"), "{e}");
}

#[test]
fn a_constant_shaped_by_the_batch_off_the_first_axis_is_named() {
    // x: [N, 4]; Shape(x) gathered in reverse is [4, N]
    let order = TensorProto {
        name: "order".into(),
        dims: vec![2],
        data_type: data_type::INT64,
        int64_data: vec![1, 0],
        ..Default::default()
    };
    let mut shape = node("Shape", "shape", &["x"]);
    shape.output = vec!["s".into()];
    let mut swap = node("Gather", "swap", &["s", "order"]);
    swap.output = vec!["t".into()];
    let mut fill = node("ConstantOfShape", "fill", &["t"]);
    fill.output = vec!["zeros".into()];
    let nodes = vec![shape, swap, fill, node("Add", "add", &["x", "zeros"])];
    let mut m = model(nodes, vec![order], 13);
    let graph = m.graph.as_mut().unwrap();
    for vi in graph.input.iter_mut().chain(graph.output.iter_mut()) {
        let dims = &mut vi.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap();
        let first = &mut dims.shape.as_mut().unwrap().dim[0];
        first.dim_value = None;
        first.dim_param = Some("N".into());
    }
    let e = import_model(&m).unwrap_err().to_string();
    assert!(
        e.contains("fill") && e.contains("only the first size may depend on the batch"),
        "{e}"
    );
}
