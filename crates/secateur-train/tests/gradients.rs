//! Gradients of every op match central finite differences: each op is placed after a
//! parameterised layer so that the gradient of that layer's weights flows through it. Outside
//! training mode the forward pass is also checked against the reference evaluator.

use burn::tensor::Tensor;
use secateur_graph::Tensor as Tensor1;
use secateur_graph::*;
use secateur_testkit::{random_tensor, randomize_weights};
use secateur_train::batch::to_value;
use secateur_train::forward::{ForwardCtx, forward};
use secateur_train::params::{ParamKind, ParamStore, to_host};
use secateur_train::program::Program;
use std::collections::HashSet;

/// loss = Σ output ⊙ R for a fixed random R.
fn loss_of(
    graph: &Graph,
    store: &ParamStore,
    program: &Program,
    params: &[Tensor<1>],
    x: &secateur_graph::Tensor,
    r: &[f32],
    train: bool,
) -> Tensor<1> {
    let dev = store.device.clone();
    let input = to_value(x.clone(), &dev).unwrap();
    let mut ctx = ForwardCtx {
        train,
        quant: None,
        observer: None,
        taps: None,
    };
    let (out, _, _) = forward(graph, program, params, &store.shapes, &[input], &mut ctx).unwrap();
    let dims = out.dims();
    let n: usize = dims.iter().product();
    let flat = out.reshape(&[n]).unwrap();
    let secateur_train::value::Value::R1(flat) = flat else {
        panic!()
    };
    let rt = Tensor::<1>::from_data(burn::tensor::TensorData::new(r.to_vec(), [n]), &dev);
    (flat * rt).sum()
}

