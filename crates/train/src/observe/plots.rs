//! PNG plots of a run (plotters): loss, accuracy and LR curves, and the confusion
//! matrix of the latest evaluation. Text needs a TrueType font: the first of
//! `CLIP_PLOT_FONT` or the usual DejaVu / Liberation paths (setup installs
//! `fonts-dejavu-core`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::{Event, Observer};
use crate::report::{MetricsLine, read_metrics};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

pub(crate) fn font() -> std::result::Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("CLIP_PLOT_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .collect();
        for p in &candidates {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                    .map_err(|_| format!("{p} is not a usable TrueType font"));
            }
        }
        Err(format!(
            "no TrueType font found (tried {}); set CLIP_PLOT_FONT=/path/to/font.ttf or install fonts-dejavu-core",
            candidates.join(", ")
        ))
    })
    .clone()
}

pub(crate) type Series = Vec<(f64, f64)>;

pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Series, RGBColor)],
) -> Result<(), String> {
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|s| &s.1).collect();
    if points.is_empty() {
        return Ok(());
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &&(x, y) in &points {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return Ok(());
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|x| e(&x))?;
    for (name, s, color) in series {
        if s.is_empty() {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                s.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

fn confusion_chart(path: &Path, names: &[String], m: &[Vec<u64>]) -> Result<(), String> {
    let n = m.len();
    if n == 0 {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (800, 720)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    // Cells are centred on integer coordinates, so labels sit in the middle.
    let span = -0.5..(n as f64 - 0.5);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "confusion matrix (rows: true, columns: predicted; shade: row share)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(110)
        .build_cartesian_2d(span.clone(), span)
        .map_err(|x| e(&x))?;
    let label = |v: f64, flip: bool| -> String {
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 || i >= n as f64 {
            return String::new();
        }
        let i = if flip { n - 1 - i as usize } else { i as usize };
        let name = names.get(i).cloned().unwrap_or_default();
        name.chars().take(11).collect()
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&|v| label(*v, false))
        .y_label_formatter(&|v| label(*v, true))
        .x_label_style(("sans-serif", 10))
        .y_label_style(("sans-serif", 12))
        .draw()
        .map_err(|x| e(&x))?;
    // (column, row from the bottom, count, share of its true class)
    let cells: Vec<(f64, f64, u64, f64)> = m
        .iter()
        .enumerate()
        .flat_map(|(t, row)| {
            let total = row.iter().sum::<u64>().max(1) as f64;
            let y = (n - 1 - t) as f64;
            row.iter()
                .enumerate()
                .map(move |(p, &c)| (p as f64, y, c, c as f64 / total))
        })
        .collect();
    chart
        .draw_series(cells.iter().map(|&(x, y, _, frac)| {
            let shade = (255.0 * (1.0 - frac)) as u8;
            Rectangle::new(
                [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                RGBColor(shade, shade, 255).filled(),
            )
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(cells.iter().map(|&(x, y, c, frac)| {
            let color = if frac > 0.5 { WHITE } else { BLACK };
            Text::new(
                format!("{c}"),
                (x - 0.3, y + 0.15),
                ("sans-serif", 11).into_font().color(&color),
            )
        }))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

/// Draws `loss.png`, `accuracy.png`, `lr.png` and `confusion.png` into `dir`.
pub fn write_all(dir: &Path, lines: &[MetricsLine]) -> Result<(), String> {
    font()?;
    let (mut train, mut val, mut acc, mut top5, mut ema, mut lr) = (
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
    );
    let mut last_eval = None;
    for l in lines {
        match l {
            MetricsLine::Step(m) => {
                train.push((m.step as f64, m.loss));
                lr.push((m.step as f64, m.lr));
            }
            MetricsLine::Eval(r) => {
                let x = r.step as f64;
                val.push((x, r.val.loss));
                acc.push((x, r.val.accuracy * 100.0));
                top5.push((x, r.val.top5 * 100.0));
                if let Some(e) = &r.ema {
                    ema.push((x, e.accuracy * 100.0));
                }
                last_eval = Some(r);
            }
        }
    }
    line_chart(
        &dir.join("loss.png"),
        "loss",
        "optimizer step",
        "cross-entropy",
        &[("train", train, BLUE), ("validation", val, RED)],
    )?;
    line_chart(
        &dir.join("accuracy.png"),
        "validation accuracy",
        "optimizer step",
        "%",
        &[
            ("top-1", acc, BLUE),
            ("top-5", top5, GREEN),
            ("top-1 (EMA)", ema, MAGENTA),
        ],
    )?;
    line_chart(
        &dir.join("lr.png"),
        "learning rate (largest group)",
        "optimizer step",
        "lr",
        &[("lr", lr, BLUE)],
    )?;
    if let Some(r) = last_eval {
        confusion_chart(
            &dir.join("confusion.png"),
            &r.val.class_names,
            &r.val.confusion,
        )?;
    }
    Ok(())
}

/// Redraws the PNG plots after each evaluation and at the end.
pub struct Plots {
    run_dir: PathBuf,
    warned: bool,
}

impl Plots {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            warned: false,
        }
    }
}

impl Observer for Plots {
    fn event(&mut self, event: &Event) -> crate::error::Result<()> {
        if matches!(event, Event::Eval(_) | Event::Finish(_)) {
            let lines = read_metrics(&self.run_dir.join("metrics.jsonl"))?;
            if let Err(e) = write_all(&self.run_dir, &lines)
                && !self.warned
            {
                tracing::warn!("plots not drawn: {e}");
                self.warned = true;
            }
        }
        Ok(())
    }
}
