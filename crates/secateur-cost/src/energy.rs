//! The energy and latency model of a hardware profile. Energy per inference is compute —
//! executed MACs times the energy of a MAC of the layer's data type, plus element-wise work at
//! a quarter of a MAC (Horowitz: an f32 add is ~0.2 of a multiply-add) — plus data movement:
//! weight bytes (indices included) read from the memory level that holds the whole model's
//! weights, once per batch, and each layer's input and output activations read and written at
//! the fastest writable level that holds its working set for the batch. Latency (modelled) is
//! the roofline maximum of compute time at the profile's MAC throughput — 90 % of peak dense,
//! 65 % for sparse kernels, the efficiencies measured for secateur's kernels on the host — and
//! memory time at the level's bandwidth.

use crate::counts::LayerCount;
use crate::profile::HardwareProfile;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Fraction of peak MAC throughput dense kernels reach.
pub const DENSE_EFFICIENCY: f64 = 0.9;
/// Fraction of peak MAC throughput sparse kernels reach (measured: CSR at 90 % sparsity runs
/// 6.7x faster than dense for 10x fewer MACs).
pub const SPARSE_EFFICIENCY: f64 = 0.65;
/// Energy of an element-wise operation relative to a MAC of the same type.
pub const ELEMENTWISE_FRACTION: f64 = 0.25;

/// How a layer is executed: MACs per sample and weight bytes, from a runtime plan or assumed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub macs: u64,
    pub weight_bytes: u64,
    pub sparse: bool,
}

/// The execution a sparse-aware runtime would choose: sparse storage and MACs when the weight
/// is at least 30 % zeros and the sparse form is smaller, dense otherwise.
pub fn assumed_execution(l: &LayerCount) -> Execution {
    let dense_bytes = if l.int8 {
        l.weight.dense_int8
    } else {
        l.weight.dense_f32
    };
    let best = l.weight.best(l.int8);
    let sparse = l.params > 0
        && l.macs > 0
        && best < dense_bytes
        && (l.sparse_macs as f64) < 0.7 * l.macs as f64;
    Execution {
        macs: if sparse { l.sparse_macs } else { l.macs },
        weight_bytes: if sparse { best } else { dense_bytes } + l.other_param_bytes,
        sparse,
    }
}

/// One layer's modelled energy (picojoules per inference) and latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerEnergy {
    pub node: String,
    pub compute_pj: f64,
    pub weight_pj: f64,
    pub activation_pj: f64,
    pub weight_level: String,
    pub activation_level: String,
    /// Modelled latency of the layer for the whole batch.
    pub latency_ms: f64,
}

impl LayerEnergy {
    pub fn total_pj(&self) -> f64 {
        self.compute_pj + self.weight_pj + self.activation_pj
    }

    pub fn memory_pj(&self) -> f64 {
        self.weight_pj + self.activation_pj
    }
}

/// The whole model under a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyModel {
    pub profile: String,
    pub batch: usize,
    pub layers: Vec<LayerEnergy>,
    /// Where the weights live and how many bytes they take.
    pub weight_level: String,
    pub weight_bytes: u64,
    pub joules_per_inference: f64,
    pub compute_joules: f64,
    pub memory_joules: f64,
    /// Modelled latency of one batch.
    pub latency_ms: f64,
    pub static_watts: f64,
}

impl EnergyModel {
    /// Average power when running back to back at `fps` inferences per second.
    pub fn watts_at(&self, fps: f64) -> f64 {
        self.static_watts + self.joules_per_inference * fps
    }

    /// Average power at the modelled maximum throughput.
    pub fn watts_at_max(&self) -> f64 {
        self.watts_at(self.batch as f64 / (self.latency_ms / 1e3).max(1e-12))
    }
}

