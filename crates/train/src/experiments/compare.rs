//! `compare`: zero-shot, linear probe, LoRA r=8 / r=16, full fine-tuning and a
//! WiSE-FT sweep on the same split, seed and budget, with the tutorial's table
//! (training time, memory, validation accuracy, trainable share) as the report.
//!
//! Training rows run as separate jobs (the CLI runs `train-cli train` in a child
//! process, so each row's peak memory is its own); a job whose run folder already
//! finished is reused and an interrupted one is resumed, so an interrupted
//! `compare` continues where it stopped — but only when the row's resolved config
//! is the one it would run now: a changed config is refused, naming the keys,
//! unless `rerun` (then the row trains afresh). Zero-shot and WiSE-FT evaluate in
//! process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn;

use clip_model::{ClipClassifier, HeadInit, HeadKind, ModelFiles};

use crate::assembly::{build_model, eval_loader, load_datasets, pipelines, run_classes};
use crate::config::{CompareMethod, RunConfig};
use crate::device::{MemoryKind, Placement};
use crate::error::{Result, TrainError};
use crate::eval::evaluate;
use crate::experiments::soup::{SoupData, soup};
use crate::experiments::wise_ft::{HF_HEAD_NO_WISE, WiseReport, wise_ft};
use crate::observe::plots::{Series, bar_chart, font, line_chart};
use crate::report::{FitReport, MetricsLine, read_metrics, read_summary};
use crate::run::checkpoint::latest_checkpoint;
use crate::run::locate::load_classifier;

/// A training job for the runner: the config file plus overrides, run in
/// `run_dir` (fresh, or resumed when `resume`).
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub config: PathBuf,
    pub overrides: Vec<String>,
    pub run_dir: PathBuf,
    pub resume: bool,
    /// A file for the job's console output (jobs run side by side); `None`: the
    /// runner's own console.
    pub log: Option<PathBuf>,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub method: String,
    /// Training (or evaluation) wall time, seconds.
    pub wall_s: Option<f64>,
    /// Peak memory of the job's training, MiB (`None` when measured in process
    /// together with other rows): GPU allocated on CUDA (the tutorial's column),
    /// host RSS on the CPU, as `memory_kind` says.
    pub peak_memory_mib: Option<f64>,
    #[serde(default)]
    pub memory_kind: Option<MemoryKind>,
    pub trainable_parameters: i64,
    pub trainable_share: f64,
    pub best_val_accuracy: Option<f64>,
    /// Validation accuracy after each epoch.
    pub accuracy_per_epoch: Vec<f64>,
    pub run_dir: Option<PathBuf>,
    /// Why the row has no numbers, when it has none.
    pub note: Option<String>,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    pub config: PathBuf,
    pub config_hash: String,
    pub train_images: usize,
    pub val_images: usize,
    pub epochs: u64,
    pub rows: Vec<CompareRow>,
    pub wise_ft: Option<WiseReport>,
}

/// The overrides that turn the config's recipe into `method` (none for rows
/// that do not train).
pub fn method_overrides(cfg: &RunConfig, method: CompareMethod) -> Vec<String> {
    let lora = |r: i64| {
        vec![
            format!("model.lora={{r={r}, alpha={}}}", 2 * r),
            format!(
                "optim.lr={:e}",
                cfg.compare.lora_lr.unwrap_or(cfg.optim.lr * 10.0)
            ),
            "train.unfreeze={kind=\"all\"}".into(),
        ]
    };
    match method {
        CompareMethod::LinearProbe => vec![
            "train.unfreeze={kind=\"head_only\"}".into(),
            format!(
                "optim.lr_policy={{kind=\"uniform\", head_lr={:e}}}",
                cfg.compare
                    .probe_lr
                    .unwrap_or_else(|| cfg.optim.lr_policy.head_lr(cfg.optim.lr))
            ),
        ],
        CompareMethod::LoraR8 => lora(8),
        CompareMethod::LoraR16 => lora(16),
        CompareMethod::Flyp => vec![
            "train.objective=\"contrastive\"".into(),
            "optim.frozen_towers=[]".into(),
            "train.unfreeze={kind=\"all\"}".into(),
            "data.loader.mix={}".into(),
            format!(
                "model.head.templates={}",
                serde_json::to_string(&cfg.compare.templates).unwrap_or_default()
            ),
        ],
        CompareMethod::ZeroShot
        | CompareMethod::Full
        | CompareMethod::WiseFt
        | CompareMethod::Soup => Vec::new(),
    }
}

