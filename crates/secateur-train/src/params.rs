//! The parameters of a graph as burn tensors: every float initializer becomes a flat plain
//! tensor with its shape; batch-norm running statistics are buffers (updated by the forward
//! pass in training mode, never by the optimizer); masks are 0/1 tensors; frozen parameters
//! are not updated. Values are copied back into the graph after training.

use crate::error::{Result, TrainError};
use burn::tensor::{Device, Tensor, TensorData};
use secateur_graph::{Graph, InputRole, Tensor as GTensor};
use std::collections::{HashMap, HashSet};

/// What a stored tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Updated by the optimizer.
    Trainable,
    /// Not updated (user-frozen).
    Frozen,
    /// Batch-norm running mean or variance.
    Buffer,
}

/// The graph's tensors on a burn device.
#[derive(Clone, Debug)]
pub struct ParamStore {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub values: Vec<Tensor<1>>,
    pub kinds: Vec<ParamKind>,
    pub roles: Vec<InputRole>,
    /// 0/1 keep masks for masked weights.
    pub masks: Vec<Option<Tensor<1>>>,
    index: HashMap<String, usize>,
    pub device: Device,
}

/// A host tensor as a flat burn tensor.
pub fn to_device(t: &GTensor, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(t.data().to_vec(), [t.len()]), device)
}

/// A flat burn tensor back on the host.
pub fn to_host(t: &Tensor<1>) -> Vec<f32> {
    t.try_to_vec_as::<f32>().unwrap_or_default()
}

impl ParamStore {
    /// All initializers of a graph; `frozen` names parameters that must not change.
    pub fn from_graph(graph: &Graph, device: &Device, frozen: &HashSet<String>) -> Result<Self> {
        let roles = graph.initializer_roles();
        for f in frozen {
            if !graph.initializers.contains_key(f) {
                return Err(TrainError::Config(format!(
                    "cannot freeze '{f}': no weight of that name"
                )));
            }
        }
        let mut s = ParamStore {
            names: Vec::new(),
            shapes: Vec::new(),
            values: Vec::new(),
            kinds: Vec::new(),
            roles: Vec::new(),
            masks: Vec::new(),
            index: HashMap::new(),
            device: device.clone(),
        };
        for (name, t) in &graph.initializers {
            let role = roles.get(name).copied().unwrap_or(InputRole::Data);
            let kind = if matches!(role, InputRole::BnMean | InputRole::BnVar) {
                ParamKind::Buffer
            } else if frozen.contains(name) || !graph.is_parameter(name, role) {
                // index tensors, integer constants and one-element constants read as data (an
                // exponent, an epsilon, 1/√d) are arithmetic of the model, not parameters
                ParamKind::Frozen
            } else {
                ParamKind::Trainable
            };
            s.index.insert(name.clone(), s.names.len());
            s.names.push(name.clone());
            s.shapes.push(t.shape().to_vec());
            s.values.push(to_device(t, device));
            s.kinds.push(kind);
            s.roles.push(role);
            s.masks.push(graph.masks.get(name).map(|m| {
                let keep: Vec<f32> = m.keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
                Tensor::from_data(TensorData::new(keep, [m.keep.len()]), device)
            }));
        }
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Replaces the mask of parameter `i` (and zeroes the pruned values).
    pub fn set_mask(&mut self, i: usize, keep: &[bool]) {
        let m: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        let mt = Tensor::from_data(TensorData::new(m, [keep.len()]), &self.device);
        self.values[i] = self.values[i].clone() * mt.clone();
        self.masks[i] = Some(mt);
    }

    /// Host copy of the keep mask of parameter `i`, if it has one.
    pub fn mask_host(&self, i: usize) -> Option<Vec<bool>> {
        self.masks[i]
            .as_ref()
            .map(|m| to_host(m).iter().map(|v| *v != 0.0).collect())
    }

    /// Host copy of parameter `i`.
    pub fn host(&self, i: usize) -> Vec<f32> {
        to_host(&self.values[i])
    }

    /// Overwrites parameter `i` from host values.
    pub fn set_host(&mut self, i: usize, values: Vec<f32>) {
        let n = values.len();
        self.values[i] = Tensor::from_data(TensorData::new(values, [n]), &self.device);
    }

    /// Copies values (and masks' effect) back into the graph.
    pub fn write_to_graph(&self, graph: &mut Graph) -> Result<()> {
        for (i, name) in self.names.iter().enumerate() {
            let data = self.host(i);
            if let Some((idx, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(TrainError::Diverged(format!(
                    "parameter '{name}' became non-finite ({v}) at index {idx}; lower the learning rate"
                )));
            }
            let t = GTensor::new(self.shapes[i].clone(), data)?;
            graph.initializers.insert(name.clone(), t);
        }
        graph.apply_masks()?;
        Ok(())
    }

    /// Names of parameters that are not updated.
    pub fn frozen_names(&self) -> HashSet<String> {
        self.names
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k == ParamKind::Frozen)
            .map(|(n, _)| n.clone())
            .collect()
    }
}
