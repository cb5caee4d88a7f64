//! Sparsity granularities of weight pruning and their parsing: unstructured elements, N:M
//! groups along a weight row (the input dimension), and R×C blocks of the weight's matrix view.

use crate::error::{PruneError, Result};
use secateur_graph::MaskPattern;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What is pruned as one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Granularity {
    Unstructured,
    /// Keep exactly `n` of every `m` consecutive weights along a row.
    NM {
        n: usize,
        m: usize,
    },
    /// `rows × cols` blocks (rows are output channels).
    Block {
        rows: usize,
        cols: usize,
    },
}

impl Granularity {
    pub fn pattern(self) -> MaskPattern {
        match self {
            Granularity::Unstructured => MaskPattern::Unstructured,
            Granularity::NM { n, m } => MaskPattern::NM { n, m },
            Granularity::Block { rows, cols } => MaskPattern::Block { rows, cols },
        }
    }

    pub fn validate(self) -> Result<()> {
        match self {
            Granularity::NM { n, m } if n >= m || m == 0 => {
                Err(PruneError::Invalid(format!("N:M needs N < M, got {n}:{m}")))
            }
            Granularity::NM { n: 0, m } => Err(PruneError::Invalid(format!(
                "0:{m} would remove every weight"
            ))),
            Granularity::Block { rows, cols } if rows == 0 || cols == 0 => Err(
                PruneError::Invalid(format!("block {rows}x{cols} must be at least 1x1")),
            ),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Granularity::Unstructured => f.write_str("unstructured"),
            Granularity::NM { n, m } => write!(f, "{n}:{m}"),
            Granularity::Block { rows, cols } => write!(f, "block:{rows}x{cols}"),
        }
    }
}

impl FromStr for Granularity {
    type Err = PruneError;

    /// `unstructured`, `N:M` (e.g. `2:4`), or `block:RxC` (e.g. `block:4x1`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            PruneError::Invalid(format!(
                "granularity '{s}' is not one of unstructured, N:M (e.g. 2:4), block:RxC (e.g. block:4x1)"
            ))
        };
        let g = if s == "unstructured" {
            Granularity::Unstructured
        } else if let Some(b) = s.strip_prefix("block:") {
            let (r, c) = b.split_once('x').ok_or_else(bad)?;
            Granularity::Block {
                rows: r.parse().map_err(|_| bad())?,
                cols: c.parse().map_err(|_| bad())?,
            }
        } else if let Some((n, m)) = s.split_once(':') {
            Granularity::NM {
                n: n.parse().map_err(|_| bad())?,
                m: m.parse().map_err(|_| bad())?,
            }
        } else {
            return Err(bad());
        };
        g.validate()?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        assert_eq!(
            "2:4".parse::<Granularity>().unwrap(),
            Granularity::NM { n: 2, m: 4 }
        );
        assert_eq!(
            "block:4x1".parse::<Granularity>().unwrap(),
            Granularity::Block { rows: 4, cols: 1 }
        );
        assert_eq!(
            "unstructured".parse::<Granularity>().unwrap(),
            Granularity::Unstructured
        );
        assert!(
            "4:4"
                .parse::<Granularity>()
                .unwrap_err()
                .to_string()
                .contains("N < M")
        );
        assert!("block:0x4".parse::<Granularity>().is_err());
        assert!("diagonal".parse::<Granularity>().is_err());
    }
}
