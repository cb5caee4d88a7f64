//! Checkpoints of a training run in safetensors: every parameter and buffer, the optimizer's
//! moments, and as metadata the epochs and steps done, the optimizer step count and the
//! configuration. A run resumes from the last completed epoch with identical results, because
//! epoch order and augmentation are derived from the seed and the epoch number.

use crate::error::{Result, TrainError};
use crate::params::to_host;
use crate::trainer::Trainer;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

fn ck_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Writes the trainer's state to `path` atomically.
pub fn save(trainer: &Trainer, path: &Path) -> Result<()> {
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let bytes = |t: &Tensor<1>| {
        to_host(t)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    for (i, name) in trainer.store.names.iter().enumerate() {
        let n = trainer.store.shapes[i].iter().product::<usize>();
        bufs.push((
            format!("param/{name}"),
            vec![n],
            bytes(&trainer.store.values[i]),
        ));
        if let Some(m) = &trainer.optimizer.first[i] {
            bufs.push((format!("first/{name}"), vec![n], bytes(m)));
        }
        if let Some(v) = &trainer.optimizer.second[i] {
            bufs.push((format!("second/{name}"), vec![n], bytes(v)));
        }
        if let Some(m) = &trainer.store.masks[i] {
            bufs.push((format!("mask/{name}"), vec![n], bytes(m)));
        }
    }
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ck_err(path, e.to_string()))?;
    let mut meta = HashMap::new();
    meta.insert("epochs_done".to_string(), trainer.epochs_done.to_string());
    meta.insert("steps_done".to_string(), trainer.steps_done.to_string());
    meta.insert(
        "optimizer_steps".to_string(),
        trainer.optimizer.steps.to_string(),
    );
    meta.insert(
        "config".to_string(),
        serde_json::to_string(&trainer.config).map_err(|e| ck_err(path, e.to_string()))?,
    );
    let data =
        safetensors::serialize(views, Some(meta)).map_err(|e| ck_err(path, e.to_string()))?;
    secateur_graph::io::write_atomic(path, &data).map_err(|e| ck_err(path, e.to_string()))
}

/// Restores a trainer's state from `path`; the trainer must have been built from the same
/// model (same parameter names and sizes) and configuration.
pub fn load(trainer: &mut Trainer, path: &Path) -> Result<()> {
    let raw = std::fs::read(path).map_err(|e| ck_err(path, e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(&raw)
        .map_err(|e| ck_err(path, format!("not a checkpoint: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&raw)
        .map_err(|e| ck_err(path, format!("corrupt checkpoint: {e}")))?;
    let get = |k: &str| {
        meta.get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ck_err(path, format!("metadata '{k}' is missing")))
    };
    let saved_cfg = meta.get("config").cloned().unwrap_or_default();
    let cfg = serde_json::to_string(&trainer.config).unwrap_or_default();
    if saved_cfg != cfg {
        return Err(ck_err(
            path,
            "was written with a different training configuration; start a new run or use the same options",
        ));
    }
    let device = trainer.device.clone();
    let read = |name: &str, n: usize| -> Result<Option<Tensor<1>>> {
        match st.tensor(name) {
            Ok(v) => {
                if v.shape() != [n] || v.dtype() != Dtype::F32 {
                    return Err(ck_err(
                        path,
                        format!(
                            "tensor '{name}' has shape {:?}, expected [{n}] (a different model?)",
                            v.shape()
                        ),
                    ));
                }
                let vals: Vec<f32> = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Some(Tensor::from_data(TensorData::new(vals, [n]), &device)))
            }
            Err(_) => Ok(None),
        }
    };
    for i in 0..trainer.store.len() {
        let name = trainer.store.names[i].clone();
        let n = trainer.store.shapes[i].iter().product::<usize>();
        trainer.store.values[i] = read(&format!("param/{name}"), n)?.ok_or_else(|| {
            ck_err(
                path,
                format!("parameter '{name}' is missing (a different model?)"),
            )
        })?;
        trainer.optimizer.first[i] = read(&format!("first/{name}"), n)?;
        trainer.optimizer.second[i] = read(&format!("second/{name}"), n)?;
        if let Some(m) = read(&format!("mask/{name}"), n)? {
            trainer.store.masks[i] = Some(m);
        }
    }
    trainer.epochs_done = get("epochs_done")? as usize;
    trainer.steps_done = get("steps_done")? as usize;
    trainer.optimizer.steps = get("optimizer_steps")?;
    Ok(())
}
