//! Assembling the report of a run from what the stages produced: objectives with their units
//! and the method behind each figure, every search and baseline evaluation, the final models
//! with their verification, hypervolumes, sensitivity curves, constraints and notes.

use super::config::OptimizeConfig;
use super::costing::Costing;
use super::finals::point_id;
use super::objectives::ObjectiveKind;
use super::store::{Evaluation, FinalRecord};
use secateur_report::{Objective, Point, Report, SensitivityCurve, Verification};
use std::collections::BTreeMap;

/// A short description of a candidate relative to the dense model.
pub fn label(
    values: &BTreeMap<String, f64>,
    description: &BTreeMap<String, String>,
    dense: &BTreeMap<String, f64>,
) -> String {
    if let Some(members) = description.get("ensemble") {
        return format!("ensemble {members}");
    }
    let pct = |k: &str| {
        100.0 * values.get(k).copied().unwrap_or(0.0)
            / dense.get(k).copied().unwrap_or(1.0).max(1.0)
    };
    let gran = description.get("granularity").map_or("", String::as_str);
    let sparse = values.get("nonzero_params").copied().unwrap_or(0.0)
        < values.get("params").copied().unwrap_or(0.0) * 0.98;
    let mut s = format!(
        "{:.0}% MACs, {:.0}% weights",
        pct("sparse_macs"),
        pct("nonzero_params")
    );
    if sparse {
        s += &format!(" ({gran})");
    }
    for word in ["heads", "neurons"] {
        if let Some(kept) = description.get(word) {
            s += &format!(", {word} {kept}");
        }
    }
    if let Some(p @ ("int8" | "bf16")) = description.get("precision").map(String::as_str) {
        s += &format!(", {p}");
    }
    let removed: Vec<&str> = description
        .iter()
        .filter(|(k, v)| k.starts_with("remove:") && *v == "yes")
        .map(|(k, _)| &k[7..])
        .collect();
    if !removed.is_empty() {
        s += &format!(", without {}", removed.join(", "));
    }
    s
}

/// The objectives of the report with their methods; `accuracy` is the task's name and method
/// of its accuracy objective.
pub fn objectives(
    cfg: &OptimizeConfig,
    costing: &Costing,
    accuracy: (String, String),
) -> Vec<Objective> {
    cfg.objectives
        .iter()
        .map(|k| Objective {
            key: k.key().into(),
            name: match k {
                ObjectiveKind::Accuracy => accuracy.0.clone(),
                _ => k.name().into(),
            },
            unit: k.unit().into(),
            maximize: k.maximize(),
            method: match k {
                ObjectiveKind::Accuracy => accuracy.1.clone(),
                ObjectiveKind::Latency => format!("final models: {}; search: {}", costing.latency_method(true), costing.latency_method(false)),
                ObjectiveKind::Energy => format!("{} per inference at batch {}", costing.energy_method(), cfg.batch),
                ObjectiveKind::Bytes => "smallest deployable storage of all weights (sparse formats with their indices where smaller, int8 with per-channel scales when quantized); the exported .onnx file of each final model, whose size is listed as file_kib, stores weights below one-third density as sparse constants (value and int64 index, 12 bytes per kept weight) and int8 weights as INT8".into(),
                ObjectiveKind::Memory => format!("activation buffers of secateur's runtime after liveness-based reuse, batch {}", cfg.batch),
            },
        })
        .collect()
}

/// A search or baseline evaluation as a report point.
pub fn search_point(
    e: &Evaluation,
    generation: usize,
    stage: &str,
    on_search_front: bool,
    dense: &BTreeMap<String, f64>,
) -> Point {
    Point {
        id: point_id(if stage == "baseline" { "b-" } else { "s-" }, &e.key),
        label: label(&e.values, &e.description, dense),
        genome: e.description.clone(),
        values: e.values.clone(),
        on_front: false,
        knee: false,
        members: vec![],
        model_path: None,
        layer_keep: e.layer_keep.clone(),
        verification: None,
        generation,
        stage: stage.into(),
        on_search_front,
    }
}

