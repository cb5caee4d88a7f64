//! Search errors: invalid configurations and protocol misuse (telling results that were not
//! asked for).

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SearchError {
    #[error("search configuration: {0}")]
    Config(String),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;
