//! SVG plots of a report, drawn with plotters into strings: accuracy against each cost
//! objective (all evaluated points, the baseline, the front and its knee), hypervolume per
//! generation against the baseline's, per-layer keep ratios of front members, and
//! sensitivity curves.

use crate::model::{Point, Report};
use plotters::prelude::*;

const W: u32 = 520;
const H: u32 = 360;
const FRONT: RGBColor = RGBColor(214, 39, 40);
const BASE: RGBColor = RGBColor(31, 119, 180);
const OTHER: RGBColor = RGBColor(170, 170, 170);
const KNEE: RGBColor = RGBColor(44, 160, 44);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

fn range(vals: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let v: Vec<f64> = vals
        .filter(|x| x.is_finite() && (!log || *x > 0.0))
        .collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if log {
        (lo / 1.3, hi * 1.3)
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-9);
        (lo - pad, hi + pad)
    }
}

/// Which points a trade-off plot shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Re-trained front members and ensembles, with the final front.
    Final,
    /// Everything the search evaluated, its front, and the uniform-ratio baseline.
    Search,
}

/// Accuracy (y) against an objective (x).
pub fn scatter(report: &Report, x_key: &str, y_key: &str, view: View) -> DrawResult<String> {
    let (Some(xo), Some(yo)) = (report.objective(x_key), report.objective(y_key)) else {
        return Ok(String::new());
    };
    let all: Vec<&Point> = match view {
        View::Final => report.points.iter().filter(|p| p.is_final()).collect(),
        View::Search => report.search_points().chain(&report.baseline).collect(),
    };
    let on_front = |p: &Point| {
        if view == View::Final {
            p.on_front
        } else {
            p.on_search_front
        }
    };
    let get = |p: &Point, k: &str| p.values.get(k).copied().unwrap_or(f64::NAN);
    // the axes span the dense reference too
    let dense_at = |k: &str| report.dense.as_ref().and_then(|d| d.get(k).copied());
    let values = |k: &str| {
        all.iter()
            .map(|p| get(p, k))
            .chain(dense_at(k))
            .collect::<Vec<_>>()
    };
    let log = {
        let (lo, hi) = range(values(x_key).into_iter(), false);
        lo > 0.0 && hi / lo.max(1e-12) > 20.0
    };
    let (x0, x1) = range(values(x_key).into_iter(), log);
    let (y0, y1) = range(values(y_key).into_iter(), false);
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let caption = match view {
            View::Final => format!("{} vs {} (final models)", yo.name, xo.name),
            View::Search => format!("search: {} vs {}", yo.name, xo.name),
        };
        let mut b = ChartBuilder::on(&root);
        b.caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56);
        let xdesc = format!(
            "{} ({}){}",
            xo.name,
            xo.unit,
            if log { ", log scale" } else { "" }
        );
        let ydesc = format!("{} ({})", yo.name, yo.unit);
        let pts = |f: &dyn Fn(&Point) -> bool| -> Vec<(f64, f64)> {
            all.iter()
                .filter(|p| f(p))
                .map(|p| (get(p, x_key), get(p, y_key)))
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *x > 0.0))
                .collect()
        };
        let in_baseline = |p: &Point| p.stage == "baseline";
        let others = pts(&|p| !on_front(p) && !in_baseline(p));
        let base = pts(&|p| in_baseline(p));
        let mut front = pts(&|p| on_front(p) && !in_baseline(p));
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        let knee = pts(&|p| view == View::Final && p.knee);
        let dense: Vec<(f64, f64)> = report
            .dense
            .as_ref()
            .map(|d| {
                let at = |k: &str| d.get(k).copied().unwrap_or(f64::NAN);
                (at(x_key), at(y_key))
            })
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log || *x > 0.0))
            .into_iter()
            .collect();
        // the staircase through the front members that are also non-dominated in this plane
        // (the front lives in more dimensions, so not all of them are)
        let mut stair: Vec<(f64, f64)> = Vec::new();
        for &(x, y) in &front {
            if !front
                .iter()
                .any(|&(x2, y2)| x2 <= x && y2 >= y && (x2 < x || y2 > y))
            {
                if let Some(&(_, py)) = stair.last() {
                    stair.push((x, py));
                }
                stair.push((x, y));
            }
        }
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                let mut mesh = chart.configure_mesh();
                mesh.x_desc(xdesc.clone())
                    .y_desc(ydesc.clone())
                    .light_line_style(WHITE.mix(0.0));
                if log {
                    mesh.x_label_formatter(&log_tick_label);
                }
                mesh.draw()?;
                chart
                    .draw_series(
                        others
                            .iter()
                            .map(|&(x, y)| Circle::new((x, y), 3, OTHER.filled())),
                    )?
                    .label("evaluated")
                    .legend(|(x, y)| Circle::new((x, y), 3, OTHER.filled()));
                if !base.is_empty() {
                    chart
                        .draw_series(
                            base.iter()
                                .map(|&(x, y)| TriangleMarker::new((x, y), 5, BASE.filled())),
                        )?
                        .label("uniform-ratio baseline")
                        .legend(|(x, y)| TriangleMarker::new((x, y), 5, BASE.filled()));
                }
                chart.draw_series(LineSeries::new(stair.clone(), FRONT.stroke_width(1)))?;
                chart
                    .draw_series(
                        front
                            .iter()
                            .map(|&(x, y)| Circle::new((x, y), 4, FRONT.filled())),
                    )?
                    .label("Pareto front")
                    .legend(|(x, y)| Circle::new((x, y), 4, FRONT.filled()));
                if !knee.is_empty() {
                    chart
                        .draw_series(
                            knee.iter()
                                .map(|&(x, y)| Circle::new((x, y), 8, KNEE.stroke_width(2))),
                        )?
                        .label("knee")
                        .legend(|(x, y)| Circle::new((x, y), 6, KNEE.stroke_width(2)));
                }
                if !dense.is_empty() {
                    chart
                        .draw_series(
                            dense
                                .iter()
                                .map(|&(x, y)| Cross::new((x, y), 6, BLACK.stroke_width(2))),
                        )?
                        .label("dense model (reference)")
                        .legend(|(x, y)| Cross::new((x, y), 5, BLACK.stroke_width(2)));
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.3))
                    .position(SeriesLabelPosition::LowerRight)
                    .draw()?;
            }};
        }
        if log {
            draw!(b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?);
        } else {
            draw!(b.build_cartesian_2d(x0..x1, y0..y1)?);
        }
        root.present()?;
    }
    Ok(s)
}

