//! Int8 QDQ export: a graph with [`Quantization`] annotations is written with each quantized
//! weight stored as int8 plus per-channel scales and a `DequantizeLinear` (axis = output
//! channels), and each quantized activation passed through `QuantizeLinear` →
//! `DequantizeLinear` (uint8, per tensor) before its node. ONNX Runtime runs the result; its
//! numbers equal the reference evaluator's simulation of the same annotations.

use crate::attrs;
use crate::proto::{NodeProto, TensorProto};
use crate::tensor_proto::{encode_f32, encode_i8};
use secateur_graph::{Graph, Quantization, Tensor, quantize_weight};

/// Names used for the pieces of a quantized weight.
pub fn int8_name(w: &str) -> String {
    format!("{w}__int8")
}

/// Nodes and initializers that dequantize every quantized weight (placed first in the graph).
pub fn weight_dequantizers(graph: &Graph, q: &Quantization) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for (w, &axis) in &q.weights {
        let Some(t) = graph.initializers.get(w) else {
            continue;
        };
        let (values, scales) = quantize_weight(t, axis);
        let c = scales.len();
        let (qn, sn, zn) = (
            int8_name(w),
            format!("{w}__scale"),
            format!("{w}__zero_point"),
        );
        inits.push(encode_i8(&qn, t.shape(), &values, true));
        inits.push(encode_f32(
            &sn,
            &Tensor::new(vec![c], scales).expect("one scale per channel"),
        ));
        inits.push(encode_i8(&zn, &[c], &vec![0i8; c], true));
        nodes.push(NodeProto {
            input: vec![qn, sn, zn],
            output: vec![w.clone()],
            name: format!("{w}__dequantize"),
            op_type: "DequantizeLinear".into(),
            attribute: vec![attrs::int("axis", axis as i64)],
            ..Default::default()
        });
    }
    (nodes, inits)
}

/// `QuantizeLinear → DequantizeLinear` in front of a node; returns the nodes, initializers and
/// the new name of the node's first input.
pub fn activation_qdq(
    node: &str,
    input: &str,
    scale: f32,
    zero_point: u8,
) -> (Vec<NodeProto>, Vec<TensorProto>, String) {
    let (sn, zn) = (
        format!("{node}__in_scale"),
        format!("{node}__in_zero_point"),
    );
    let (qo, dqo) = (format!("{node}__input_q"), format!("{node}__input_dq"));
    let inits = vec![
        encode_f32(&sn, &Tensor::scalar(scale)),
        encode_i8(&zn, &[], &[zero_point as i8], false),
    ];
    let nodes = vec![
        NodeProto {
            input: vec![input.into(), sn.clone(), zn.clone()],
            output: vec![qo.clone()],
            name: format!("{node}__quantize_input"),
            op_type: "QuantizeLinear".into(),
            ..Default::default()
        },
        NodeProto {
            input: vec![qo, sn, zn],
            output: vec![dqo.clone()],
            name: format!("{node}__dequantize_input"),
            op_type: "DequantizeLinear".into(),
            ..Default::default()
        },
    ];
    (nodes, inits, dqo)
}
