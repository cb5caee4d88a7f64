//! Latency prediction NetAdapt-style: a lookup table of measured per-layer latencies on the
//! target, keyed by what determines a layer's cost (op, geometry, channels, weight density,
//! batch, threads). A candidate's latency is predicted as the sum of its layers' entries
//! without running it: exact matches are used as they are, other layers are interpolated
//! between the measured layers of the same op and geometry by work (executed MACs, or output
//! size for MAC-free ops), and anything unseen falls back to the profile's roofline scaled by
//! the table's median measured/modelled ratio. What no layer accounts for (layout conversions
//! between runs of layers, the plan's own overhead, caches between steps) is calibrated per
//! model: each recorded plan is also timed whole, and a prediction is scaled by the recorded
//! ratio of whole-plan time to the sum of its steps for the same graph (the median over all
//! graphs for an unseen one). Tables are built from plans timed step by step on this machine
//! and saved as JSON.

use crate::error::{CostError, Result};
use crate::profile::HardwareProfile;
use secateur_graph::{Graph, OpClass, Precision, summarize};
use secateur_runtime::{ExecPlan, PlanConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What determines one layer's latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSig {
    pub node: String,
    pub kind: String,
    /// Kernel, strides, pads, groups and input spatial size (channels excluded).
    pub geometry: String,
    pub in_ch: usize,
    pub out_ch: usize,
    pub density: f64,
    /// Mask pattern of the weight (`unstructured`, `2:4`, `block 4x1`; empty when dense):
    /// kernels differ per pattern, so latencies are only interpolated within one.
    #[serde(default)]
    pub pattern: String,
    /// Executed MACs per sample (sparse when density < 0.7) or output elements for MAC-free ops.
    pub work: f64,
    /// Whether the graph quantizes the layer (weight and input) to int8: where the CPU has
    /// VNNI it runs on other kernels, so int8 layers are only compared with int8 entries.
    #[serde(default)]
    pub int8: bool,
    /// The execution precision of a weighted layer that is not int8 (its graph's): bf16
    /// layers run on other kernels, so they are only compared with bf16 entries.
    #[serde(default)]
    pub precision: Precision,
    /// Dense MACs per sample (for the roofline fallback).
    pub macs: u64,
}

/// One measured layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub sig: LayerSig,
    pub batch: usize,
    pub threads: usize,
    pub ms: f64,
}

/// The kind of the entries that calibrate whole plans: `geometry` holds the graph's name,
/// `work` the sum of the plan's step times and `ms` the whole plan's time.
pub const WHOLE_PLAN: &str = "whole-plan";

/// A latency lookup table for one machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub machine: String,
    pub entries: Vec<Entry>,
}

/// Signatures of the layers that a runtime plan executes as steps (batch norm and activations
/// right after a Conv/Gemm are fused into it and have no step of their own).
pub fn signatures(graph: &Graph) -> secateur_graph::Result<Vec<LayerSig>> {
    let shapes = graph.infer_shapes()?;
    let summary = summarize(graph)?;
    let mut absorbed = vec![false; graph.nodes.len()];
    for chain in graph.fused_chains()? {
        for a in chain.absorbed() {
            absorbed[a] = true;
        }
    }
    let mut sigs = Vec::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        if absorbed[i] || n.op.class() == OpClass::View {
            continue;
        }
        let ins = shapes[&n.inputs[0]].resolve(1);
        let outs = shapes[&n.outputs[0]].resolve(1);
        let (in_ch, out_ch) = n.op.sem().kernel_widths(std::slice::from_ref(&ins), &outs);
        let (kind, geometry) = n.op.sem().kernel_signature(std::slice::from_ref(&ins));
        let mut density = 1.0;
        let mut pattern = String::new();
        if let Some(w) = n.inputs.get(1).and_then(|w| graph.initializers.get(w))
            && graph.is_weighted_layer(i)
        {
            density = 1.0 - w.count_zeros() as f64 / w.len().max(1) as f64;
            if density < 0.99 {
                pattern = graph
                    .masks
                    .get(&n.inputs[1])
                    .map_or_else(|| "unstructured".to_string(), |m| m.pattern.to_string());
            }
        }
        let int8 = graph.quantization.as_ref().is_some_and(|q| {
            q.activations.contains_key(&n.name)
                && n.inputs.get(1).is_some_and(|w| q.weights.contains_key(w))
        });
        let precision = if graph.is_weighted_layer(i) && !int8 {
            graph.precision
        } else {
            Precision::F32
        };
        let macs = summary.layers[i].macs;
        let work = if macs > 0 {
            if density < 0.7 {
                macs as f64 * density
            } else {
                macs as f64
            }
        } else {
            outs.iter().product::<usize>() as f64
        };
        sigs.push(LayerSig {
            node: n.name.clone(),
            kind: kind.to_string(),
            geometry,
            in_ch,
            out_ch,
            density,
            pattern,
            work,
            macs,
            int8,
            precision,
        });
    }
    Ok(sigs)
}

