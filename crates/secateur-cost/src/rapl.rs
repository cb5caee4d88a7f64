//! Energy measurement through Linux powercap (RAPL): `energy_uj` counters of the package and
//! core domains under `/sys/class/powercap/intel-rapl:*` (AMD exposes the same interface),
//! read before and after a run, with counter wrap-around handled through
//! `max_energy_range_uj`. Since 2020 kernels make `energy_uj` readable by root only; an
//! unreadable or missing counter is reported with the reason, never replaced by a guess.

use crate::error::{CostError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One RAPL domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaplDomain {
    pub name: String,
    pub path: PathBuf,
    pub max_range_uj: u64,
}

/// The root of the powercap tree on Linux.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

fn read_u64(p: &Path) -> Result<u64> {
    let s = std::fs::read_to_string(p).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::PermissionDenied { "permission denied (RAPL energy counters are readable by root only since Linux 5.10; run as root or grant read access)".to_string() } else { e.to_string() };
        CostError::Counter(format!("{}: {why}", p.display()))
    })?;
    s.trim()
        .parse()
        .map_err(|_| CostError::Counter(format!("{}: not a number: {s:?}", p.display())))
}

/// Finds the package (and core) domains under `root`; an error says why there are none.
pub fn domains(root: &Path) -> Result<Vec<RaplDomain>> {
    let entries = std::fs::read_dir(root).map_err(|_| CostError::Counter(format!("no powercap interface at {} (no RAPL driver, or a virtual machine that does not expose energy counters)", root.display())))?;
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        let file = p
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        if !file.contains("rapl") {
            continue;
        }
        let name = std::fs::read_to_string(p.join("name"))
            .map(|s| s.trim().to_string())
            .unwrap_or(file);
        if !(name.starts_with("package") || name == "core") {
            continue;
        }
        let max = read_u64(&p.join("max_energy_range_uj"))?;
        read_u64(&p.join("energy_uj"))?;
        out.push(RaplDomain {
            name,
            path: p.join("energy_uj"),
            max_range_uj: max,
        });
    }
    if out.is_empty() {
        return Err(CostError::Counter(format!(
            "{} has no RAPL package domain",
            root.display()
        )));
    }
    Ok(out)
}

/// Energy between two counter readings, handling one wrap-around.
pub fn delta_uj(before: u64, after: u64, max_range: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        max_range - before + after
    }
}

/// A measured energy figure and how it was obtained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub joules_per_run: f64,
    pub domain: String,
    pub runs: usize,
    pub seconds: f64,
    pub method: String,
}

/// Runs `f` `runs` times and reads the package domains before and after.
pub fn measure(root: &Path, runs: usize, f: &mut dyn FnMut()) -> Result<Measured> {
    let doms: Vec<RaplDomain> = domains(root)?
        .into_iter()
        .filter(|d| d.name.starts_with("package"))
        .collect();
    let before: Vec<u64> = doms
        .iter()
        .map(|d| read_u64(&d.path))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    for _ in 0..runs.max(1) {
        f();
    }
    let seconds = t.elapsed().as_secs_f64();
    let after: Vec<u64> = doms
        .iter()
        .map(|d| read_u64(&d.path))
        .collect::<Result<_>>()?;
    let uj: u64 = doms
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(d, (b, a))| delta_uj(*b, *a, d.max_range_uj))
        .sum();
    let names: Vec<&str> = doms.iter().map(|d| d.name.as_str()).collect();
    Ok(Measured {
        joules_per_run: uj as f64 * 1e-6 / runs.max(1) as f64,
        domain: names.join("+"),
        runs: runs.max(1),
        seconds,
        method: format!(
            "measured with RAPL ({}) over {} runs, {:.2} s; includes everything else the package did meanwhile",
            names.join("+"),
            runs.max(1),
            seconds
        ),
    })
}
