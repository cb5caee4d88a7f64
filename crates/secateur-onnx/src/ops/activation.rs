//! Converters of element-wise unary ops and softmax: every [`Pointwise`] function (`Relu`,
//! `Sigmoid`, `Clip` with bounds as attributes before opset 11 and as constant inputs after,
//! `HardSigmoid`, `HardSwish`, `LeakyRelu`, `Tanh`, `Erf`, `Gelu` (opset 20, written as its
//! `Erf`/`Tanh` decomposition at the export opset), `Exp`, `Log`, `Sqrt`, `Reciprocal`, `Neg`,
//! `Abs`), `Identity`, `Dropout` (inference: identity) and `Softmax` (axis semantics changed in
//! opset 13).

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use secateur_graph::{Identity, Node, Op, Pointwise, Softmax, Unary};

/// A converter for one element-wise function.
struct UnaryConverter {
    op_type: &'static str,
    /// The function, from the node's attributes and constant inputs.
    read: fn(&mut ImportCtx) -> Result<Pointwise, String>,
}

struct IdentityConverter;
struct CastConverter;
struct DropoutConverter;
struct SoftmaxConverter;

macro_rules! plain {
    ($op:literal, $f:expr) => {
        &UnaryConverter {
            op_type: $op,
            read: |_| Ok($f),
        }
    };
}

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[
    plain!("Relu", Pointwise::Relu),
    plain!("Sigmoid", Pointwise::Sigmoid),
    plain!("HardSwish", Pointwise::HardSwish),
    plain!("Tanh", Pointwise::Tanh),
    plain!("Erf", Pointwise::Erf),
    plain!("Exp", Pointwise::Exp),
    plain!("Log", Pointwise::Log),
    plain!("Sqrt", Pointwise::Sqrt),
    plain!("Reciprocal", Pointwise::Reciprocal),
    plain!("Neg", Pointwise::Neg),
    plain!("Abs", Pointwise::Abs),
    plain!("Not", Pointwise::Not),
    plain!("IsNaN", Pointwise::IsNaN),
    plain!("Ceil", Pointwise::Ceil),
    plain!("Floor", Pointwise::Floor),
    plain!("Round", Pointwise::Round),
    plain!("Sign", Pointwise::Sign),
    plain!("Sin", Pointwise::Sin),
    plain!("Cos", Pointwise::Cos),
    &UnaryConverter {
        op_type: "Clip",
        read: read_clip,
    },
    &UnaryConverter {
        op_type: "Swish",
        read: |ctx| match ctx.attrs.float("alpha", 1.0)? {
            1.0 => Ok(Pointwise::Silu),
            a => Err(format!("Swish with alpha {a} is not supported (1.0 is)")),
        },
    },
    &UnaryConverter {
        op_type: "HardSigmoid",
        read: |ctx| {
            Ok(Pointwise::HardSigmoid {
                alpha: ctx.attrs.float("alpha", 0.2)?,
                beta: ctx.attrs.float("beta", 0.5)?,
            })
        },
    },
    &UnaryConverter {
        op_type: "LeakyRelu",
        read: |ctx| {
            Ok(Pointwise::LeakyRelu {
                alpha: ctx.attrs.float("alpha", 0.01)?,
            })
        },
    },
    &UnaryConverter {
        op_type: "Gelu",
        read: |ctx| match ctx.attrs.string("approximate", "none")?.as_str() {
            "none" => Ok(Pointwise::Gelu { tanh: false }),
            "tanh" => Ok(Pointwise::Gelu { tanh: true }),
            other => Err(format!(
                "approximate='{other}' is not a Gelu approximation (none, tanh)"
            )),
        },
    },
    &IdentityConverter,
    &CastConverter,
    &DropoutConverter,
    &SoftmaxConverter,
];

