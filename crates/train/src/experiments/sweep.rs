//! `train-cli sweep`: the Cartesian product of a grid of config values, each
//! point trained in a run folder of its own under one sweep folder, one after
//! another or `--jobs` at a time; a finished point is reused (when its config
//! is the same), an interrupted one resumes. Then a table (`sweep.md`, `sweep.json`) and a plot
//! of each point's selected validation accuracy (`sweep.png`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use clip_model::write_atomic;

use crate::device::MemoryKind;
use crate::error::{Result, TrainError};
use crate::experiments::compare::{TrainJob, finished_run, job_for};
use crate::observe::plots::{bar_chart, draw};
use crate::report::{FitReport, write_json};

/// One key of the grid and its values (each as `--set` takes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridAxis {
    pub key: String,
    pub values: Vec<String>,
}

impl GridAxis {
    /// `KEY=V1,V2,...`: values split at commas outside brackets, braces and
    /// quotes (`data.loader.mix={mixup_alpha=0.2, cutmix_alpha=1.0},{}` is two).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| TrainError::Usage(format!("--grid {text:?}: {why}"));
        let (key, values) = text
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=V1,V2,..."))?;
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        let mut out = Vec::new();
        let (mut depth, mut quoted, mut current) = (0i32, false, String::new());
        for c in values.chars() {
            match c {
                '"' => quoted = !quoted,
                '[' | '{' if !quoted => depth += 1,
                ']' | '}' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    out.push(std::mem::take(&mut current).trim().to_string());
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        out.push(current.trim().to_string());
        if out.iter().any(String::is_empty) {
            return Err(bad("a value is empty"));
        }
        Ok(Self { key, values: out })
    }
}

/// One trained point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Its run folder's name.
    pub name: String,
    /// `(key, value)` of each axis.
    pub values: Vec<(String, String)>,
    pub run_dir: PathBuf,
    /// The selected checkpoint's validation accuracy (summary.json's `best_eval`).
    pub val_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    /// The selected checkpoint's accuracy on each of `data.eval_sets`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_sets: std::collections::BTreeMap<String, f64>,
    pub global_step: u64,
    pub wall_s: f64,
    pub peak_memory_mib: f64,
    pub memory_kind: MemoryKind,
}

/// `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub config: PathBuf,
    pub grid: Vec<GridAxis>,
    pub points: Vec<SweepPoint>,
    /// The point with the best validation accuracy.
    pub best: Option<String>,
}

/// A run folder name for a point: its number and values, in the characters a
/// folder name keeps everywhere; a value that is a table or an array, or
/// longer than 24 characters, is named by its place in its axis (`transforms#2`
/// for the axis's second value).
fn point_name(i: usize, values: &[(String, String)], grid: &[GridAxis]) -> String {
    let text: String = values
        .iter()
        .map(|(k, v)| {
            let short = k.rsplit('.').next().unwrap_or(k);
            let structured = v.starts_with(['[', '{']) || v.chars().count() > 24;
            match grid.iter().find(|a| &a.key == k) {
                Some(axis) if structured => {
                    let n = axis.values.iter().position(|x| x == v).unwrap_or(0) + 1;
                    format!("{short}#{n}")
                }
                _ => format!("{short}={v}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let clean: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '=' | ',' | '-' | '+' | '#' => c,
            _ => '_',
        })
        .take(80)
        .collect();
    format!("{i:03}-{clean}")
}

/// Every point of the grid, in order (the last axis varies fastest).
fn points(grid: &[GridAxis]) -> Vec<Vec<(String, String)>> {
    grid.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((axis.key.clone(), v.clone()));
                    q
                })
            })
            .collect()
    })
}

/// The most points a sweep may have.
pub const MAX_POINTS: usize = 1000;

