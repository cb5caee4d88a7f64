//! Typed errors of the graph IR. Every variant names the node, tensor or value involved and
//! what was expected, so that a user reading the message can find the problem in their model.

use thiserror::Error;

/// Errors raised while building, checking, inferring or evaluating a graph.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum GraphError {
    /// An operator was given inputs it cannot accept (wrong rank, mismatched channels...).
    #[error("node '{node}' ({op}): {message}")]
    Op {
        node: String,
        op: &'static str,
        message: String,
    },
    /// A tensor's data length does not match its shape.
    #[error("tensor '{name}': shape {shape:?} needs {expected} values, got {actual}")]
    TensorSize {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// A value is read before anything produces it.
    #[error(
        "value '{value}' used by node '{node}' is neither a graph input, a weight nor the output of an earlier node"
    )]
    UndefinedValue { value: String, node: String },
    /// Two producers for one value name.
    #[error("value '{0}' is defined more than once")]
    DuplicateValue(String),
    /// The nodes contain a cycle.
    #[error("the graph has a cycle through node '{0}'")]
    Cycle(String),
    /// A graph output is not produced.
    #[error("graph output '{0}' is not produced by any node, input or weight")]
    MissingOutput(String),
    /// A required graph input was not supplied to the evaluator, or has the wrong shape.
    #[error("graph input '{name}': {message}")]
    Input { name: String, message: String },
    /// A weight contains NaN or infinity.
    #[error("weight '{name}' contains a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
    /// A mask does not fit its weight or breaks its declared pattern.
    #[error("mask on '{name}': {message}")]
    Mask { name: String, message: String },
    /// Anything else about the graph's structure.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand result type of this crate.
pub type Result<T, E = GraphError> = std::result::Result<T, E>;

/// Error raised by an op before it knows which node it belongs to; the graph wraps it into
/// [`GraphError::Op`] with the node name.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError(pub String);

impl OpError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `Err(OpError)` with a formatted message.
#[macro_export]
macro_rules! op_bail {
    ($($arg:tt)*) => { return Err($crate::OpError(format!($($arg)*))) };
}