/// The zero-shot classifier of the config's model (pretrained, or its random
/// initialisation under the run's seed) with the data's classes, or why not.
pub fn zero_shot_model(
    cfg: &RunConfig,
    vs: &nn::VarStore,
    classes: Vec<String>,
) -> Result<std::result::Result<ClipClassifier, String>> {
    if let Some(why) = no_tokenizer(cfg)? {
        return Ok(Err(why));
    }
    let mut zs = cfg.clone();
    zs.model.head.kind = HeadKind::Cosine;
    zs.model.head.scale = None;
    zs.model.head.init = HeadInit::ZeroShot;
    zs.model.head.templates = cfg.compare.templates.clone();
    zs.model.lora = None;
    // The same initial weights as the runs of this config.
    tch::manual_seed(cfg.run.seed as i64);
    Ok(Ok(build_model(&zs, vs, classes)?))
}

fn epoch_accuracies(run_dir: &Path) -> Result<Vec<f64>> {
    let lines = read_metrics(&run_dir.join("metrics.jsonl"))?;
    let mut by_epoch: Vec<(u64, f64)> = Vec::new();
    for l in lines {
        if let MetricsLine::Eval(r) = l {
            match by_epoch.iter_mut().find(|(e, _)| *e == r.epoch) {
                Some(slot) => slot.1 = r.val.accuracy,
                None => by_epoch.push((r.epoch, r.val.accuracy)),
            }
        }
    }
    Ok(by_epoch.into_iter().map(|(_, a)| a).collect())
}

fn finished(run_dir: &Path) -> Option<FitReport> {
    read_summary(run_dir).filter(|r| !r.interrupted)
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), f)
}

/// The report as Markdown, the tutorial's table first.
pub fn markdown(report: &CompareReport) -> String {
    let mut s = format!(
        "# Comparison\n\nConfig `{}` (hash {}), {} training and {} validation images, {} epoch(s), same split, seed and budget for every method.\n\n",
        report.config.display(),
        report.config_hash,
        report.train_images,
        report.val_images,
        report.epochs
    );
    s.push_str("| method | training time | peak memory | trainable parameters | trainable share | best val accuracy | accuracy per epoch |\n|---|---:|---:|---:|---:|---:|---|\n");
    for r in &report.rows {
        let per_epoch: Vec<String> = r
            .accuracy_per_epoch
            .iter()
            .map(|a| format!("{:.1}", a * 100.0))
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2}% | {} | {} |\n",
            r.method,
            fmt_opt(r.wall_s, |w| format!("{w:.0} s")),
            fmt_opt(r.peak_memory_mib, |m| format!(
                "{m:.0} MiB ({})",
                r.memory_kind.unwrap_or_default().label()
            )),
            r.trainable_parameters,
            r.trainable_share * 100.0,
            fmt_opt(r.best_val_accuracy, |a| format!("{:.2}%", a * 100.0)),
            if per_epoch.is_empty() {
                r.note.clone().unwrap_or_default()
            } else {
                per_epoch.join(", ")
            },
        ));
    }
    if let Some(w) = &report.wise_ft {
        s.push_str("\n## WiSE-FT (zero-shot -> full fine-tuning)\n\n| alpha | val accuracy |\n|---:|---:|\n");
        for p in &w.points {
            s.push_str(&format!(
                "| {:.2} | {:.2}% |\n",
                p.alpha,
                p.accuracy * 100.0
            ));
        }
        s.push_str(&format!(
            "\nBest alpha {:.2}: {:.2}%.\n",
            w.best_alpha,
            w.best_accuracy * 100.0
        ));
    }
    let notes: Vec<String> = report
        .rows
        .iter()
        .filter_map(|r| r.note.as_ref().map(|n| format!("- {}: {n}", r.method)))
        .collect();
    if !notes.is_empty() {
        s.push_str(&format!("\nNotes:\n{}\n", notes.join("\n")));
    }
    s.push_str(
        "\nAccuracy curves: `accuracy.png`; best accuracy by method: `accuracy_bars.png`.\n",
    );
    s
}