fn gradcheck(name: &str, graph: &Graph, input_shape: &[usize], train: bool) {
    let dev = secateur_train::cpu();
    let store = ParamStore::from_graph(graph, &dev, &HashSet::new()).unwrap();
    let program = Program::compile(graph, &store).unwrap();
    let x = random_tensor(input_shape, 1);
    let shapes = graph.infer_shapes().unwrap();
    let out_n: usize = shapes[&graph.outputs[0]]
        .resolve(input_shape[0])
        .iter()
        .product();
    let r: Vec<f32> = random_tensor(&[out_n], 2).into_data();
    let leaves: Vec<Tensor<1>> = store
        .values
        .iter()
        .zip(&store.kinds)
        .map(|(v, k)| {
            if *k == ParamKind::Trainable {
                v.clone().autodiff().require_grad()
            } else {
                v.clone()
            }
        })
        .collect();
    let loss = loss_of(graph, &store, &program, &leaves, &x, &r, train);
    let grads = loss.backward();
    let mut checked = 0;
    for (i, leaf) in leaves.iter().enumerate() {
        if store.kinds[i] != ParamKind::Trainable {
            continue;
        }
        let g = to_host(
            &leaf
                .grad(&grads)
                .unwrap_or_else(|| panic!("{name}: no gradient for {}", store.names[i])),
        );
        let base = store.host(i);
        // check a few coordinates of every parameter
        for &j in &[0, base.len() / 3, base.len() / 2, base.len() - 1] {
            let eps = 1e-3f32;
            let eval_at = |v: f32| {
                let mut p = store.values.clone();
                let mut host = base.clone();
                host[j] = v;
                p[i] = Tensor::from_data(burn::tensor::TensorData::new(host, [base.len()]), &dev);
                loss_of(graph, &store, &program, &p, &x, &r, train).into_scalar::<f32>() as f64
            };
            let fd = (eval_at(base[j] + eps) - eval_at(base[j] - eps)) / (2.0 * eps as f64);
            let an = g[j] as f64;
            let tol = 3e-2 * (1.0 + fd.abs().max(an.abs()));
            assert!(
                (fd - an).abs() <= tol,
                "{name}: d loss / d {}[{j}]: autodiff {an}, finite differences {fd}",
                store.names[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: nothing checked");
    if !train {
        // the forward pass the gradients belong to is the op's
        forward_matches_reference(name, graph, x);
    }
}

/// The training forward pass equals the reference evaluator on `x`.
fn forward_matches_reference(name: &str, graph: &Graph, x: secateur_graph::Tensor) {
    let dev = secateur_train::cpu();
    let trained =
        secateur_train::evaluate::forward_inputs(graph, std::slice::from_ref(&x), &dev).unwrap();
    let feeds = [(graph.inputs[0].name.as_str(), x)];
    let reference = evaluate(graph, &feeds).unwrap().remove(0);
    let scale = reference.data().iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (a, b) in trained.data().iter().zip(reference.data()) {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{name}: training forward {a} vs reference {b}"
        );
    }
}

/// Rounding and the sign are piecewise constant: finite differences jump where a weight's
/// step crosses a step of the function, so only their forward pass is compared (on inputs
/// scaled up, so that the conv before them spans many integers).
#[test]
fn piecewise_constant_functions_equal_the_reference() {
    for f in [
        Pointwise::Ceil,
        Pointwise::Floor,
        Pointwise::Round,
        Pointwise::Sign,
    ] {
        let (name, g) = unary(f.op_type(), f);
        let mut x = random_tensor(&[3, 2, 6, 6], 1);
        x.data_mut().iter_mut().for_each(|v| *v *= 8.0);
        forward_matches_reference(name, &g, x);
    }
}

/// conv → op → linear head: the op sits between two parameterised layers.
fn around(op_builder: impl FnOnce(&mut GraphBuilder, &str) -> String, channels: usize) -> Graph {
    let (mut b, x) = GraphBuilder::new("g", &[2, 6, 6], 3);
    let c = b.conv("conv", &x, channels, 3, 1, 1, 1, true).unwrap();
    let y = op_builder(&mut b, &c);
    let f = b.flatten("flat", &y).unwrap();
    let o = b.linear("fc", &f, 3).unwrap();
    let mut g = b.finish(&o).unwrap();
    randomize_weights(&mut g, 5);
    g
}

#[test]
fn every_op_has_correct_gradients() {
    let cases: Vec<(&str, Graph, bool)> = vec![
        ("conv+gemm", around(|_, c| c.to_string(), 4), false),
        ("relu", around(|b, c| b.relu("r", c).unwrap(), 4), false),
        ("clip", around(|b, c| b.relu6("r6", c).unwrap(), 4), false),
        (
            "sigmoid",
            around(
                |b, c| {
                    b.node("s", Op::Unary(Unary::SIGMOID), &[c], vec![])
                        .unwrap()
                },
                4,
            ),
            false,
        ),
        (
            "batchnorm-eval",
            around(|b, c| b.batch_norm("bn", c).unwrap(), 4),
            false,
        ),
        (
            "batchnorm-train",
            around(|b, c| b.batch_norm("bn", c).unwrap(), 4),
            true,
        ),
        (
            "maxpool",
            around(|b, c| b.max_pool("mp", c, 2).unwrap(), 4),
            false,
        ),
        (
            "avgpool",
            around(
                |b, c| {
                    b.node(
                        "ap",
                        Op::AveragePool(AveragePool {
                            geometry: PoolGeometry {
                                kernel: [3, 3],
                                strides: [2, 2],
                                pads: [1, 1, 1, 1],
                                dilations: [1, 1],
                                ceil_mode: false,
                            },
                            count_include_pad: false,
                        }),
                        &[c],
                        vec![],
                    )
                    .unwrap()
                },
                4,
            ),
            false,
        ),
        (
            "gap",
            around(|b, c| b.global_avg_pool("gap", c).unwrap(), 4),
            false,
        ),
        (
            "add",
            around(
                |b, c| {
                    let d = b.conv("conv2", c, 4, 3, 1, 1, 1, false).unwrap();
                    b.add("add", &d, c).unwrap()
                },
                4,
            ),
            false,
        ),
        (
            "mul",
            around(
                |b, c| {
                    let s = b
                        .node("sig", Op::Unary(Unary::SIGMOID), &[c], vec![])
                        .unwrap();
                    b.node("mul", Op::Binary(Binary::MUL), &[c, &s], vec![])
                        .unwrap()
                },
                4,
            ),
            false,
        ),
        (
            "concat",
            around(
                |b, c| {
                    let d = b.conv("conv2", c, 3, 1, 1, 0, 1, true).unwrap();
                    b.concat("cat", &[c, &d]).unwrap()
                },
                4,
            ),
            false,
        ),
        (
            "depthwise",
            around(|b, c| b.conv("dw", c, 4, 3, 2, 1, 4, true).unwrap(), 4),
            false,
        ),
        (
            "reshape",
            around(
                |b, c| {
                    b.node(
                        "rs",
                        Op::Reshape(Reshape {
                            shape: vec![0, -1, 1, 1],
                            allowzero: false,
                        }),
                        &[c],
                        vec![],
                    )
                    .unwrap()
                },
                4,
            ),
            false,
        ),
        (
            // Swin's pooler: the average over a sequence [N, C, L]
            "global-average-pool-rank-3",
            around(
                |b, c| {
                    let seq = b.node("seq", reshape_to(vec![0, 0, -1]), &[c], vec![]);
                    let gap = Op::GlobalAveragePool(GlobalAveragePool::KEEP);
                    b.node("gap", gap, &[&seq.unwrap()], vec![]).unwrap()
                },
                4,
            ),
            false,
        ),
    ];
    for (name, g, train) in cases {
        gradcheck(name, &g, &[3, 2, 6, 6], train);
    }
    // softmax at the output and a MatMul layer
    let (mut b, x) = GraphBuilder::new("m", &[5], 1);
    let w = secateur_testkit::random_tensor(&[5, 4], 3);
    let h = b
        .node("mm", Op::MatMul(MatMul), &[&x], vec![("weight", w)])
        .unwrap();
    let s = b
        .node(
            "sm",
            Op::Softmax(Softmax {
                axis: -1,
                legacy: false,
            }),
            &[&h],
            vec![],
        )
        .unwrap();
    let g = b.finish(&s).unwrap();
    gradcheck("matmul+softmax", &g, &[3, 5], false);
}

/// Builds `op(c)` after the conv of [`around`].
fn unary(name: &'static str, f: Pointwise) -> (&'static str, Graph) {
    let g = around(
        move |b, c| {
            // keep the arguments of log, sqrt and the reciprocal positive
            let positive = matches!(f, Pointwise::Log | Pointwise::Sqrt | Pointwise::Reciprocal);
            let x = if positive {
                let e = Unary { f: Pointwise::Exp };
                b.node("pos", Op::Unary(e), &[c], vec![]).unwrap()
            } else {
                c.to_string()
            };
            b.node(name, Op::Unary(Unary { f }), &[&x], vec![]).unwrap()
        },
        4,
    );
    (name, g)
}

/// A `Reshape` to an ONNX-style target (`0` copies the input dimension).
fn reshape_to(shape: Vec<i64>) -> Op {
    Op::Reshape(Reshape {
        shape,
        allowzero: false,
    })
}

fn on_conv(name: &'static str, op: Op) -> (&'static str, Graph) {
    (
        name,
        around(move |b, c| b.node(name, op, &[c], vec![]).unwrap(), 4),
    )
}

/// conv → GatherElements at positions computed from the graph input (fixed while the weights
/// move, so finite differences never cross a step) → linear head.
fn gather_elements_case(name: &'static str, axis: usize, shift_by: f32) -> (&'static str, Graph) {
    let (mut b, x) = GraphBuilder::new("g", &[2, 6, 6], 3);
    let c = b.conv("conv", &x, 4, 3, 1, 1, 1, true).unwrap();
    let greater = Op::Binary(Binary {
        f: BinaryFn::Greater,
    });
    let t0 = Tensor1::scalar(0.0);
    let a = b
        .node("gt0", greater.clone(), &[&x], vec![("t0", t0)])
        .unwrap();
    let t1 = Tensor1::scalar(0.5);
    let m = b.node("gt1", greater, &[&x], vec![("t1", t1)]).unwrap();
    let sum = b
        .node("sum", Op::Binary(Binary::ADD), &[&a, &m], vec![])
        .unwrap();
    let shift = Tensor1::scalar(shift_by);
    let idx = b
        .node(
            "shift",
            Op::Binary(Binary::ADD),
            &[&sum],
            vec![("s", shift)],
        )
        .unwrap();
    let op = Op::GatherElements(GatherElements { axis });
    let y = b.node(name, op, &[&c, &idx], vec![]).unwrap();
    let f = b.flatten("flat", &y).unwrap();
    let o = b.linear("fc", &f, 3).unwrap();
    let mut g = b.finish(&o).unwrap();
    randomize_weights(&mut g, 5);
    // the thresholds and the shift are constants of the positions, not weights
    for (k, v) in [("gt0.t0", 0.0), ("gt1.t1", 0.5), ("shift.s", shift_by)] {
        g.initializers.insert(k.into(), Tensor1::scalar(v));
    }
    (name, g)
}

#[test]
fn new_ops_have_correct_gradients() {
    let mut cases: Vec<(&str, Graph)> = vec![
        unary("hardswish", Pointwise::HardSwish),
        unary("silu", Pointwise::Silu),
        unary(
            "hardsigmoid",
            Pointwise::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        unary("leakyrelu", Pointwise::LeakyRelu { alpha: 0.1 }),
        unary("tanh", Pointwise::Tanh),
        unary("erf", Pointwise::Erf),
        unary("gelu", Pointwise::Gelu { tanh: false }),
        unary("gelu-tanh", Pointwise::Gelu { tanh: true }),
        unary("exp", Pointwise::Exp),
        unary("log", Pointwise::Log),
        unary("sqrt", Pointwise::Sqrt),
        unary("reciprocal", Pointwise::Reciprocal),
        unary("neg", Pointwise::Neg),
        unary("abs", Pointwise::Abs),
        unary("sin", Pointwise::Sin),
        unary("cos", Pointwise::Cos),
        on_conv(
            "transpose",
            Op::Transpose(Transpose {
                perm: vec![0, 1, 3, 2],
            }),
        ),
        on_conv(
            "slice-step",
            Op::Slice(Slice {
                axes: vec![2, 3],
                starts: vec![0, -1],
                ends: vec![i64::MAX, i64::MIN],
                steps: vec![2, -1],
            }),
        ),
    ];
    for mode in [PadMode::Constant(0.5), PadMode::Reflect, PadMode::Edge] {
        cases.push(on_conv(
            "pad",
            Op::Pad(Pad {
                before: vec![0, 1, 1, 2],
                after: vec![0, 0, 2, 1],
                mode,
            }),
        ));
    }
    // a scalar constant on the right of each binary op
    for (name, op) in [
        ("sub", Op::Binary(Binary::SUB)),
        ("div", Op::Binary(Binary::DIV)),
        ("pow2", Op::Binary(Binary::POW)),
        ("pow3", Op::Binary(Binary::POW)),
    ] {
        let e = if name == "pow3" { 3.0 } else { 2.0 };
        let mut g = around(
            move |b, c| {
                b.node(name, op, &[c], vec![("k", Tensor1::scalar(e))])
                    .unwrap()
            },
            4,
        );
        // integral exponents (of negative bases too), as decomposed normalisations use
        for (w, t) in g.initializers.iter_mut() {
            if w.ends_with(".k") && name.starts_with("pow") {
                *t = Tensor1::scalar(e);
            }
        }
        cases.push((name, g));
    }
    cases.push((
        "layernorm",
        around(
            |b, c| {
                let scale = secateur_testkit::random_tensor(&[6], 4);
                let bias = secateur_testkit::random_tensor(&[6], 5);
                let ln = LayerNorm {
                    axis: -1,
                    epsilon: 1e-5,
                };
                b.node(
                    "ln",
                    Op::LayerNorm(ln),
                    &[c],
                    vec![("scale", scale), ("bias", bias)],
                )
                .unwrap()
            },
            4,
        ),
    ));
    cases.push((
        "matmul-activations",
        around(
            |b, c| {
                let t = b
                    .node(
                        "t",
                        Op::Transpose(Transpose {
                            perm: vec![0, 1, 3, 2],
                        }),
                        &[c],
                        vec![],
                    )
                    .unwrap();
                b.node("qk", Op::BatchMatMul(BatchMatMul), &[c, &t], vec![])
                    .unwrap()
            },
            4,
        ),
    ));
    cases.push((
        "channel-shuffle",
        around(
            |b, c| {
                let five = b
                    .node("split", reshape_to(vec![0, 2, 2, 6, 6]), &[c], vec![])
                    .unwrap();
                let t = b
                    .node(
                        "shuffle",
                        Op::Transpose(Transpose {
                            perm: vec![0, 2, 1, 3, 4],
                        }),
                        &[&five],
                        vec![],
                    )
                    .unwrap();
                b.node("merge", reshape_to(vec![0, 4, 6, 6]), &[&t], vec![])
                    .unwrap()
            },
            4,
        ),
    ));
    // MaxViT's window partition: [N, C, H, W] → [N, C, H/p, p, W/p, p] → windows first
    cases.push((
        "window-partition-rank6",
        around(
            |b, c| {
                let six = b
                    .node("part", reshape_to(vec![0, 4, 3, 2, 3, 2]), &[c], vec![])
                    .unwrap();
                let t = b
                    .node(
                        "windows",
                        Op::Transpose(Transpose {
                            perm: vec![0, 2, 4, 3, 5, 1],
                        }),
                        &[&six],
                        vec![],
                    )
                    .unwrap();
                let s = b
                    .node("square", Op::Binary(Binary::MUL), &[&t, &t], vec![])
                    .unwrap();
                b.node("merge", reshape_to(vec![0, 4, 6, 6]), &[&s], vec![])
                    .unwrap()
            },
            4,
        ),
    ));
    cases.push((
        "expand",
        around(
            |b, c| {
                let p = b.global_avg_pool("gap", c).unwrap();
                let e = Expand {
                    shape: Shape(vec![
                        Dim::Batch,
                        Dim::Known(4),
                        Dim::Known(6),
                        Dim::Known(6),
                    ]),
                };
                let x = "input".to_string();
                let ex = b.node("ex", Op::Expand(e), &[&p, &x], vec![]).unwrap();
                b.add("add2", &ex, c).unwrap()
            },
            4,
        ),
    ));
    // the norms over six conv outputs stay away from zero, where L1 and L2 have kinks
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::SumSquare,
    ] {
        cases.push(on_conv(
            "reduce",
            Op::Reduce(Reduce {
                kind,
                axes: vec![3],
                keep_dims: true,
            }),
        ));
    }
    // an embedding-style lookup of constant rows of the conv output
    cases.push((
        "gather",
        around(
            |b, c| {
                let idx = secateur_graph::Tensor::new(vec![5], vec![0., 2., -1., 2., 5.]).unwrap();
                b.node(
                    "gather",
                    Op::Gather(Gather { axis: 3 }),
                    &[c],
                    vec![("idx", idx)],
                )
                .unwrap()
            },
            4,
        ),
    ));
    // a mask from a comparison selects between two branches (attention-mask style)
    cases.push((
        "where",
        around(
            |b, c| {
                let gt = Op::Binary(Binary {
                    f: BinaryFn::Greater,
                });
                let t = secateur_graph::Tensor::scalar(0.05);
                let mask = b.node("gt", gt, &[c], vec![("t", t)]).unwrap();
                let not = Op::Unary(Unary { f: Pointwise::Not });
                let inverse = b.node("not", not, &[&mask], vec![]).unwrap();
                let scaled = b
                    .node("neg", Op::Unary(Unary { f: Pointwise::Neg }), &[c], vec![])
                    .unwrap();
                let w = b
                    .node("where", Op::Where(Where), &[&inverse, &scaled, c], vec![])
                    .unwrap();
                b.node("mul", Op::Binary(Binary::MUL), &[&w, &mask], vec![])
                    .unwrap()
            },
            4,
        ),
    ));
    // running sums in every direction; positions gathered along the channels (data and
    // indices of the same size there) and along the width from the first two channels only,
    // with negative positions
    for (name, exclusive, reverse) in [
        ("cumsum", false, false),
        ("cumsum-exclusive-reverse", true, true),
    ] {
        let op = Op::CumSum(CumSum {
            axis: 3,
            exclusive,
            reverse,
        });
        cases.push(on_conv(name, op));
    }
    // upsampling and downsampling, nearest, bilinear and bicubic
    for (name, mode, coordinates, sizes, scales) in [
        (
            "resize-nearest",
            ResizeMode::Nearest(NearestRounding::Floor),
            ResizeCoordinates::Asymmetric,
            vec![12, 12],
            vec![2.0, 2.0],
        ),
        (
            "resize-linear",
            ResizeMode::Linear,
            ResizeCoordinates::HalfPixel,
            vec![9, 4],
            vec![1.5, 4.0 / 6.0],
        ),
        (
            "resize-corners",
            ResizeMode::Linear,
            ResizeCoordinates::AlignCorners,
            vec![7, 11],
            vec![7.0 / 6.0, 11.0 / 6.0],
        ),
        (
            "resize-cubic",
            ResizeMode::Cubic {
                a: -0.75,
                exclude_outside: false,
            },
            ResizeCoordinates::HalfPixel,
            vec![9, 4],
            vec![1.5, 4.0 / 6.0],
        ),
        (
            "resize-cubic-inside",
            ResizeMode::Cubic {
                a: -0.5,
                exclude_outside: true,
            },
            ResizeCoordinates::PytorchHalfPixel,
            vec![5, 13],
            vec![5.0 / 6.0, 13.0 / 6.0],
        ),
    ] {
        let op = Op::Resize(Resize {
            mode,
            coordinates,
            sizes,
            scales,
            from_sizes: true,
        });
        cases.push(on_conv(name, op));
    }
    cases.push(gather_elements_case("gather-elements-channels", 1, 0.0));
    cases.push(gather_elements_case("gather-elements-width", 3, -3.0));
    for (name, g) in cases {
        gradcheck(name, &g, &[3, 2, 6, 6], false);
    }
}
