//! Linear layers: `Gemm` (with transposes, alpha, beta and a broadcast bias), `MatMul` by a
//! weight matrix at any rank, and `BatchMatMul` of two activations (attention).

use super::{OpCall, TrainOp, pop};
use crate::error::TrainError;
use crate::layout;
use crate::value::{Value, broadcast_binary, on_value};
use secateur_graph::{BatchMatMul, BinaryFn, Gemm, MatMul};

impl TrainOp for Gemm {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let c = if args.len() == 3 { args.pop() } else { None };
        let b = call.r2(pop(call, &mut args, "B")?)?;
        let a = call.r2(pop(call, &mut args, "A")?)?;
        let a = if self.trans_a { a.transpose() } else { a };
        let b = if self.trans_b { b.transpose() } else { b };
        let mut y = a.matmul(b);
        if self.alpha != 1.0 {
            y = y * self.alpha;
        }
        let mut v = Value::R2(y);
        if let Some(c) = c {
            let beta = self.beta;
            let c = if beta != 1.0 {
                on_value!(c, |t| t * beta)
            } else {
                c
            };
            v = broadcast_binary(v, c, BinaryFn::Add)
                .ok_or_else(|| call.err("bias does not broadcast"))?;
        }
        Ok(v)
    }
}

impl TrainOp for MatMul {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let w = call.r2(pop(call, &mut args, "B")?)?;
        Ok(match pop(call, &mut args, "A")? {
            Value::R2(a) => Value::R2(a.matmul(w)),
            Value::R3(a) => Value::R3(a.matmul(w.unsqueeze::<3>())),
            Value::R4(a) => Value::R4(a.matmul(w.unsqueeze::<4>())),
            Value::R5(a) => Value::R5(a.matmul(w.unsqueeze::<5>())),
            Value::R6(a) => Value::R6(a.matmul(w.unsqueeze::<6>())),
            other => {
                return Err(call.err(format!("MatMul of a rank-{} input", other.rank())));
            }
        })
    }
}

impl TrainOp for BatchMatMul {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let b = pop(call, &mut args, "B")?;
        let a = pop(call, &mut args, "A")?;
        layout::batch_matmul(a, b).map_err(|m| call.err(m))
    }
}
