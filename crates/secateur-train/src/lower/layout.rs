//! Data movement: concatenation, transposes, slices, padding, reductions, gathers (by slice and
//! by element), expansion
//! and views (`Flatten`, `Reshape`), on the burn helpers of `crate::layout`.

use super::{OpCall, TrainOp, pop};
use crate::error::TrainError;
use crate::layout;
use crate::value::Value;
use secateur_graph::{
    Concat, Expand, Flatten, Gather, GatherElements, Pad, Reduce, Reshape, Resize, Slice,
    Transpose, normalize_axis,
};

impl TrainOp for Concat {
    fn forward(&self, call: &mut OpCall, args: Vec<Value>) -> Result<Value, TrainError> {
        let rank = args.first().map_or(0, Value::rank);
        let axis = normalize_axis(self.axis, rank).map_err(|e| call.err(e.0))?;
        layout::concat(args, axis).map_err(|m| call.err(m))
    }
}

impl TrainOp for Transpose {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        layout::transpose(self, pop(call, &mut args, "x")?).map_err(|m| call.err(m))
    }
}

impl TrainOp for Slice {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        layout::slice(self, pop(call, &mut args, "x")?).map_err(|m| call.err(m))
    }
}

impl TrainOp for Pad {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        layout::pad(self, pop(call, &mut args, "x")?).map_err(|m| call.err(m))
    }
}

impl TrainOp for Reduce {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let x = pop(call, &mut args, "x")?;
        layout::reduce(self, x, call.out_dims).map_err(|m| call.err(m))
    }
}

impl TrainOp for Gather {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let idx = pop(call, &mut args, "indices")?;
        let data = pop(call, &mut args, "data")?;
        layout::gather(self, data, idx, call.out_dims).map_err(|m| call.err(m))
    }
}

impl TrainOp for GatherElements {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let idx = pop(call, &mut args, "indices")?;
        let data = pop(call, &mut args, "data")?;
        layout::gather_elements(self, data, idx).map_err(|m| call.err(m))
    }
}

impl TrainOp for Resize {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let x = pop(call, &mut args, "x")?;
        layout::resize(self, x).map_err(|m| call.err(m))
    }
}

impl TrainOp for Expand {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        // the second input only carries the batch size
        args.truncate(1);
        layout::expand(pop(call, &mut args, "x")?, call.out_dims).map_err(|m| call.err(m))
    }
}

impl TrainOp for Flatten {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let x = pop(call, &mut args, "x")?;
        call.reshape(x, call.out_dims)
    }
}

impl TrainOp for Reshape {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let x = pop(call, &mut args, "x")?;
        call.reshape(x, call.out_dims)
    }
}
