//! `--chart FILE.svg`: utilisation and revenue over time, one line per mechanism, drawn with
//! plotters' SVG backend (text is left to the SVG viewer's fonts, so no font stack is built).

use super::ledger::HourFigures;
use super::report::{ratio, Report};
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

/// Chart size in pixels.
const CHART_SIZE_PX: (u32, u32) = (1200, 800);

/// Hours averaged into one point, so a week's lines stay readable.
const SMOOTHING_HOURS: usize = 3;

/// One colour per mechanism, in report order.
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
];

/// Draws the report's hour-by-hour utilisation and revenue into an SVG file.
pub fn write_chart(report: &Report, path: &Path) -> anyhow::Result<()> {
    draw(report, path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing the chart {}", path.display()))
}

/// One point of a line: day, utilisation %, revenue USD per hour.
type Point = (f64, f64, f64);

/// The points of a mechanism's hours, `SMOOTHING_HOURS` to a point.
fn points(hours: &[HourFigures]) -> Vec<Point> {
    hours
        .chunks(SMOOTHING_HOURS)
        .enumerate()
        .map(|(i, chunk)| {
            let offered: f64 = chunk.iter().map(|h| h.offered_gpu_hours).sum();
            let sold: f64 = chunk.iter().map(|h| h.sold_gpu_hours).sum();
            let revenue: f64 = chunk.iter().map(|h| h.revenue_usd).sum();
            let mid_hour = (i * SMOOTHING_HOURS) as f64 + chunk.len() as f64 / 2.0;
            (
                mid_hour / 24.0,
                100.0 * ratio(sold, offered),
                revenue / chunk.len() as f64,
            )
        })
        .collect()
}

fn draw(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, CHART_SIZE_PX).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(CHART_SIZE_PX.1 / 2);
    let series: Vec<(&str, Vec<Point>)> = report
        .mechanisms
        .iter()
        .map(|m| (m.mechanism.as_str(), points(&m.hourly)))
        .collect();
    let days = report.days.max(1.0 / 24.0);
    let revenue_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, _, r)| r))
        .fold(1.0f64, f64::max)
        * 1.1;

    let title = format!(
        "offpeak simulate: seed {}, {} days",
        report.seed, report.days
    );
    let mut utilisation = ChartBuilder::on(&upper)
        .caption(
            format!("{title}: utilisation (sold / offered GPU-hours)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..days, 0f64..105f64)?;
    utilisation
        .configure_mesh()
        .x_desc("day")
        .y_desc("utilisation %")
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        utilisation
            .draw_series(LineSeries::new(
                points.iter().map(|&(d, u, _)| (d, u)),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    utilisation
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let mut revenue = ChartBuilder::on(&lower)
        .caption(
            "revenue, USD per hour (each lease's cost spread over its life)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..days, 0f64..revenue_max)?;
    revenue
        .configure_mesh()
        .x_desc("day")
        .y_desc("USD / hour")
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        revenue
            .draw_series(LineSeries::new(
                points.iter().map(|&(d, _, r)| (d, r)),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    revenue
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
