//! Pooling converters: `MaxPool`, `AveragePool` and `GlobalAveragePool` (a spatial mean that
//! drops the spatial axes is exported as `ReduceMean`; see `reduce.rs` for its import).

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs::{self, Attrs};
use secateur_graph::{AveragePool, GlobalAveragePool, MaxPool, Node, Op, PoolGeometry};

struct MaxPoolConverter;
struct AveragePoolConverter;
pub(super) struct GlobalAveragePoolConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[
    &MaxPoolConverter,
    &AveragePoolConverter,
    &GlobalAveragePoolConverter,
];

fn geometry(a: &Attrs, ctx_node: &crate::proto::NodeProto) -> Result<PoolGeometry, String> {
    if !a.has("kernel_shape") {
        return Err("kernel_shape is required".into());
    }
    if ctx_node.output.len() > 1 && ctx_node.output[1..].iter().any(|o| !o.is_empty()) {
        return Err("the Indices output of MaxPool is not supported".into());
    }
    match a.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" | "VALID" => {}
        other => {
            return Err(format!(
                "auto_pad '{other}' is not supported for pooling; use explicit pads"
            ));
        }
    }
    let kernel = a.window_sizes("kernel_shape", [1, 1])?;
    Ok(PoolGeometry {
        kernel,
        strides: a.window_sizes("strides", [1, 1])?,
        pads: a.pad_sizes("pads", [0; 4])?,
        dilations: a.window_sizes("dilations", [1, 1])?,
        ceil_mode: a.int("ceil_mode", 0)? != 0,
    })
}

fn geometry_attrs(g: &PoolGeometry) -> Vec<crate::proto::AttributeProto> {
    let mut v = vec![
        attrs::ints("kernel_shape", &g.kernel),
        attrs::ints("strides", &g.strides),
        attrs::ints("pads", &g.pads),
        attrs::int("ceil_mode", g.ceil_mode as i64),
    ];
    if g.dilations != [1, 1] {
        v.push(attrs::ints("dilations", &g.dilations));
    }
    v
}

impl Converter for MaxPoolConverter {
    fn op_type(&self) -> &'static str {
        "MaxPool"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(Op::MaxPool(MaxPool {
            geometry: geometry(&ctx.attrs, ctx.node)?,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::MaxPool(p) = &node.op else {
            return Err("not a MaxPool".into());
        };
        Ok(ExportedNode::plain(
            "MaxPool",
            node,
            geometry_attrs(&p.geometry),
        ))
    }
}

impl Converter for AveragePoolConverter {
    fn op_type(&self) -> &'static str {
        "AveragePool"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let geometry = geometry(&ctx.attrs, ctx.node)?;
        if geometry.dilations != [1, 1] {
            return Err("dilated average pooling is not supported".into());
        }
        Ok(Op::AveragePool(AveragePool {
            geometry,
            count_include_pad: ctx.attrs.int("count_include_pad", 0)? != 0,
        }))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::AveragePool(p) = &node.op else {
            return Err("not an AveragePool".into());
        };
        let mut a = geometry_attrs(&p.geometry);
        a.push(attrs::int("count_include_pad", p.count_include_pad as i64));
        Ok(ExportedNode::plain("AveragePool", node, a))
    }
}

impl Converter for GlobalAveragePoolConverter {
    fn op_type(&self) -> &'static str {
        "GlobalAveragePool"
    }

    fn import(&self, _ctx: &mut ImportCtx) -> Result<Op, String> {
        Ok(Op::GlobalAveragePool(GlobalAveragePool::KEEP))
    }

    fn export(&self, node: &Node, _ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        match &node.op {
            Op::GlobalAveragePool(g) if !g.keep_dims => Ok(ExportedNode::plain(
                "ReduceMean",
                node,
                vec![attrs::ints("axes", &[2, 3]), attrs::int("keepdims", 0)],
            )),
            _ => Ok(ExportedNode::plain("GlobalAveragePool", node, vec![])),
        }
    }
}
