//! `secateur profile MODEL --hardware P`: per-layer parameters, MACs (dense and executed),
//! bytes, energy split into compute and memory, predicted latency (lookup table on the host,
//! roofline on other profiles) and, on the host, measured latency; totals, whether the model
//! fits the profile's memory, and energy per inference with the method that produced it.

use crate::model_ref::load_model;
use anyhow::Result;
use secateur_cost::energy::Execution;
use secateur_cost::rapl::{self, POWERCAP_ROOT};
use secateur_cost::{HardwareProfile, LatencyTable, fits, layer_counts, model, signatures, totals};
use secateur_graph::zoo::ZooConfig;
use secateur_runtime::harness::{Budget, measure};
use secateur_runtime::{ExecPlan, PlanConfig};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    /// Model (.onnx file or built-in name).
    pub model: String,
    /// embedded, mobile, cloud, host, or a profile .toml file.
    #[arg(long, default_value = "host")]
    pub hardware: String,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Latency lookup table (JSON) for predictions on the host; built by `bench-predict`.
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// Frames per second at which to report average power.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct LayerRow {
    node: String,
    op: String,
    params: u64,
    nonzero_params: u64,
    macs: u64,
    executed_macs: u64,
    weight_bytes: u64,
    compute_uj: f64,
    memory_uj: f64,
    weight_level: String,
    activation_level: String,
    predicted_ms: Option<f64>,
    prediction: Option<String>,
    measured_ms: Option<f64>,
}

#[derive(Serialize)]
struct EnergyFigure {
    joules_per_inference: f64,
    compute_joules: f64,
    memory_joules: f64,
    method: String,
    measured: Option<rapl::Measured>,
    watts_at_fps: f64,
    fps: f64,
}

