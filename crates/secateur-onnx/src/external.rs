//! ONNX external data: tensors whose bytes live in a file next to the model (`location`,
//! `offset`, `length` in `external_data`), as PyTorch's dynamo exporter writes by default and
//! every model past 2 GB must. [`embed_external_data`] reads them into the tensors before
//! import. Locations must stay inside the model's directory (relative, no `..`), and each
//! range must lie within its file; errors name the tensor and the file.

use crate::error::{OnnxError, Result};
use crate::proto::{ModelProto, TensorProto};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Whether a tensor keeps its data in an external file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == 1 || !t.external_data.is_empty()
}

/// Replaces the external data of every initializer and `Constant` tensor of `model` by the
/// bytes it points to, read relative to `dir` (the model file's directory).
pub fn embed_external_data(model: &mut ModelProto, dir: &Path) -> Result<()> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let constants = graph
        .node
        .iter_mut()
        .flat_map(|n| n.attribute.iter_mut())
        .filter_map(|a| a.t.as_mut());
    for t in graph.initializer.iter_mut().chain(constants) {
        if is_external(t) {
            embed(t, dir, &mut files)?;
        }
    }
    Ok(())
}

fn embed(t: &mut TensorProto, dir: &Path, files: &mut HashMap<PathBuf, Vec<u8>>) -> Result<()> {
    let err = |message: String| OnnxError::Tensor {
        name: t.name.clone(),
        message,
    };
    let field = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
    };
    let location =
        field("location").ok_or_else(|| err("external data without a location".into()))?;
    let relative = Path::new(&location);
    let inside = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside || relative.as_os_str().is_empty() {
        return Err(err(format!(
            "external data location '{location}' is not a relative path inside the model's directory"
        )));
    }
    let number = |key: &str| -> Result<Option<usize>> {
        field(key)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    err(format!(
                        "external data {key} '{v}' is not a non-negative integer"
                    ))
                })
            })
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let path = dir.join(relative);
    if !files.contains_key(&path) {
        let bytes = std::fs::read(&path).map_err(|cause| OnnxError::Read {
            path: path.clone(),
            cause,
        })?;
        files.insert(path.clone(), bytes);
    }
    let data = &files[&path];
    let end = match length {
        Some(n) => offset.checked_add(n),
        None => Some(data.len()),
    };
    let range = end
        .filter(|&e| offset <= e && e <= data.len())
        .ok_or_else(|| {
            err(format!(
                "external data at offset {offset}, length {} lies past the end of {} ({} bytes)",
                length.map_or("to the end".into(), |n| n.to_string()),
                path.display(),
                data.len()
            ))
        })?;
    t.raw_data = data[offset..range].to_vec();
    t.external_data.clear();
    t.data_location = 0;
    Ok(())
}
