//! The self-contained HTML page of a report: summary, plots (inline SVG), the front as a table
//! with units, the method behind every objective, constraints, the baseline and notes. No
//! scripts, fonts or other external resources.

use crate::model::{Point, Report};
use crate::plots;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

fn points_table(r: &Report, pts: &[&Point], with_models: bool) -> String {
    let mut h = String::from("<table><thead><tr><th>point</th>");
    for o in &r.objectives {
        h += &format!("<th>{} ({})</th>", esc(&o.name), esc(&o.unit));
    }
    h += "<th>configuration</th>";
    if with_models {
        h += "<th>model</th><th>verification</th>";
    }
    h += "</tr></thead><tbody>";
    if let Some(d) = &r.dense {
        h += "<tr class=\"dense\"><td>dense model (reference)</td>";
        for o in &r.objectives {
            h += &format!(
                "<td class=\"num\">{}</td>",
                fmt(d.get(&o.key).copied().unwrap_or(f64::NAN))
            );
        }
        h += "<td class=\"cfg\">unpruned, f32</td>";
        if with_models {
            h += "<td>–</td><td>–</td>";
        }
        h += "</tr>";
    }
    for p in pts {
        let cls = if p.knee { " class=\"knee\"" } else { "" };
        h += &format!(
            "<tr{cls}><td>{}{}</td>",
            esc(&p.label),
            if p.knee { " (knee)" } else { "" }
        );
        for o in &r.objectives {
            h += &format!(
                "<td class=\"num\">{}</td>",
                fmt(p.values.get(&o.key).copied().unwrap_or(f64::NAN))
            );
        }
        let cfg: Vec<String> = p
            .genome
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
            .collect();
        h += &format!("<td class=\"cfg\">{}</td>", cfg.join(" "));
        if with_models {
            h += &format!(
                "<td>{}</td>",
                p.model_path.as_ref().map_or("–".to_string(), |m| format!(
                    "<a href=\"{0}\">{0}</a>",
                    esc(m)
                ))
            );
            h += &format!(
                "<td>{}</td>",
                p.verification.as_ref().map_or("–".to_string(), |v| format!(
                    "{}{}{}",
                    v.checked_accuracy.map_or(String::new(), |a| format!(
                        "{} accuracy {a:.4}; ",
                        short_engine(&v.engine)
                    )),
                    v.remeasured_latency_ms
                        .map_or(String::new(), |l| format!("re-measured {l:.4} ms; ")),
                    esc(&v.note)
                ))
            );
        }
        h += "</tr>";
    }
    h + "</tbody></table>"
}

/// The engine's name without the explanation in parentheses (the note carries it).
fn short_engine(engine: &str) -> String {
    esc(engine.split(" (").next().unwrap_or(engine))
}