/// Label of a tick on a logarithmic axis: only 1, 2 and 5 times a power of ten are written
/// (a decade's nine ticks would run into each other), with the digits the decade needs.
fn log_tick_label(v: &f64) -> String {
    if !(v.is_finite() && *v > 0.0) {
        return String::new();
    }
    let decade = v.log10().floor();
    let mantissa = v / 10f64.powf(decade);
    if [1.0, 2.0, 5.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 0.01 * m)
    {
        format!("{:.*}", (-decade).max(0.0) as usize, v)
    } else {
        String::new()
    }
}

/// Hypervolume per generation, with the baseline's as a horizontal line.
pub fn hypervolume(report: &Report) -> DrawResult<String> {
    let mut s = String::new();
    if report.hypervolume_history.is_empty() {
        return Ok(s);
    }
    {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let gmax = report
            .hypervolume_history
            .iter()
            .map(|h| h.0)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let (y0, y1) = range(
            report
                .hypervolume_history
                .iter()
                .map(|h| h.1)
                .chain([report.baseline_hypervolume]),
            false,
        );
        let mut chart = ChartBuilder::on(&root)
            .caption("hypervolume per generation", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..gmax, y0.max(0.0)..y1)?;
        chart
            .configure_mesh()
            .x_desc("generation")
            .y_desc("hypervolume")
            .draw()?;
        let line: Vec<(f64, f64)> = report
            .hypervolume_history
            .iter()
            .map(|&(g, h)| (g as f64, h))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), FRONT.stroke_width(2)))?
            .label("search")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], FRONT.stroke_width(2)));
        chart.draw_series(
            line.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, FRONT.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(
                vec![
                    (0.0, report.baseline_hypervolume),
                    (gmax, report.baseline_hypervolume),
                ],
                BASE.stroke_width(2),
            ))?
            .label("uniform-ratio baseline")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BASE.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
    }
    Ok(s)
}