impl LatencyTable {
    /// Measures every step of `graph`'s plan (median of `reps` runs) and records it.
    pub fn record_model(
        &mut self,
        graph: &Graph,
        batch: usize,
        threads: usize,
        reps: usize,
    ) -> Result<()> {
        let sigs = signatures(graph)?;
        let mut plan = ExecPlan::compile(graph, PlanConfig::new(batch, threads))?;
        let synthetic = secateur_graph::synthetic_inputs(graph, &plan.input_shapes);
        let x: Vec<&[f32]> = synthetic.iter().map(|(_, v)| v.as_slice()).collect();
        let times = plan.time_steps(&x, reps)?;
        let whole = median_run_ms(&mut plan, &x, reps)?;
        let steps: f64 = times.iter().map(|(_, t)| t).sum();
        if steps > 0.0 && whole > 0.0 {
            self.entries.push(Entry {
                sig: LayerSig {
                    node: String::new(),
                    kind: WHOLE_PLAN.into(),
                    geometry: graph.name.clone(),
                    in_ch: 0,
                    out_ch: 0,
                    density: 1.0,
                    pattern: String::new(),
                    work: steps,
                    macs: 0,
                    int8: false,
                    precision: Precision::F32,
                },
                batch,
                threads,
                ms: whole,
            });
        }
        for s in sigs {
            let ms: f64 = times
                .iter()
                .filter(|(name, _)| {
                    *name == s.node || name.strip_suffix(".quantize_input") == Some(&s.node)
                })
                .map(|(_, t)| t)
                .sum();
            if ms > 0.0 {
                self.entries.push(Entry {
                    sig: s,
                    batch,
                    threads,
                    ms,
                });
            }
        }
        Ok(())
    }

