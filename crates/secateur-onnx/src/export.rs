//! IR → ONNX export at opset 17 (IR version 8): weights as raw initializers, the batch as the
//! symbolic dimension `N`, every node through its registry converter, masks and metadata in
//! `metadata_props`. Writing is atomic: a temporary file in the target directory is renamed
//! over the destination only once complete.

use crate::error::{OnnxError, Result};
use crate::mask_codec;
use crate::ops::{ExportCtx, registry};
use crate::proto::*;
use crate::tensor_proto::encode_f32;
use secateur_graph::{Dim, ElemType, Graph, Shape};
use std::path::Path;

/// Opset version written on export.
pub const EXPORT_OPSET: i64 = 17;

/// Metadata key listing the graph's integer constants (one name per line), so that they stay
/// untrained after export and import.
pub const INTEGER_CONSTANTS_KEY: &str = "secateur.integer_constants";

/// Metadata key of the graph's execution precision (present only when it is not f32), so that
/// a model chosen for bf16 runs in bf16 wherever secateur loads it.
pub const PRECISION_KEY: &str = "secateur.precision";

pub(crate) fn value_info(name: &str, shape: &Shape) -> ValueInfoProto {
    let dim = shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Known(n) => DimensionProto {
                dim_value: Some(*n as i64),
                ..Default::default()
            },
            Dim::Batch => DimensionProto {
                dim_param: Some("N".into()),
                ..Default::default()
            },
            Dim::BatchTimes(k) => DimensionProto {
                dim_param: Some(format!("N*{k}")),
                ..Default::default()
            },
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ONNX element type of a graph input's type.
fn onnx_type(t: ElemType) -> i32 {
    match t {
        ElemType::Float => data_type::FLOAT,
        ElemType::Int64 => data_type::INT64,
        ElemType::Int32 => data_type::INT32,
        ElemType::Bool => data_type::BOOL,
    }
}

/// Integer and boolean graph inputs enter the float graph through one `Cast` each, placed
/// first; every node reads the cast value instead of the input. An input that only `Cast`
/// nodes already read (a graph imported from such an export) is left as it is, and a cast's
/// name never repeats a name the graph already uses, so export → import → export round trips.
fn cast_typed_inputs(graph: &Graph, nodes: Vec<NodeProto>) -> Vec<NodeProto> {
    let reads = |n: &str, node: &NodeProto| node.input.iter().any(|i| i == n);
    let typed: Vec<&str> = graph
        .inputs
        .iter()
        .filter(|i| i.dtype != ElemType::Float)
        .map(|i| i.name.as_str())
        .filter(|&n| {
            nodes
                .iter()
                .any(|node| reads(n, node) && node.op_type != "Cast")
        })
        .collect();
    if typed.is_empty() {
        return nodes;
    }
    let used: std::collections::HashSet<&str> = nodes
        .iter()
        .flat_map(|node| node.output.iter().chain([&node.name]))
        .map(String::as_str)
        .chain(graph.initializers.keys().map(String::as_str))
        .collect();
    let cast_names: Vec<String> = typed
        .iter()
        .map(|&n| {
            (1..)
                .map(|k| match k {
                    1 => format!("{n}__as_float"),
                    k => format!("{n}__as_float{k}"),
                })
                .find(|c| !used.contains(c.as_str()))
                .expect("an unused name exists")
        })
        .collect();
    let mut out: Vec<NodeProto> = typed
        .iter()
        .zip(&cast_names)
        .map(|(&n, c)| NodeProto {
            input: vec![n.to_string()],
            output: vec![c.clone()],
            name: c.clone(),
            op_type: "Cast".into(),
            attribute: vec![crate::attrs::int("to", data_type::FLOAT as i64)],
            ..Default::default()
        })
        .collect();
    for mut node in nodes {
        if node.op_type != "Cast" {
            for i in &mut node.input {
                if let Some(k) = typed.iter().position(|t| t == i) {
                    *i = cast_names[k].clone();
                }
            }
        }
        out.push(node);
    }
    out
}

/// The f32 weights (read as a `Weight` input, rank 2 or more) written as sparse initializers,
/// with the elements each stores: the mask's keep set, or the non-zeros of an unmasked weight,
/// wherever that takes fewer bytes than the dense tensor.
fn sparse_weights(graph: &Graph) -> std::collections::BTreeMap<String, Vec<bool>> {
    let quantized = |n: &String| {
        graph
            .quantization
            .as_ref()
            .is_some_and(|q| q.weights.contains_key(n))
    };
    graph
        .initializer_roles()
        .into_iter()
        .filter(|(n, role)| *role == secateur_graph::InputRole::Weight && !quantized(n))
        .filter_map(|(n, _)| {
            let t = &graph.initializers[&n];
            if t.shape().len() < 2 {
                return None;
            }
            let keep: Vec<bool> = match graph.masks.get(&n) {
                Some(m) => m.keep.clone(),
                None => t.data().iter().map(|&v| v != 0.0).collect(),
            };
            let kept = keep.iter().filter(|&&k| k).count();
            crate::sparse_init::is_smaller(kept, keep.len()).then_some((n, keep))
        })
        .collect()
}

/// Builds the ONNX model of a graph.
pub fn export_model(graph: &Graph) -> Result<ModelProto> {
    graph.check()?;
    let shapes = graph.infer_shapes()?;
    let mut ctx = ExportCtx::for_graph(graph);
    ctx.shapes = shapes.clone();
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    let quant = graph.quantization.as_ref();
    if let Some(q) = quant {
        let (n, i) = crate::qdq::weight_dequantizers(graph, q);
        nodes.extend(n);
        ctx.initializers.extend(i);
    }
    for node in &graph.nodes {
        let op_type = node.op.op_type();
        let conv = registry().get(op_type).ok_or_else(|| OnnxError::Node {
            node: node.name.clone(),
            op_type: op_type.into(),
            message: "no ONNX converter is registered for this op".into(),
        })?;
        let exported = conv
            .export(node, &mut ctx)
            .map_err(|message| OnnxError::Node {
                node: node.name.clone(),
                op_type: op_type.into(),
                message,
            })?;
        nodes.append(&mut ctx.nodes);
        let mut inputs = exported.inputs;
        if let Some(a) = quant.and_then(|q| q.activations.get(&node.name))
            && let Some(first) = inputs.first().cloned()
        {
            let (n, i, dq) = crate::qdq::activation_qdq(&node.name, &first, a.scale, a.zero_point);
            nodes.extend(n);
            ctx.initializers.extend(i);
            inputs[0] = dq;
        }
        nodes.push(NodeProto {
            input: inputs,
            output: node.outputs.clone(),
            name: node.name.clone(),
            op_type: exported.op_type.into(),
            attribute: exported.attributes,
            ..Default::default()
        });
    }
    let sparse = sparse_weights(graph);
    let mut initializer: Vec<TensorProto> = Vec::new();
    let mut sparse_constants = Vec::new();
    for (n, t) in &graph.initializers {
        if quant.is_some_and(|q| q.weights.contains_key(n)) {
            continue;
        }
        match sparse.get(n) {
            Some(keep) => sparse_constants.push(crate::sparse_init::constant_node(n, t, keep)),
            None => initializer.push(encode_f32(n, t)),
        }
    }
    initializer.extend(ctx.initializers);
    sparse_constants.append(&mut nodes);
    let nodes = sparse_constants;
    let mut metadata_props: Vec<StringStringEntryProto> = graph
        .metadata
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    if graph.precision != secateur_graph::Precision::F32 {
        metadata_props.push(StringStringEntryProto {
            key: PRECISION_KEY.into(),
            value: graph.precision.name().into(),
        });
    }
    if !graph.integer_constants.is_empty() {
        metadata_props.push(StringStringEntryProto {
            key: INTEGER_CONSTANTS_KEY.into(),
            value: graph
                .integer_constants
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    metadata_props.extend(graph.masks.iter().map(|(w, m)| StringStringEntryProto {
        key: format!("{}{w}", mask_codec::PREFIX),
        value: if sparse.contains_key(w) {
            mask_codec::encode_from_indices(m)
        } else {
            mask_codec::encode(m)
        },
    }));
    let nodes = cast_typed_inputs(graph, nodes);
    let gp = GraphProto {
        node: nodes,
        name: graph.name.clone(),
        initializer,
        input: graph
            .inputs
            .iter()
            .map(|i| {
                let mut v = value_info(&i.name, &i.shape);
                if let Some(tt) = v.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
                    tt.elem_type = onnx_type(i.dtype);
                }
                v
            })
            .collect(),
        output: graph
            .outputs
            .iter()
            .map(|o| value_info(o, &shapes[o]))
            .collect(),
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: EXPORT_OPSET,
        }],
        producer_name: "secateur".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(gp),
        metadata_props,
        ..Default::default()
    })
}

/// Writes bytes to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    secateur_graph::io::write_atomic(path, bytes).map_err(|cause| OnnxError::Write {
        path: path.to_path_buf(),
        cause,
    })
}
