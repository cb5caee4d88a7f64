//! Import of what real exports contain beyond float images: symbolic sequence lengths fixed by
//! `ImportOptions` (the CLI's `--dim`), integer and boolean graph inputs, BOOL constants, casts
//! of activations, and gathers at data-given positions; and their export back to ONNX.

use secateur_graph::{ElemType, Shape, Tensor, evaluate};
use secateur_onnx::proto::*;
use secateur_onnx::{ImportOptions, import_model, import_model_with};
use secateur_testkit::{ort_run, require_python};

fn dim_param(p: &str) -> DimensionProto {
    DimensionProto {
        dim_param: Some(p.into()),
        ..Default::default()
    }
}

fn value(name: &str, elem_type: i32, dims: Vec<DimensionProto>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// Token ids `[batch, seq]` (INT64) looked up in a 5×2 embedding table, plus a BOOL constant
/// cast to float.
fn embedding_model() -> ModelProto {
    let table = TensorProto {
        name: "table".into(),
        dims: vec![5, 2],
        data_type: data_type::FLOAT,
        float_data: (0..10).map(|i| i as f32).collect(),
        ..Default::default()
    };
    let flags = TensorProto {
        name: "flags".into(),
        dims: vec![2],
        data_type: data_type::BOOL,
        raw_data: vec![1, 0],
        ..Default::default()
    };
    let mut cast = node("Cast", "cast_flags", &["flags"], "flags_f");
    cast.attribute.push(AttributeProto {
        name: "to".into(),
        r#type: attribute_type::INT,
        i: data_type::FLOAT as i64,
        ..Default::default()
    });
    m_with_graph(GraphProto {
        node: vec![
            node("Gather", "embed", &["table", "ids"], "rows"),
            cast,
            node("Add", "add", &["rows", "flags_f"], "y"),
        ],
        input: vec![value(
            "ids",
            data_type::INT64,
            vec![dim_param("batch"), dim_param("seq")],
        )],
        output: vec![value("y", data_type::FLOAT, vec![])],
        initializer: vec![table, flags],
        ..Default::default()
    })
}

#[test]
fn a_symbolic_sequence_length_needs_a_size_and_gets_it_from_the_options() {
    let m = embedding_model();
    let e = import_model(&m).unwrap_err().to_string();
    assert!(e.contains("'seq'") && e.contains("--dim seq="), "{e}");
    let opts = ImportOptions {
        dims: [("seq".to_string(), 3)].into(),
        ..Default::default()
    };
    let g = import_model_with(&m, &opts).unwrap();
    assert_eq!(g.inputs[0].shape, Shape::batched(&[3]));
    let by_default = ImportOptions {
        other_dims: Some(3),
        ..Default::default()
    };
    assert_eq!(import_model_with(&m, &by_default).unwrap(), g);
    assert_eq!(g.inputs[0].dtype, ElemType::Int64);
    let ids = Tensor::new(vec![2, 3], vec![0., 4., -1., 2., 2., 1.]).unwrap();
    let y = evaluate(&g, &[("ids", ids)]).unwrap().remove(0);
    assert_eq!(y.shape(), &[2, 3, 2]);
    // rows 0, 4, 4 (−1 is the last), 2, 2, 1 of the table, plus the flags [1, 0]
    assert_eq!(y.data(), &[1., 1., 9., 9., 9., 9., 5., 5., 5., 5., 3., 3.]);
    let out_of_range = Tensor::new(vec![1, 3], vec![0., 5., 1.]).unwrap();
    let e = evaluate(&g, &[("ids", out_of_range)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn integer_inputs_are_exported_with_their_type() {
    let opts = ImportOptions {
        dims: [("seq".to_string(), 3)].into(),
        ..Default::default()
    };
    let g = import_model_with(&embedding_model(), &opts).unwrap();
    let m = secateur_onnx::export::export_model(&g).unwrap();
    let gp = m.graph.unwrap();
    let ids = &gp.input[0];
    let elem = ids
        .r#type
        .as_ref()
        .unwrap()
        .tensor_type
        .as_ref()
        .unwrap()
        .elem_type;
    assert_eq!(elem, data_type::INT64);
    // the graph computes on floats: the input is cast once, right at the start
    assert!(
        gp.node
            .iter()
            .any(|n| n.op_type == "Cast" && n.input == ["ids"])
    );
    // and imports again to the same graph
    let again = import_model_with(&m_with_graph(gp), &opts).unwrap();
    assert_eq!(again.inputs[0].dtype, ElemType::Int64);
    // ONNX Runtime runs the export on int64 ids and agrees
    let Some(py) = require_python() else { return };
    let ids = Tensor::new(vec![2, 3], vec![0., 4., -1., 2., 2., 1.]).unwrap();
    let ours = evaluate(&g, &[("ids", ids.clone())]).unwrap().remove(0);
    let bytes = secateur_onnx::to_bytes(&g).unwrap();
    let ort = ort_run(&py, &bytes, "ids", &ids).unwrap().remove(0);
    assert!(ort.max_abs_diff(&ours) < 1e-6);
}

/// A model at opset 17 around `gp`.
fn m_with_graph(gp: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(gp),
        ..Default::default()
    }
}

/// `[batch, 5]`.
fn batch_of_five() -> Vec<DimensionProto> {
    vec![
        dim_param("batch"),
        DimensionProto {
            dim_value: Some(5),
            ..Default::default()
        },
    ]
}

/// `Where(Not(x > 0), -1, x)` on a float input: masks computed in the graph.
fn mask_model() -> ModelProto {
    let scalar = |name: &str, v: f32| TensorProto {
        name: name.into(),
        dims: vec![],
        data_type: data_type::FLOAT,
        float_data: vec![v],
        ..Default::default()
    };
    m_with_graph(GraphProto {
        node: vec![
            node("Greater", "gt", &["x", "zero"], "pos"),
            node("Not", "not", &["pos"], "nonpos"),
            node("Where", "where", &["nonpos", "minus_one", "x"], "y"),
        ],
        input: vec![value("x", data_type::FLOAT, batch_of_five())],
        output: vec![value("y", data_type::FLOAT, batch_of_five())],
        initializer: vec![scalar("zero", 0.0), scalar("minus_one", -1.0)],
        name: "masks".into(),
        ..Default::default()
    })
}

#[test]
fn masks_of_activations_import_evaluate_and_export() {
    use prost::Message;
    let m = mask_model();
    let g = import_model(&m).unwrap();
    let x = Tensor::new(
        vec![2, 5],
        vec![-2., 0., 3., 0.5, -0.1, 1., 1., -1., 0., 7.],
    )
    .unwrap();
    let ours = evaluate(&g, &[("x", x.clone())]).unwrap().remove(0);
    assert_eq!(ours.data(), &[-1., -1., 3., 0.5, -1., 1., 1., -1., -1., 7.]);
    let Some(py) = require_python() else { return };
    let original = ort_run(&py, &m.encode_to_vec(), "x", &x).unwrap().remove(0);
    assert_eq!(original.data(), ours.data());
    let exported = ort_run(&py, &secateur_onnx::to_bytes(&g).unwrap(), "x", &x)
        .unwrap()
        .remove(0);
    assert_eq!(exported.data(), ours.data());
}
