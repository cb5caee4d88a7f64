//! Reading and writing ONNX node attributes with typed accessors that produce clear errors.

use crate::proto::{AttributeProto, NodeProto, attribute_type};

/// Typed attribute lookup on a node.
pub struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Self {
        Attrs { node }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == attribute_type::INT || a.r#type == 0 => Ok(a.i),
            Some(a) => Err(format!(
                "attribute '{name}' must be an int, has type {}",
                a.r#type
            )),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == attribute_type::FLOAT || a.r#type == 0 => Ok(a.f),
            Some(a) => Err(format!(
                "attribute '{name}' must be a float, has type {}",
                a.r#type
            )),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == attribute_type::INTS || a.r#type == 0 => {
                Ok(Some(a.ints.clone()))
            }
            Some(a) => Err(format!(
                "attribute '{name}' must be a list of ints, has type {}",
                a.r#type
            )),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(a) if a.r#type == attribute_type::STRING || a.r#type == 0 => {
                String::from_utf8(a.s.clone())
                    .map_err(|_| format!("attribute '{name}' is not UTF-8"))
            }
            Some(a) => Err(format!(
                "attribute '{name}' must be a string, has type {}",
                a.r#type
            )),
        }
    }

    /// A list of non-negative sizes of an expected length (kernel, strides, pads...).
    pub fn sizes<const N: usize>(
        &self,
        name: &str,
        default: [usize; N],
    ) -> Result<[usize; N], String> {
        let Some(v) = self.ints(name)? else {
            return Ok(default);
        };
        if v.len() != N {
            return Err(format!(
                "attribute '{name}' must have {N} values (2-D only), got {v:?}"
            ));
        }
        let mut out = [0usize; N];
        for (o, x) in out.iter_mut().zip(&v) {
            *o = usize::try_from(*x)
                .map_err(|_| format!("attribute '{name}' has a negative value: {v:?}"))?;
        }
        Ok(out)
    }

    /// Like [`Attrs::sizes`], for kernel sizes, strides and dilations: every value between 1
    /// and [`MAX_WINDOW`] (a zero stride would divide by zero; a huge one overflow).
    pub fn window_sizes<const N: usize>(
        &self,
        name: &str,
        default: [usize; N],
    ) -> Result<[usize; N], String> {
        self.bounded_sizes(name, default, 1)
    }

    /// Like [`Attrs::sizes`], for pads: every value from 0 to [`MAX_WINDOW`].
    pub fn pad_sizes<const N: usize>(
        &self,
        name: &str,
        default: [usize; N],
    ) -> Result<[usize; N], String> {
        self.bounded_sizes(name, default, 0)
    }

    fn bounded_sizes<const N: usize>(
        &self,
        name: &str,
        default: [usize; N],
        min: usize,
    ) -> Result<[usize; N], String> {
        let out = self.sizes(name, default)?;
        if out.iter().any(|&v| v < min || v > MAX_WINDOW) {
            return Err(format!(
                "attribute '{name}' must have values from {min} to {MAX_WINDOW}, got {out:?}"
            ));
        }
        Ok(out)
    }
}

/// Largest kernel size, stride or dilation accepted from a file.
pub const MAX_WINDOW: usize = 1 << 16;

pub fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

pub fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

pub fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

pub fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}
