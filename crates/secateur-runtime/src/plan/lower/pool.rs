//! Pooling: max and average pooling over NCHW planes, and global average pooling.

use super::{ChannelsLast, LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::plan::step::StepKind;
use secateur_graph::{AveragePool, GlobalAveragePool, MaxPool, PoolGeometry};

fn pool_step(cx: &LowerCx, geo: &PoolGeometry, max: bool, include_pad: bool) -> Result<Lowered> {
    let xs = cx.in_shape(0);
    if xs.len() != 4 {
        return cx.reference();
    }
    let out = cx.out_shape();
    if cx.nhwc {
        let kind = StepKind::NhwcPool {
            geo: geo.clone(),
            max,
            include_pad,
            c: xs[1],
            h: xs[2],
            w: xs[3],
            ho: out[2],
            wo: out[3],
        };
        return Ok(Lowered::plain(cx, kind));
    }
    let kind = StepKind::Pool {
        geo: geo.clone(),
        max,
        include_pad,
        planes: xs[0] * xs[1],
        h: xs[2],
        w: xs[3],
        ho: out[2],
        wo: out[3],
    };
    Ok(Lowered::plain(cx, kind))
}

fn prefer_rank4(cx: &LowerCx) -> ChannelsLast {
    if cx.in_shape(0).len() == 4 {
        ChannelsLast::Prefer
    } else {
        ChannelsLast::No
    }
}

impl RuntimeOp for MaxPool {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        prefer_rank4(cx)
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        pool_step(cx, &self.geometry, true, false)
    }
}

impl RuntimeOp for AveragePool {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        prefer_rank4(cx)
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        pool_step(cx, &self.geometry, false, self.count_include_pad)
    }
}

impl RuntimeOp for GlobalAveragePool {
    fn channels_last(&self, cx: &LowerCx) -> ChannelsLast {
        prefer_rank4(cx)
    }

    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let xs = cx.in_shape(0);
        if cx.nhwc {
            let kind = StepKind::NhwcGap {
                c: xs[1],
                p: xs[2] * xs[3],
            };
            return Ok(Lowered::plain(cx, kind));
        }
        let kind = StepKind::Gap {
            planes: xs[0] * xs[1],
            inner: xs[2..].iter().product(),
        };
        Ok(Lowered::plain(cx, kind))
    }
}