fn write_outputs(dir: &Path, report: &CompareReport) -> Result<()> {
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    clip_model::write_atomic(&dir.join("report.json"), json.as_bytes())?;
    clip_model::write_atomic(&dir.join("report.md"), markdown(report).as_bytes())?;
    let colors = [
        plotters::style::RED,
        plotters::style::BLUE,
        plotters::style::GREEN,
        plotters::style::MAGENTA,
        plotters::style::CYAN,
        plotters::style::BLACK,
    ];
    let series: Vec<(&str, Series, plotters::style::RGBColor)> = report
        .rows
        .iter()
        .filter(|r| !r.accuracy_per_epoch.is_empty())
        .zip(colors.iter().cycle())
        .map(|(r, c)| {
            let pts = r
                .accuracy_per_epoch
                .iter()
                .enumerate()
                .map(|(i, a)| ((i + 1) as f64, a * 100.0))
                .collect();
            (r.method.as_str(), pts, *c)
        })
        .collect();
    let drawn = font().and_then(|()| {
        line_chart(
            &dir.join("accuracy.png"),
            "validation accuracy by method",
            "epoch",
            "%",
            &series,
            &[],
        )
    });
    let bars: Vec<(String, f64)> = report
        .rows
        .iter()
        .filter_map(|r| Some((r.method.clone(), r.best_val_accuracy? * 100.0)))
        .collect();
    let drawn = drawn.and_then(|()| {
        bar_chart(
            &dir.join("accuracy_bars.png"),
            "best validation accuracy by method",
            "%",
            &bars,
        )
    });
    if let Err(e) = drawn {
        tracing::warn!("comparison plot not drawn: {e}");
    }
    Ok(())
}

/// What every row shares: the config, its file and overrides, the split, the
/// output folder.
struct Setup<'a> {
    cfg: RunConfig,
    config_path: &'a Path,
    overrides: &'a [String],
    out_dir: &'a Path,
    classes: Vec<String>,
    val: clip_data::Dataset,
    /// Retrain rows whose earlier run has another config instead of refusing.
    rerun: bool,
}

impl CompareRow {
    fn skipped(method: CompareMethod, why: String) -> Self {
        Self {
            method: method.name().into(),
            wall_s: None,
            peak_memory_mib: None,
            memory_kind: None,
            trainable_parameters: 0,
            trainable_share: 0.0,
            best_val_accuracy: None,
            accuracy_per_epoch: Vec::new(),
            run_dir: None,
            note: Some(format!("skipped: {why}")),
        }
    }
}

/// CLIP's zero-shot classifier on the validation split.
fn zero_shot_row(b: &Setup) -> Result<CompareRow> {
    let method = CompareMethod::ZeroShot;
    let t0 = Instant::now();
    let place = Placement::of_run(&b.cfg)?;
    let vs = nn::VarStore::new(place.device);
    let zs = match zero_shot_model(&b.cfg, &vs, b.classes.clone())? {
        Ok(zs) => zs,
        Err(why) => return Ok(CompareRow::skipped(method, why)),
    };
    let size = zs.clip.config().vision_config.image_size as usize;
    let (_, eval_pipe) = pipelines(&b.cfg, size)?;
    let loader = eval_loader(&b.cfg, b.val.clone(), eval_pipe)?;
    let r = evaluate(&zs, &loader, place.precision, place.device, |_, _| Ok(()))?;
    Ok(CompareRow {
        method: method.name().into(),
        wall_s: Some(t0.elapsed().as_secs_f64()),
        peak_memory_mib: None,
        memory_kind: None,
        trainable_parameters: 0,
        trainable_share: 0.0,
        best_val_accuracy: Some(r.accuracy),
        accuracy_per_epoch: Vec::new(),
        run_dir: None,
        note: Some("no training: the head comes from text embeddings of the class names".into()),
    })
}

/// Why the FLYP row cannot train with this config, if it cannot: it needs a
/// tokenizer and the cosine head.
fn flyp_unavailable(b: &Setup) -> Result<Option<String>> {
    if !b.cfg.model.head.kind.in_embedding_space() {
        return Ok(Some(
            "FLYP's classifier is the zero-shot head of its text tower: it needs `model.head.kind = \"cosine\"`".into(),
        ));
    }
    no_tokenizer(&b.cfg)
}

