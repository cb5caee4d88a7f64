//! Int8 fake quantization for quantization-aware training, with the straight-through
//! estimator: weights of Conv/Gemm/MatMul are quantized per output channel, symmetric
//! (`q = clamp(round(w / s), -127, 127)`, `s = max|w_c| / 127`), so a pruned (zero) weight stays
//! exactly zero; the data input of each such layer is quantized per tensor to unsigned 8 bits
//! with a scale and zero point calibrated from observed ranges. Rounding is half-to-even, as in
//! ONNX `QuantizeLinear`, so the exported QDQ model computes the same values.

use crate::params::ParamStore;
use crate::value::{Value, on_value};
use burn::tensor::Tensor;
use secateur_graph::{AxisRole, Graph, InputRole, OpClass, Quantization};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub use secateur_graph::ActQuant;

/// How a weight is laid out for per-channel quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WeightLayout {
    rows: usize,
    cols: usize,
    /// Output channels run along the first axis (else the last).
    out_first: bool,
}

/// Running min/max of the activations entering each Conv/Gemm/MatMul node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeObserver {
    pub ranges: BTreeMap<usize, (f32, f32)>,
}

impl crate::forward::ActivationObserver for RangeObserver {
    fn observe(&mut self, node: usize, x: &Value) {
        let v = x.to_vec();
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e = self.ranges.entry(node).or_insert((lo, hi));
        e.0 = e.0.min(lo);
        e.1 = e.1.max(hi);
    }
}

/// Fake-quantization state for a graph.
#[derive(Clone, Debug, Default)]
pub struct FakeQuant {
    weights: HashMap<usize, WeightLayout>,
    pub activations: BTreeMap<usize, ActQuant>,
}

impl FakeQuant {
    /// Quantizes every Conv/Gemm/MatMul weight, and the inputs of those nodes with ranges
    /// from `observer`.
    pub fn new(graph: &Graph, store: &ParamStore, observer: &RangeObserver) -> Self {
        let mut weights = HashMap::new();
        let shapes = graph.infer_shapes().unwrap_or_default();
        for node in &graph.nodes {
            if node.op.class() != OpClass::WeightedLayer {
                continue;
            }
            let ins: Vec<_> = node
                .inputs
                .iter()
                .filter_map(|v| shapes.get(v).cloned())
                .collect();
            if ins.len() != node.inputs.len() {
                continue;
            }
            let roles = node.op.sem().input_roles(node.inputs.len());
            for (idx, axes) in node.op.sem().param_axes(&ins) {
                if roles[idx] != InputRole::Weight {
                    continue;
                }
                let Some(p) = store.index_of(&node.inputs[idx]) else {
                    continue;
                };
                let shape = &store.shapes[p];
                let out_first = axes.first() == Some(&AxisRole::OutChannels);
                let rows = if out_first {
                    shape[0]
                } else {
                    *shape.last().unwrap_or(&1)
                };
                let n: usize = shape.iter().product();
                weights.insert(
                    p,
                    WeightLayout {
                        rows,
                        cols: n / rows.max(1),
                        out_first,
                    },
                );
            }
        }
        let activations = observer
            .ranges
            .iter()
            .map(|(&n, &(lo, hi))| (n, ActQuant::from_range(lo, hi)))
            .collect();
        FakeQuant {
            weights,
            activations,
        }
    }

    /// Fake-quantized weight (straight-through gradient).
    pub fn weight(&self, p: usize, w: Tensor<1>) -> Tensor<1> {
        let Some(l) = self.weights.get(&p) else {
            return w;
        };
        let n = l.rows * l.cols;
        let (q, _) = if l.out_first {
            let m = w.clone().reshape([l.rows, l.cols]);
            let s = m
                .clone()
                .abs()
                .max_dim(1)
                .div_scalar(127.0)
                .clamp_min(1e-12);
            let q = (m / s.clone()).round().clamp(-127.0, 127.0) * s;
            (q.reshape([n]), ())
        } else {
            let m = w.clone().reshape([l.cols, l.rows]);
            let s = m
                .clone()
                .abs()
                .max_dim(0)
                .div_scalar(127.0)
                .clamp_min(1e-12);
            let q = (m / s.clone()).round().clamp(-127.0, 127.0) * s;
            (q.reshape([n]), ())
        };
        w.clone() + (q - w).detach()
    }

    /// Fake-quantized activation entering `node` (straight-through gradient).
    pub fn activation(&self, node: usize, x: Value) -> Value {
        let Some(a) = self.activations.get(&node) else {
            return x;
        };
        let (s, zp) = (a.scale, a.zero_point as f32);
        on_value!(x, |t| {
            let q = ((t.clone() / s).round() + zp)
                .clamp(0.0, 255.0)
                .sub_scalar(zp)
                * s;
            t.clone() + (q - t).detach()
        })
    }

    /// The graph annotation equivalent to this state (for export and evaluation).
    pub fn to_spec(&self, graph: &Graph, store: &ParamStore) -> Quantization {
        let weights = self
            .weights
            .iter()
            .map(|(&p, l)| {
                (
                    store.names[p].clone(),
                    if l.out_first {
                        0
                    } else {
                        store.shapes[p].len() - 1
                    },
                )
            })
            .collect();
        let activations = self
            .activations
            .iter()
            .map(|(&n, a)| (graph.nodes[n].name.clone(), *a))
            .collect();
        Quantization {
            weights,
            activations,
        }
    }

    /// Rebuilds the state from a graph annotation.
    pub fn from_spec(graph: &Graph, store: &ParamStore, spec: &Quantization) -> Self {
        let mut weights = HashMap::new();
        for (w, &axis) in &spec.weights {
            if let Some(p) = store.index_of(w) {
                let shape = &store.shapes[p];
                let rows = shape[axis];
                let n: usize = shape.iter().product();
                weights.insert(
                    p,
                    WeightLayout {
                        rows,
                        cols: n / rows.max(1),
                        out_first: axis == 0,
                    },
                );
            }
        }
        let activations = spec
            .activations
            .iter()
            .filter_map(|(name, a)| graph.node_index(name).map(|i| (i, *a)))
            .collect();
        FakeQuant {
            weights,
            activations,
        }
    }

    /// The layout of a quantized weight: rows, columns and whether output channels come first.
    pub fn weight_layout(&self, p: usize) -> Option<(usize, usize, bool)> {
        self.weights.get(&p).map(|l| (l.rows, l.cols, l.out_first))
    }
}
