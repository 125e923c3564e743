//! PNG plots of a run (plotters): loss, accuracy and LR curves (every point
//! marked, the selected checkpoint and the test result singled out), and the
//! confusion matrix of the selected checkpoint (the latest evaluation while
//! training) and of the test set. Text needs a TrueType font: the first of
//! `CLIP_PLOT_FONT` or the usual DejaVu / Liberation paths (setup installs
//! `fonts-dejavu-core`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Event, Observer};
use crate::eval::EvalReport;
use crate::report::{EvalRecord, MetricsLine, read_metrics};

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

/// A single point drawn on top of a chart's series, with its legend entry (the
/// selected checkpoint, the test result).
pub(crate) struct Mark {
    pub label: String,
    pub at: (f64, f64),
    pub color: RGBColor,
}

/// Draws a chart into `path` with `chart` once the font is loaded; whether it
/// was drawn. A failure is a warning naming the file, never an error: no result
/// depends on its picture.
pub(crate) fn draw(
    path: &Path,
    chart: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> bool {
    match font().and_then(|()| chart(path)) {
        Ok(()) => true,
        Err(e) => {
            let name = path
                .file_name()
                .unwrap_or(path.as_os_str())
                .to_string_lossy();
            tracing::warn!("{name} not drawn: {e}");
            false
        }
    }
}

/// A line chart; every point carries a marker, so a series of one evaluation is
/// visible, and `marks` stand out as larger filled points.
pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Series, RGBColor)],
    marks: &[Mark],
) -> Result<(), String> {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .chain(marks.iter().map(|m| m.at))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &points {
        if y.is_finite() && x.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return Ok(());
    }
    // One point (or one x, or one y) still gets axes around it; a chart of
    // marks alone (a scatter) keeps the outermost ones inside its frame.
    let x_pad = match (x1 > x0, series.is_empty()) {
        (false, _) => 0.5,
        (true, true) => (x1 - x0) * 0.05,
        (true, false) => 0.0,
    };
    let y_pad = ((y1 - y0) * 0.05)
        .max(y1.abs().max(y0.abs()) * 0.05)
        .max(1e-9);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - x_pad)..(x1 + x_pad), (y0 - y_pad)..(y1 + y_pad))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|x| e(&x))?;
    let finite = |s: &Series| -> Vec<(f64, f64)> {
        s.iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect()
    };
    for (name, s, color) in series {
        let pts = finite(s);
        if pts.is_empty() {
            continue;
        }
        let color = *color;
        // Many points (step losses) read as a line; markers would blot it out.
        let marker = if pts.len() <= 200 { 3 } else { 0 };
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)).point_size(marker))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    for m in marks {
        if !(m.at.0.is_finite() && m.at.1.is_finite()) {
            continue;
        }
        let color = m.color;
        chart
            .draw_series(std::iter::once(Circle::new(m.at, 7, color.filled())))
            .map_err(|x| e(&x))?
            .label(m.label.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

/// The confusion matrix's axis labels: the rows (true classes) carry the full
/// names with their index; the columns carry the names when they are few and
/// short enough to stay distinct, else the indices (read against the rows).
pub(crate) fn confusion_labels(names: &[String]) -> (Vec<String>, Vec<String>) {
    const SHORT: usize = 11;
    let short: Vec<String> = names
        .iter()
        .map(|n| n.chars().take(SHORT).collect())
        .collect();
    let distinct = short
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        == names.len();
    let columns = if names.len() <= 10 && distinct {
        short
    } else {
        (0..names.len()).map(|i| i.to_string()).collect()
    };
    let rows = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i} {n}"))
        .collect();
    (columns, rows)
}

/// Pixels per cell of an `n`-class matrix, and whether its counts fit in a cell.
fn confusion_cell(n: usize) -> (u32, bool) {
    let cell = (640 / n.max(1) as u32).clamp(12, 160);
    (cell, cell >= 22)
}

fn confusion_chart(
    path: &Path,
    title: &str,
    names: &[String],
    m: &[Vec<u64>],
) -> Result<(), String> {
    let n = m.len();
    if n == 0 {
        return Ok(());
    }
    let (columns, rows) = confusion_labels(names);
    let (cell, counts_fit) = confusion_cell(n);
    // The row labels' area fits the longest name (about 7 px a character).
    let longest = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0) as u32;
    let label_area = (longest * 7 + 16).clamp(60, 400);
    let side = cell * n as u32;
    let size = ((label_area + side + 40).max(720), side + 110);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    // Cells are centred on integer coordinates, so labels sit in the middle.
    let span = -0.5..(n as f64 - 0.5);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_area)
        .build_cartesian_2d(span.clone(), span)
        .map_err(|x| e(&x))?;
    let label = |v: f64, labels: &[String], flip: bool| -> String {
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 || i >= n as f64 {
            return String::new();
        }
        let i = if flip { n - 1 - i as usize } else { i as usize };
        labels.get(i).cloned().unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&|v| label(*v, &columns, false))
        .y_label_formatter(&|v| label(*v, &rows, true))
        .x_label_style(("sans-serif", 11))
        .y_label_style(("sans-serif", 12))
        .x_desc("predicted")
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
    if counts_fit {
        let font = (cell as f64 * 0.4).clamp(9.0, 14.0);
        chart
            .draw_series(cells.iter().filter(|c| c.2 > 0).map(|&(x, y, c, frac)| {
                let color = if frac > 0.5 { WHITE } else { BLACK };
                Text::new(
                    format!("{c}"),
                    (x, y),
                    ("sans-serif", font)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                )
            }))
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))
}