    fn same_family<'a>(
        &'a self,
        s: &'a LayerSig,
        batch: usize,
        threads: usize,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| {
            e.batch == batch
                && e.threads == threads
                && e.sig.kind == s.kind
                && e.sig.geometry == s.geometry
                && e.sig.int8 == s.int8
                && e.sig.precision == s.precision
                && (e.sig.pattern == s.pattern || e.sig.pattern.is_empty())
        })
    }

    /// Predicted latency of one layer, and how it was obtained. Within the layers measured
    /// with the same op, geometry and widths, latency is interpolated piecewise-linearly in
    /// weight density; between widths it is interpolated in dense MACs (or output size).
    pub fn predict_layer(
        &self,
        s: &LayerSig,
        batch: usize,
        threads: usize,
        profile: &HardwareProfile,
    ) -> (f64, &'static str) {
        let fam: Vec<&Entry> = self.same_family(s, batch, threads).collect();
        if fam.is_empty() && (s.int8 || s.precision != Precision::F32) {
            // no int8 (bf16) layer of this kind measured: its f32 time (what the layer
            // costs where it runs as a simulation, an upper bound for bf16)
            let f32_sig = LayerSig {
                int8: false,
                precision: Precision::F32,
                ..s.clone()
            };
            return self.predict_layer(&f32_sig, batch, threads, profile);
        }
        if fam.is_empty() {
            let roofline = |sig: &LayerSig| {
                batch as f64 * sig.work / (profile.macs_per_second(false) * 0.9) * 1e3
            };
            // the measured-over-roofline ratio of layers of the same kind (other geometries),
            // else of every layer
            let ratios_of = |same_kind: bool| -> Vec<f64> {
                self.entries
                    .iter()
                    .filter(|e| {
                        e.batch == batch && e.threads == threads && e.sig.kind != WHOLE_PLAN
                    })
                    .filter(|e| !same_kind || e.sig.kind == s.kind)
                    .map(|e| e.ms / roofline(&e.sig).max(1e-12))
                    .collect()
            };
            let mut ratios = ratios_of(true);
            if ratios.is_empty() {
                ratios = ratios_of(false);
            }
            ratios.sort_by(f64::total_cmp);
            let k = ratios.get(ratios.len() / 2).copied().unwrap_or(1.0);
            return (roofline(s) * k, "roofline");
        }
        // size of a width configuration: dense MACs, or output elements for MAC-free ops
        let size = |sig: &LayerSig| {
            if sig.macs > 0 {
                sig.macs as f64
            } else {
                sig.work
            }
        };
        let mut widths: Vec<(usize, usize, f64)> = Vec::new();
        for e in &fam {
            if !widths
                .iter()
                .any(|w| w.0 == e.sig.in_ch && w.1 == e.sig.out_ch)
            {
                widths.push((e.sig.in_ch, e.sig.out_ch, size(&e.sig)));
            }
        }
        // latency of width (i, o) at the query's density
        let at_density = |i: usize, o: usize| -> f64 {
            let mut pts: Vec<(f64, f64)> = fam
                .iter()
                .filter(|e| e.sig.in_ch == i && e.sig.out_ch == o)
                .map(|e| (e.sig.density, e.ms))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            interpolate(&pts, s.density)
        };
        if widths.iter().any(|w| w.0 == s.in_ch && w.1 == s.out_ch) {
            let exact = fam.iter().any(|e| {
                e.sig.in_ch == s.in_ch
                    && e.sig.out_ch == s.out_ch
                    && (e.sig.density - s.density).abs() < 0.02
            });
            return (
                at_density(s.in_ch, s.out_ch),
                if exact { "table" } else { "interpolated" },
            );
        }
        let q = size(s);
        let below = widths
            .iter()
            .filter(|w| w.2 <= q)
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let above = widths
            .iter()
            .filter(|w| w.2 > q)
            .min_by(|a, b| a.2.total_cmp(&b.2));
        match (below, above) {
            (Some(a), Some(b)) => {
                let (ta, tb) = (at_density(a.0, a.1), at_density(b.0, b.1));
                let t = (q - a.2) / (b.2 - a.2).max(1e-12);
                (ta + t * (tb - ta), "interpolated")
            }
            (Some(a), None) | (None, Some(a)) => {
                (at_density(a.0, a.1) * q / a.2.max(1e-12), "scaled")
            }
            (None, None) => unreachable!("family is not empty"),
        }
    }

    /// Predicted latency of a graph: the sum over its layers, scaled by
    /// [`LatencyTable::whole_plan_ratio`] at that sum.
    pub fn predict(
        &self,
        graph: &Graph,
        batch: usize,
        threads: usize,
        profile: &HardwareProfile,
    ) -> Result<f64> {
        let layers: f64 = signatures(graph)?
            .iter()
            .map(|s| self.predict_layer(s, batch, threads, profile).0)
            .sum();
        Ok(layers * self.whole_plan_ratio(&graph.name, layers, batch, threads))
    }

    /// Whole-plan time over the sum of the step times, for a plan of graph `name` whose steps
    /// sum to `steps_ms`: interpolated between the recorded plans of that graph (variants of
    /// one model) nearest in step time (the nearest one's ratio outside their range), else
    /// the median over all recorded plans, else 1.
    pub fn whole_plan_ratio(&self, name: &str, steps_ms: f64, batch: usize, threads: usize) -> f64 {
        let plans = || {
            self.entries.iter().filter(|e| {
                e.sig.kind == WHOLE_PLAN
                    && e.batch == batch
                    && e.threads == threads
                    && e.sig.work > 0.0
                    && e.ms > 0.0
            })
        };
        let mut own: Vec<(f64, f64)> = plans()
            .filter(|e| e.sig.geometry == name)
            .map(|e| (e.sig.work, e.ms / e.sig.work))
            .collect();
        if !own.is_empty() {
            own.sort_by(|a, b| a.0.total_cmp(&b.0));
            let x = steps_ms.clamp(own[0].0, own[own.len() - 1].0);
            return interpolate(&own, x);
        }
        let mut all: Vec<f64> = plans().map(|e| e.ms / e.sig.work).collect();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied().unwrap_or(1.0)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| CostError::Table {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        secateur_graph::io::write_atomic(path, text.as_bytes()).map_err(|e| CostError::Table {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CostError::Table {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| CostError::Table {
            path: path.display().to_string(),
            message: format!("not a latency table: {e}"),
        })
    }
}

/// The median time of `reps` whole runs of `plan` on the inputs `x`.
fn median_run_ms(plan: &mut ExecPlan, x: &[&[f32]], reps: usize) -> Result<f64> {
    let mut ms = Vec::with_capacity(reps.max(1));
    plan.run_inputs(x)?;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        plan.run_inputs(x)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

/// Piecewise-linear interpolation of sorted `(x, y)` points at `x`, extrapolating linearly
/// from the two nearest points outside their range.
fn interpolate(pts: &[(f64, f64)], x: f64) -> f64 {
    match pts.len() {
        0 => 0.0,
        1 => pts[0].1,
        n => {
            let k = pts
                .iter()
                .position(|p| p.0 >= x)
                .unwrap_or(n - 1)
                .clamp(1, n - 1);
            let (a, b) = (pts[k - 1], pts[k]);
            if (b.0 - a.0).abs() < 1e-12 {
                return b.1;
            }
            (a.1 + (x - a.0) / (b.0 - a.0) * (b.1 - a.1)).max(0.0)
        }
    }
}
