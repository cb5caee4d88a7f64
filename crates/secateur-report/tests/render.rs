//! The report page is self-contained, escapes what comes from users (model and layer names,
//! labels), draws one plot per objective pair and view, lists every front member with its
//! verification, and `front.json` round-trips to the same report.

use secateur_report::{Objective, Point, Report, SensitivityCurve, Verification};
use std::collections::BTreeMap;

fn objective(key: &str, name: &str, unit: &str, maximize: bool) -> Objective {
    Objective {
        key: key.into(),
        name: name.into(),
        unit: unit.into(),
        method: format!("{name}: test method"),
        maximize,
    }
}

fn point(id: &str, stage: &str, acc: f64, lat: f64, on_front: bool) -> Point {
    Point {
        id: id.into(),
        label: format!("{id} <keep & prune>"),
        genome: BTreeMap::from([("level".to_string(), format!("{lat}"))]),
        values: BTreeMap::from([
            ("accuracy".to_string(), acc),
            ("latency_ms".to_string(), lat),
        ]),
        on_front,
        knee: false,
        members: vec![],
        model_path: on_front.then(|| format!("models/{id}.onnx")),
        layer_keep: vec![("conv<1>".into(), 0.5 + lat / 20.0), ("fc1".into(), 0.25)],
        verification: on_front.then(|| Verification {
            checked_accuracy: Some(acc),
            engine: "ONNX Runtime".to_string(),
            remeasured_latency_ms: Some(lat * 1.01),
            note: "within tolerance".into(),
        }),
        generation: 0,
        stage: stage.into(),
        on_search_front: on_front,
    }
}

fn report() -> Report {
    let mut points: Vec<Point> = (0..12)
        .map(|i| {
            let lat = 1.0 + i as f64 * 0.4;
            point(
                &format!("s-{i:02}"),
                "search",
                0.80 + 0.01 * i as f64,
                lat,
                i % 3 == 0,
            )
        })
        .collect();
    for (i, (acc, lat)) in [(0.81, 1.1), (0.85, 2.0), (0.88, 4.0)]
        .into_iter()
        .enumerate()
    {
        points.push(point(&format!("f-{i}"), "final", acc, lat, true));
    }
    points[13].knee = true;
    let baseline = (0..6)
        .map(|i| {
            point(
                &format!("b-{i}"),
                "baseline",
                0.7 + 0.03 * i as f64,
                1.0 + i as f64,
                false,
            )
        })
        .collect();
    Report {
        title: "front of <model>".into(),
        model: "models/<evil>&.onnx".into(),
        data: "fashion-mnist-mini".into(),
        created: "2026-11-30T00:00:00Z".into(),
        settings: vec![("population".into(), "16".into())],
        objectives: vec![
            objective("accuracy", "accuracy", "fraction", true),
            objective("latency_ms", "latency", "ms", false),
        ],
        constraints: vec!["latency<=5ms".into()],
        points,
        baseline,
        hypervolume_history: vec![(0, 0.5), (1, 0.7), (2, 0.8)],
        front_hypervolume: 0.8,
        baseline_hypervolume: 0.75,
        hypervolume_reference: vec![1.1, 1.1],
        sensitivity: vec![SensitivityCurve {
            layer: "conv<1>".into(),
            kind: "channels".into(),
            points: vec![(0.25, 0.01), (0.5, 0.05), (0.75, 0.2)],
        }],
        notes: vec!["a note with <b>markup</b>".into()],
        dense: Some(BTreeMap::from([
            ("accuracy".to_string(), 0.9123),
            ("latency_ms".to_string(), 9.5),
        ])),
    }
}