fn read_clip(ctx: &mut ImportCtx) -> Result<Pointwise, String> {
    let (min, max) = if ctx.opset < 11 {
        (
            ctx.attrs.float("min", f32::MIN)?,
            ctx.attrs.float("max", f32::MAX)?,
        )
    } else {
        let min = ctx.float_scalar_input(1)?.unwrap_or(f32::MIN);
        let max = ctx.float_scalar_input(2)?.unwrap_or(f32::MAX);
        ctx.inputs.truncate(1);
        (min, max)
    };
    Ok(Pointwise::Clip { min, max })
}

impl Converter for UnaryConverter {
    fn op_type(&self) -> &'static str {
        self.op_type
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let f = (self.read)(ctx)?;
        ctx.inputs.truncate(1);
        Ok(Op::Unary(Unary { f }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Unary(u) = &node.op else {
            return Err(format!("not a {}", self.op_type));
        };
        let x = node.inputs[0].clone();
        let name = |suffix: &str| format!("{}__{suffix}", node.name);
        let attributes = match u.f {
            Pointwise::Clip { min, max } => {
                let lo = ctx.scalar(name("min"), min);
                let hi = ctx.scalar(name("max"), max);
                return Ok(ExportedNode {
                    op_type: "Clip",
                    attributes: vec![],
                    inputs: vec![x, lo, hi],
                });
            }
            Pointwise::Gelu { tanh } => return Ok(export_gelu(node, tanh, ctx)),
            Pointwise::Silu => {
                // no Swish at the export opset: x · Sigmoid(x)
                let s = ctx.helper("Sigmoid", vec![x.clone()], name("sigmoid"));
                return Ok(ExportedNode {
                    op_type: "Mul",
                    attributes: vec![],
                    inputs: vec![x, s],
                });
            }
            Pointwise::Not => {
                use crate::proto::data_type as dt;
                let to_bool = vec![attrs::int("to", dt::BOOL as i64)];
                let b = ctx.helper_with("Cast", vec![x], format!("{}__bool", node.name), to_bool);
                let not = ctx.helper("Not", vec![b], format!("{}__not", node.name));
                return Ok(ExportedNode {
                    op_type: "Cast",
                    attributes: vec![attrs::int("to", dt::FLOAT as i64)],
                    inputs: vec![not],
                });
            }
            Pointwise::IsNaN => {
                // ONNX's IsNaN is boolean; values are 0/1 floats
                let b = ctx.helper("IsNaN", vec![x], format!("{}__isnan", node.name));
                return Ok(ExportedNode {
                    op_type: "Cast",
                    attributes: vec![attrs::int("to", crate::proto::data_type::FLOAT as i64)],
                    inputs: vec![b],
                });
            }
            Pointwise::NonZero | Pointwise::Trunc => {
                use crate::proto::data_type as dt;
                let to = if u.f == Pointwise::NonZero {
                    dt::BOOL
                } else {
                    dt::INT64
                };
                let cast = ctx.helper_with(
                    "Cast",
                    vec![x],
                    format!("{}__cast", node.name),
                    vec![attrs::int("to", to as i64)],
                );
                return Ok(ExportedNode {
                    op_type: "Cast",
                    attributes: vec![attrs::int("to", dt::FLOAT as i64)],
                    inputs: vec![cast],
                });
            }
            Pointwise::HardSigmoid { alpha, beta } => {
                vec![attrs::float("alpha", alpha), attrs::float("beta", beta)]
            }
            Pointwise::LeakyRelu { alpha } => vec![attrs::float("alpha", alpha)],
            _ => vec![],
        };
        Ok(ExportedNode {
            op_type: u.f.op_type(),
            attributes,
            inputs: vec![x],
        })
    }
}

/// GELU at an opset without `Gelu`: `0.5·x·(1 + erf(x/√2))`, or with the tanh approximation
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`; the returned node is the final product.
fn export_gelu(node: &Node, tanh: bool, ctx: &mut ExportCtx) -> ExportedNode {
    let x = node.inputs[0].clone();
    let n = |s: &str| format!("{}__gelu_{s}", node.name);
    let inner = if tanh {
        let c3 = ctx.scalar(n("c3"), 0.044715);
        let three = ctx.scalar(n("three"), 3.0);
        let k = ctx.scalar(n("k"), (2.0 / std::f32::consts::PI).sqrt());
        let cube = ctx.helper("Pow", vec![x.clone(), three], n("cube"));
        let scaled = ctx.helper("Mul", vec![cube, c3], n("scaled"));
        let sum = ctx.helper("Add", vec![x.clone(), scaled], n("sum"));
        let arg = ctx.helper("Mul", vec![sum, k], n("arg"));
        ctx.helper("Tanh", vec![arg], n("tanh"))
    } else {
        let r = ctx.scalar(n("rsqrt2"), std::f32::consts::FRAC_1_SQRT_2);
        let arg = ctx.helper("Mul", vec![x.clone(), r], n("arg"));
        ctx.helper("Erf", vec![arg], n("erf"))
    };
    let one = ctx.scalar(n("one"), 1.0);
    let half = ctx.scalar(n("half"), 0.5);
    let plus = ctx.helper("Add", vec![inner, one], n("plus"));
    let half_x = ctx.helper("Mul", vec![x, half], n("half_x"));
    ExportedNode {
        op_type: "Mul",
        attributes: vec![],
        inputs: vec![half_x, plus],
    }
}

impl Converter for CastConverter {
    fn op_type(&self) -> &'static str {
        "Cast"
    }

    /// A cast of a float activation to float is the identity; integer activations do not
    /// exist in the graph (integer constants are folded at import).
    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        use crate::proto::data_type as dt;
        let to = ctx.attrs.int("to", 0)? as i32;
        Ok(match to {
            dt::FLOAT | dt::DOUBLE | 10 | 16 => Op::Identity(Identity),
            dt::BOOL => Op::Unary(Unary {
                f: Pointwise::NonZero,
            }),
            dt::INT64 | dt::INT32 | dt::INT8 | dt::UINT8 | 5 | 4 | 12 | 13 => Op::Unary(Unary {
                f: Pointwise::Trunc,
            }),
            other => {
                return Err(format!("casting to {} is not supported", dt::name(other)));
            }
        })
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain("Identity", node, vec![]))
    }
}

impl Converter for IdentityConverter {
    fn op_type(&self) -> &'static str {
        "Identity"
    }

    fn import(&self, _ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(Op::Identity(Identity))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain("Identity", node, vec![]))
    }
}

impl Converter for DropoutConverter {
    fn op_type(&self) -> &'static str {
        "Dropout"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("the mask output of Dropout is not supported (training mode)".into());
        }
        ctx.inputs.truncate(1);
        Ok(Op::Dropout(Identity))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        Ok(ExportedNode::plain("Dropout", node, vec![]))
    }
}

impl Converter for SoftmaxConverter {
    fn op_type(&self) -> &'static str {
        "Softmax"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let mut legacy = ctx.opset < 13;
        let axis = ctx.attrs.int("axis", if legacy { 1 } else { -1 })?;
        // the old "flatten from axis" meaning equals the new one when axis is the last axis
        if let Some(Some(shape)) = ctx.shapes.first() {
            let rank = shape.rank() as i64;
            if axis == rank - 1 || axis == -1 {
                legacy = false;
            }
        }
        Ok(Op::Softmax(Softmax { axis, legacy }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Softmax(s) = &node.op else {
            return Err("not a Softmax".into());
        };
        if s.legacy {
            return Err("a legacy (opset < 13) Softmax over several axes cannot be exported at opset 17; flatten first".into());
        }
        Ok(ExportedNode::plain(
            "Softmax",
            node,
            vec![attrs::int("axis", s.axis)],
        ))
    }
}
