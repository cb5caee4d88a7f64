//! The `Resize` converter (opsets 11–19): output sizes from the `sizes` input or from the
//! `scales` (floor of size × scale), fixed at import since spatial sizes are; nearest, linear
//! and cubic modes with every coordinate transformation but `tf_crop_and_resize`. Export writes
//! the sizes as `[N, C]` of the input (read by `Shape`) followed by the resized sizes, so a
//! symbolic batch stays symbolic; or the scales, where they are not output / input size.

use super::{Converter, ExportCtx, ExportedNode, ImportCtx};
use crate::attrs;
use crate::import::SymInt;
use crate::tensor_proto::encode_i64;
use secateur_graph::{NearestRounding, Node, Op, Resize, ResizeCoordinates, ResizeMode};

struct ResizeConverter;

pub(super) const CONVERTERS: &[&dyn super::Converter] = &[&ResizeConverter];

fn coordinates(name: &str) -> Result<ResizeCoordinates, String> {
    Ok(match name {
        "half_pixel" => ResizeCoordinates::HalfPixel,
        "pytorch_half_pixel" => ResizeCoordinates::PytorchHalfPixel,
        "align_corners" => ResizeCoordinates::AlignCorners,
        "asymmetric" => ResizeCoordinates::Asymmetric,
        "tf_half_pixel_for_nn" => ResizeCoordinates::TfHalfPixelForNn,
        other => {
            return Err(format!(
                "coordinate_transformation_mode '{other}' is not supported"
            ));
        }
    })
}

fn coordinates_name(c: ResizeCoordinates) -> &'static str {
    match c {
        ResizeCoordinates::HalfPixel => "half_pixel",
        ResizeCoordinates::PytorchHalfPixel => "pytorch_half_pixel",
        ResizeCoordinates::AlignCorners => "align_corners",
        ResizeCoordinates::Asymmetric => "asymmetric",
        ResizeCoordinates::TfHalfPixelForNn => "tf_half_pixel_for_nn",
    }
}

fn rounding(name: &str) -> Result<NearestRounding, String> {
    Ok(match name {
        "round_prefer_floor" => NearestRounding::RoundPreferFloor,
        "round_prefer_ceil" => NearestRounding::RoundPreferCeil,
        "floor" => NearestRounding::Floor,
        "ceil" => NearestRounding::Ceil,
        other => return Err(format!("nearest_mode '{other}' is not supported")),
    })
}

fn rounding_name(r: NearestRounding) -> &'static str {
    match r {
        NearestRounding::RoundPreferFloor => "round_prefer_floor",
        NearestRounding::RoundPreferCeil => "round_prefer_ceil",
        NearestRounding::Floor => "floor",
        NearestRounding::Ceil => "ceil",
    }
}

