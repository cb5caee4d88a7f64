//! The cheap objectives of a candidate, computed without training: model bytes (smallest
//! deployable storage: sparse formats where they are smaller, int8 when quantized), energy per
//! inference (the energy model of a profile), latency (on the host, predicted from a lookup
//! table measured on this machine at the start of the run; elsewhere, the profile's roofline),
//! peak activation memory (liveness-planned buffers of the runtime), MACs and parameters. A
//! bf16 model's latency comes from the table's bf16 entries; its bytes and energy are those of
//! its f32 weights (the exported file stores f32, and the energy model has no bf16
//! arithmetic). Also latency measurement on the host, used for the final front.

use super::space::{Arithmetic, SpaceShape};
use super::task::GroupRanking;
use crate::{Context, Result};
use secateur_cost::{HardwareProfile, LatencyTable, layer_counts, model, totals};
use secateur_graph::{ActQuant, Graph, Quantization};
use secateur_prune::structured::{
    ChannelPruneConfig, DependencyGraph, GroupKind, StructuredTarget, apply_plan, plan_channels,
};
use secateur_prune::weights::{
    Criterion, CriterionData, Granularity, Scope, WeightPruneConfig, apply_masks, compute_masks,
    prunable_weights,
};
use secateur_runtime::harness::{Budget, measure};
use secateur_runtime::{BatchMode, ExecPlan, FormatPolicy, PlanConfig};
use std::collections::{BTreeMap, HashMap};

/// How latency is obtained.
pub enum LatencySource {
    /// Lookup table measured on this machine.
    Table(LatencyTable),
    /// Roofline of another profile.
    Modelled,
}

/// Cost model of a run.
pub struct Costing {
    pub latency_profile: HardwareProfile,
    pub energy_profile: HardwareProfile,
    pub latency: LatencySource,
    pub batch: usize,
    pub threads: usize,
}

/// Marks every Conv/Gemm weight of `g` as int8 (per output channel) and its input with a
/// placeholder range, so that counts, the energy model and the latency table see an int8
/// model before quantization-aware training calibrates it (the ranges change values, not
/// costs).
pub fn provisional_int8(g: &Graph) -> Result<Graph> {
    let mut q = Quantization::default();
    for w in prunable_weights(g)? {
        q.weights.insert(w.weight, w.out_axis);
        q.activations
            .insert(w.node, ActQuant::from_range(-1.0, 1.0));
    }
    let mut out = g.clone();
    out.quantization = Some(q);
    Ok(out)
}

/// A variant of `base` for the latency table: a uniform fraction of channels kept, then weights
/// pruned per layer with one granularity.
fn table_variant(
    base: &Graph,
    keep: f64,
    gran: Option<(Granularity, f64)>,
    kinds: &[GroupKind],
) -> Result<Graph> {
    let mut g = base.clone();
    if keep < 1.0 {
        let deps = DependencyGraph::build(&g)?;
        let cfg = ChannelPruneConfig {
            target: StructuredTarget::Ratio(1.0 - keep),
            kinds: kinds.to_vec(),
            ..Default::default()
        };
        let plan = plan_channels(&g, &deps, &cfg, &HashMap::new())?;
        g = apply_plan(&g, &deps, &plan)?;
    }
    if let Some((granularity, sparsity)) = gran {
        let cfg = WeightPruneConfig {
            criterion: Criterion::Magnitude { l2: false },
            granularity,
            sparsity: Some(sparsity),
            scope: if matches!(granularity, Granularity::NM { .. }) {
                Scope::Global
            } else {
                Scope::PerLayer
            },
            exclude: vec![],
            seed: 0,
            min_density: None,
        };
        let m = compute_masks(&g, &cfg, &CriterionData::default())?;
        apply_masks(&mut g, m)?;
    }
    Ok(g)
}

