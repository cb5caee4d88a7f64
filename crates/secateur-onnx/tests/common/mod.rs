//! Graphs and ONNX protobuf pieces shared by the ONNX integration tests.
#![allow(dead_code)]

use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Activation, Graph, GraphBuilder, Tensor};
use secateur_onnx::proto::*;

/// A float graph value of `dims`, each a size, or `None` for the symbolic batch.
pub fn float_value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = |d: &Option<i64>| match d {
        Some(v) => DimensionProto {
            dim_value: Some(*v),
            ..Default::default()
        },
        None => DimensionProto {
            dim_param: Some("batch".into()),
            ..Default::default()
        },
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of IR version 8 and ONNX opset 17 around `graph`.
pub fn opset17_model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// A float initializer holding `t`.
pub fn float_initializer(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        float_data: t.data().to_vec(),
        ..Default::default()
    }
}

/// An inception-style graph: two branches concatenated, then a linear head.
pub fn concat_net() -> Graph {
    let (mut b, x) = GraphBuilder::new("concat-net", &[3, 12, 12], 7);
    let s = b.conv_bn("stem", &x, 8, 3, 1, 1, Activation::Relu).unwrap();
    let l = b.conv_bn("left", &s, 6, 1, 1, 1, Activation::Relu).unwrap();
    let r = b
        .conv_bn("right", &s, 10, 3, 1, 1, Activation::Relu)
        .unwrap();
    let c = b.concat("cat", &[&l, &r]).unwrap();
    let m = b.conv_bn("mix", &c, 12, 3, 2, 1, Activation::Relu).unwrap();
    let p = b.global_avg_pool("pool", &m).unwrap();
    let f = b.flatten("flatten", &p).unwrap();
    let y = b.linear("fc", &f, 5).unwrap();
    b.finish(&y).unwrap()
}

/// The models every export test covers: MLP, LeNet-style CNN with BN, residual CNN,
/// MobileNet-style net (depthwise, Clip, residual) and a graph with Concat.
pub fn test_models() -> Vec<(String, Graph, Vec<usize>)> {
    let fm = ZooConfig::default();
    let cifar = ZooConfig {
        channels: 3,
        height: 32,
        width: 32,
        ..Default::default()
    };
    let mut v = Vec::new();
    for (m, cfg) in [
        (ZooModel::Mlp, fm),
        (ZooModel::Lenet5Bn, fm),
        (ZooModel::Resnet8, cifar),
        (ZooModel::MobilenetV2, fm),
    ] {
        let mut g = zoo::build(m, &cfg).unwrap();
        secateur_testkit::randomize_weights(&mut g, 11);
        v.push((
            m.name().to_string(),
            g,
            vec![cfg.channels, cfg.height, cfg.width],
        ));
    }
    let mut c = concat_net();
    secateur_testkit::randomize_weights(&mut c, 12);
    v.push(("concat-net".into(), c, vec![3, 12, 12]));
    v
}
