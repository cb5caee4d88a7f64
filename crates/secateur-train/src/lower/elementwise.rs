//! Element-wise ops: pointwise functions (`pointwise.rs` holds their burn definitions),
//! broadcasting binaries, `Where`, `Softmax` on any axis, running sums, and the identity.

use super::{OpCall, TrainOp, pop};
use crate::error::TrainError;
use crate::layout;
use crate::pointwise::apply_pointwise;
use crate::value::{Value, broadcast_binary, on_value};
use burn::tensor::activation::softmax;
use secateur_graph::{Binary, CumSum, Identity, Softmax, Unary, Where, normalize_axis};

impl TrainOp for Unary {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let f = self.f;
        Ok(on_value!(pop(call, &mut args, "x")?, |t| apply_pointwise(
            f, t
        )))
    }
}

impl TrainOp for Identity {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        pop(call, &mut args, "x")
    }
}

impl TrainOp for Binary {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let b = pop(call, &mut args, "b")?;
        let a = pop(call, &mut args, "a")?;
        broadcast_binary(a, b, self.f).ok_or_else(|| call.err("operands do not broadcast"))
    }
}

impl TrainOp for Where {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let y = pop(call, &mut args, "y")?;
        let x = pop(call, &mut args, "x")?;
        let c = pop(call, &mut args, "cond")?;
        layout::select(c, x, y, call.out_dims).map_err(|m| call.err(m))
    }
}

impl TrainOp for CumSum {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let x = pop(call, &mut args, "x")?;
        let axis = normalize_axis(self.axis, x.rank()).map_err(|e| call.err(e.0))?;
        let (exclusive, reverse) = (self.exclusive, self.reverse);
        Ok(on_value!(x, |t| {
            let t = if reverse { t.flip([axis]) } else { t };
            let sums = t.clone().cumsum(axis);
            let sums = if exclusive { sums - t } else { sums };
            if reverse { sums.flip([axis]) } else { sums }
        }))
    }
}

impl TrainOp for Softmax {
    fn unsupported(&self) -> Option<&'static str> {
        self.legacy
            .then_some("a legacy Softmax over several axes is not supported in training")
    }

    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let x = pop(call, &mut args, "x")?;
        let axis = normalize_axis(self.axis, x.rank()).map_err(|e| call.err(e.0))?;
        Ok(on_value!(x, |t| softmax(t, axis)))
    }
}