/// Measures the lookup table for `base` on this machine: widths × (dense, unstructured and
/// 4×1-block sparsities, 2:4), and the int8 and bf16 variants the space has, every layer timed
/// in its plan. `progress(done, total)`.
pub fn build_latency_table(
    base: &Graph,
    batch: usize,
    threads: usize,
    shape: SpaceShape,
    ranking: &GroupRanking,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LatencyTable> {
    let mut table = LatencyTable {
        machine: "host".into(),
        entries: vec![],
    };
    let block = Granularity::Block { rows: 4, cols: 1 };
    let mut grans: Vec<Option<(Granularity, f64)>> = vec![None];
    for s in [0.5, 0.8, 0.95].into_iter().filter(|_| ranking.weights) {
        grans.push(Some((Granularity::Unstructured, s)));
        grans.push(Some((block, s)));
    }
    if ranking.weights {
        grans.push(Some((Granularity::NM { n: 2, m: 4 }, 0.5)));
    }
    let keeps = [1.0, 0.7, 0.45, 0.2];
    // int8 and bf16 variants at each width, dense and unstructured (their kernels run dense; a
    // space without weight sparsity needs the dense ones only)
    let reduced_grans = [None, Some((Granularity::Unstructured, 0.8))];
    let reduced_grans = &reduced_grans[..if ranking.weights { 2 } else { 1 }];
    let reduced: Vec<Arithmetic> = [
        (shape.int8, Arithmetic::Int8),
        (shape.bf16, Arithmetic::Bf16),
    ]
    .into_iter()
    .filter_map(|(on, a)| on.then_some(a))
    .collect();
    let total = keeps.len() * (grans.len() + reduced.len() * reduced_grans.len());
    let mut done = 0;
    for &keep in &keeps {
        let others = reduced
            .iter()
            .flat_map(|&a| reduced_grans.iter().map(move |g| (g, a)));
        for (gran, arithmetic) in grans.iter().map(|g| (g, Arithmetic::F32)).chain(others) {
            // a granularity that does not fit the model's shapes is skipped
            let variant =
                table_variant(base, keep, *gran, &ranking.kinds).and_then(
                    |mut v| match arithmetic {
                        Arithmetic::F32 => Ok(v),
                        Arithmetic::Int8 => provisional_int8(&v),
                        Arithmetic::Bf16 => {
                            v.precision = secateur_graph::Precision::Bf16;
                            Ok(v)
                        }
                    },
                );
            if let Ok(v) = variant {
                table
                    .record_model(&v, batch, threads, 12)
                    .with_context(|| format!("timing a variant keeping {keep} of the channels"))?;
            }
            done += 1;
            progress(done, total);
        }
    }
    Ok(table)
}

impl Costing {
    /// How the latency figure is obtained (for the report).
    pub fn latency_method(&self, final_front: bool) -> String {
        match (&self.latency, final_front) {
            (LatencySource::Table(_), false) => format!(
                "predicted from a per-layer lookup table measured on this machine (batch {}, {} thread(s))",
                self.batch, self.threads
            ),
            (LatencySource::Table(_), true) => format!(
                "measured on this machine by secateur's runtime (batch {}, {} thread(s), median)",
                self.batch, self.threads
            ),
            (LatencySource::Modelled, _) => format!(
                "modelled: roofline of the {} profile (batch {})",
                self.latency_profile.name, self.batch
            ),
        }
    }

    pub fn energy_method(&self) -> String {
        format!(
            "modelled: energy model of the {} profile (compute + data movement; constants and their sources in the profile)",
            self.energy_profile.name
        )
    }

    /// Every cheap quantity of `g` (quantized when `int8`).
    pub fn cheap(&self, g: &Graph, int8: bool) -> Result<BTreeMap<String, f64>> {
        let q;
        let g = if int8 && g.quantization.is_none() {
            q = provisional_int8(g)?;
            &q
        } else {
            g
        };
        let counts = layer_counts(g)?;
        let t = totals(&counts);
        let bytes: u64 = counts
            .iter()
            .map(|l| l.weight.best(l.int8) + l.other_param_bytes)
            .sum();
        let energy = model(&counts, &self.energy_profile, self.batch, &HashMap::new());
        let latency_ms = match &self.latency {
            LatencySource::Table(table) => {
                table.predict(g, self.batch, self.threads, &self.latency_profile)?
            }
            LatencySource::Modelled => {
                model(&counts, &self.latency_profile, self.batch, &HashMap::new()).latency_ms
            }
        };
        // peak activation memory of the whole batch in one plan: a fixed configuration, so
        // the figure never depends on which way of running happened to time faster
        let mut plan_cfg = PlanConfig::new(self.batch, self.threads);
        plan_cfg.policy = FormatPolicy::Dense;
        plan_cfg.batch_mode = BatchMode::Whole;
        let plan = ExecPlan::compile(g, plan_cfg)?;
        let mem = plan.memory();
        let mut v = BTreeMap::new();
        v.insert("model_kib".into(), bytes as f64 / 1024.0);
        v.insert("energy_mj".into(), energy.joules_per_inference * 1e3);
        v.insert("latency_ms".into(), latency_ms);
        v.insert(
            "fps".into(),
            self.batch as f64 / (latency_ms / 1e3).max(1e-12),
        );
        v.insert(
            "peak_memory_kib".into(),
            mem.activation_bytes as f64 / 1024.0,
        );
        v.insert("macs".into(), t.macs as f64);
        v.insert("sparse_macs".into(), t.sparse_macs as f64);
        v.insert("params".into(), t.params as f64);
        v.insert("nonzero_params".into(), t.nonzero_params as f64);
        Ok(v)
    }

    /// Latency of `g` measured on this machine (median, ms per batch).
    pub fn measure_latency(&self, g: &Graph) -> Result<f64> {
        let mut plan = ExecPlan::compile(g, PlanConfig::new(self.batch, self.threads))?;
        let synthetic = secateur_graph::synthetic_inputs(g, &plan.input_shapes);
        let x: Vec<&[f32]> = synthetic.iter().map(|(_, v)| v.as_slice()).collect();
        plan.run_inputs(&x)?;
        let stats = measure(
            &mut || {
                plan.run_inputs(&x).expect("inputs sized by the plan");
            },
            Budget::default(),
        );
        Ok(stats.median_ms)
    }
}