/// A bar chart of `bars` (label, value), the value written above each bar.
pub(crate) fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), String> {
    if bars.is_empty() {
        return Ok(());
    }
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let width = (120 * bars.len() as u32 + 120).max(480);
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)
        .map_err(|x| e(&x))?;
    let label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 || i >= n as f64 {
            return String::new();
        }
        bars[i as usize].0.clone()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&label)
        .y_desc(y_label)
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let x = i as f64;
            Rectangle::new([(x - 0.35, 0.0), (x + 0.35, *v)], BLUE.mix(0.7).filled())
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{v:.1}"),
                (i as f64 - 0.15, v + top * 0.02),
                ("sans-serif", 14).into_font(),
            )
        }))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

/// Draws a [`clip_data::Preview`] as a PNG at `path`: cells of at least 96
/// pixels (small images scaled up by whole factors), the column titles above
/// them and each row's class at its left.
pub fn write_preview(path: &Path, preview: &clip_data::Preview) -> Result<(), String> {
    font()?;
    let longest = preview
        .rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0);
    let margin = ((longest * 6 + 16).clamp(60, 400), 28);
    let (mut grid, cw, ch) = preview.compose(96, margin.0, margin.1);
    let size = (grid.width as u32, grid.height as u32);
    {
        let root = BitMapBackend::with_buffer(&mut grid.data, size).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let style = ("sans-serif", 13).into_font().color(&BLACK);
        for (c, title) in preview.columns.iter().enumerate() {
            let (x, _) = clip_data::Preview::cell_origin(0, c, (cw, ch), margin);
            root.draw(&Text::new(title.clone(), (x as i32, 8), style.clone()))
                .map_err(|x| e(&x))?;
        }
        for (r, row) in preview.rows.iter().enumerate() {
            let (_, y) = clip_data::Preview::cell_origin(r, 0, (cw, ch), margin);
            root.draw(&Text::new(
                row.label.clone(),
                (8, (y + ch / 2) as i32),
                style.clone().pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    image::save_buffer(
        path,
        &grid.data,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// What the plots single out: the selected checkpoint's evaluation step (none
/// while training: the latest evaluation stands for the run) and the test result
/// with the step of the checkpoint it was measured with.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    pub selected_step: Option<u64>,
    pub test: Option<(u64, EvalReport)>,
}

/// The evaluation `confusion.png` draws: the selected checkpoint's when it is
/// among `lines`, else the latest; with the title that says which.
pub(crate) fn confusion_source(
    lines: &[MetricsLine],
    selected_step: Option<u64>,
) -> Option<(&EvalRecord, String)> {
    let evals = || {
        lines.iter().filter_map(|l| match l {
            MetricsLine::Eval(r) => Some(r),
            MetricsLine::Step(_) => None,
        })
    };
    let selected = selected_step.and_then(|s| evals().rev().find(|r| r.step == s));
    let (r, which) = match selected {
        Some(r) => (r, "the selected checkpoint"),
        None => (evals().next_back()?, "the latest evaluation"),
    };
    Some((
        r,
        format!(
            "validation confusion at step {}, {which} (rows: true, columns: predicted)",
            r.step
        ),
    ))
}

/// Draws `loss.png`, `accuracy.png`, `lr.png` and `confusion.png` into `dir`
/// (and `confusion-test.png` with a test result).
pub fn write_all(dir: &Path, lines: &[MetricsLine], marks: &Marks) -> Result<(), String> {
    font()?;
    let (mut train, mut val, mut acc, mut top5, mut ema, mut lr) = (
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
    );
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
            }
        }
    }
    let confusion = confusion_source(lines, marks.selected_step);
    let selected = confusion.as_ref().filter(|_| marks.selected_step.is_some());
    let mut accuracy_marks = Vec::new();
    let mut loss_marks = Vec::new();
    if let Some((r, _)) = selected {
        let label = format!("selected checkpoint (step {})", r.step);
        accuracy_marks.push(Mark {
            label: label.clone(),
            at: (r.step as f64, r.val.accuracy * 100.0),
            color: RED,
        });
        loss_marks.push(Mark {
            label,
            at: (r.step as f64, r.val.loss),
            color: MAGENTA,
        });
    }
    if let Some((step, t)) = &marks.test {
        let label = format!("test (checkpoint of step {step})");
        accuracy_marks.push(Mark {
            label: label.clone(),
            at: (*step as f64, t.accuracy * 100.0),
            color: BLACK,
        });
        loss_marks.push(Mark {
            label,
            at: (*step as f64, t.loss),
            color: BLACK,
        });
    }
    line_chart(
        &dir.join("loss.png"),
        "loss",
        "optimizer step",
        "cross-entropy",
        &[("train", train, BLUE), ("validation", val, RED)],
        &loss_marks,
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
        &accuracy_marks,
    )?;
    line_chart(
        &dir.join("lr.png"),
        "learning rate (largest group)",
        "optimizer step",
        "lr",
        &[("lr", lr, BLUE)],
        &[],
    )?;
    if let Some((r, title)) = &confusion {
        confusion_chart(
            &dir.join("confusion.png"),
            title,
            &r.val.class_names,
            &r.val.confusion,
        )?;
    }
    if let Some((step, t)) = &marks.test {
        confusion_chart(
            &dir.join("confusion-test.png"),
            &format!("test confusion, checkpoint of step {step} (rows: true, columns: predicted)"),
            &t.class_names,
            &t.confusion,
        )?;
    }
    Ok(())
}

/// Redraws a run folder's plots from its `metrics.jsonl` with `marks`.
pub(crate) fn redraw(run_dir: &Path, marks: &Marks) -> crate::error::Result<()> {
    let lines = read_metrics(&run_dir.join("metrics.jsonl"))?;
    if let Err(e) = write_all(run_dir, &lines, marks) {
        tracing::warn!("plots not drawn: {e}");
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
        let marks = match event {
            Event::Eval(_) => Marks::default(),
            Event::Finish(report) => Marks {
                selected_step: report.best_eval.as_ref().map(|e| e.step),
                test: None,
            },
            _ => return Ok(()),
        };
        let lines = read_metrics(&self.run_dir.join("metrics.jsonl"))?;
        if let Err(e) = write_all(&self.run_dir, &lines, &marks)
            && !self.warned
        {
            tracing::warn!("plots not drawn: {e}");
            self.warned = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn eval_line(step: u64, accuracy: f64) -> MetricsLine {
        let val: EvalReport = serde_json::from_value(serde_json::json!({
            "loss": 1.0, "accuracy": accuracy, "top5": 1.0, "images": 4,
            "class_names": ["a", "b"], "per_class": [null, null],
            "confusion": [[step, 0], [0, 1]],
        }))
        .unwrap();
        MetricsLine::Eval(EvalRecord {
            epoch: 1,
            step,
            train_loss: None,
            val,
            ema: None,
        })
    }

    /// Pixels of exactly `color` below the chart's top third, where the data of
    /// the test charts lie (their point is in the middle; the legend is at the
    /// upper right).
    fn pixels_of(path: &Path, color: RGBColor) -> usize {
        let img = image::open(path).unwrap().to_rgb8();
        let h = img.height();
        img.enumerate_pixels()
            .filter(|(_, y, p)| *y > h / 3 && p.0 == [color.0, color.1, color.2])
            .count()
    }

    /// A run with one evaluation has a one-point series: it is drawn (a marker),
    /// not an empty chart; a mark is drawn too.
    #[test]
    fn one_point_series_and_marks_are_drawn() {
        font().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("one.png");
        line_chart(&path, "t", "x", "y", &[("a", vec![(3.0, 50.0)], BLUE)], &[]).unwrap();
        assert!(pixels_of(&path, BLUE) > 10, "the single point is invisible");
        let mark = Mark {
            label: "selected".into(),
            at: (3.0, 50.0),
            color: RED,
        };
        line_chart(&path, "t", "x", "y", &[], std::slice::from_ref(&mark)).unwrap();
        assert!(pixels_of(&path, RED) > 50, "the mark is invisible");
    }

    /// Thirty classes with long names sharing a prefix stay legible: every row
    /// label is the whole name, columns fall back to indices (a prefix would
    /// repeat), counts are left out where cells are too small.
    #[test]
    fn many_classes_with_long_names_keep_distinct_labels() {
        let names: Vec<String> = (0..30)
            .map(|i| format!("a rather long shared prefix, class {i}"))
            .collect();
        let (columns, rows) = confusion_labels(&names);
        assert_eq!(columns[7], "7");
        assert!(
            rows.iter()
                .zip(&names)
                .all(|(r, n)| r.ends_with(n.as_str()))
        );
        assert_eq!(
            rows.iter().collect::<std::collections::BTreeSet<_>>().len(),
            30
        );
        assert_eq!(confusion_cell(30), (21, false));
        // Few short names: the columns are named.
        let few: Vec<String> = ["cat", "dog"].map(String::from).to_vec();
        assert_eq!(confusion_labels(&few).0, few);
        font().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let m: Vec<Vec<u64>> = (0..30)
            .map(|i| (0..30).map(|j| u64::from(i == j) * 5).collect())
            .collect();
        confusion_chart(&tmp.path().join("c.png"), "t", &names, &m).unwrap();
        let img = image::open(tmp.path().join("c.png")).unwrap();
        assert!(img.width() >= 30 * 21 + 250, "{}", img.width());
        bar_chart(
            &tmp.path().join("b.png"),
            "t",
            "%",
            &[("a".into(), 50.0), ("b".into(), 75.0)],
        )
        .unwrap();
        assert!(tmp.path().join("b.png").is_file());
    }

    /// confusion.png draws the selected checkpoint's evaluation and says so; the
    /// latest only while none is selected.
    #[test]
    fn confusion_draws_the_selected_evaluation_and_names_it() {
        let lines = vec![eval_line(3, 0.5), eval_line(6, 0.9), eval_line(9, 0.7)];
        let (r, title) = confusion_source(&lines, Some(6)).unwrap();
        assert_eq!(r.step, 6);
        assert!(title.contains("step 6, the selected checkpoint"), "{title}");
        let (r, title) = confusion_source(&lines, None).unwrap();
        assert_eq!(r.step, 9);
        assert!(title.contains("step 9, the latest evaluation"), "{title}");
        assert!(confusion_source(&[], Some(6)).is_none());
        // Both matrices are drawn, with the test's beside validation's.
        font().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let EvalRecord { val, .. } = match &lines[0] {
            MetricsLine::Eval(r) => r.clone(),
            MetricsLine::Step(_) => unreachable!(),
        };
        let marks = Marks {
            selected_step: Some(6),
            test: Some((6, val)),
        };
        write_all(tmp.path(), &lines, &marks).unwrap();
        for f in [
            "accuracy.png",
            "loss.png",
            "confusion.png",
            "confusion-test.png",
        ] {
            assert!(tmp.path().join(f).is_file(), "{f}");
        }
    }
}