#[test]
fn the_dense_model_is_the_reference_of_the_table_and_the_plots() {
    let r = report();
    let html = secateur_report::html::render(&r);
    // the first row of every table of models (front and baseline) is the dense model
    let tables: Vec<&str> = html
        .split("<table>")
        .filter(|t| t.contains("<th>configuration</th>"))
        .collect();
    assert_eq!(tables.len(), 2);
    for t in tables {
        let body = t.split("<tbody>").nth(1).unwrap();
        let first_row = body.split("</tr>").next().unwrap();
        assert!(first_row.contains("dense model (reference)"), "{first_row}");
    }
    assert!(html.contains("0.9123") && html.contains("9.500"));
    let svg = secateur_report::plots::scatter(
        &r,
        "latency_ms",
        "accuracy",
        secateur_report::plots::View::Final,
    )
    .unwrap();
    assert!(
        svg.contains("dense model (reference)"),
        "legend entry in the plot"
    );
    // without a dense reference (a report written before it existed) nothing changes
    let mut old = r.clone();
    old.dense = None;
    assert!(!secateur_report::html::render(&old).contains("dense model"));
}

#[test]
fn page_is_self_contained_and_escapes_user_text() {
    let html = secateur_report::html::render(&report());
    assert!(html.starts_with("<!DOCTYPE html>") || html.starts_with("<!doctype html>"));
    for forbidden in [
        "<script",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(forbidden), "page contains {forbidden}");
    }
    for raw in [
        "<model>",
        "<evil>",
        "<keep & prune>",
        "conv<1>",
        "<b>markup</b>",
    ] {
        assert!(!html.contains(raw), "unescaped user text {raw}");
    }
    assert!(html.contains("&lt;evil&gt;&amp;.onnx"));
}

#[test]
fn page_has_every_plot_and_every_front_member() {
    let r = report();
    let html = secateur_report::html::render(&r);
    // accuracy vs latency for the final models and for the search, hypervolume, keep ratios,
    // channel sensitivity (the weight-sensitivity plot is empty here and left out)
    assert!(
        html.matches("<svg").count() >= 5,
        "{} plots",
        html.matches("<svg").count()
    );
    for p in r.points.iter().filter(|p| p.is_final() && p.on_front) {
        let path = p.model_path.as_ref().unwrap();
        assert!(
            html.contains(path.as_str()),
            "front member {} missing",
            p.id
        );
    }
    assert!(html.contains("ONNX Runtime accuracy 0.8800"));
    assert!(html.contains("within tolerance"));
}

#[test]
fn verification_names_the_engine_that_checked_the_file() {
    let mut r = report();
    for p in &mut r.points {
        if let Some(v) = p.verification.as_mut() {
            v.engine = "secateur runtime (ONNX Runtime not available)".into();
        }
    }
    let html = secateur_report::html::render(&r);
    assert!(html.contains("secateur runtime accuracy 0.8800"));
    assert!(!html.contains("ONNX Runtime accuracy"));
    // a report written before the engine was recorded still reads
    let old = r#"{"onnx_runtime_accuracy": 0.9, "remeasured_latency_ms": null, "note": ""}"#;
    let v: Verification = serde_json::from_str(old).unwrap();
    assert_eq!(v.checked_accuracy, Some(0.9));
    assert_eq!(v.engine, "ONNX Runtime");
}

#[test]
fn keep_ratio_legend_names_every_member_below_the_chart() {
    let r = report();
    let svg = secateur_report::plots::keep_ratios(&r).expect("keep-ratio plot");
    let members: Vec<&Point> = r
        .front()
        .filter(|p| !p.layer_keep.is_empty())
        .take(8)
        .collect();
    assert!(!members.is_empty());
    for p in &members {
        let escaped = p
            .label
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(svg.contains(&escaped), "legend lacks {}", p.label);
    }
    // the legend rows extend the picture below the plot area instead of covering it
    let height: u32 = svg
        .split("height=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("svg height");
    assert!(height >= 360 + 18 * members.len() as u32, "height {height}");
}

#[test]
fn front_json_round_trips() {
    let r = report();
    let [(json_name, json), (html_name, _)] = secateur_report::render_files(&r).unwrap();
    assert_eq!((json_name, html_name), ("front.json", "report.html"));
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}