#[derive(Serialize)]
struct ProfileReport {
    model: String,
    hardware: String,
    batch: usize,
    threads: usize,
    layers: Vec<LayerRow>,
    params: u64,
    nonzero_params: u64,
    macs: u64,
    executed_macs: u64,
    bytes: std::collections::BTreeMap<String, u64>,
    peak_activation_bytes: Option<usize>,
    fits: bool,
    fits_detail: String,
    predicted_latency_ms: f64,
    latency_method: String,
    measured_latency_ms: Option<f64>,
    energy: EnergyFigure,
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    let profile = HardwareProfile::load(&args.hardware)?;
    let g = load_model(&args.model, &ZooConfig::default())?;
    let counts = layer_counts(&g)?;
    let tot = totals(&counts);
    let b = args.batch.max(1);
    // on the host, the runtime plan decides formats and its timings are measured
    let mut plan_exec: HashMap<String, Execution> = HashMap::new();
    let mut measured_ms: HashMap<String, f64> = HashMap::new();
    let (mut measured_total, mut peak, mut energy_measured, mut why_modelled) =
        (None, None, None, String::new());
    if profile.measured {
        let mut plan = ExecPlan::compile(&g, PlanConfig::new(b, args.threads))?;
        for l in &plan.layers {
            plan_exec.insert(
                l.node.clone(),
                Execution {
                    macs: l.executed_macs / b as u64,
                    weight_bytes: l.weight_bytes as u64,
                    sparse: l.format != "dense" && l.format != "direct",
                },
            );
        }
        let synthetic = super::bench::synthetic_inputs(&g, &plan.input_shapes);
        let x: Vec<&[f32]> = synthetic.iter().map(|(_, v)| v.as_slice()).collect();
        for (name, ms) in plan.time_steps(&x, 20)? {
            *measured_ms
                .entry(name.trim_end_matches(".quantize_input").to_string())
                .or_insert(0.0) += ms;
        }
        let stats = measure(
            &mut || {
                plan.run_inputs(&x).expect("sized input");
            },
            Budget::default(),
        );
        measured_total = Some(stats.median_ms);
        peak = Some(plan.memory().activation_bytes + plan.memory().scratch_bytes);
        match rapl::measure(Path::new(POWERCAP_ROOT), 200, &mut || {
            plan.run_inputs(&x).expect("sized input");
        }) {
            Ok(m) => energy_measured = Some(m),
            Err(e) => why_modelled = e.to_string(),
        }
    } else {
        why_modelled = format!("the {} profile describes other hardware", profile.name);
    }
    let em = model(&counts, &profile, b, &plan_exec);
    let table = match &args.table {
        Some(p) => Some(LatencyTable::load(p)?),
        None => None,
    };
    let sigs = signatures(&g)?;
    let mut predicted_total = 0.0;
    let latency_method;
    let mut predictions: HashMap<String, (f64, String)> = HashMap::new();
    match &table {
        Some(t) if profile.measured => {
            for s in &sigs {
                let (ms, how) = t.predict_layer(s, b, args.threads, &profile);
                predicted_total += ms;
                predictions.insert(s.node.clone(), (ms, how.to_string()));
            }
            latency_method = format!(
                "predicted from the latency table {} (per-layer lookup)",
                args.table
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        _ => {
            for le in &em.layers {
                predictions.insert(le.node.clone(), (le.latency_ms, "roofline".into()));
            }
            predicted_total = em.latency_ms;
            latency_method = format!(
                "modelled: roofline of the {} profile (compute at {:.2} GMAC/s, memory at each level's bandwidth)",
                profile.name,
                profile.macs_per_second(false) / 1e9
            );
        }
    }
    let layers: Vec<LayerRow> = counts
        .iter()
        .zip(&em.layers)
        .map(|(c, e)| {
            let ex = plan_exec
                .get(&c.node)
                .copied()
                .unwrap_or_else(|| secateur_cost::energy::assumed_execution(c));
            LayerRow {
                node: c.node.clone(),
                op: c.op.clone(),
                params: c.params,
                nonzero_params: c.nonzero_params,
                macs: c.macs,
                executed_macs: ex.macs,
                weight_bytes: ex.weight_bytes,
                compute_uj: e.compute_pj * 1e-6,
                memory_uj: e.memory_pj() * 1e-6,
                weight_level: e.weight_level.clone(),
                activation_level: e.activation_level.clone(),
                predicted_ms: predictions.get(&c.node).map(|p| p.0),
                prediction: predictions.get(&c.node).map(|p| p.1.clone()),
                measured_ms: measured_ms.get(&c.node).copied(),
            }
        })
        .collect();
    let (ok, detail) = fits(&counts, &profile, b);
    let method = match &energy_measured {
        Some(m) => m.method.clone(),
        None => format!(
            "modelled (energy model of the {} profile: compute + data movement); not measured because {why_modelled}",
            profile.name
        ),
    };
    let joules = energy_measured
        .as_ref()
        .map_or(em.joules_per_inference, |m| m.joules_per_run / b as f64);
    let report = ProfileReport {
        model: args.model.clone(),
        hardware: profile.name.clone(),
        batch: b,
        threads: args.threads,
        executed_macs: layers.iter().map(|l| l.executed_macs).sum(),
        layers,
        params: tot.params,
        nonzero_params: tot.nonzero_params,
        macs: tot.macs,
        bytes: tot.bytes.clone(),
        peak_activation_bytes: peak,
        fits: ok,
        fits_detail: detail,
        predicted_latency_ms: predicted_total,
        latency_method,
        measured_latency_ms: measured_total,
        energy: EnergyFigure {
            joules_per_inference: joules,
            compute_joules: em.compute_joules,
            memory_joules: em.memory_joules,
            method,
            measured: energy_measured,
            watts_at_fps: profile.static_watts + joules * args.fps,
            fps: args.fps,
        },
    };
    if args.json {
        super::emit_json(&report)?;
        return Ok(());
    }
    println!(
        "{} on {} (batch {}, {} thread(s))",
        report.model, report.hardware, b, args.threads
    );
    println!(
        "{:<20} {:<18} {:>9} {:>9} {:>11} {:>11} {:>9} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "layer",
        "op",
        "params",
        "nonzero",
        "MACs",
        "exec MACs",
        "bytes",
        "compute µJ",
        "memory µJ",
        "level",
        "pred ms",
        "meas ms"
    );
    for l in &report.layers {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        println!(
            "{:<20} {:<18} {:>9} {:>9} {:>11} {:>11} {:>9} {:>10.3} {:>10.3} {:>7} {:>10} {:>10}",
            l.node,
            l.op,
            l.params,
            l.nonzero_params,
            l.macs,
            l.executed_macs,
            l.weight_bytes,
            l.compute_uj,
            l.memory_uj,
            l.weight_level,
            f(l.predicted_ms),
            f(l.measured_ms)
        );
    }
    println!(
        "total: {} params ({} non-zero), {} MACs ({} executed), size f32 {} B dense / {} B sparse, int8 {} B / {} B",
        report.params,
        report.nonzero_params,
        report.macs,
        report.executed_macs,
        report.bytes["dense_f32"],
        report.bytes["sparse_f32"],
        report.bytes["dense_int8"],
        report.bytes["sparse_int8"]
    );
    if let Some(p) = report.peak_activation_bytes {
        println!("peak activation memory (plan buffers): {p} B");
    }
    println!("fits {}: {}", report.hardware, report.fits_detail);
    println!(
        "latency: {:.4} ms predicted ({}){}",
        report.predicted_latency_ms,
        report.latency_method,
        report
            .measured_latency_ms
            .map_or(String::new(), |m| format!("; measured {m:.4} ms"))
    );
    println!(
        "energy: {:.3e} J per inference ({:.3e} J compute + {:.3e} J memory), {:.3} W at {} FPS — {}",
        report.energy.joules_per_inference,
        report.energy.compute_joules,
        report.energy.memory_joules,
        report.energy.watts_at_fps,
        report.energy.fps,
        report.energy.method
    );
    Ok(())
}