/// Why the config's model has no tokenizer (for prompts and captions), if it has
/// none.
fn no_tokenizer(cfg: &RunConfig) -> Result<Option<String>> {
    if cfg.model.tokenizer.is_some() {
        return Ok(None);
    }
    Ok(match &cfg.model.pretrained {
        None => Some("a randomly initialised model needs `model.tokenizer` for its prompts".into()),
        Some(spec) if ModelFiles::resolve(spec)?.tokenizer.is_none() => {
            Some(format!("{spec} has no tokenizer.json"))
        }
        Some(_) => None,
    })
}

/// The `full` row's weights mixed with the zero-shot model's (the config's
/// validation puts `full` first).
fn wise_ft_row(b: &Setup) -> Result<(CompareRow, Option<WiseReport>)> {
    let method = CompareMethod::WiseFt;
    let t0 = Instant::now();
    if !b.cfg.model.head.kind.in_embedding_space() {
        return Ok((CompareRow::skipped(method, HF_HEAD_NO_WISE.into()), None));
    }
    let place = Placement::of_run(&b.cfg)?;
    let vs = nn::VarStore::new(place.device);
    let zs = match zero_shot_model(&b.cfg, &vs, b.classes.clone())? {
        Ok(zs) => zs,
        Err(why) => return Ok((CompareRow::skipped(method, why), None)),
    };
    let full_dir = b.out_dir.join(CompareMethod::Full.name());
    let full = finished(&full_dir).ok_or_else(|| TrainError::Resume {
        path: full_dir.clone(),
        reason: "wise_ft needs the finished `full` row".into(),
    })?;
    let vs_ft = nn::VarStore::new(place.device);
    let mut ft = load_classifier(&vs_ft, &full_dir.display().to_string())?;
    let batch = b.cfg.data.eval_batch();
    let w = wise_ft(
        &zs,
        &mut ft,
        &b.cfg.compare.wise_alphas,
        b.val.clone(),
        &[],
        batch,
        place,
    )?;
    let total = ft.params().count(|_| true);
    let row = CompareRow {
        method: method.name().into(),
        wall_s: Some(t0.elapsed().as_secs_f64()),
        peak_memory_mib: None,
        memory_kind: None,
        trainable_parameters: full.trainable_parameters,
        trainable_share: full.trainable_parameters as f64 / total.max(1) as f64,
        best_val_accuracy: Some(w.best_accuracy),
        accuracy_per_epoch: Vec::new(),
        run_dir: Some(full_dir),
        note: Some(format!(
            "weights of `full` mixed with the zero-shot model; best alpha {:.2}; time is the sweep's (plus full's training)",
            w.best_alpha
        )),
    };
    Ok((row, Some(w)))
}

