//! The arithmetic a model is meant to run in: f32, or bf16 execution (the multiply-heavy
//! layers' weights and inputs rounded to bfloat16, products summed in f32, as OpenVINO's
//! `INFERENCE_PRECISION_HINT=bf16`). A graph carries it so that a model chosen for bf16 runs in
//! bf16 wherever secateur's runtime loads it; exported ONNX files keep it in their metadata.

use crate::error::GraphError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Execution precision of the convolutions and linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// Weights and layer inputs rounded to bfloat16, products summed in f32.
    Bf16,
}

impl Precision {
    /// Every precision, in the order of their names.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// Its name on the command line, in files and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = GraphError;

    fn from_str(s: &str) -> Result<Self, GraphError> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| GraphError::Invalid(format!("precision '{s}' is not one of f32, bf16")))
    }
}