/// A final model as a report point.
pub fn final_point(
    r: &FinalRecord,
    on_front: bool,
    knee: bool,
    verification: Option<Verification>,
    dense: &BTreeMap<String, f64>,
) -> Point {
    Point {
        id: r.id.clone(),
        label: label(&r.values, &r.description, dense),
        genome: r.description.clone(),
        values: r.values.clone(),
        on_front,
        knee,
        members: r.members.clone(),
        model_path: Some(r.model_path.clone()),
        layer_keep: r.layer_keep.clone(),
        verification,
        generation: 0,
        stage: if r.members.is_empty() {
            "final".into()
        } else {
            "ensemble".into()
        },
        on_search_front: false,
    }
}

/// Settings shown in the report.
pub fn settings(cfg: &OptimizeConfig, workers: usize) -> Vec<(String, String)> {
    vec![
        (
            "objectives".into(),
            cfg.objectives
                .iter()
                .map(|o| o.key())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("latency hardware".into(), cfg.latency_hardware.clone()),
        ("energy hardware".into(), cfg.energy_hardware.clone()),
        ("batch".into(), cfg.batch.to_string()),
        (
            "population × generations".into(),
            format!(
                "{} × {} (+ initial population)",
                cfg.population, cfg.generations
            ),
        ),
        ("seed".into(), cfg.seed.to_string()),
        (
            "search fine-tune".into(),
            format!(
                "{} epoch(s) on {} images, lr {} ({}, {})",
                cfg.search_epochs,
                cfg.search_samples,
                cfg.finetune.lr,
                cfg.finetune.optimizer,
                cfg.finetune.lr_schedule
            ),
        ),
        (
            "final fine-tune".into(),
            format!(
                "{} epoch(s) on the training split{}",
                cfg.final_epochs,
                if cfg.finetune.distill {
                    ", distilled from the dense model"
                } else {
                    ""
                }
            ),
        ),
        ("int8 in the space".into(), cfg.int8.to_string()),
        (
            "bf16 in the space".into(),
            if cfg.space_shape().bf16 {
                "true".into()
            } else if cfg.bf16 {
                "false (latency not measured here, or no AVX-512 BF16 on this CPU)".into()
            } else {
                "false".into()
            },
        ),
        (
            "ensembles".into(),
            if cfg.ensemble_size >= 2 {
                format!(
                    "up to {} members from the {} most accurate",
                    cfg.ensemble_size, cfg.ensemble_pool
                )
            } else {
                "no".into()
            },
        ),
        (
            "sensitivity threshold".into(),
            format!("accuracy drop {} before fine-tuning", cfg.sensitivity_drop),
        ),
        (
            "accuracy floor".into(),
            if cfg.max_accuracy_drop < 1.0 {
                format!(
                    "at most {} below the dense model (accuracy constraint)",
                    cfg.max_accuracy_drop
                )
            } else {
                "none".into()
            },
        ),
        (
            "offspring screening".into(),
            if cfg.screen_pool > 1 {
                format!(
                    "{}× the population bred per generation; cheap objectives computed, accuracy predicted (nearest evaluated models), the {} adding most predicted hypervolume trained",
                    cfg.screen_pool, cfg.population
                )
            } else {
                "none (every child trained)".into()
            },
        ),
        ("workers".into(), workers.to_string()),
    ]
}

/// Assembles the report.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    title: String,
    model: String,
    data: String,
    cfg: &OptimizeConfig,
    objectives: Vec<Objective>,
    points: Vec<Point>,
    baseline: Vec<Point>,
    hv: (Vec<(usize, f64)>, f64, f64, Vec<f64>),
    sensitivity: Vec<SensitivityCurve>,
    constraints: &[super::objectives::Constraint],
    notes: Vec<String>,
    workers: usize,
    dense: BTreeMap<String, f64>,
) -> Report {
    Report {
        title,
        model,
        data,
        created: crate::optimize::timestamp(),
        settings: settings(cfg, workers),
        objectives,
        constraints: constraints.iter().map(|c| c.text.clone()).collect(),
        points,
        baseline,
        hypervolume_history: hv.0,
        front_hypervolume: hv.1,
        baseline_hypervolume: hv.2,
        hypervolume_reference: hv.3,
        sensitivity,
        notes,
        dense: Some(dense),
    }
}