/// Renders the report page.
pub fn render(r: &Report) -> String {
    let mut front: Vec<&Point> = r.front().collect();
    let acc_key = r
        .objectives
        .iter()
        .find(|o| o.maximize)
        .map(|o| o.key.clone())
        .unwrap_or_default();
    front.sort_by(|a, b| {
        b.values
            .get(&acc_key)
            .unwrap_or(&0.0)
            .total_cmp(a.values.get(&acc_key).unwrap_or(&0.0))
    });
    let knee = front.iter().find(|p| p.knee);
    let mut body = String::new();
    body += &format!(
        "<h1>{}</h1><p class=\"meta\">model <b>{}</b> · data <b>{}</b> · {}</p>",
        esc(&r.title),
        esc(&r.model),
        esc(&r.data),
        esc(&r.created)
    );
    body += "<div class=\"cards\">";
    body += &format!(
        "<div class=\"card\"><div class=\"big\">{}</div>Pareto-optimal models</div>",
        front.len()
    );
    body += &format!(
        "<div class=\"card\"><div class=\"big\">{}</div>models evaluated by the search (+{} baseline)</div>",
        r.search_points().count(),
        r.baseline.len()
    );
    let ratio = if r.baseline_hypervolume > 0.0 {
        r.front_hypervolume / r.baseline_hypervolume
    } else {
        f64::NAN
    };
    body += &format!(
        "<div class=\"card\"><div class=\"big\">{}</div>hypervolume vs uniform-ratio baseline ({} vs {})</div>",
        if ratio.is_finite() {
            format!("{ratio:.2}×")
        } else {
            "–".into()
        },
        fmt(r.front_hypervolume),
        fmt(r.baseline_hypervolume)
    );
    if let Some(k) = knee {
        let vals: Vec<String> = r
            .objectives
            .iter()
            .map(|o| {
                format!(
                    "{} {} {}",
                    esc(&o.name),
                    fmt(k.values.get(&o.key).copied().unwrap_or(f64::NAN)),
                    esc(&o.unit)
                )
            })
            .collect();
        body += &format!(
            "<div class=\"card wide\"><div class=\"big\">knee: {}</div>{}</div>",
            esc(&k.label),
            vals.join(" · ")
        );
    }
    body += "</div>";
    body += "<h2>Trade-offs of the final models</h2><p>Front members re-trained with the full fine-tuning budget, accuracy on the test split; red: the Pareto front, green ring: the knee.</p><div class=\"plots\">";
    for o in r.objectives.iter().filter(|o| !o.maximize) {
        if let Ok(svg) = plots::scatter(r, &o.key, &acc_key, plots::View::Final) {
            body += &format!("<figure>{svg}</figure>");
        }
    }
    body += "</div><h2>Search</h2><p>Every candidate the search evaluated (accuracy estimated on a held-out validation split after a short fine-tune), the search's front, and the uniform-ratio baseline evaluated the same way.</p><div class=\"plots\">";
    for o in r.objectives.iter().filter(|o| !o.maximize) {
        if let Ok(svg) = plots::scatter(r, &o.key, &acc_key, plots::View::Search) {
            body += &format!("<figure>{svg}</figure>");
        }
    }
    for svg in [
        plots::hypervolume(r),
        plots::keep_ratios(r),
        plots::sensitivity(r, "channels"),
        plots::sensitivity(r, "weights"),
    ]
    .into_iter()
    .flatten()
    {
        if !svg.is_empty() {
            body += &format!("<figure>{svg}</figure>");
        }
    }
    body += "</div>";
    body += "<h2>Pareto front</h2>";
    body += &points_table(r, &front, true);
    body += "<h2>Objectives and how they were obtained</h2><table><thead><tr><th>objective</th><th>unit</th><th>goal</th><th>method</th></tr></thead><tbody>";
    for o in &r.objectives {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&o.name),
            esc(&o.unit),
            if o.maximize { "maximise" } else { "minimise" },
            esc(&o.method)
        );
    }
    body += "</tbody></table>";
    if !r.constraints.is_empty() {
        body += "<h2>Constraints</h2><ul>";
        for c in &r.constraints {
            body += &format!("<li>{}</li>", esc(c));
        }
        body += "</ul>";
    }
    if !r.baseline.is_empty() {
        body += "<h2>Uniform-ratio baseline</h2><p>The same pruning methods with one global ratio swept over the same number of evaluations.</p>";
        let base: Vec<&Point> = r.baseline.iter().collect();
        body += &points_table(r, &base, false);
    }
    body += "<h2>Settings</h2><table><tbody>";
    for (k, v) in &r.settings {
        body += &format!("<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
    body += "</tbody></table>";
    if !r.notes.is_empty() {
        body += "<h2>Notes</h2><ul>";
        for n in &r.notes {
            body += &format!("<li>{}</li>", esc(n));
        }
        body += "</ul>";
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{}</style></head><body>{}</body></html>\n",
        esc(&r.title),
        STYLE,
        body
    )
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1120px;color:#222;padding:0 16px}\
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}.meta{color:#666;margin-top:0}\
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}.card{background:#f6f7f9;border-radius:8px;padding:12px 16px;min-width:160px;color:#555}\
.card.wide{flex:1 1 100%}.big{font-size:24px;font-weight:600;color:#222}\
.plots{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;border:1px solid #eee;border-radius:6px;padding:4px;background:#fff}\
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}td.cfg{font-family:ui-monospace,Menlo,monospace;font-size:11px;color:#555}\
tr.knee{background:#eefaf0}
tr.dense{background:#f3f3f3;font-style:italic}";