/// Runs the sweep of `grid` over `config_path` (with `overrides`) into
/// `out_dir`; `train` runs one training job (as `compare`'s), `jobs` of them at
/// a time (each then writes its console to `out_dir/logs/<point>.log`). Every
/// point is checked before the first trains; after a failed job no new one
/// starts, the running ones finish, the finished points are tabled and the
/// error is returned.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    config_path: &Path,
    overrides: &[String],
    grid: &[GridAxis],
    out_dir: &Path,
    rerun: bool,
    jobs: usize,
    train: &(dyn Fn(&TrainJob) -> Result<()> + Sync),
) -> Result<SweepReport> {
    if grid.is_empty() {
        return Err(TrainError::Usage(
            "sweep: give at least one --grid KEY=V1,V2".into(),
        ));
    }
    let all = points(grid);
    if all.len() > MAX_POINTS {
        return Err(TrainError::Usage(format!(
            "sweep: the grid has {} points, more than {MAX_POINTS}",
            all.len()
        )));
    }
    // Every point's config must load, and every folder's earlier run agree with
    // it, before the first one trains.
    let mut planned = Vec::new();
    for (i, values) in all.into_iter().enumerate() {
        let name = point_name(i, &values, grid);
        let run_dir = out_dir.join(&name);
        let mut o = overrides.to_vec();
        o.extend(values.iter().map(|(k, v)| format!("{k}={v}")));
        let what = format!("sweep: point {name}");
        let job = job_for(config_path, o, &run_dir, rerun, &what)?;
        planned.push((name, values, run_dir, job));
    }
    std::fs::create_dir_all(out_dir).map_err(TrainError::io("cannot create", out_dir))?;
    let jobs = jobs.max(1);
    let logs = out_dir.join("logs");
    if jobs > 1 {
        std::fs::create_dir_all(&logs).map_err(TrainError::io("cannot create", &logs))?;
    }
    let state = std::sync::Mutex::new(Progress {
        report: SweepReport {
            config: config_path.to_path_buf(),
            grid: grid.to_vec(),
            points: Vec::new(),
            best: None,
        },
        done: vec![None; planned.len()],
        failed: Vec::new(),
    });
    let finish = |i: usize, run_dir: &Path| -> Result<()> {
        let r = finished_run(run_dir)?;
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let (name, values) = (&planned[i].0, &planned[i].1);
        s.done[i] = Some(SweepPoint::of(name, values, run_dir, &r));
        s.update();
        write_outputs(out_dir, &s.report)
    };
    let mut queue = Vec::new();
    for (i, (name, _, run_dir, job)) in planned.iter().enumerate() {
        match job {
            None => finish(i, run_dir)?,
            Some(job) => {
                let mut job = job.clone();
                if jobs > 1 {
                    job.log = Some(logs.join(format!("{name}.log")));
                }
                queue.push((i, job));
            }
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let worker = || {
        use std::sync::atomic::Ordering;
        while !stop.load(Ordering::SeqCst) {
            let Some((i, job)) = queue.get(next.fetch_add(1, Ordering::SeqCst)) else {
                break;
            };
            if let Err(e) = train(job).and_then(|()| finish(*i, &job.run_dir)) {
                stop.store(true, Ordering::SeqCst);
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                s.failed.push(e);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(queue.len()) {
            scope.spawn(worker);
        }
    });
    let s = state.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut failed = s.failed.into_iter();
    match failed.next() {
        Some(first) => {
            for other in failed {
                tracing::error!("sweep: {other}");
            }
            Err(first)
        }
        None => Ok(s.report),
    }
}

/// The sweep's state while jobs run: each point once finished, and the errors.
struct Progress {
    report: SweepReport,
    done: Vec<Option<SweepPoint>>,
    failed: Vec<TrainError>,
}

impl Progress {
    /// The report's points (the finished ones, in grid order) and best point.
    fn update(&mut self) {
        self.report.points = self.done.iter().flatten().cloned().collect();
        self.report.best = self
            .report
            .points
            .iter()
            .filter(|p| p.val_accuracy.is_some())
            .max_by(|a, b| {
                a.val_accuracy
                    .partial_cmp(&b.val_accuracy)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|p| p.name.clone());
    }
}

impl SweepPoint {
    /// The point `name` with `values`, trained in `run_dir`, from its summary.
    fn of(name: &str, values: &[(String, String)], run_dir: &Path, r: &FitReport) -> Self {
        SweepPoint {
            name: name.to_string(),
            values: values.to_vec(),
            run_dir: run_dir.to_path_buf(),
            val_accuracy: r.best_eval.as_ref().map(|e| e.val.accuracy),
            val_loss: r.best_eval.as_ref().map(|e| e.val.loss),
            eval_sets: r
                .best_eval
                .iter()
                .flat_map(|e| e.val.eval_sets.iter())
                .map(|(k, v)| (k.clone(), v.accuracy))
                .collect(),
            global_step: r.global_step,
            wall_s: r.wall_s,
            peak_memory_mib: r.peak_memory_mib,
            memory_kind: r.memory_kind,
        }
    }
}

/// The report as a Markdown table.
pub fn sweep_markdown(report: &SweepReport) -> String {
    let keys: Vec<&str> = report.grid.iter().map(|a| a.key.as_str()).collect();
    let sets: std::collections::BTreeSet<&String> = report
        .points
        .iter()
        .flat_map(|p| p.eval_sets.keys())
        .collect();
    let set_columns: String = sets.iter().map(|s| format!(" {s} accuracy |")).collect();
    let mut s = format!(
        "# Sweep\n\nConfig `{}`, {} point(s); the best validation accuracy: {}.\n\n| point | {} | val accuracy |{set_columns} val loss | steps | time | peak memory |\n|---|{}---|{}---|---|---|---|\n",
        report.config.display(),
        report.points.len(),
        report.best.as_deref().unwrap_or("n/a"),
        keys.join(" | "),
        "---|".repeat(keys.len()),
        "---|".repeat(sets.len())
    );
    let pct = |a: Option<f64>| a.map_or("n/a".into(), |a| format!("{:.2}%", a * 100.0));
    for p in &report.points {
        let values: Vec<&str> = p.values.iter().map(|(_, v)| v.as_str()).collect();
        let set_values: String = sets
            .iter()
            .map(|k| format!(" {} |", pct(p.eval_sets.get(*k).copied())))
            .collect();
        s.push_str(&format!(
            "| {}{} | {} | {} |{set_values} {} | {} | {:.0} s | {:.0} MiB {} |\n",
            p.name,
            if report.best.as_deref() == Some(p.name.as_str()) {
                " (best)"
            } else {
                ""
            },
            values.join(" | "),
            pct(p.val_accuracy),
            p.val_loss.map_or("n/a".into(), |l| format!("{l:.4}")),
            p.global_step,
            p.wall_s,
            p.peak_memory_mib,
            p.memory_kind.label()
        ));
    }
    s
}

/// `sweep.json`, `sweep.md` and `sweep.png` into `dir`.
fn write_outputs(dir: &Path, report: &SweepReport) -> Result<()> {
    write_json(&dir.join("sweep.json"), report)?;
    write_atomic(&dir.join("sweep.md"), sweep_markdown(report).as_bytes())?;
    let bars: Vec<(String, f64)> = report
        .points
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.val_accuracy? * 100.0)))
        .collect();
    draw(&dir.join("sweep.png"), |path| {
        bar_chart(
            path,
            "Sweep: validation accuracy of each point's selected checkpoint",
            "accuracy %",
            &bars,
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_split_values_outside_brackets_and_make_every_point() {
        let a = GridAxis::parse("optim.lr=1e-4, 3e-4").unwrap();
        assert_eq!(a.values, ["1e-4", "3e-4"]);
        let b = GridAxis::parse(r#"data.loader.mix={mixup_alpha=0.2, cutmix_alpha=1.0},{},"a,b""#)
            .unwrap();
        assert_eq!(
            b.values,
            ["{mixup_alpha=0.2, cutmix_alpha=1.0}", "{}", "\"a,b\""]
        );
        assert!(GridAxis::parse("optim.lr").is_err());
        assert!(GridAxis::parse("optim.lr=1,,2").is_err());
        let p = points(&[a, GridAxis::parse("train.epochs=1,2,3").unwrap()]);
        assert_eq!(p.len(), 6);
        assert_eq!(
            p[1],
            [
                ("optim.lr".to_string(), "1e-4".to_string()),
                ("train.epochs".to_string(), "2".to_string())
            ]
        );
        let grid = [GridAxis::parse("optim.lr=1e-4,3e-4").unwrap()];
        assert_eq!(point_name(1, &p[1], &grid), "001-lr=1e-4,epochs=2");
        assert_eq!(
            point_name(7, &[("a".into(), "\"/y z\"".into())], &grid),
            "007-a=__y_z_"
        );
        // Tables, arrays and long values are named by their place in the axis.
        let grid = [GridAxis::parse(r#"data.train_transforms=[{op="normalize"}],[]"#).unwrap()];
        assert_eq!(
            point_name(3, &[("data.train_transforms".into(), "[]".into())], &grid),
            "003-train_transforms#2"
        );
    }
}
