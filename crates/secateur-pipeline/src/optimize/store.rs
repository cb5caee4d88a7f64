//! The run directory of `optimize` and what makes a run resumable: the search state (NSGA-II
//! with its random generator, which genomes each generation and the baseline evaluated) is
//! rewritten atomically after every generation; every finished evaluation is appended to
//! `evaluations.jsonl` (and every re-trained front member to `finals.jsonl`) and flushed at
//! once, so a killed run loses no finished work. A truncated last line (killed mid-write) is
//! ignored. Settings are fingerprinted: a directory from a run with other settings is not
//! resumed silently.

use crate::{Context, Result, bail};
use secateur_graph::io::write_atomic;
use secateur_search::Nsga2;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One evaluated candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub key: String,
    pub genome: Vec<f64>,
    /// Every quantity (objective keys plus MACs, parameters, FPS...).
    pub values: BTreeMap<String, f64>,
    /// The genome in words.
    pub description: BTreeMap<String, String>,
    pub layer_keep: Vec<(String, f64)>,
    pub int8: bool,
    /// Whether it runs in bf16 (never together with `int8`).
    #[serde(default)]
    pub bf16: bool,
    /// False when cheap objectives already broke a constraint and fine-tuning was skipped.
    pub finetuned: bool,
    /// Where and how long it ran (the executor's record; not part of the result).
    #[serde(default)]
    pub ran: Option<RanOn>,
}

impl Evaluation {
    /// The arithmetic the evaluated model runs in.
    pub fn arithmetic(&self) -> super::space::Arithmetic {
        use super::space::Arithmetic;
        match (self.int8, self.bf16) {
            (true, _) => Arithmetic::Int8,
            (false, true) => Arithmetic::Bf16,
            (false, false) => Arithmetic::F32,
        }
    }
}

/// The host and process that ran an evaluation, and its wall time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RanOn {
    pub host: String,
    pub pid: u32,
    pub wall_s: f64,
}

impl RanOn {
    /// This process on this host, having run for `wall_s` seconds.
    pub fn here(wall_s: f64) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        RanOn {
            host,
            pid: std::process::id(),
            wall_s,
        }
    }
}

/// A front member after the final fine-tune (or an ensemble of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    pub key: String,
    pub id: String,
    pub values: BTreeMap<String, f64>,
    pub description: BTreeMap<String, String>,
    pub layer_keep: Vec<(String, f64)>,
    /// Model file relative to the run directory.
    pub model_path: String,
    /// Ids of the members when an ensemble.
    pub members: Vec<String>,
    /// Whether `latency_ms` was measured on the host (otherwise predicted or modelled).
    pub measured: bool,
}

/// The search's state between generations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchState {
    pub fingerprint: String,
    pub nsga: Nsga2,
    /// Genome keys evaluated by each finished generation (0 = initial population).
    pub generations: Vec<Vec<String>>,
    pub baseline: Option<Vec<String>>,
}

/// The run directory.
pub struct RunDir {
    pub root: PathBuf,
}

const RUN_FILES: [&str; 9] = [
    "state.json",
    "evaluations.jsonl",
    "finals.jsonl",
    "dense.onnx",
    "latency-table.json",
    "sensitivity.json",
    "front.json",
    "report.html",
    "settings.json",
];

impl RunDir {
    /// Opens (creating) `root`. With `fresh`, files of an earlier run are removed first; a
    /// directory holding a run with other settings is refused unless `fresh`.
    pub fn open(root: &Path, fingerprint: &str, fresh: bool) -> Result<Self> {
        std::fs::create_dir_all(root.join("models"))
            .with_context(|| format!("creating output directory {}", root.display()))?;
        let dir = RunDir {
            root: root.to_path_buf(),
        };
        let settings = root.join("settings.json");
        if fresh {
            for f in RUN_FILES {
                let p = root.join(f);
                if p.exists() {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("removing {}", p.display()))?;
                }
            }
            for e in std::fs::read_dir(root.join("models"))? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "onnx") {
                    std::fs::remove_file(&p)?;
                }
            }
        } else if settings.exists() {
            let old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings)?)
                .with_context(|| format!("reading {}", settings.display()))?;
            if old["fingerprint"].as_str() != Some(fingerprint) {
                bail!(
                    "{} holds a run with different settings (fingerprint {} vs {fingerprint}); pass --fresh to start over there, or choose another --out",
                    root.display(),
                    old["fingerprint"].as_str().unwrap_or("?")
                );
            }
        }
        Ok(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.path(name), bytes)
            .with_context(|| format!("writing {}", self.path(name).display()))
    }

    pub fn write_json<T: Serialize>(&self, name: &str, v: &T) -> Result<()> {
        self.write(name, serde_json::to_string_pretty(v)?.as_bytes())
    }

    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let p = self.path(name);
        if !p.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not valid; pass --fresh to start over", p.display())
        })?))
    }

    /// Appends one JSON line and flushes it to disk.
    pub fn append<T: Serialize>(&self, name: &str, v: &T) -> Result<()> {
        let p = self.path(name);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        let mut line = serde_json::to_string(v)?;
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        Ok(())
    }

    /// All complete lines of a JSON-lines file, by key.
    pub fn read_lines<T: DeserializeOwned>(
        &self,
        name: &str,
        key: impl Fn(&T) -> String,
    ) -> Result<HashMap<String, T>> {
        let p = self.path(name);
        let mut out = HashMap::new();
        if !p.exists() {
            return Ok(out);
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            // terminate a line cut short so that the next append starts a line of its own
            OpenOptions::new().append(true).open(&p)?.write_all(b"\n")?;
        }
        for line in text.lines() {
            // a line cut short by a kill does not parse and is dropped (it is re-evaluated)
            if let Ok(v) = serde_json::from_str::<T>(line) {
                out.insert(key(&v), v);
            }
        }
        Ok(out)
    }
}
