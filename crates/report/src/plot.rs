//! The SVG plots (plotters, SVG backend: text is written as SVG `<text>`, so no font
//! library is involved).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::prelude::*;

use crate::data::{
    CycleRun, KillStorm, LeakRun, Meta, Shape, caption, ecdf, integer_histogram, quantile,
};

/// Any drawing failure (plotters' errors carry the backend's I/O error).
pub type DrawResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Points per ECDF curve (the SVG stays small; the thinning keeps the maximum).
const ECDF_POINTS: usize = 600;

/// One colour per worker count (1, 2, 4, 8, 16), distinguishable in print.
const SERIES: [RGBColor; 5] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
];

/// The minor grid lines.
const LIGHT: RGBColor = RGBColor(238, 238, 238);

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

/// White page, a bold title and a caption line on top; returns the area below them.
fn page<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    note: &str,
) -> DrawResult<DrawingArea<SVGBackend<'a>, Shift>> {
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(58);
    head.draw_text(
        title,
        &("sans-serif", 19)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK),
        (12, 8),
    )?;
    head.draw_text(note, &font(14).color(&RGBColor(80, 80, 80)), (12, 34))?;
    Ok(body)
}

/// A log axis range that holds `lo..=hi` with some room.
fn log_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = lo.max(1e-3);
    (lo / 1.3)..(hi.max(lo * 2.0) * 1.3)
}

/// A log axis over `range` labelled at 1-2-5 steps (plotters labels only the decades
/// on a short log range), with light grid lines at every integer multiple of a decade.
fn log_axis(range: std::ops::Range<f64>) -> WithKeyPoints<LogCoord<f64>> {
    let (lo, hi) = (range.start, range.end);
    let mut bold = Vec::new();
    let mut light = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in 1..10 {
            let v = decade * f64::from(m);
            if (lo..=hi).contains(&v) {
                light.push(v);
                if matches!(m, 1 | 2 | 5) {
                    bold.push(v);
                }
            }
        }
        decade *= 10.0;
    }
    range
        .log_scale()
        .with_key_points(bold)
        .with_light_points(light)
}

/// "0.5", "2", "150": a tick label without trailing noise.
fn tick(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    } else {
        format!("{v:.2}")
    }
}