/// The keys in which the run in `run_dir` (its `config.resolved.toml`) differs
/// from `want`, the config the row would run now; empty for a folder without a
/// run. `compare.*` (which rows to run, the sweep) and `run.overwrite` (how a
/// fresh row starts) do not change a row's training.
fn changed_keys(run_dir: &Path, want: &RunConfig) -> Vec<String> {
    let saved = run_dir.join(crate::run::folder::CONFIG_FILE);
    match std::fs::read_to_string(&saved) {
        Ok(earlier) => want
            .differences(&earlier)
            .into_iter()
            .filter(|d| !d.starts_with("compare.") && !d.starts_with("run.overwrite:"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Trains the run `config_path` with `overrides` describes into `run_dir` (its
/// `run.output_dir` / `run.name` set here), resumes it when it was interrupted,
/// or reuses it when it finished with the same config; an earlier run there with
/// another config is refused naming the keys (`what` says which), or trained
/// again with `rerun`. The finished run's summary.
pub(crate) fn run_or_reuse(
    config_path: &Path,
    o: Vec<String>,
    run_dir: &Path,
    rerun: bool,
    what: &str,
    train: &mut dyn FnMut(&TrainJob) -> Result<()>,
) -> Result<FitReport> {
    if let Some(job) = job_for(config_path, o, run_dir, rerun, what)? {
        train(&job)?;
    }
    finished_run(run_dir)
}

/// The job [`run_or_reuse`] runs for `run_dir`: a fresh run, a resumed one, or
/// one trained again; `None` when the run there finished with this config.
pub(crate) fn job_for(
    config_path: &Path,
    mut o: Vec<String>,
    run_dir: &Path,
    rerun: bool,
    what: &str,
) -> Result<Option<TrainJob>> {
    let (parent, name) = match (run_dir.parent(), run_dir.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy().to_string()),
        _ => {
            return Err(TrainError::Usage(format!(
                "{} is not a run folder path",
                run_dir.display()
            )));
        }
    };
    o.push(format!("run.output_dir={:?}", parent.display().to_string()));
    o.push(format!("run.name={name:?}"));
    let changed = changed_keys(run_dir, &RunConfig::load(config_path, &o)?);
    if !changed.is_empty() && !rerun {
        return Err(TrainError::Usage(format!(
            "{what} in {} was trained with another config ({}); rerun with `--rerun` to train \
             it again, or give another `--output`",
            run_dir.display(),
            changed.join("; ")
        )));
    }
    if changed.is_empty() && finished(run_dir).is_some() {
        return Ok(None);
    }
    let resume = changed.is_empty() && latest_checkpoint(run_dir).is_ok();
    if !changed.is_empty() {
        tracing::warn!(
            "{what}: training again (its config changed: {})",
            changed.join("; ")
        );
    }
    if !resume {
        o.push("run.overwrite=true".into());
    }
    Ok(Some(TrainJob {
        config: config_path.to_path_buf(),
        overrides: o,
        run_dir: run_dir.to_path_buf(),
        resume,
        log: None,
    }))
}

/// The summary of the finished run in `run_dir` (an error when its job ended
/// without one).
pub(crate) fn finished_run(run_dir: &Path) -> Result<FitReport> {
    finished(run_dir).ok_or_else(|| TrainError::Resume {
        path: run_dir.to_path_buf(),
        reason: "the job ended without a finished summary.json".into(),
    })
}

/// A training row: its job runs (or resumes, or is reused when finished) in
/// `out_dir/<method>`; an earlier run there with another config is refused, or
/// retrained with `rerun`.
fn training_row(
    b: &Setup,
    method: CompareMethod,
    train: &mut dyn FnMut(&TrainJob) -> Result<()>,
) -> Result<CompareRow> {
    let run_dir = b.out_dir.join(method.name());
    let mut o = b.overrides.to_vec();
    o.extend(method_overrides(&b.cfg, method));
    let what = format!("compare: the `{}` row", method.name());
    let r = run_or_reuse(b.config_path, o, &run_dir, b.rerun, &what, train)?;
    let evals: Vec<f64> = read_metrics(&run_dir.join("metrics.jsonl"))?
        .into_iter()
        .filter_map(|l| match l {
            MetricsLine::Eval(e) => Some(e.val.accuracy),
            MetricsLine::Step(_) => None,
        })
        .collect();
    Ok(CompareRow {
        method: method.name().into(),
        wall_s: Some(r.wall_s),
        peak_memory_mib: Some(r.peak_memory_mib),
        memory_kind: Some(r.memory_kind),
        trainable_parameters: r.trainable_parameters,
        trainable_share: r.trainable_share,
        best_val_accuracy: evals.iter().copied().reduce(f64::max),
        accuracy_per_epoch: epoch_accuracies(&run_dir)?,
        run_dir: Some(run_dir),
        note: None,
    })
}

/// The `soup` rows: the uniform and the greedy soup of the trained `rows` so
/// far, selected and measured on the validation split, exported into
/// `<output>/soup/` (uniform/, greedy/, soup.json); one skipped row when fewer
/// than two trained or they cannot go into one soup.
fn soup_rows(b: &Setup, rows: &[CompareRow]) -> Result<Vec<CompareRow>> {
    let method = CompareMethod::Soup;
    let t0 = Instant::now();
    let trains = |r: &CompareRow| {
        CompareMethod::ALL
            .iter()
            .any(|m| m.trains() && m.name() == r.method)
    };
    let trained: Vec<&CompareRow> = rows
        .iter()
        .filter(|r| trains(r) && r.run_dir.is_some() && r.best_val_accuracy.is_some())
        .collect();
    let models: Vec<String> = trained
        .iter()
        .filter_map(|r| r.run_dir.as_ref().map(|d| d.display().to_string()))
        .collect();
    if models.len() < 2 {
        return Ok(vec![CompareRow::skipped(
            method,
            format!(
                "a soup needs two trained rows, and {} trained",
                models.len()
            ),
        )]);
    }
    let place = Placement::of_run(&b.cfg)?;
    let batch = b.cfg.data.eval_batch();
    let data = SoupData::Loaded {
        data: b.val.clone(),
        label: PathBuf::from("compare's validation split"),
    };
    let mut soups = match soup(&models, data, batch, place) {
        Ok(s) => s,
        // Rows of another architecture, head or classes (named in the error).
        Err(e @ TrainError::Config { .. }) => {
            return Ok(vec![CompareRow::skipped(method, e.to_string())]);
        }
        Err(e) => return Err(e),
    };
    let dir = b.out_dir.join("soup");
    soups.save(&dir, true)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let names = |of: &[String]| -> String {
        trained
            .iter()
            .zip(&models)
            .filter(|(_, m)| of.contains(m))
            .map(|(r, _)| r.method.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let r = &soups.report;
    Ok([("uniform", &r.uniform), ("greedy", &r.greedy)]
        .into_iter()
        .map(|(kind, figures)| CompareRow {
            method: format!("soup_{kind}"),
            wall_s: Some(wall_s),
            peak_memory_mib: None,
            memory_kind: None,
            trainable_parameters: 0,
            trainable_share: 0.0,
            best_val_accuracy: Some(figures.accuracy),
            accuracy_per_epoch: Vec::new(),
            run_dir: Some(dir.join(kind)),
            note: Some(format!(
                "no training: the mean of the weights of {} (exported to {})",
                names(&figures.ingredients),
                dir.join(kind).display()
            )),
        })
        .collect())
}

/// Runs the comparison into `out_dir`; `train` runs one training job.
pub fn compare(
    config_path: &Path,
    overrides: &[String],
    out_dir: &Path,
    rerun: bool,
    train: &mut dyn FnMut(&TrainJob) -> Result<()>,
) -> Result<CompareReport> {
    let cfg = RunConfig::load(config_path, overrides)?;
    // A device that is not there fails here, before any training; and CUDA is
    // loaded before anything asks libtorch about it.
    Placement::of_run(&cfg)?;
    std::fs::create_dir_all(out_dir).map_err(TrainError::io("cannot create", out_dir))?;
    let (train_ds, val_ds) = load_datasets(&cfg)?;
    let mut report = CompareReport {
        config: config_path.to_path_buf(),
        config_hash: cfg.hash(),
        train_images: train_ds.len(),
        val_images: val_ds.len(),
        epochs: cfg.train.epochs,
        rows: Vec::new(),
        wise_ft: None,
    };
    let methods = cfg.compare.methods.clone();
    let setup = Setup {
        classes: run_classes(&train_ds, &val_ds),
        val: val_ds,
        cfg,
        config_path,
        overrides,
        out_dir,
        rerun,
    };
    for method in methods {
        tracing::info!(method = method.name(), "compare");
        let row = match method {
            CompareMethod::ZeroShot => zero_shot_row(&setup)?,
            CompareMethod::WiseFt => {
                let (row, sweep) = wise_ft_row(&setup)?;
                report.wise_ft = sweep;
                row
            }
            CompareMethod::Flyp => match flyp_unavailable(&setup)? {
                Some(why) => CompareRow::skipped(method, why),
                None => training_row(&setup, method, train)?,
            },
            CompareMethod::Soup => {
                let rows = soup_rows(&setup, &report.rows)?;
                report.rows.extend(rows);
                write_outputs(out_dir, &report)?;
                continue;
            }
            CompareMethod::LinearProbe
            | CompareMethod::LoraR8
            | CompareMethod::LoraR16
            | CompareMethod::Full => training_row(&setup, method, train)?,
        };
        report.rows.push(row);
        write_outputs(out_dir, &report)?;
    }
    Ok(report)
}
