//! Normalisation: batch norm (batch statistics in training, returned for the running
//! estimates; running statistics in evaluation) and layer norm.

use super::{OpCall, TrainOp, pop};
use crate::error::TrainError;
use crate::forward::BnBatchStats;
use crate::layout;
use crate::program::Source;
use crate::value::{Value, broadcast_binary, on_value};
use burn::tensor::Tensor;
use secateur_graph::{BatchNorm, BinaryFn, LayerNorm};

impl TrainOp for BatchNorm {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let var = call.r1(pop(call, &mut args, "var")?)?;
        let mean = call.r1(pop(call, &mut args, "mean")?)?;
        let shift = call.r1(pop(call, &mut args, "shift")?)?;
        let scale = call.r1(pop(call, &mut args, "scale")?)?;
        let x = pop(call, &mut args, "x")?;
        let dims = x.dims();
        let mut bshape = vec![1; dims.len()];
        bshape[1] = dims[1];
        let b = |call: &OpCall, t: Tensor<1>| call.reshape(Value::R1(t), &bshape);
        let reduce: Vec<usize> = (0..dims.len()).filter(|&d| d != 1).collect();
        let (mean_v, var_v) = if call.train {
            let count: usize = reduce.iter().map(|&d| dims[d]).product();
            if count < 2 {
                return Err(call.err(
                    "batch normalisation in training needs more than one value per channel (batch size 1?)",
                ));
            }
            let (m, v) = batch_moments(x.clone(), &reduce)
                .ok_or_else(|| call.err("unsupported rank for batch norm"))?;
            let (Source::Param(mp), Source::Param(vp)) = (call.sources[3], call.sources[4]) else {
                return Err(call.err("running statistics must be weights"));
            };
            let mut s = BnBatchStats {
                mean_param: mp,
                var_param: vp,
                mean: call.r1(m.clone())?.inner(),
                var: call.r1(v.clone())?.inner(),
            };
            s.var = s.var * (count as f64 / (count - 1) as f64);
            call.stats.push(s);
            (m, v)
        } else {
            (b(call, mean)?, b(call, var)?)
        };
        let shape_err = || call.err("shape");
        let centered = broadcast_binary(x, on_value!(mean_v, |t| t.neg()), BinaryFn::Add)
            .ok_or_else(shape_err)?;
        let eps = self.epsilon as f64;
        let inv = on_value!(var_v, |t| (t + eps).sqrt().recip());
        let factor = broadcast_binary(inv, b(call, scale)?, BinaryFn::Mul).ok_or_else(shape_err)?;
        let y = broadcast_binary(centered, factor, BinaryFn::Mul).ok_or_else(shape_err)?;
        broadcast_binary(y, b(call, shift)?, BinaryFn::Add).ok_or_else(shape_err)
    }
}

impl TrainOp for LayerNorm {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let bias = if args.len() == 3 { args.pop() } else { None };
        let scale = if args.len() == 2 { args.pop() } else { None };
        let x = pop(call, &mut args, "x")?;
        layout::layer_norm(self, x, scale, bias).map_err(|m| call.err(m))
    }
}

/// Mean and biased variance over `reduce` axes, kept as broadcastable values.
fn batch_moments(x: Value, reduce: &[usize]) -> Option<(Value, Value)> {
    Some(match x {
        Value::R2(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R2(m), Value::R2(v))
        }
        Value::R3(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R3(m), Value::R3(v))
        }
        Value::R4(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R4(m), Value::R4(v))
        }
        Value::R5(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R5(m), Value::R5(v))
        }
        Value::R6(t) => {
            let m = t.clone().mean_dims(reduce);
            let v = (t - m.clone()).square().mean_dims(reduce);
            (Value::R6(m), Value::R6(v))
        }
        Value::R1(_) => return None,
    })
}
