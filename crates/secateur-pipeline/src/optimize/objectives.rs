//! Objectives and constraints of `optimize`: which quantities are optimised (accuracy,
//! latency, energy, model bytes, peak activation memory), their units, and constraints written
//! as `latency<=2ms`, `bytes<=256KiB`, `accuracy>=0.88`, `energy<=1mJ`, `memory<=1MiB`.

use crate::{Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A quantity the search can optimise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectiveKind {
    Accuracy,
    Latency,
    Energy,
    Bytes,
    Memory,
}

impl ObjectiveKind {
    pub fn key(self) -> &'static str {
        match self {
            ObjectiveKind::Accuracy => "accuracy",
            ObjectiveKind::Latency => "latency_ms",
            ObjectiveKind::Energy => "energy_mj",
            ObjectiveKind::Bytes => "model_kib",
            ObjectiveKind::Memory => "peak_memory_kib",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectiveKind::Accuracy => "accuracy",
            ObjectiveKind::Latency => "latency",
            ObjectiveKind::Energy => "energy per inference",
            ObjectiveKind::Bytes => "model size",
            ObjectiveKind::Memory => "peak activation memory",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            ObjectiveKind::Accuracy => "fraction",
            ObjectiveKind::Latency => "ms",
            ObjectiveKind::Energy => "mJ",
            ObjectiveKind::Bytes | ObjectiveKind::Memory => "KiB",
        }
    }

    pub fn maximize(self) -> bool {
        self == ObjectiveKind::Accuracy
    }

    /// The value in minimisation form.
    pub fn minimized(self, v: f64) -> f64 {
        if self.maximize() { -v } else { v }
    }
}

impl FromStr for ObjectiveKind {
    type Err = crate::PipelineError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "accuracy" | "error" => ObjectiveKind::Accuracy,
            "latency" => ObjectiveKind::Latency,
            "energy" => ObjectiveKind::Energy,
            "bytes" | "size" => ObjectiveKind::Bytes,
            "memory" | "peak-memory" => ObjectiveKind::Memory,
            o => bail!("objective '{o}' is not one of accuracy, latency, energy, bytes, memory"),
        })
    }
}

impl fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `objective <= bound` or `objective >= bound`, bound in the objective's unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub kind: ObjectiveKind,
    pub at_most: bool,
    pub bound: f64,
    pub text: String,
}

fn parse_quantity(kind: ObjectiveKind, s: &str) -> Result<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+')
        })
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| crate::invalid!("'{s}' does not start with a number"))?;
    let scale = match (kind, unit.trim()) {
        (ObjectiveKind::Accuracy, "") => 1.0,
        (ObjectiveKind::Accuracy, "%") => 0.01,
        (ObjectiveKind::Latency, "ms" | "") => 1.0,
        (ObjectiveKind::Latency, "us" | "µs") => 1e-3,
        (ObjectiveKind::Latency, "s") => 1e3,
        (ObjectiveKind::Energy, "mJ" | "") => 1.0,
        (ObjectiveKind::Energy, "uJ" | "µJ") => 1e-3,
        (ObjectiveKind::Energy, "J") => 1e3,
        (ObjectiveKind::Energy, "nJ") => 1e-6,
        (ObjectiveKind::Bytes | ObjectiveKind::Memory, "KiB" | "") => 1.0,
        (ObjectiveKind::Bytes | ObjectiveKind::Memory, "B") => 1.0 / 1024.0,
        (ObjectiveKind::Bytes | ObjectiveKind::Memory, "KB") => 1000.0 / 1024.0,
        (ObjectiveKind::Bytes | ObjectiveKind::Memory, "MiB") => 1024.0,
        (ObjectiveKind::Bytes | ObjectiveKind::Memory, "MB") => 1e6 / 1024.0,
        (k, u) => bail!("unit '{u}' is not valid for {k} (use {})", k.unit()),
    };
    Ok(v * scale)
}

impl FromStr for Constraint {
    type Err = crate::PipelineError;
    fn from_str(s: &str) -> Result<Self> {
        let (lhs, rhs, at_most) = if let Some((l, r)) = s.split_once("<=") {
            (l, r, true)
        } else if let Some((l, r)) = s.split_once(">=") {
            (l, r, false)
        } else {
            bail!("constraint '{s}' must look like latency<=2ms, bytes<=256KiB or accuracy>=0.88");
        };
        let kind: ObjectiveKind = lhs.parse()?;
        let bound = parse_quantity(kind, rhs)?;
        if !bound.is_finite() {
            bail!("constraint '{s}': bound is not a finite number");
        }
        Ok(Constraint {
            kind,
            at_most,
            bound,
            text: s.trim().to_string(),
        })
    }
}

impl Constraint {
    /// Relative amount by which `values` break the constraint (0 when met).
    pub fn violation(&self, values: &BTreeMap<String, f64>) -> f64 {
        let v = values
            .get(self.kind.key())
            .copied()
            .unwrap_or(f64::INFINITY);
        let excess = if self.at_most {
            v - self.bound
        } else {
            self.bound - v
        };
        (excess.max(0.0)) / self.bound.abs().max(1e-12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let c: Constraint = "latency<=500us".parse().unwrap();
        assert!((c.bound - 0.5).abs() < 1e-12 && c.at_most);
        let c: Constraint = "bytes<=2MiB".parse().unwrap();
        assert_eq!(c.bound, 2048.0);
        let c: Constraint = "accuracy>=88%".parse().unwrap();
        assert!((c.bound - 0.88).abs() < 1e-12 && !c.at_most);
        assert!("latency<=2kg".parse::<Constraint>().is_err());
        assert!("speed>=3".parse::<Constraint>().is_err());
        let mut v = BTreeMap::new();
        v.insert("accuracy".to_string(), 0.80);
        assert!((c.violation(&v) - 0.08 / 0.88).abs() < 1e-12);
    }
}
