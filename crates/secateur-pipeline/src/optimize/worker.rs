//! Evaluating a run's candidates in another process or on another machine (the Ray executor):
//! [`WorkerContext`] is everything [`super::candidate::EvalContext`] reads (settings, the dense
//! model as saved, the sensitivity bounds that shape the space, the cost models and the
//! search's data) packed into one byte string that travels once per node, and unpacked into an
//! evaluator whose results equal the driver's own. Layout: the magic `SECATEUR-WORKER1`, a
//! little-endian u64 length and a JSON header, then length-prefixed sections (the dense ONNX
//! model, then samples and labels of the search's training subset and validation split).
//! Image searches only: a text search (whose context would carry the text set, the tokenizer
//! and the calibration statistics) is refused with a message and runs on the local executor.

use super::candidate::EvalContext;
use super::config::OptimizeConfig;
use super::costing::{Costing, LatencySource};
use super::search::{Search, bounded_space};
use super::sensitivity::Sensitivity;
use super::space::SearchSpace;
use super::store::Evaluation;
use super::task::{ImageTask, TaskData};
use crate::{Context, Result, bail};
use secateur_cost::{HardwareProfile, LatencyTable};
use secateur_data::{Dataset, Normalization, Samples, Split};
use secateur_graph::Graph;
use secateur_train::Device;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 16] = b"SECATEUR-WORKER1";

/// The JSON part of a packed context.
#[derive(Serialize, Deserialize)]
struct Header {
    fingerprint: String,
    config: OptimizeConfig,
    sensitivity: Sensitivity,
    latency_profile: HardwareProfile,
    energy_profile: HardwareProfile,
    latency_table: Option<LatencyTable>,
    norm: Normalization,
    train: DatasetMeta,
    val: DatasetMeta,
}

/// A data set's description; its samples and labels follow as sections.
#[derive(Serialize, Deserialize)]
struct DatasetMeta {
    name: String,
    sample_shape: Vec<usize>,
    class_names: Vec<String>,
    bytes: bool,
}

/// An evaluator of one run's search candidates, unpacked from [`Search::worker_context`].
pub struct WorkerContext {
    fingerprint: String,
    config: OptimizeConfig,
    base: Graph,
    space: SearchSpace,
    costing: Costing,
    task: TaskData,
    device: Device,
    pool: rayon::ThreadPool,
}

impl WorkerContext {
    /// Packs what `search`'s evaluations read.
    pub(super) fn bytes_of(search: &Search) -> Result<Vec<u8>> {
        let TaskData::Images(images) = &search.task else {
            bail!(
                "the Ray executor evaluates image-classifier searches; run a text search with the local executor (--executor local)"
            );
        };
        let dense = std::fs::read(search.dir.path("dense.onnx"))
            .context("reading the dense model of the run")?;
        let header = Header {
            fingerprint: search.cfg.fingerprint(),
            config: search.cfg.clone(),
            sensitivity: search.sens.clone(),
            latency_profile: search.costing.latency_profile.clone(),
            energy_profile: search.costing.energy_profile.clone(),
            latency_table: match &search.costing.latency {
                LatencySource::Table(t) => Some(t.clone()),
                LatencySource::Modelled => None,
            },
            norm: images.norm.clone(),
            train: meta(&images.search.train),
            val: meta(&images.search.test),
        };
        let json = serde_json::to_vec(&header)?;
        let mut out = Vec::with_capacity(json.len() + dense.len() + 64);
        out.extend_from_slice(MAGIC);
        section(&mut out, &json);
        section(&mut out, &dense);
        for d in [&images.search.train, &images.search.test] {
            section(&mut out, &sample_bytes(&d.samples));
            let labels: Vec<u8> = d.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
            section(&mut out, &labels);
        }
        Ok(out)
    }

