//! One-dimensional `Conv` (wav2vec2's feature extractor and positional convolution, Whisper's
//! stem) lowered at import to a `1 × k` 2-D convolution between two reshapes: for strides,
//! dilations, explicit and `SAME` padding and groups, the imported graph equals a direct 1-D
//! convolution, ONNX Runtime on the original file and ONNX Runtime on secateur's export.

mod common;

use common::{float_initializer, float_value, opset17_model};
use prost::Message;
use secateur_graph::{Op, Tensor, evaluate};
use secateur_onnx::import_model;
use secateur_onnx::proto::*;
use secateur_testkit::{ort_run_inputs, require_python};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from_fn(shape.to_vec(), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A 1-D convolution's settings.
struct Case {
    c_in: usize,
    c_out: usize,
    length: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: [usize; 2],
    groups: usize,
    /// `auto_pad = SAME_UPPER` instead of explicit pads.
    same: bool,
}

const CASES: &[Case] = &[
    // wav2vec2's first feature layer: a wide strided kernel on the raw waveform
    Case {
        c_in: 1,
        c_out: 8,
        length: 50,
        kernel: 10,
        stride: 5,
        dilation: 1,
        pads: [0, 0],
        groups: 1,
        same: false,
    },
    // its positional convolution: grouped, padded by half the kernel
    Case {
        c_in: 8,
        c_out: 8,
        length: 12,
        kernel: 4,
        stride: 1,
        dilation: 1,
        pads: [2, 2],
        groups: 4,
        same: false,
    },
    Case {
        c_in: 6,
        c_out: 4,
        length: 17,
        kernel: 3,
        stride: 2,
        dilation: 2,
        pads: [1, 3],
        groups: 2,
        same: false,
    },
    Case {
        c_in: 3,
        c_out: 5,
        length: 9,
        kernel: 4,
        stride: 2,
        dilation: 1,
        pads: [0, 0],
        groups: 1,
        same: true,
    },
];

impl Case {
    fn model(&self, w: &Tensor, b: &Tensor) -> ModelProto {
        let mut attribute = vec![
            ints("kernel_shape", &[self.kernel as i64]),
            ints("strides", &[self.stride as i64]),
            ints("dilations", &[self.dilation as i64]),
            AttributeProto {
                name: "group".into(),
                r#type: 2,
                i: self.groups as i64,
                ..Default::default()
            },
        ];
        if self.same {
            attribute.push(AttributeProto {
                name: "auto_pad".into(),
                r#type: 3,
                s: b"SAME_UPPER".to_vec(),
                ..Default::default()
            });
        } else {
            attribute.push(ints("pads", &[self.pads[0] as i64, self.pads[1] as i64]));
        }
        let node = NodeProto {
            op_type: "Conv".into(),
            name: "conv1d".into(),
            input: vec!["x".into(), "w".into(), "b".into()],
            output: vec!["y".into()],
            attribute,
            ..Default::default()
        };
        let (c_in, c_out, l) = (self.c_in as i64, self.c_out as i64, self.length as i64);
        opset17_model(GraphProto {
            node: vec![node],
            input: vec![float_value("x", &[None, Some(c_in), Some(l)])],
            output: vec![float_value("y", &[None, Some(c_out), None])],
            initializer: vec![float_initializer("w", w), float_initializer("b", b)],
            name: "conv1d".into(),
            ..Default::default()
        })
    }

    /// Padding at the start and end (`SAME_UPPER`: output `ceil(L / stride)`).
    fn padding(&self) -> [usize; 2] {
        if !self.same {
            return self.pads;
        }
        let out = self.length.div_ceil(self.stride);
        let span = (self.kernel - 1) * self.dilation + 1;
        let total = ((out - 1) * self.stride + span).saturating_sub(self.length);
        [total / 2, total - total / 2]
    }

    /// The convolution summed directly.
    fn direct(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let [front, back] = self.padding();
        let span = (self.kernel - 1) * self.dilation + 1;
        let out_len = (self.length + front + back - span) / self.stride + 1;
        let n = x.shape()[0];
        let (per_in, per_out) = (self.c_in / self.groups, self.c_out / self.groups);
        Tensor::from_fn(vec![n, self.c_out, out_len], |i| {
            let (s, m, o) = (
                i / (self.c_out * out_len),
                (i / out_len) % self.c_out,
                i % out_len,
            );
            let g = m / per_out;
            let mut acc = b.data()[m];
            for c in 0..per_in {
                for k in 0..self.kernel {
                    let at = (o * self.stride + k * self.dilation) as i64 - front as i64;
                    if (0..self.length as i64).contains(&at) {
                        let xi = (s * self.c_in + g * per_in + c) * self.length + at as usize;
                        let wi = (m * per_in + c) * self.kernel + k;
                        acc += x.data()[xi] * w.data()[wi];
                    }
                }
            }
            acc
        })
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.max_abs_diff(b)
}

#[test]
fn one_dimensional_convolutions_equal_the_direct_sum_and_onnx_runtime() {
    let py = require_python();
    for (k, case) in CASES.iter().enumerate() {
        let w = random(
            &[case.c_out, case.c_in / case.groups, case.kernel],
            k as u64,
        );
        let b = random(&[case.c_out], 100 + k as u64);
        let x = random(&[2, case.c_in, case.length], 200 + k as u64);
        let m = case.model(&w, &b);
        let g = import_model(&m).unwrap_or_else(|e| panic!("case {k}: {e}"));
        let convs: Vec<_> = g
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv(c) => Some(c),
                _ => None,
            })
            .collect();
        assert!(
            matches!(convs.as_slice(), [c] if c.kernel == [1, case.kernel] && c.groups == case.groups),
            "case {k}: one 1 × k convolution"
        );
        let expected = case.direct(&x, &w, &b);
        let y = evaluate(&g, &[("x", x.clone())]).unwrap().remove(0);
        assert!(max_diff(&y, &expected) < 1e-5, "case {k}: graph vs direct");
        let Some(py) = &py else { continue };
        let named = [("x", &x)];
        let ort = ort_run_inputs(py, &m.encode_to_vec(), &named)
            .unwrap()
            .remove(0);
        assert!(max_diff(&ort, &expected) < 1e-5, "case {k}: ORT vs direct");
        let exported = secateur_onnx::to_bytes(&g).unwrap();
        let again = ort_run_inputs(py, &exported, &named).unwrap().remove(0);
        assert!(
            max_diff(&again, &expected) < 1e-5,
            "case {k}: ORT on the export"
        );
    }
}

#[test]
fn a_one_dimensional_weight_that_is_not_a_constant_is_refused_with_its_name() {
    let case = &CASES[0];
    let w = random(&[case.c_out, case.c_in, case.kernel], 1);
    let b = random(&[case.c_out], 2);
    let mut m = case.model(&w, &b);
    let graph = m.graph.as_mut().unwrap();
    graph.initializer.retain(|t| t.name != "w");
    graph
        .input
        .push(float_value("w", &[Some(8), Some(1), Some(10)]));
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("conv1d"), "{err}");
}
