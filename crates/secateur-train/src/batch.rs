//! Moving data batches from the host into burn values, with the checks that the data fits the
//! model (sample shape against the graph input, labels against the number of outputs).

use crate::error::{Result, TrainError};
use crate::value::Value;
use burn::tensor::{Device, Int, Tensor, TensorData};
use secateur_data::Dataset;
use secateur_graph::{Dim, Graph, Tensor as GTensor};

/// A host tensor as a burn value of the same rank.
pub fn to_value(t: GTensor, device: &Device) -> Result<Value> {
    let shape = t.shape().to_vec();
    let n = t.len();
    let flat = Tensor::<1>::from_data(TensorData::new(t.into_data(), [n]), device);
    Value::R1(flat).reshape(&shape).ok_or_else(|| {
        TrainError::DataMismatch(format!(
            "samples of rank {} are not supported (1 to 3 are)",
            shape.len().saturating_sub(1)
        ))
    })
}

/// Labels as a burn integer tensor.
pub fn labels_tensor(labels: &[u32], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// Checks that a data set fits a graph: sample shape and label range.
pub fn check_fit(graph: &Graph, data: &Dataset) -> Result<()> {
    let input = graph
        .inputs
        .first()
        .ok_or_else(|| TrainError::DataMismatch("the model has no input".into()))?;
    let dims = input.shape.dims();
    let ok = dims.first() == Some(&Dim::Batch)
        && dims.len() == data.sample_shape.len() + 1
        && dims[1..]
            .iter()
            .zip(&data.sample_shape)
            .all(|(d, s)| *d == Dim::Known(*s));
    if !ok {
        return Err(TrainError::DataMismatch(format!(
            "the model's input '{}' has shape {} but samples of '{}' have shape {:?} (a batch of them is [N, {}])",
            input.name,
            input.shape,
            data.name,
            data.sample_shape,
            data.sample_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let shapes = graph.infer_shapes()?;
    let out = &shapes[&graph.outputs[0]];
    let classes = out.dims().last().and_then(|d| d.known()).unwrap_or(0);
    if out.rank() != 2 || classes < data.classes() {
        return Err(TrainError::DataMismatch(format!(
            "the model's output has shape {out} but '{}' has {} classes (expected [N, {}])",
            data.name,
            data.classes(),
            data.classes()
        )));
    }
    Ok(())
}