/// Models a graph's layers (counts at batch 1) under `profile` for `batch` samples per run.
/// `plan` gives, by node, how a runtime plan executes a layer; others are [`assumed_execution`].
pub fn model(
    layers: &[LayerCount],
    profile: &HardwareProfile,
    batch: usize,
    plan: &HashMap<String, Execution>,
) -> EnergyModel {
    let b = batch.max(1) as f64;
    let execs: Vec<Execution> = layers
        .iter()
        .map(|l| {
            plan.get(&l.node)
                .copied()
                .unwrap_or_else(|| assumed_execution(l))
        })
        .collect();
    let weight_bytes: u64 = execs.iter().map(|e| e.weight_bytes).sum();
    let wl = profile.level_for(weight_bytes as f64, false);
    let mut out = Vec::with_capacity(layers.len());
    let (mut compute, mut memory, mut latency) = (0.0, 0.0, 0.0);
    for (l, e) in layers.iter().zip(&execs) {
        let e_mac = if l.int8 {
            profile.energy.mac_int8_pj
        } else {
            profile.energy.mac_f32_pj
        };
        let compute_pj =
            e.macs as f64 * e_mac + l.elementwise_ops as f64 * e_mac * ELEMENTWISE_FRACTION;
        let weight_pj = e.weight_bytes as f64 * wl.read_pj_per_byte / b;
        let working_set = b * (l.input_bytes + l.output_bytes) as f64;
        let al = profile.level_for(working_set, true);
        let activation_pj =
            if l.op == "Flatten" || l.op == "Reshape" || l.op == "Identity" || l.op == "Dropout" {
                0.0
            } else {
                l.input_bytes as f64 * al.read_pj_per_byte
                    + l.output_bytes as f64 * al.write_pj_per_byte
            };
        let eff = if e.sparse {
            SPARSE_EFFICIENCY
        } else {
            DENSE_EFFICIENCY
        };
        let rate = profile.macs_per_second(l.int8) * eff;
        let compute_s =
            b * (e.macs as f64 + l.elementwise_ops as f64 * ELEMENTWISE_FRACTION) / rate;
        let mem_s = e.weight_bytes as f64 / (wl.bandwidth_gb_s * 1e9)
            + working_set / (al.bandwidth_gb_s * 1e9);
        let latency_ms = compute_s.max(mem_s) * 1e3;
        compute += compute_pj;
        memory += weight_pj + activation_pj;
        latency += latency_ms;
        out.push(LayerEnergy {
            node: l.node.clone(),
            compute_pj,
            weight_pj,
            activation_pj,
            weight_level: wl.name.clone(),
            activation_level: al.name.clone(),
            latency_ms,
        });
    }
    EnergyModel {
        profile: profile.name.clone(),
        batch,
        layers: out,
        weight_level: wl.name.clone(),
        weight_bytes,
        joules_per_inference: (compute + memory) * 1e-12,
        compute_joules: compute * 1e-12,
        memory_joules: memory * 1e-12,
        latency_ms: latency,
        static_watts: profile.static_watts,
    }
}

/// Whether a model fits a profile: weights in some level, and the largest layer working set in
/// a writable level. Returns a sentence explaining the outcome.
pub fn fits(layers: &[LayerCount], profile: &HardwareProfile, batch: usize) -> (bool, String) {
    let weights: u64 = layers
        .iter()
        .map(|l| assumed_execution(l).weight_bytes)
        .sum();
    let max_ws = layers
        .iter()
        .map(|l| batch as u64 * (l.input_bytes + l.output_bytes))
        .max()
        .unwrap_or(0);
    let biggest = profile.memory.last().map_or(0.0, |m| m.capacity_bytes);
    let biggest_w = profile
        .memory
        .iter()
        .rev()
        .find(|m| m.writable)
        .map_or(0.0, |m| m.capacity_bytes);
    let ok_w = (weights as f64) <= biggest;
    let ok_a = (max_ws as f64) <= biggest_w;
    let msg = format!(
        "weights {} B {} ({}), largest activation working set {} B {} ({})",
        weights,
        if ok_w { "fit" } else { "do NOT fit" },
        profile.level_for(weights as f64, false).name,
        max_ws,
        if ok_a { "fits" } else { "does NOT fit" },
        profile.level_for(max_ws as f64, true).name
    );
    (ok_w && ok_a, msg)
}
