//! The pipeline's error type: the library crates' errors, I/O and JSON failures, settings or
//! inputs that cannot work (`Invalid`, with a message naming the field, file or value), and a
//! context chain (`Context`) that says which stage or file an error came from. [`Context`] adds
//! such context to any result, [`bail!`](crate::bail) returns an `Invalid` error.

use std::fmt::Display;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Graph(#[from] secateur_graph::GraphError),
    #[error(transparent)]
    Onnx(#[from] secateur_onnx::OnnxError),
    #[error(transparent)]
    Data(#[from] secateur_data::DataError),
    #[error(transparent)]
    Train(#[from] secateur_train::TrainError),
    #[error(transparent)]
    Prune(#[from] secateur_prune::PruneError),
    #[error(transparent)]
    Runtime(#[from] secateur_runtime::RuntimeError),
    #[error(transparent)]
    Cost(#[from] secateur_cost::CostError),
    #[error(transparent)]
    Search(#[from] secateur_search::SearchError),
    #[error(transparent)]
    Model(#[from] crate::model_ref::ModelRefError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("TOML: {0}")]
    TomlWrite(#[from] toml::ser::Error),
    /// Settings, inputs or a state that cannot work; the message names what and why.
    #[error("{0}")]
    Invalid(String),
    /// `source`, raised while doing `context`.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<PipelineError>,
    },
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

impl PipelineError {
    /// This error, raised while doing `context`.
    pub fn context(self, context: impl Display) -> PipelineError {
        PipelineError::Context {
            context: context.to_string(),
            source: Box::new(self),
        }
    }

    /// The innermost error of a context chain.
    pub fn root(&self) -> &PipelineError {
        match self {
            PipelineError::Context { source, .. } => source.root(),
            e => e,
        }
    }
}

/// Adds context to a failed result (or a missing option), as `anyhow::Context` does.
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, context: F) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(context.to_string()))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(context().to_string()))
    }
}

/// An `Invalid` error from a format string.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::PipelineError::Invalid(format!($($arg)*)) };
}

/// Returns an `Invalid` error from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::invalid!($($arg)*).into()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_read_outside_in_and_keep_the_root() {
        let r: Result<()> = Err(invalid!("population must be even, got {}", 7));
        let e = r.context("settings").unwrap_err().context("optimize");
        assert_eq!(
            e.to_string(),
            "optimize: settings: population must be even, got 7"
        );
        assert!(matches!(e.root(), PipelineError::Invalid(m) if m.contains("got 7")));
        let none: Option<u8> = None;
        assert!(none.context("no value").is_err());
    }
}
