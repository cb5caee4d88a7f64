//! Hardware profiles as data: clock, MAC throughput, static power, energy per MAC by data type,
//! and a memory hierarchy (capacity, energy per byte read and written, bandwidth per level).
//! Built-in profiles (`embedded`, `mobile`, `cloud`, `host`) are TOML files embedded in the
//! binary; users can write their own. Every constant must cite its source under `[sources]`,
//! and `validate` names the field that is missing or out of range.

use crate::error::{CostError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One level of the memory hierarchy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLevel {
    pub name: String,
    pub capacity_bytes: f64,
    pub read_pj_per_byte: f64,
    pub write_pj_per_byte: f64,
    pub bandwidth_gb_s: f64,
    /// Whether activations can be written here (flash cannot).
    #[serde(default = "yes")]
    pub writable: bool,
}

fn yes() -> bool {
    true
}

/// Energy of one multiply-accumulate, in picojoules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacEnergy {
    pub mac_f32_pj: f64,
    pub mac_int8_pj: f64,
}

/// A hardware profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    pub name: String,
    pub description: String,
    pub clock_ghz: f64,
    pub f32_macs_per_cycle: f64,
    pub int8_macs_per_cycle: f64,
    /// Power drawn while running regardless of work (leakage, clocks, uncore).
    pub static_watts: f64,
    /// Latency and (where possible) energy are measured on this machine.
    #[serde(default)]
    pub measured: bool,
    pub energy: MacEnergy,
    /// Fastest to slowest.
    pub memory: Vec<MemoryLevel>,
    /// Where each constant comes from, by field name (`memory.<level>` for a level).
    pub sources: BTreeMap<String, String>,
}

const BUILT_IN: [(&str, &str); 4] = [
    ("embedded", include_str!("../profiles/embedded.toml")),
    ("mobile", include_str!("../profiles/mobile.toml")),
    ("cloud", include_str!("../profiles/cloud.toml")),
    ("host", include_str!("../profiles/host.toml")),
];

impl HardwareProfile {
    /// Names of the built-in profiles.
    pub fn built_in_names() -> Vec<&'static str> {
        BUILT_IN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in profile by name, or a profile file (`*.toml`).
    pub fn load(spec: &str) -> Result<Self> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == spec) {
            return Self::from_toml(text, spec);
        }
        let p = Path::new(spec);
        if p.extension().is_some_and(|e| e == "toml") || p.exists() {
            let text = std::fs::read_to_string(p).map_err(|e| CostError::Profile {
                origin: spec.into(),
                message: e.to_string(),
            })?;
            return Self::from_toml(&text, spec);
        }
        Err(CostError::Profile {
            origin: spec.into(),
            message: format!(
                "not a built-in profile ({}) nor a .toml file",
                Self::built_in_names().join(", ")
            ),
        })
    }

    /// Parses and validates a profile; errors name `origin` and the field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let p: HardwareProfile = toml::from_str(text).map_err(|e| CostError::Profile {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        p.validate().map_err(|message| CostError::Profile {
            origin: origin.into(),
            message,
        })?;
        Ok(p)
    }

    /// Checks ranges, the ordering of the memory hierarchy and that every constant has a source.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |v: f64, field: &str| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!(
                    "field `{field}` must be a positive number, got {v}"
                ))
            }
        };
        positive(self.clock_ghz, "clock_ghz")?;
        positive(self.f32_macs_per_cycle, "f32_macs_per_cycle")?;
        positive(self.int8_macs_per_cycle, "int8_macs_per_cycle")?;
        positive(self.energy.mac_f32_pj, "energy.mac_f32_pj")?;
        positive(self.energy.mac_int8_pj, "energy.mac_int8_pj")?;
        if !(self.static_watts >= 0.0) {
            return Err(format!(
                "field `static_watts` must be >= 0, got {}",
                self.static_watts
            ));
        }
        if self.memory.is_empty() {
            return Err("field `memory` must list at least one level".into());
        }
        let mut last_cap = 0.0;
        for (i, m) in self.memory.iter().enumerate() {
            let f = |x: &str| format!("memory[{i}] ({}).{x}", m.name);
            positive(m.capacity_bytes, &f("capacity_bytes"))?;
            positive(m.read_pj_per_byte, &f("read_pj_per_byte"))?;
            positive(m.bandwidth_gb_s, &f("bandwidth_gb_s"))?;
            if m.writable {
                positive(m.write_pj_per_byte, &f("write_pj_per_byte"))?;
            }
            if m.capacity_bytes <= last_cap {
                return Err(format!(
                    "field `{}` must be larger than the level before it (levels go from fastest to slowest)",
                    f("capacity_bytes")
                ));
            }
            last_cap = m.capacity_bytes;
        }
        if !self.memory.iter().any(|m| m.writable) {
            return Err("field `memory` needs at least one writable level for activations".into());
        }
        let mut needed: Vec<String> = [
            "clock_ghz",
            "f32_macs_per_cycle",
            "int8_macs_per_cycle",
            "static_watts",
            "mac_f32_pj",
            "mac_int8_pj",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        needed.extend(self.memory.iter().map(|m| format!("memory.{}", m.name)));
        for k in needed {
            if self.sources.get(&k).is_none_or(|s| s.trim().is_empty()) {
                return Err(format!(
                    "field `sources.\"{k}\"` is missing: every constant must say where it comes from"
                ));
            }
        }
        Ok(())
    }

    /// The fastest level that holds `bytes` (writable levels only when `write`).
    pub fn level_for(&self, bytes: f64, write: bool) -> &MemoryLevel {
        self.memory
            .iter()
            .filter(|m| !write || m.writable)
            .find(|m| m.capacity_bytes >= bytes)
            .unwrap_or_else(|| {
                self.memory
                    .iter()
                    .rev()
                    .find(|m| !write || m.writable)
                    .expect("validated: a writable level exists")
            })
    }

    /// Peak MACs per second for a data type.
    pub fn macs_per_second(&self, int8: bool) -> f64 {
        self.clock_ghz
            * 1e9
            * if int8 {
                self.int8_macs_per_cycle
            } else {
                self.f32_macs_per_cycle
            }
    }
}