/// The resized sizes of the axes from 2 on and the scales of their coordinate
/// transformation, from the `sizes` input (scale: output / input size, in single precision as
/// ONNX Runtime takes it) or the `scales` input (size: the floor of input size × scale).
fn output_sizes(
    ctx: &ImportCtx,
    spatial: &[usize],
) -> Result<(Vec<usize>, Vec<f32>, bool), String> {
    let present = |i: usize| ctx.inputs.get(i).is_some_and(|n| !n.is_empty());
    let (scales_at, sizes_at) = (2, 3);
    if present(sizes_at) {
        let sizes = &ctx.int_input(sizes_at)?.values;
        if sizes.len() != spatial.len() + 2 {
            return Err(format!("sizes {sizes:?} must give every axis of the input"));
        }
        let out: Vec<usize> = sizes[2..]
            .iter()
            .map(|v| match v {
                SymInt::Known(n) if *n > 0 => Ok(*n as usize),
                _ => Err(format!(
                    "sizes {sizes:?} must be positive constants after [N, C]"
                )),
            })
            .collect::<Result<_, _>>()?;
        let scales = out
            .iter()
            .zip(spatial)
            .map(|(&o, &i)| o as f32 / i as f32)
            .collect();
        return Ok((out, scales, true));
    }
    if !present(scales_at) {
        return Err("neither scales nor sizes are given".into());
    }
    let name = &ctx.inputs[scales_at];
    let scales = ctx
        .float_consts
        .get(name)
        .ok_or_else(|| format!("scales '{name}' must be a constant"))?
        .data();
    if scales.len() != spatial.len() + 2 || scales[..2] != [1.0, 1.0] {
        return Err(format!(
            "scales {scales:?} must be 1 for N and C and give every axis"
        ));
    }
    let out = spatial
        .iter()
        .zip(&scales[2..])
        .map(|(&n, &s)| {
            let out = (n as f64 * s as f64).floor();
            if s.is_finite() && out >= 1.0 && out <= (1u64 << 24) as f64 {
                Ok(out as usize)
            } else {
                Err(format!("scale {s} of an axis of {n} gives no valid size"))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((out, scales[2..].to_vec(), false))
}

impl Converter for ResizeConverter {
    fn op_type(&self) -> &'static str {
        "Resize"
    }

    fn import(&self, ctx: &mut ImportCtx) -> Result<Op, String> {
        let x = ctx
            .shapes
            .first()
            .cloned()
            .flatten()
            .ok_or("the input shape must be known")?;
        let spatial: Vec<usize> = x.0[2.min(x.rank())..]
            .iter()
            .map(|d| d.known().ok_or("spatial sizes must be known"))
            .collect::<Result<_, _>>()?;
        if !(1..=2).contains(&spatial.len()) {
            return Err(format!("only 3-D and 4-D inputs resize, not {x}"));
        }
        if ctx.attrs.int("antialias", 0)? != 0 {
            return Err("antialias is not supported".into());
        }
        if ctx.attrs.has("axes") {
            return Err("the axes attribute is not supported".into());
        }
        let policy = ctx.attrs.string("keep_aspect_ratio_policy", "stretch")?;
        if policy != "stretch" {
            return Err(format!(
                "keep_aspect_ratio_policy '{policy}' is not supported"
            ));
        }
        let coordinates = coordinates(
            &ctx.attrs
                .string("coordinate_transformation_mode", "half_pixel")?,
        )?;
        let mode = match ctx.attrs.string("mode", "nearest")?.as_str() {
            "nearest" => ResizeMode::Nearest(rounding(
                &ctx.attrs.string("nearest_mode", "round_prefer_floor")?,
            )?),
            "linear" => ResizeMode::Linear,
            "cubic" => ResizeMode::Cubic {
                a: ctx.attrs.float("cubic_coeff_a", -0.75)?,
                exclude_outside: ctx.attrs.int("exclude_outside", 0)? != 0,
            },
            other => {
                return Err(format!(
                    "mode '{other}' is not supported (nearest, linear, cubic)"
                ));
            }
        };
        let (sizes, scales, from_sizes) = output_sizes(ctx, &spatial)?;
        ctx.inputs.truncate(1);
        Ok(Op::Resize(Resize {
            mode,
            coordinates,
            sizes,
            scales,
            from_sizes,
        }))
    }

    fn export(&self, node: &Node, ctx: &mut ExportCtx) -> Result<ExportedNode, String> {
        let Op::Resize(r) = &node.op else {
            return Err("not a Resize".into());
        };
        let x = node.inputs[0].clone();
        let name = |s: &str| format!("{}__{s}", node.name);
        let inputs = if r.from_sizes {
            let lead = ctx.helper_with(
                "Shape",
                vec![x.clone()],
                name("lead"),
                vec![attrs::int("start", 0), attrs::int("end", 2)],
            );
            let spatial = ctx.fresh(name("spatial"));
            let values: Vec<i64> = r.sizes.iter().map(|&n| n as i64).collect();
            ctx.initializers
                .push(encode_i64(&spatial, &[values.len()], &values));
            let sizes = ctx.helper_with(
                "Concat",
                vec![lead, spatial],
                name("sizes"),
                vec![attrs::int("axis", 0)],
            );
            vec![x, String::new(), String::new(), sizes]
        } else {
            let scales = ctx.fresh(name("scales"));
            let values: Vec<f32> = [1.0, 1.0]
                .into_iter()
                .chain(r.scales.iter().copied())
                .collect();
            let t = secateur_graph::Tensor::new(vec![values.len()], values)
                .map_err(|e| e.to_string())?;
            ctx.initializers
                .push(crate::tensor_proto::encode_f32(&scales, &t));
            vec![x, String::new(), scales]
        };
        let mut attributes = vec![attrs::string(
            "coordinate_transformation_mode",
            coordinates_name(r.coordinates),
        )];
        match r.mode {
            ResizeMode::Nearest(n) => {
                attributes.push(attrs::string("mode", "nearest"));
                attributes.push(attrs::string("nearest_mode", rounding_name(n)));
            }
            ResizeMode::Linear => attributes.push(attrs::string("mode", "linear")),
            ResizeMode::Cubic { a, exclude_outside } => {
                attributes.push(attrs::string("mode", "cubic"));
                attributes.push(attrs::float("cubic_coeff_a", a));
                attributes.push(attrs::int("exclude_outside", exclude_outside as i64));
            }
        }
        Ok(ExportedNode {
            op_type: "Resize",
            attributes,
            inputs,
        })
    }
}
