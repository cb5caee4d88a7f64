//! Convolution and pooling on burn's `conv2d` / pooling modules (rank-4 NCHW values).

use super::{OpCall, TrainOp, pop};
use crate::error::TrainError;
use crate::value::Value;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use secateur_graph::{AveragePool, Conv, GlobalAveragePool, MaxPool};

impl TrainOp for Conv {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let bias = if args.len() == 3 {
            Some(call.r1(pop(call, &mut args, "bias")?)?)
        } else {
            None
        };
        let w = call.r4(pop(call, &mut args, "weight")?)?;
        let x = call.r4(pop(call, &mut args, "input")?)?;
        let opts = ConvOptions::new_with_padding(
            self.strides,
            [(self.pads[0], self.pads[2]), (self.pads[1], self.pads[3])],
            self.dilations,
            self.groups,
        );
        Ok(Value::R4(conv2d(x, w, bias, opts)))
    }
}

impl TrainOp for MaxPool {
    fn unsupported(&self) -> Option<&'static str> {
        (self.geometry.dilations != [1, 1])
            .then_some("dilated max pooling is not supported in training")
    }

    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let g = &self.geometry;
        let x = call.r4(pop(call, &mut args, "x")?)?;
        let o = MaxPoolOptions::new(g.kernel)
            .with_stride(g.strides)
            .with_padding_pairs([(g.pads[0], g.pads[2]), (g.pads[1], g.pads[3])])
            .with_ceil_mode(g.ceil_mode);
        Ok(Value::R4(max_pool2d(x, o)))
    }
}

impl TrainOp for AveragePool {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        let g = &self.geometry;
        let x = call.r4(pop(call, &mut args, "x")?)?;
        let o = AvgPoolOptions::new(g.kernel)
            .with_stride(g.strides)
            .with_padding_pairs([(g.pads[0], g.pads[2]), (g.pads[1], g.pads[3])])
            .with_count_include_pad(self.count_include_pad)
            .with_ceil_mode(g.ceil_mode);
        Ok(Value::R4(avg_pool2d(x, o)))
    }
}

impl TrainOp for GlobalAveragePool {
    fn forward(&self, call: &mut OpCall, mut args: Vec<Value>) -> Result<Value, TrainError> {
        // any number of spatial axes (Swin's pooler reads [N, C, L]): averaged as one
        let x = pop(call, &mut args, "x")?;
        let d = x.dims();
        if d.len() < 3 {
            return Err(call.err(format!("expected [N, C, spatial..], got {d:?}")));
        }
        let flat = call.reshape(x, &[d[0], d[1], d[2..].iter().product(), 1])?;
        let x = call.r4(flat)?;
        call.reshape(Value::R4(x.mean_dims(&[2, 3])), call.out_dims)
    }
}