    /// Unpacks a context; refuses bytes that are not one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .context("not a secateur worker context (wrong magic bytes)")?;
        let header: Header =
            serde_json::from_slice(next_section(&mut rest)?).context("worker context header")?;
        let base = secateur_onnx::import_bytes(
            next_section(&mut rest)?,
            std::path::Path::new("dense.onnx"),
        )
        .context("worker context: the dense model")?;
        let train = dataset(&header.train, &mut rest)?;
        let val = dataset(&header.val, &mut rest)?;
        if !rest.is_empty() {
            bail!("worker context: {} unexpected trailing bytes", rest.len());
        }
        let cfg = header.config;
        if cfg.fingerprint() != header.fingerprint {
            bail!("worker context: the settings do not match their fingerprint");
        }
        let task = TaskData::Images(Box::new(ImageTask {
            search: Split {
                train,
                test: val,
                normalization: header.norm.clone(),
            },
            full: None,
            norm: header.norm,
        }));
        let space = bounded_space(&cfg, &base, &header.sensitivity, &task.ranking())?;
        let costing = Costing {
            latency_profile: header.latency_profile,
            energy_profile: header.energy_profile,
            latency: match header.latency_table {
                Some(t) => LatencySource::Table(t),
                None => LatencySource::Modelled,
            },
            batch: cfg.batch,
            threads: cfg.threads,
        };
        // one core per evaluation, as the local executor runs them: results do not depend on
        // where they ran
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| crate::invalid!("cannot start the evaluation thread: {e}"))?;
        Ok(WorkerContext {
            fingerprint: header.fingerprint,
            config: cfg,
            base,
            space,
            costing,
            task,
            device: Device::flex(),
            pool,
        })
    }

    /// The fingerprint of the run's settings.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The search's evaluation of `genome`, as the driver would compute it.
    pub fn evaluate(&self, genome: &[f64]) -> Result<Evaluation> {
        let ctx = EvalContext {
            config: &self.config,
            base: &self.base,
            space: &self.space,
            costing: &self.costing,
            task: &self.task,
            device: &self.device,
        };
        self.pool.install(|| ctx.evaluate(genome))
    }
}

fn meta(d: &Dataset) -> DatasetMeta {
    DatasetMeta {
        name: d.name.clone(),
        sample_shape: d.sample_shape.clone(),
        class_names: d.class_names.clone(),
        bytes: matches!(d.samples, Samples::U8(_)),
    }
}

fn sample_bytes(s: &Samples) -> Vec<u8> {
    match s {
        Samples::U8(v) => v.clone(),
        Samples::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn section(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn next_section<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8]> {
    let truncated = || crate::invalid!("worker context: truncated");
    let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| truncated())?;
    if tail.len() < len {
        return Err(truncated());
    }
    let (section, tail) = tail.split_at(len);
    *rest = tail;
    Ok(section)
}

fn dataset(m: &DatasetMeta, rest: &mut &[u8]) -> Result<Dataset> {
    let raw = next_section(rest)?;
    let samples = if m.bytes {
        Samples::U8(raw.to_vec())
    } else {
        if !raw.len().is_multiple_of(4) {
            bail!("worker context: the samples of '{}' are truncated", m.name);
        }
        Samples::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    let raw = next_section(rest)?;
    if !raw.len().is_multiple_of(4) {
        bail!("worker context: the labels of '{}' are truncated", m.name);
    }
    let labels: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let d = Dataset {
        name: m.name.clone(),
        sample_shape: m.sample_shape.clone(),
        samples,
        labels,
        class_names: m.class_names.clone(),
    };
    let per_sample: usize = d.sample_shape.iter().product();
    let stored = match &d.samples {
        Samples::U8(v) => v.len(),
        Samples::F32(v) => v.len(),
    };
    if per_sample == 0 || stored != per_sample * d.labels.len() {
        bail!(
            "worker context: '{}' has {stored} values for {} samples of shape {:?}",
            m.name,
            d.labels.len(),
            d.sample_shape
        );
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_a_context_are_refused_without_panicking() {
        let e = WorkerContext::from_bytes(b"not a context").err().unwrap();
        assert!(e.to_string().contains("magic"), "{e}");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1000u64.to_le_bytes());
        bytes.extend_from_slice(b"{}");
        let e = WorkerContext::from_bytes(&bytes).err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut bytes = MAGIC.to_vec();
        section(&mut bytes, b"{\"fingerprint\": 1}");
        let e = WorkerContext::from_bytes(&bytes).err().unwrap();
        assert!(e.to_string().contains("header"), "{e}");
    }

    #[test]
    fn datasets_whose_sizes_disagree_are_refused() {
        let meta = DatasetMeta {
            name: "val".into(),
            sample_shape: vec![1, 2, 2],
            class_names: vec!["a".into()],
            bytes: true,
        };
        let mut packed = Vec::new();
        section(&mut packed, &[0u8; 7]);
        section(&mut packed, &[0u8; 8]);
        let e = dataset(&meta, &mut packed.as_slice())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'val'") && e.contains("7 values"), "{e}");
    }
}
