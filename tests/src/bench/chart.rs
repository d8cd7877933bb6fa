//! benchmarks.png: aggregate throughput and time to first token against
//! concurrency, engine vs server vs the C baseline's batched mode.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::{Report, level};

/// A series to draw: name, colour, (concurrency, value) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

const GREY: RGBColor = RGBColor(120, 120, 120);

/// Draw the chart into `path`. Returns whether text could be drawn (the
/// font was found); without it the chart is drawn without any text.
pub fn draw(report: &Report, path: &Path, font: &Path) -> anyhow::Result<bool> {
    let has_font = register(font);
    let engine = report.engine.get();
    let server = report.server.get();
    let levels: Vec<u32> =
        engine.map(|e| e.config.levels.clone()).or(server.map(|s| s.config.levels.clone())).unwrap_or_default();

    let points = |f: &dyn Fn(u32) -> Option<f64>| -> Vec<(f64, f64)> {
        levels.iter().filter_map(|&c| f(c).map(|v| (f64::from(c), v))).collect()
    };
    let throughput: Vec<Series> = vec![
        (
            "C baseline (batched)",
            GREY,
            points(&|c| {
                engine
                    .and_then(|e| e.baseline.iter().find(|b| b.concurrency == c))
                    .and_then(|b| b.aggregate_tok_s.median)
            }),
        ),
        ("engine", BLUE, points(&|c| engine.and_then(|e| level(&e.levels, c)).and_then(|l| l.aggregate_tok_s.median))),
        (
            "server (HTTP/SSE)",
            RED,
            points(&|c| server.and_then(|s| level(&s.levels, c)).and_then(|l| l.aggregate_tok_s.median)),
        ),
    ];
    let ttft: Vec<Series> = vec![
        (
            "C baseline (batched)",
            GREY,
            points(&|c| {
                engine.and_then(|e| e.baseline.iter().find(|b| b.concurrency == c)).and_then(|b| b.ttft_ms_p50)
            }),
        ),
        ("engine", BLUE, points(&|c| engine.and_then(|e| level(&e.levels, c)).and_then(|l| l.ttft_ms_p50))),
        ("server (HTTP/SSE)", RED, points(&|c| server.and_then(|s| level(&s.levels, c)).and_then(|l| l.ttft_ms_p50))),
    ];

    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(600);
    let title = format!("{} threads, {}", report.threads, report.model.file);
    panel(&left, "Aggregate throughput (tokens/s)", &title, &throughput, has_font)?;
    panel(&right, "Time to first token, p50 (ms)", &title, &ttft, has_font)?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(has_font)
}

fn register(font: &Path) -> bool {
    match std::fs::read(font) {
        // The font must live as long as the process (plotters keeps a
        // reference in a global registry); it is read once per run.
        Ok(bytes) => {
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok()
        }
        Err(_) => false,
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    subtitle: &str,
    series: &[Series],
    text: bool,
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let x_max = series.iter().flat_map(|s| s.2.iter().map(|p| p.0)).fold(1.0, f64::max) + 1.0;
    let y_max = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.15;
    let mut builder = ChartBuilder::on(area);
    builder.margin(18);
    if text {
        builder
            .caption(format!("{caption} — {subtitle}"), ("sans-serif", 17))
            .x_label_area_size(42)
            .y_label_area_size(62);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder.build_cartesian_2d(0f64..x_max, 0f64..y_max).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("concurrent requests").label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    for (name, colour, pts) in series {
        if pts.is_empty() {
            continue;
        }
        let colour = *colour;
        let line = chart.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2))).map_err(err)?;
        if text {
            line.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled()))).map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}