/// A percentage for a legend: 0.38, 4.4, 12.0, 242.
fn pct(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The runs of one (frames, shape), by worker count.
fn select(runs: &[CycleRun], frames: u32, shape: Shape) -> Vec<&CycleRun> {
    let mut v: Vec<&CycleRun> = runs
        .iter()
        .filter(|r| r.frames == frames && r.shape == shape)
        .collect();
    v.sort_by_key(|r| r.workers);
    v
}

/// Cycle-time ECDF of one (frames, shape), a curve per worker count; x: % of the period
/// (log), y: share of cycles at or below x. Returns false (and draws nothing) when no run
/// matches.
pub fn cycle_ecdf(
    path: &Path,
    runs: &[CycleRun],
    frames: u32,
    shape: Shape,
    load_note: &str,
) -> DrawResult<bool> {
    let sel = select(runs, frames, shape);
    let Some(first) = sel.first() else {
        return Ok(false);
    };
    let sorted: Vec<Vec<f64>> = sel.iter().map(|r| r.shares_sorted()).collect();
    let lo = sorted.iter().map(|s| s[0]).fold(f64::INFINITY, f64::min);
    let hi = sorted
        .iter()
        .map(|s| s[s.len() - 1])
        .fold(0.0, f64::max)
        .max(100.0);
    let metas: Vec<&Meta> = sel.iter().map(|r| &r.meta).collect();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let body = page(
        &root,
        &format!(
            "Host cycle time by worker count: {frames} frames @ {} Hz, {shape} (cycle bench)",
            first.sample_rate
        ),
        &format!(
            "{}{load_note}; {} cycles per curve",
            caption(&metas),
            sel[0].ns.len()
        ),
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(log_axis(log_range(lo, hi)), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "host cycle time, % of the block period ({:.3} ms), log scale",
            first.period_ms()
        ))
        .y_desc("share of cycles ≤ x")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .axis_desc_style(font(15))
        .label_style(font(13))
        .light_line_style(LIGHT)
        .draw()?;
    chart
        .draw_series(DashedLineSeries::new(
            [(100.0, 0.0), (100.0, 1.0)],
            6,
            4,
            BLACK.stroke_width(2),
        ))?
        .label("100 % = one period: the cycle's whole budget")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (i, (r, s)) in sel.iter().zip(&sorted).enumerate() {
        let c = SERIES[i % SERIES.len()];
        let label = format!(
            "{} worker{}: p50 {} %, p99 {} %, p99.9 {} %, max {} %",
            r.workers,
            if r.workers == 1 { "" } else { "s" },
            pct(quantile(s, 0.5)),
            pct(quantile(s, 0.99)),
            pct(quantile(s, 0.999)),
            pct(quantile(s, 1.0)),
        );
        chart
            .draw_series(LineSeries::new(ecdf(s, ECDF_POINTS), c.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(font(13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

/// p50 / p99 / p99.9 / max against worker count, one panel per (frames, shape), both
/// axes log.
pub fn cycle_percentiles(path: &Path, runs: &[CycleRun], load_note: &str) -> DrawResult<bool> {
    let mut panels: Vec<(u32, Shape)> = runs.iter().map(|r| (r.frames, r.shape)).collect();
    panels.sort();
    panels.dedup();
    if panels.is_empty() {
        return Ok(false);
    }
    let all: Vec<Vec<f64>> = runs.iter().map(CycleRun::shares_sorted).collect();
    let lo = all
        .iter()
        .map(|s| quantile(s, 0.5))
        .fold(f64::INFINITY, f64::min);
    let hi = all.iter().map(|s| quantile(s, 1.0)).fold(100.0, f64::max);
    let max_workers = runs.iter().map(|r| r.workers).max().unwrap_or(1).max(2);
    let x_hi = f64::from(max_workers).log2() + 0.4;
    let metas: Vec<&Meta> = runs.iter().map(|r| &r.meta).collect();
    let rows = panels.len().div_ceil(2);
    let root = SVGBackend::new(path, (1000, 70 + 380 * rows as u32)).into_drawing_area();
    let body = page(
        &root,
        "Host cycle time percentiles against worker count (cycle bench), % of the block period",
        &format!(
            "{}{load_note}; {} cycles per point",
            caption(&metas),
            runs[0].ns.len()
        ),
    )?;
    let qs: [(&str, f64); 4] = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)];
    for (area, &(frames, shape)) in body.split_evenly((rows, 2)).iter().zip(&panels) {
        let sel = select(runs, frames, shape);
        let period_ms = sel[0].period_ms();
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .caption(
                format!("{frames} frames ({period_ms:.3} ms), {shape}"),
                ("sans-serif", 16).into_font(),
            )
            .x_label_area_size(40)
            .y_label_area_size(56)
            // x = log2(workers): 1, 2, 4, 8, 16 evenly spaced, labelled as counts.
            .build_cartesian_2d(-0.4f64..x_hi, log_axis(log_range(lo, hi)))?;
        chart
            .configure_mesh()
            .x_desc("worker count")
            .y_desc("cycle time, % of period (log)")
            .x_labels(20)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
                    format!("{}", 1u64 << v.round() as u32)
                } else {
                    String::new()
                }
            })
            .disable_x_mesh()
            .y_label_formatter(&|v| tick(*v))
            .axis_desc_style(font(14))
            .label_style(font(12))
            .light_line_style(LIGHT)
            .draw()?;
        chart.draw_series(DashedLineSeries::new(
            [(-0.4, 100.0), (x_hi, 100.0)],
            6,
            4,
            BLACK.stroke_width(2),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            "100 % = one period",
            (x_hi - 1.9, 100.0 * 2.1),
            font(12),
        )))?;
        let sorted: Vec<Vec<f64>> = sel.iter().map(|r| r.shares_sorted()).collect();
        for (i, &(name, q)) in qs.iter().enumerate() {
            let c = SERIES[i];
            let pts: Vec<(f64, f64)> = sel
                .iter()
                .zip(&sorted)
                .map(|(r, s)| (f64::from(r.workers).log2(), quantile(s, q)))
                .collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart
                .draw_series(PointSeries::of_element(pts, 4, c.filled(), &|p, s, st| {
                    EmptyElement::at(p) + Circle::new((0, 0), s, st)
                }))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(font(12))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(true)
}

/// Histogram of the kill storm's restart times (crash → producing again): bars per
/// whole period, bottom axis in periods, top axis in ms.
pub fn kill_storm(path: &Path, k: &KillStorm, load_note: &str) -> DrawResult {
    let mut sorted = k.periods.clone();
    sorted.sort_by(f64::total_cmp);
    let hist = integer_histogram(&sorted);
    let x_hi = (quantile(&sorted, 1.0) + 1.5).max(4.0);
    let y_hi = hist.iter().map(|h| h.1).max().unwrap_or(1) as f64 * 1.15 + 0.5;
    let (p50, p99, max) = (
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.99),
        quantile(&sorted, 1.0),
    );
    let ms = |p: f64| p * k.period_ms;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let body = page(
        &root,
        &format!(
            "Kill storm: crash → producing again, {} SIGKILLs ({} build), {} frames @ {} Hz",
            sorted.len(),
            k.build(),
            k.frames,
            k.sample_rate
        ),
        &format!(
            "{}{load_note}; p50 {p50} periods ({:.1} ms), p99 {p99} ({:.1} ms), max {max} ({:.1} ms)",
            caption(&[&k.meta]),
            ms(p50),
            ms(p99),
            ms(max)
        ),
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(48)
        .top_x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..x_hi, 0f64..y_hi)?
        .set_secondary_coord(ms(-0.5)..ms(x_hi), 0f64..y_hi);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(format!(
            "restart time: periods the slot played its fallback (1 period = {:.2} ms)",
            k.period_ms
        ))
        .y_desc("kills")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style(font(15))
        .label_style(font(13))
        .light_line_style(LIGHT)
        .draw()?;
    chart
        .configure_secondary_axes()
        .x_desc("restart time, ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style(font(15))
        .label_style(font(13))
        .draw()?;
    let bar = SERIES[0];
    chart.draw_series(hist.iter().filter(|h| h.1 > 0).map(|&(v, c)| {
        let v = v as f64;
        Rectangle::new([(v - 0.4, 0.0), (v + 0.4, c as f64)], bar.filled())
    }))?;
    for (name, v, c) in [("p50", p50, SERIES[2]), ("p99", p99, SERIES[4])] {
        chart
            .draw_series(LineSeries::new([(v, 0.0), (v, y_hi)], c.stroke_width(2)))?
            .label(format!("{name} = {v} periods = {:.1} ms", ms(v)))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// ECDF of the supervisor's restart latency (host log: "exited" → next "spawned"), x in
/// ms on a log axis.
pub fn supervisor_restart(path: &Path, l: &LeakRun, load_note: &str) -> DrawResult {
    let mut sorted = l.lat_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.99),
        quantile(&sorted, 1.0),
    );
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let body = page(
        &root,
        &format!(
            "Supervisor restart latency: exited → spawned, {} restarts of a crashing program",
            sorted.len()
        ),
        &format!(
            "{}{load_note}; p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            caption(&[&l.meta])
        ),
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(log_axis(log_range(sorted[0], max)), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("restart latency, ms (host log timestamps), log scale")
        .y_desc("share of restarts ≤ x")
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .axis_desc_style(font(15))
        .label_style(font(13))
        .light_line_style(LIGHT)
        .draw()?;
    let c = SERIES[0];
    chart
        .draw_series(LineSeries::new(
            ecdf(&sorted, ECDF_POINTS),
            c.stroke_width(2),
        ))?
        .label("ECDF")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    for (name, v, c) in [("p50", p50, SERIES[2]), ("p99", p99, SERIES[4])] {
        chart
            .draw_series(LineSeries::new([(v, 0.0), (v, 1.0)], c.stroke_width(1)))?
            .label(format!("{name} = {v:.2} ms"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(font(13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{parse_kill_storm, parse_leak_run};

    fn run(workers: u32, shape: Shape, scale: u64) -> CycleRun {
        CycleRun {
            frames: 64,
            shape,
            workers,
            sample_rate: 48_000,
            period_ns: 1_333_333,
            meta: Meta {
                unix_time: Some(1_796_474_001),
                loadavg: Some([4.67, 4.52, 2.33]),
            },
            engine_p50_p99_ns: None,
            ns: (1..=1000).map(|i| i * scale).collect(),
        }
    }

    #[test]
    fn cycle_plots_name_their_units_and_the_data_date() {
        let dir = tempfile::tempdir().unwrap();
        let runs = vec![
            run(1, Shape::FanOut, 10),
            run(4, Shape::FanOut, 40),
            run(2, Shape::Chain, 30),
        ];
        let p = dir.path().join("e.svg");
        assert!(cycle_ecdf(&p, &runs, 64, Shape::FanOut, " (2 cores)").unwrap());
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("% of the block period (1.333 ms)"));
        assert!(svg.contains("data 2026-12-05 12:33 UTC; load average (1 min) 4.67 (2 cores)"));
        // 1 worker: 10..10000 ns of 1,333,333 → p50 = 5000 ns = 0.375 %.
        assert!(
            svg.contains("1 worker: p50 0.38 %"),
            "legend of the 1-worker curve"
        );
        assert!(svg.contains("4 workers:"));
        assert!(
            !svg.contains("2 workers:"),
            "the chain run is not in the fan-out plot"
        );
        assert!(!cycle_ecdf(&p, &runs, 256, Shape::FanOut, "").unwrap());

        let p = dir.path().join("p.svg");
        assert!(cycle_percentiles(&p, &runs, "").unwrap());
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.contains("64 frames (1.333 ms), fan-out"));
        assert!(svg.contains("64 frames (1.333 ms), chain"));
        assert!(svg.contains("worker count"));
    }

    #[test]
    fn restart_plots_give_periods_and_ms() {
        let dir = tempfile::tempdir().unwrap();
        let k = parse_kill_storm(
            "frames 128\nsample_rate 48000\nperiod_ms 2.6666666666666665\n\
             binaries /t/release/slotpool\nrestart_periods 3\nrestart_periods 3\nrestart_periods 9\n\
             unix_time 0\nloadavg 1 1 1\n",
        )
        .unwrap();
        let p = dir.path().join("k.svg");
        kill_storm(&p, &k, "").unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.contains("3 SIGKILLs (release build)"));
        assert!(svg.contains("p50 3 periods (8.0 ms), p99 9 (24.0 ms)"));
        assert!(svg.contains("restart time, ms"));
        assert!(svg.contains("data 1970-01-01 00:00 UTC; load average (1 min) 1.00"));

        let l = parse_leak_run("restarts 3\nlat_ms 2.5\nlat_ms 3.0\nlat_ms 40.0\nunix_time 0\n")
            .unwrap();
        let p = dir.path().join("l.svg");
        supervisor_restart(&p, &l, "").unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.contains("p50 3.00 ms, p99 40.00 ms, max 40.00 ms"));
        assert!(svg.contains("restart latency, ms"));
        assert!(svg.contains("load unknown"));
    }
}
