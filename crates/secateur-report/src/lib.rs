//! Reports of secateur searches: a serialisable model ([`Report`], written as `front.json`) and a
//! self-contained HTML page with SVG plots (`report.html`).

pub mod html;
pub mod model;
pub mod plots;

pub use model::{Objective, Point, Report, SensitivityCurve, Verification};

/// The two files of a report directory: `front.json` and `report.html`.
pub fn render_files(report: &Report) -> serde_json::Result<[(&'static str, String); 2]> {
    Ok([
        ("front.json", serde_json::to_string_pretty(report)?),
        ("report.html", html::render(report)),
    ])
}
