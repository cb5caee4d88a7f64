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
    /// (The message includes the parser's; it is not also a `source`, which the command
    /// line's `{:#}` would print a second time.)
    #[error("JSON: {0}")]
    Json(serde_json::Error),
    #[error("TOML: {0}")]
    TomlWrite(toml::ser::Error),
    /// Settings, inputs or a state that cannot work; the message names what and why.
    #[error("{0}")]
    Invalid(String),
    /// `inner`, raised while doing `context`. The message reads outside in; `inner` is not a
    /// `source` (its message is already here: printed with its causes, as the command line and
    /// the Python package do, it came out twice).
    #[error("{context}: {inner}")]
    Context {
        context: String,
        inner: Box<PipelineError>,
    },
}

impl From<serde_json::Error> for PipelineError {
    fn from(e: serde_json::Error) -> Self {
        PipelineError::Json(e)
    }
}

impl From<toml::ser::Error> for PipelineError {
    fn from(e: toml::ser::Error) -> Self {
        PipelineError::TomlWrite(e)
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

impl PipelineError {
    /// This error, raised while doing `context`.
    pub fn context(self, context: impl Display) -> PipelineError {
        PipelineError::Context {
            context: context.to_string(),
            inner: Box::new(self),
        }
    }

    /// The innermost error of a context chain.
    pub fn root(&self) -> &PipelineError {
        match self {
            PipelineError::Context { inner, .. } => inner.root(),
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
    use secateur_testkit::with_causes;

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

    #[test]
    fn messages_with_their_causes_say_each_part_once() {
        let e = Err::<(), _>(invalid!("a size is needed"))
            .context("'model.onnx'")
            .unwrap_err();
        assert_eq!(with_causes(&e), "'model.onnx': a size is needed");
        let json = PipelineError::from(serde_json::from_str::<u8>("{").unwrap_err());
        let shown = with_causes(&json.context("reading 'plan.json'"));
        assert_eq!(shown.matches("expected u8").count(), 1, "{shown}");
    }
}
