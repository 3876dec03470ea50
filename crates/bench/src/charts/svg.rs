//! A [`Chart`] drawn as SVG with plotters. Its SVG backend writes text as
//! `<text>` elements, so no font file is read; label sizes are estimates,
//! which is why the charts keep generous margins.

use anyhow::bail;
use plotters::element::ComposedElement;
use plotters::prelude::*;

use super::{Chart, LIMIT_COLOR};
use crate::table::fmt_count;

const SIZE: (u32, u32) = (960, 600);
const FOOTER_HEIGHT: u32 = 28;
const MARKER_RADIUS: u32 = 4;
/// The share of the plot's height (log scale) left to the data.
const DATA_SHARE: f64 = 0.68;

/// 1, 2, 5 × powers of ten within `low..=high`, or 1, 1.5, 2, 3, 5, 7 ×
/// when that gives too few lines to read a value off.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let within = |mantissas: &[f64]| {
        let mut ticks = Vec::new();
        let mut exponent = low.log10().floor() as i32;
        while 10f64.powi(exponent) <= high {
            for mantissa in mantissas {
                let tick = mantissa * 10f64.powi(exponent);
                if (low..=high).contains(&tick) {
                    ticks.push(tick);
                }
            }
            exponent += 1;
        }
        ticks
    };
    let coarse = within(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 6 {
        coarse
    } else {
        within(&[1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
    }
}

/// `0.05`, `2`, `500`: a tick from [`log_ticks`] without float noise.
fn ms_label(ms: f64) -> String {
    let rounded = (ms * 1e6).round() / 1e6;
    if rounded >= 1_000.0 {
        fmt_count(rounded)
    } else {
        format!("{rounded}")
    }
}

/// A legend's sample of a line, in pixels from where the legend puts it.
type LegendMark<DB> = ComposedElement<(i32, i32), DB, PathElement<(i32, i32)>, PathElement<(i32, i32)>>;

/// A legend's sample of a line: two segments, apart when the line is
/// dashed.
fn legend_mark<DB: DrawingBackend>((x, y): (i32, i32), color: RGBColor, dashed: bool) -> LegendMark<DB> {
    let style = color.stroke_width(2);
    let first_end = if dashed { 8 } else { 12 };
    EmptyElement::at((x, y))
        + PathElement::new(vec![(0, 0), (first_end, 0)], style)
        + PathElement::new(vec![(12, 0), (20, 0)], style)
}

/// The SVG of `chart`.
pub(super) fn draw(chart: &Chart) -> anyhow::Result<String> {
    let ys: Vec<f64> = chart
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.1))
        .chain(chart.rules.iter().map(|rule| rule.y))
        .collect();
    let (Some(&x_first), Some(&x_last)) = (chart.x_ticks.first(), chart.x_ticks.last()) else {
        bail!("{}: no points to draw", chart.title);
    };
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let y_max = ys.iter().copied().fold(0.0, f64::max);
    // The data keeps to the lower part of the plot: the legend sits above it.
    let y_low = y_min / 1.3;
    let y_high = y_low * (y_max * 1.3 / y_low).powf(1.0 / DATA_SHARE);
    // Ticks up to the first one over the data: none in the legend's room.
    let mut y_ticks = log_ticks(y_low, y_max * 2.0);
    if let Some(over) = y_ticks.iter().position(|&tick| tick >= y_max) {
        y_ticks.truncate(over + 1);
    }
    let (x_low, x_high) = (x_first / 1.15, x_last * 1.15);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (body, bottom) = root.split_vertically(SIZE.1 - FOOTER_HEIGHT);
        bottom.draw(&Text::new(
            chart.footer.clone(),
            (16, 6),
            ("sans-serif", 15).into_font().color(&LIMIT_COLOR),
        ))?;
        let mut plot = ChartBuilder::on(&body)
            .caption(&chart.title, ("sans-serif", 25))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x_low..x_high).log_scale().with_key_points(chart.x_ticks.clone()),
                (y_low..y_high).log_scale().with_key_points(y_ticks),
            )?;
        plot.configure_mesh()
            .x_desc(&chart.x_desc)
            .y_desc(&chart.y_desc)
            .axis_desc_style(("sans-serif", 19))
            .label_style(("sans-serif", 17))
            .x_label_formatter(&|x| (chart.x_label)(*x))
            .y_label_formatter(&|y| ms_label(*y))
            .bold_line_style(BLACK.mix(0.08))
            .light_line_style(TRANSPARENT)
            .draw()?;

        for rule in &chart.rules {
            let color = rule.color;
            let style = color.stroke_width(1);
            plot.draw_series(DashedLineSeries::new(
                [(x_low, rule.y), (x_high, rule.y)],
                6,
                4,
                style,
            ))?
            .label(&rule.name)
            .legend(move |point| legend_mark(point, color, true));
        }
        for line in chart.lines.iter().filter(|line| !line.points.is_empty()) {
            let (color, dashed) = (line.color, line.dashed);
            let style = color.stroke_width(2);
            let legend = move |point| legend_mark(point, color, dashed);
            if dashed {
                plot.draw_series(DashedLineSeries::new(line.points.iter().copied(), 8, 5, style))?
                    .label(&line.name)
                    .legend(legend);
            } else {
                plot.draw_series(LineSeries::new(line.points.iter().copied(), style))?
                    .label(&line.name)
                    .legend(legend);
            }
            plot.draw_series(
                line.points
                    .iter()
                    .map(|&point| Circle::new(point, MARKER_RADIUS, color.filled())),
            )?;
        }
        if !chart.flagged.is_empty() {
            plot.draw_series(
                chart
                    .flagged
                    .iter()
                    .map(|&point| Cross::new(point, 7, BLACK.stroke_width(2))),
            )?
            .label(&chart.flagged_name)
            .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
        }
        plot.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_one_two_five_within_the_range() {
        assert_eq!(
            log_ticks(0.06, 600.0),
            vec![
                0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0
            ]
        );
        assert_eq!(
            log_ticks(13.0, 320.0),
            vec![15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0]
        );
        assert_eq!(ms_label(0.1 * 0.5), "0.05");
        assert_eq!(ms_label(2_000.0), "2,000");
    }
}