/// Per-layer fraction kept for up to eight front members.
pub fn keep_ratios(report: &Report) -> DrawResult<String> {
    let sel: Vec<&Point> = report
        .front()
        .filter(|p| !p.layer_keep.is_empty())
        .take(8)
        .collect();
    let mut s = String::new();
    let Some(first) = sel.first() else {
        return Ok(s);
    };
    let layers: Vec<String> = first.layer_keep.iter().map(|l| l.0.clone()).collect();
    {
        // the legend goes below the chart, one row per member, so it never hides the lines
        const ROW: u32 = 18;
        let legend_h = ROW * sel.len() as u32 + 12;
        let root = SVGBackend::with_string(&mut s, (W, H + legend_h)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot_area, legend_area) = root.split_vertically(H);
        let n = layers.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(
                "fraction of each layer kept (front members)",
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5f64..(n - 0.5), 0f64..1.05f64)?;
        let names = layers.clone();
        chart
            .configure_mesh()
            .x_labels(layers.len())
            .x_label_formatter(&|x| {
                let i = x.round() as isize;
                if i >= 0 && (i as usize) < names.len() && (x - x.round()).abs() < 1e-6 {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("kept")
            .draw()?;
        for (k, p) in sel.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let line: Vec<(f64, f64)> = p
                .layer_keep
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, l.1))
                .collect();
            chart.draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?;
            chart.draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, c.filled())),
            )?;
            let y = (ROW * k as u32 + ROW / 2 + 4) as i32;
            legend_area.draw(&PathElement::new(vec![(60, y), (84, y)], c.stroke_width(2)))?;
            legend_area.draw(&Circle::new((72, y), 3, c.filled()))?;
            legend_area.draw(&Text::new(p.label.clone(), (92, y - 6), ("sans-serif", 12)))?;
        }
        root.present()?;
    }
    Ok(s)
}

/// Sensitivity curves: accuracy drop against the fraction removed, one line per layer.
pub fn sensitivity(report: &Report, kind: &str) -> DrawResult<String> {
    let curves: Vec<_> = report
        .sensitivity
        .iter()
        .filter(|c| c.kind == kind && !c.points.is_empty())
        .collect();
    let mut s = String::new();
    if curves.is_empty() {
        return Ok(s);
    }
    {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let (y0, y1) = range(
            curves
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.1))
                .chain([0.0]),
            false,
        );
        let title = format!("sensitivity: accuracy drop when pruning {kind}");
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(format!("fraction of {kind} removed"))
            .y_desc("accuracy drop")
            .draw()?;
        for (k, cur) in curves.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(cur.points.clone(), c.stroke_width(2)))?
                .label(cur.layer.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::log_tick_label;

    #[test]
    fn log_ticks_label_one_two_and_five_per_decade() {
        let labels: Vec<String> = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 1.0, 3.0, 5.0, 20.0]
            .iter()
            .map(log_tick_label)
            .collect();
        assert_eq!(
            labels,
            [
                "0.01", "0.02", "", "0.05", "", "0.1", "0.2", "1", "", "5", "20"
            ]
        );
        assert_eq!(log_tick_label(&0.0), "");
    }
}
