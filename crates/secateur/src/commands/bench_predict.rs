//! `secateur bench-predict`: builds a per-layer latency lookup table on this machine from zoo
//! models and pruned variants (unstructured sparsities and channel-pruned widths), then
//! predicts held-out variants — sparsities and widths the table never saw — and compares with
//! their measured latency. Reports the median error (the cost-model issue asks ≤ 15 %).

use anyhow::Result;
use secateur_cost::{HardwareProfile, LatencyTable};
use secateur_graph::Graph;
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_prune::structured::{
    ChannelPruneConfig, DependencyGraph, StructuredTarget, apply_plan, plan_channels,
};
use secateur_prune::weights::{
    Criterion, CriterionData, Granularity, Scope, WeightPruneConfig, apply_masks, compute_masks,
};
use secateur_runtime::harness::{Budget, measure};
use secateur_runtime::{ExecPlan, PlanConfig};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchPredictArgs {
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "lenet5-bn,mlp,resnet8,mobilenet-v2"
    )]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also save the table here (for `profile --table`).
    #[arg(long)]
    pub save_table: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Prediction {
    model: String,
    variant: String,
    predicted_ms: f64,
    measured_ms: f64,
    error: f64,
}

/// A variant: sparsity of every weight (per layer) and fraction of channels kept.
fn variant(base: &Graph, sparsity: f64, keep: f64) -> Result<Graph> {
    let mut g = base.clone();
    if keep < 1.0 {
        let deps = DependencyGraph::build(&g)?;
        let cfg = ChannelPruneConfig {
            target: StructuredTarget::Ratio(1.0 - keep),
            ..Default::default()
        };
        let plan = plan_channels(&g, &deps, &cfg, &HashMap::new())?;
        g = apply_plan(&g, &deps, &plan)?;
    }
    if sparsity > 0.0 {
        let cfg = WeightPruneConfig {
            criterion: Criterion::Magnitude { l2: false },
            granularity: Granularity::Unstructured,
            sparsity: Some(sparsity),
            scope: Scope::PerLayer,
            exclude: vec![],
            seed: 0,
            min_density: None,
        };
        let m = compute_masks(&g, &cfg, &CriterionData::default())?;
        apply_masks(&mut g, m)?;
    }
    Ok(g)
}

pub fn run(args: &BenchPredictArgs) -> Result<()> {
    let host = HardwareProfile::load("host")?;
    let mut table = LatencyTable {
        machine: "host".into(),
        entries: vec![],
    };
    let train: Vec<(f64, f64)> = [0.0, 0.5, 0.8, 0.95]
        .iter()
        .flat_map(|&sp| [1.0, 0.5].map(|k| (sp, k)))
        .collect();
    let held_out: [(f64, f64); 4] = [(0.7, 1.0), (0.9, 1.0), (0.0, 0.75), (0.9, 0.75)];
    let mut results = Vec::new();
    let mut bases = Vec::new();
    for m in &args.models {
        let model: ZooModel = m.parse()?;
        let g = zoo::build(model, &ZooConfig::default())?;
        for &(s, k) in &train {
            table.record_model(&variant(&g, s, k)?, args.batch, args.threads, 15)?;
        }
        bases.push((m.clone(), g));
    }
    for (name, g) in &bases {
        for &(s, k) in &held_out {
            let v = variant(g, s, k)?;
            let predicted = table.predict(&v, args.batch, args.threads, &host)?;
            let mut plan = ExecPlan::compile(&v, PlanConfig::new(args.batch, args.threads))?;
            let n: usize = plan.input_shape.iter().product();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 31) % 255) as f32 / 255.0 - 0.5)
                .collect();
            let measured = measure(
                &mut || {
                    plan.run(&x).expect("sized input");
                },
                Budget::default(),
            )
            .median_ms;
            results.push(Prediction {
                model: name.clone(),
                variant: format!("sparsity {s}, channels kept {k}"),
                predicted_ms: predicted,
                measured_ms: measured,
                error: (predicted - measured).abs() / measured,
            });
        }
    }
    let plans = table
        .entries
        .iter()
        .filter(|e| e.sig.kind == secateur_cost::latency::WHOLE_PLAN)
        .count();
    let mut errs: Vec<f64> = results.iter().map(|r| r.error).collect();
    errs.sort_by(f64::total_cmp);
    let median = errs.get(errs.len() / 2).copied().unwrap_or(f64::NAN);
    if let Some(p) = &args.save_table {
        table.save(p)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "median_error": median, "entries": table.entries.len(), "predictions": results })
        );
        return Ok(());
    }
    println!(
        "{:<14} {:<34} {:>12} {:>12} {:>8}",
        "model", "held-out variant", "predicted ms", "measured ms", "error"
    );
    for r in &results {
        println!(
            "{:<14} {:<34} {:>12.4} {:>12.4} {:>7.1}%",
            r.model,
            r.variant,
            r.predicted_ms,
            r.measured_ms,
            r.error * 100.0
        );
    }
    println!(
        "median error {:.1}% over {} held-out variants (table of {} measured layers and {} whole plans, batch {}, {} thread(s))",
        median * 100.0,
        results.len(),
        table.entries.len() - plans,
        plans,
        args.batch,
        args.threads
    );
    Ok(())
}
