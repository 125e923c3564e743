//! One function per subcommand: take its arguments, call the library, print.

use crate::console::{self, say};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use tch::nn;

use clip_data::{Dataset, SourceConfig};
use clip_model::{ClipClassifier, HeadConfig};
use clip_train::{Launched, Placement, RunConfig, Trainer};

use crate::args::{
    BenchArgs, CompareArgs, ConfigArgs, ConvertArgs, EvalArgs, ExportArgs, InferenceArgs,
    InspectArgs, PlacementArgs, PredictArgs, PreviewAugmentArgs, SoupArgs, SweepArgs, TrainArgs,
    WiseFtArgs, ZeroShotArgs,
};

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT), or by a data-parallel peer.
const INTERRUPTED: u8 = 130;

/// 128 + the signal that stopped the run (SIGINT 130, SIGHUP 129, SIGTERM 143); 130
/// for a rank that another rank's signal stopped.
fn exit_code_for(signal: usize) -> u8 {
    u8::try_from(signal)
        .ok()
        .filter(|&s| s > 0)
        .map_or(INTERRUPTED, |s| 128u8.saturating_add(s))
}

/// Ctrl-C, SIGTERM (Slurm, Kubernetes, `timeout`, torchrun) and SIGHUP set `stop`:
/// the run finishes its step, writes a checkpoint and returns. A second signal in a
/// single process ends it at once with `_exit` (no destructors run while libtorch
/// works; the last checkpoint is intact); in a data-parallel run it is ignored
/// (torchrun forwards a Ctrl-C to its workers again). Returns the first signal's
/// number (0 until one arrives).
fn watch_signals(
    stop: Arc<AtomicBool>,
    rank: usize,
    world: usize,
) -> anyhow::Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let first = Arc::new(AtomicUsize::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    let seen = first.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = match sig {
                    SIGINT => "Ctrl-C",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                if stop.swap(true, Ordering::SeqCst) {
                    if world == 1 {
                        crate::console::warn(&format!(
                            "\nsecond signal ({name}): exiting now without a checkpoint (the last one is intact)"
                        ));
                        signal_hook::low_level::exit(128 + sig);
                    }
                    continue;
                }
                let _ = seen.compare_exchange(0, sig as usize, Ordering::SeqCst, Ordering::SeqCst);
                if rank == 0 {
                    crate::console::warn(&format!(
                        "\n{name}: finishing the current step and writing a checkpoint{}",
                        if world == 1 {
                            " (Ctrl-C again to quit now)"
                        } else {
                            " (every rank stops at the same step)"
                        }
                    ));
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(first)
}

/// `--config`'s file (a bare name is looked up in `configs/`), read with `overrides`.
fn load_config(path: &Path, overrides: &[String]) -> anyhow::Result<RunConfig> {
    Ok(RunConfig::load(&clip_train::find_config(path)?, overrides)?)
}

pub fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    if let Some(d) = &args.output_dir {
        overrides.push(format!("run.output_dir={:?}", d.display().to_string()));
    }
    let config = args
        .config
        .as_deref()
        .map(clip_train::find_config)
        .transpose()?;
    if args.dry_run {
        let plan = clip_train::dry_run(config.as_deref(), args.resume.as_deref(), &overrides)?;
        println!("{plan}");
        say!("dry run: nothing was trained or written");
        return Ok(ExitCode::SUCCESS);
    }
    let (mut trainer, launched) = Trainer::launch(
        config.as_deref(),
        args.resume.as_deref(),
        &overrides,
        args.allow_data_change,
    )?;
    if let Launched::Resumed {
        dir,
        from,
        step,
        restart,
    } = &launched
    {
        if let Some(n) = restart {
            console::warn(&format!(
                "torchrun restart {n}: continuing {} from its latest checkpoint",
                dir.display()
            ));
        }
        say!(
            "resuming {} from {} (step {step})",
            dir.display(),
            from.display()
        );
    }
    let (rank, world) = trainer.rank_and_world();
    let signal = watch_signals(trainer.stop_flag(), rank, world)?;
    let interrupted = || ExitCode::from(exit_code_for(signal.load(Ordering::SeqCst)));
    if !trainer.is_main() {
        // Rank 0 writes the run's files and prints; the others train and stay quiet.
        let report = trainer.fit(&mut [])?;
        return Ok(if report.interrupted {
            interrupted()
        } else {
            ExitCode::SUCCESS
        });
    }
    if world > 1 {
        let (b, accum) = (
            trainer.config().data.loader.batch_size,
            trainer.config().train.grad_accum,
        );
        say!(
            "data-parallel: {world} ranks, global batch {} (batch_size {b} x {world} ranks x grad_accum {accum})",
            b * world * accum
        );
    }
    let run_dir = trainer.run_dir().to_path_buf();
    say!("run folder: {}", run_dir.display());
    say!("{}", trainer.model().report());
    say!("{}", trainer.group_report());
    let resumed_step = trainer.resumed_from().map(|_| trainer.state().global_step);
    let mut observers =
        clip_train::run_observers(&run_dir, trainer.config(), resumed_step, console::mode())?;
    if let Some(tb) = &observers.tensorboard {
        say!(
            "TensorBoard: {} (view: tensorboard --logdir {})",
            tb.display(),
            clip_train::tensorboard_dir(&run_dir).display()
        );
    }
    if let Some(m) = &observers.mlflow {
        say!("MLflow: {m}");
    }
    let report = trainer.fit(&mut observers.observers)?;
    if let Some((e, selected)) = report.headline_eval() {
        say!(
            "validation ({}, step {}): accuracy {:.2}%, top-5 {:.2}%, loss {:.4} ({} images)",
            if selected {
                "selected checkpoint"
            } else {
                "latest evaluation"
            },
            e.step,
            e.val.accuracy * 100.0,
            e.val.top5 * 100.0,
            e.val.loss,
            e.val.images
        );
    }
    if let Some(b) = &report.best {
        say!(
            "best {} {:.4} at step {}: {}",
            b.metric,
            b.value,
            b.step,
            b.checkpoint.display()
        );
    }
    say!(
        "peak memory: {:.0} MiB {}{} over {:.1} s of training",
        report.peak_memory_mib,
        report.memory_kind.label(),
        report
            .peak_reserved_mib
            .map(|r| format!(" ({r:.0} MiB reserved)"))
            .unwrap_or_default(),
        report.wall_s
    );
    say!(
        "plots: {dir}/loss.png, accuracy.png, lr.png, confusion.png; metrics: {dir}/metrics.jsonl, metrics.csv; summary: {dir}/summary.json",
        dir = run_dir.display()
    );
    if report.interrupted {
        console::keep(&format!(
            "interrupted at step {}; continue with: {}",
            report.global_step,
            clip_train::DataParallel::resume_command(
                &std::env::args()
                    .next()
                    .unwrap_or_else(|| "train-cli".into()),
                &run_dir
            )
        ));
        return Ok(interrupted());
    }
    if let Some(t) = trainer.test()? {
        say!(
            "test, once, with the selected checkpoint: accuracy {:.2}%, top-5 {:.2}%, macro F1 {:.2}%, loss {:.4} ({} images): {}",
            t.accuracy * 100.0,
            t.top5 * 100.0,
            t.macro_f1 * 100.0,
            t.loss,
            t.images,
            run_dir.join("test.json").display()
        );
    }
    if report.stopped_early {
        say!(
            "stopped early at step {} (no improvement)",
            report.global_step
        );
    }
    if console::mode() == clip_train::Console::Quiet {
        console::keep(&format!("run folder: {}", run_dir.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The source `path` names and its dataset.
fn dataset_from(path: &Path) -> anyhow::Result<(SourceConfig, Dataset)> {
    let src = SourceConfig::from_path(path, "--data")?;
    let ds =
        Dataset::load(&src, "--data").with_context(|| format!("loading {}", path.display()))?;
    Ok((src, ds))
}

/// `[NAME=]SOURCE` of `eval --data` and `wise-ft --eval-set`: a name of letters,
/// digits, `_` and `-` before the first `=`, unless the whole text is a path
/// that exists (a folder may be called `a=b`) or a source table (`{ kind = ... }`).
fn named_source(text: &str) -> (Option<String>, PathBuf) {
    let named = text.split_once('=').filter(|(name, _)| {
        let name = name.trim();
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    match named {
        Some((name, source)) if !Path::new(text).exists() => {
            (Some(name.trim().to_string()), PathBuf::from(source.trim()))
        }
        _ => (None, PathBuf::from(text)),
    }
}

/// The sets of `eval --data`: one unnamed source, or named ones (unique names).
fn eval_sets(data: &[String]) -> anyhow::Result<Vec<(Option<String>, PathBuf)>> {
    let sets: Vec<_> = data.iter().map(|d| named_source(d)).collect();
    let unnamed = data.iter().zip(&sets).find(|(_, s)| s.0.is_none());
    if let (true, Some((d, _))) = (sets.len() > 1, unnamed) {
        bail!(
            "--data {d:?}: with several --data each needs a name, as NAME=SOURCE \
             (e.g. --data id=val/ --data shifted=sketch/)"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in sets.iter().filter_map(|s| s.0.as_deref()) {
        if !seen.insert(name) {
            bail!("--data: the name {name:?} is given twice");
        }
    }
    Ok(sets)
}

/// Evaluates `model` (which `spec` names) on each set and prints the report (one
/// unnamed set: its report; named sets: an object of reports by name); `output`
/// gets every image's prediction (JSONL, with its set's name when it has one).
fn run_eval(
    spec: &str,
    model: &ClipClassifier,
    pipeline: clip_data::Pipeline,
    sets: &[(Option<String>, PathBuf)],
    output: Option<&Path>,
    inference: InferenceArgs,
    place: Placement,
) -> anyhow::Result<ExitCode> {
    let exif = clip_train::exif_orientation_for(spec, inference.exif_orientation)?;
    let loaded = sets
        .iter()
        .map(|(name, data)| {
            let ds =
                clip_train::data_for(data, model.class_names()).with_context(|| match name {
                    Some(n) => format!("--data {n}: loading {}", data.display()),
                    None => format!("loading {}", data.display()),
                })?;
            Ok((name.clone(), ds))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    announce(place);
    let mut out = match output {
        Some(p) => Some((
            p.to_path_buf(),
            std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot write {}", p.display()))?,
            ),
        )),
        None => None,
    };
    let mut reports = serde_json::Map::new();
    let mut single = None;
    for (name, ds) in loaded {
        let tokenizer = clip_train::eval_tokenizer(spec, model, &ds)?;
        let title = match &name {
            Some(n) => format!("evaluating {n}"),
            None => "evaluating".to_string(),
        };
        let mut progress = clip_train::BatchProgress::new(&title, ds.len(), human());
        let report = clip_train::evaluate_data(
            model,
            pipeline.clone(),
            ds,
            tokenizer.as_ref(),
            inference.batch_size,
            exif,
            place.precision,
            place.device,
            |loader, b, logits| {
                progress.advance(b.labels.len());
                let Some((path, o)) = out.as_mut() else {
                    return Ok(());
                };
                for row in clip_train::predictions(loader, b, logits)? {
                    let mut row = serde_json::to_value(&row).unwrap_or_default();
                    if let (Some(n), Some(fields)) = (&name, row.as_object_mut()) {
                        fields.insert("set".into(), n.clone().into());
                    }
                    writeln!(o, "{row}").map_err(|e| clip_train::TrainError::Io {
                        action: "cannot write predictions",
                        path: path.clone(),
                        source: e,
                    })?;
                }
                Ok(())
            },
        )?;
        progress.finish();
        match name {
            Some(n) => {
                reports.insert(n, serde_json::to_value(&report)?);
            }
            None => single = Some(report),
        }
    }
    if let Some((path, mut o)) = out {
        o.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let printed = match single {
        Some(report) => serde_json::to_string_pretty(&report)?,
        None => serde_json::to_string_pretty(&reports)?,
    };
    println!("{printed}");
    Ok(ExitCode::SUCCESS)
}

pub fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let sets = eval_sets(&a.data)?;
    let place = a.inference.placement.resolve(&a.model)?;
    let vs = nn::VarStore::new(place.device);
    let (clf, pipeline) = clip_train::load_for_eval(&vs, &a.model, a.ema)?;
    run_eval(
        &a.model,
        &clf,
        pipeline,
        &sets,
        a.output.as_deref(),
        a.inference,
        place,
    )
}

pub fn zero_shot(a: ZeroShotArgs) -> anyhow::Result<ExitCode> {
    let place = a.inference.placement.resolve(&a.model)?;
    let templates: Vec<String> = match (a.template, &a.templates) {
        (Some(t), _) => vec![t],
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read templates {}", f.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        (None, None) => HeadConfig::default().templates,
    };
    let (_, ds) = dataset_from(&a.data)?;
    let vs = nn::VarStore::new(place.device);
    let clf = clip_train::zero_shot_classifier(
        &vs,
        &a.model,
        ds.classes().to_vec(),
        &templates,
        false,
        None,
    )?;
    let size = clf.clip.config().vision_config.image_size as usize;
    run_eval(
        &a.model,
        &clf,
        clip_data::Pipeline::clip_eval(size),
        &[(None, a.data)],
        a.output.as_deref(),
        a.inference,
        place,
    )
}

/// A `predict --json` row: `path` (characters that are not UTF-8 replaced), its
/// raw bytes as `path_bytes` when it is not UTF-8, and `key: value`.
fn json_row(path: &Path, key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut row = serde_json::json!({ "path": path.to_string_lossy(), key: value });
    if let Some(bytes) = clip_data::path_bytes(path) {
        row["path_bytes"] = serde_json::json!(bytes);
    }
    row
}

pub fn predict(a: PredictArgs) -> anyhow::Result<ExitCode> {
    if a.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let images = clip_data::image_paths(&a.images)?;
    let place = a.inference.placement.resolve(&a.model)?;
    let vs = nn::VarStore::new(place.device);
    let (model, pipe) = clip_train::load_for_eval(&vs, &a.model, false)?;
    let exif = clip_train::exif_orientation_for(&a.model, a.inference.exif_orientation)?;
    announce(place);
    let mut failed = 0;
    let mut progress = clip_train::BatchProgress::new("classifying", images.len(), human());
    let predictions = clip_train::predict_images(
        &model,
        &pipe,
        &images,
        a.top_k,
        place,
        a.inference.batch_size,
        exif,
        |n| progress.advance(n),
    )?;
    progress.finish();
    for (path, top) in predictions {
        match (top, a.json) {
            (Ok(top), true) => println!("{}", json_row(&path, "top", serde_json::json!(top))),
            (Ok(top), false) => {
                let line: Vec<String> = top
                    .iter()
                    .map(|s| format!("{} {:.1}%", s.label, s.probability * 100.0))
                    .collect();
                println!("{}: {}", path.display(), line.join(", "));
            }
            (Err(why), json) => {
                failed += 1;
                if json {
                    println!("{}", json_row(&path, "error", serde_json::json!(why)));
                } else {
                    println!("{}: error: {why}", path.display());
                }
            }
        }
    }
    if failed > 0 {
        say!(
            "{failed} of {} image(s) could not be classified",
            images.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let files = clip_train::export(&a.checkpoint, &a.output, a.ema, a.overwrite)?;
    say!(
        "exported {} to {}: {}",
        a.checkpoint.display(),
        a.output.display(),
        files.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn convert(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    if a.prefix.is_empty() || a.prefix.contains(['/', '{', '}', '*', '?', '[']) {
        bail!(
            "--prefix must be a plain file name prefix, got {:?}",
            a.prefix
        );
    }
    let (src, ds) = dataset_from(&a.data)?;
    for (path, why) in &ds.summary().skipped {
        crate::console::warn(&format!("left out {}: {why}", path.display()));
    }
    let images = clip_data::ShardImages {
        max_side: a.max_side,
        quality: a.quality,
    };
    let roots = src.read_paths();
    let inputs: Vec<&Path> = roots.iter().map(|p| p.as_path()).collect();
    let out = clip_train::OutputDir::prepare(&a.output, "convert", &inputs, a.overwrite)?;
    let shards = match clip_data::write_webdataset_with(
        &ds,
        out.path(),
        &a.prefix,
        a.shard_size,
        a.shuffle,
        &images,
    ) {
        Ok(s) => s,
        Err(e) => {
            out.abandon();
            return Err(e.into());
        }
    };
    out.commit()?;
    say!(
        "wrote {} to {} shard(s) in {}",
        ds.summary(),
        shards.len(),
        a.output.display()
    );
    println!(
        "{}",
        clip_data::webdataset_entry(&ds, &a.output, &a.prefix, shards.len())
    );
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    match (&a.config, &a.model) {
        (Some(cfg_path), _) => {
            let r = clip_train::inspect_config(&load_config(cfg_path, &a.overrides)?)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}\n{}", r.parameters, r.groups);
            }
        }
        (None, Some(spec)) => {
            let report = clip_train::model_report(spec)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
        (None, None) => bail!("give --config FILE or --model M"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn preview(a: PreviewAugmentArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&a.config, &a.overrides)?;
    let (train, _) = clip_train::load_datasets(&cfg)?;
    let size = clip_train::augmentation_size(&cfg)?;
    let (pipe, _) = clip_train::pipelines(&cfg, size)?;
    let mix = &cfg.data.loader.mix;
    let preview = clip_data::preview(
        &train,
        &pipe,
        Some(mix),
        a.images as usize,
        a.views as usize,
        cfg.run.seed,
    )?;
    clip_train::write_preview(&a.output, &preview).map_err(anyhow::Error::msg)?;
    say!(
        "wrote {} ({} images x {} augmented views, originals on the left)",
        a.output.display(),
        a.images,
        a.views
    );
    Ok(ExitCode::SUCCESS)
}

pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.steps == 0 {
        bail!("--steps must be at least 1 (the timed steps)");
    }
    let config = clip_train::find_config(&a.config)?;
    let setup = clip_train::BenchSetup::new(&config, &a.overrides, a.warmup, a.steps)?;
    if let Some(note) = &setup.synthetic {
        console::warn(&format!("bench: {note}"));
    }
    let mut trainer = Trainer::new(setup.config.clone())?;
    let report = trainer.bench(a.warmup, a.steps)?;
    if trainer.is_main() {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn wise(a: WiseFtArgs) -> anyhow::Result<ExitCode> {
    let place = a.placement.resolve(&a.fine_tuned)?;
    let alphas: Vec<f64> = a
        .alphas
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .with_context(|| format!("--alphas: {x:?} is not a number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let vs = nn::VarStore::new(place.device);
    let mut ft = clip_train::load_classifier(&vs, &a.fine_tuned)?;
    let vs0 = nn::VarStore::new(place.device);
    let zs = clip_train::zero_shot_like(
        &vs0,
        &a.zero_shot,
        &ft,
        std::slice::from_ref(&a.template),
        a.tokenizer.as_deref(),
    )?;
    announce(place);
    let ds = clip_train::data_for(&a.data, ft.class_names())
        .with_context(|| format!("loading {}", a.data.display()))?;
    let sets = a
        .eval_sets
        .iter()
        .map(|s| {
            let (Some(name), path) = named_source(s) else {
                bail!("--eval-set {s:?}: expected NAME=DATA");
            };
            let ds = clip_train::data_for(&path, ft.class_names())
                .with_context(|| format!("--eval-set {name}: loading {}", path.display()))?;
            Ok((name, ds))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = clip_train::wise_ft(&zs, &mut ft, &alphas, ds, &sets, a.batch_size, place)?;
    for p in &report.points {
        let bar = "#".repeat((p.accuracy * 40.0).round() as usize);
        let shifted: String = p
            .eval_sets
            .iter()
            .map(|(n, acc)| format!(" | {n} {:.2}%", acc * 100.0))
            .collect();
        say!(
            "alpha {:.2}: {:6.2}% {bar}{shifted}",
            p.alpha,
            p.accuracy * 100.0
        );
    }
    say!(
        "best alpha {:.2}: {:.2}%",
        report.best_alpha,
        report.best_accuracy * 100.0
    );
    if let Some(dir) = &a.output {
        let from = clip_train::WiseSources {
            zero_shot: &a.zero_shot,
            fine_tuned: &a.fine_tuned,
            data: &a.data,
            tokenizer: a.tokenizer.as_deref(),
        };
        let files = clip_train::save_wise_ft(dir, &mut ft, &report, from, a.overwrite)?;
        say!(
            "saved the best mix as an export to {}: {}",
            dir.display(),
            files.join(", ")
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn soup(a: SoupArgs) -> anyhow::Result<ExitCode> {
    let place = a.placement.resolve(&a.models[0])?;
    announce(place);
    let mut soups = clip_train::soup(
        &a.models,
        clip_train::SoupData::Source(&a.data),
        a.batch_size,
        place,
    )?;
    let r = &soups.report;
    for i in &r.ingredients {
        say!(
            "{:6.2}%  {}{}",
            i.accuracy * 100.0,
            i.model,
            if i.in_greedy {
                "  (in the greedy soup)"
            } else {
                ""
            }
        );
    }
    say!(
        "uniform soup of {}: {:.2}%; greedy soup of {}: {:.2}% ({} held-out images)",
        r.uniform.ingredients.len(),
        r.uniform.accuracy * 100.0,
        r.greedy.ingredients.len(),
        r.greedy.accuracy * 100.0,
        r.images
    );
    if let Some(dir) = &a.output {
        let files = soups.save(dir, a.overwrite)?;
        say!(
            "saved both soups as exports to {}: {}",
            dir.display(),
            files.join(", ")
        );
    }
    println!("{}", serde_json::to_string_pretty(&soups.report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn compare(a: CompareArgs) -> anyhow::Result<ExitCode> {
    if clip_train::DataParallel::launched()? {
        bail!(
            "compare runs its trainings one after another in one process: start it without torchrun/srun \
             (each method's training can be run data-parallel on its own with `train`)"
        );
    }
    let config = clip_train::find_config(&a.config)?;
    let mut run_job = job_runner("compare")?;
    let report = clip_train::compare(&config, &a.overrides, &a.output, a.rerun, &mut run_job)?;
    println!("{}", clip_train::markdown(&report));
    say!(
        "report: {0}/report.md, {0}/report.json, {0}/accuracy.png",
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a training job of `compare` or `sweep` (`who`) as this program's own
/// `train` in a child process, with this process's console flags (its console
/// into the job's log file when it has one); a failure says to rerun `who` to
/// resume it.
fn job_runner(
    who: &'static str,
) -> anyhow::Result<impl Fn(&clip_train::TrainJob) -> clip_train::Result<()> + Sync> {
    let exe = std::env::current_exe().context("cannot find the train-cli executable")?;
    Ok(
        move |job: &clip_train::TrainJob| -> clip_train::Result<()> {
            let mut cmd = std::process::Command::new(&exe);
            if job.resume {
                cmd.arg("--resume").arg(&job.run_dir);
            } else {
                cmd.arg("--config").arg(&job.config);
            }
            // A resumed run stays in its folder whatever run.output_dir / run.name say.
            for o in &job.overrides {
                cmd.arg("--set").arg(o);
            }
            match console::mode() {
                clip_train::Console::Quiet => {
                    cmd.arg("--quiet");
                }
                clip_train::Console::Json => {
                    cmd.args(["--log-format", "json"]);
                }
                clip_train::Console::Human => {}
            }
            let mut started = format!(
                "{who}: {} {}",
                if job.resume { "resuming" } else { "training" },
                job.run_dir.display()
            );
            if let Some(log) = &job.log {
                let io = |source| clip_train::TrainError::Io {
                    action: "cannot write",
                    path: log.clone(),
                    source,
                };
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(io)?;
                let copy = file.try_clone().map_err(io)?;
                cmd.stdout(copy).stderr(file);
                started.push_str(&format!(" (console: {})", log.display()));
            }
            console::keep(&started);
            let status = cmd.status().map_err(|e| clip_train::TrainError::Io {
                action: "cannot start",
                path: exe.clone(),
                source: e,
            })?;
            if status.success() {
                if job.log.is_some() {
                    console::keep(&format!("{who}: finished {}", job.run_dir.display()));
                }
                Ok(())
            } else {
                Err(clip_train::TrainError::Resume {
                    path: job.run_dir.clone(),
                    reason: format!(
                        "the training job exited with {status}{}; rerun {who} to resume it",
                        job.log.as_ref().map_or(String::new(), |l| format!(
                            " (its console: {})",
                            l.display()
                        ))
                    ),
                })
            }
        },
    )
}

pub fn sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    if clip_train::DataParallel::launched()? {
        bail!("sweep starts its points' trainings itself: start it without torchrun/srun");
    }
    let config = clip_train::find_config(&a.config)?;
    let grid = a
        .grid
        .iter()
        .map(|g| clip_train::GridAxis::parse(g))
        .collect::<clip_train::Result<Vec<_>>>()?;
    let run_job = job_runner("sweep")?;
    let report = clip_train::sweep(
        &config,
        &a.overrides,
        &grid,
        &a.output,
        a.rerun,
        usize::from(a.jobs),
        &run_job,
    )?;
    println!("{}", clip_train::sweep_markdown(&report));
    say!(
        "report: {0}/sweep.md, {0}/sweep.json, {0}/sweep.png",
        a.output.display()
    );
    if let Some(data) = &a.soup {
        let models: Vec<String> = report
            .points
            .iter()
            .map(|p| p.run_dir.display().to_string())
            .collect();
        let place = Placement::for_model(&models[0], None, None)?;
        let mut soups = clip_train::soup(&models, clip_train::SoupData::Source(data), 64, place)?;
        let dir = a.output.join("soup");
        soups.save(&dir, true)?;
        say!(
            "soups of the {} points: uniform {:.2}%, greedy {:.2}% ({} kept): {}",
            models.len(),
            soups.report.uniform.accuracy * 100.0,
            soups.report.greedy.accuracy * 100.0,
            soups.report.greedy.ingredients.len(),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether progress is shown (not with --quiet or --log-format json).
fn human() -> bool {
    console::mode() == clip_train::Console::Human
}

/// Says where a command runs its model, once the model has loaded.
fn announce(place: Placement) {
    say!(
        "running on {} (--device / --precision change it)",
        place.describe()
    );
}

impl PlacementArgs {
    /// The device and precision for the model `spec` (see [`Placement::for_model`]).
    fn resolve(self, spec: &str) -> anyhow::Result<Placement> {
        Ok(Placement::for_model(spec, self.device, self.precision)?)
    }
}

pub fn config(a: ConfigArgs) -> anyhow::Result<ExitCode> {
    use clip_train::config_keys;
    if a.markdown {
        print!("{}", config_keys::markdown_table());
        return Ok(ExitCode::SUCCESS);
    }
    let Some(key) = &a.explain else {
        print!("{}", config_keys::defaults_toml());
        return Ok(ExitCode::SUCCESS);
    };
    let docs = config_keys::explain(key);
    if docs.is_empty() {
        let last = key.rsplit('.').next().unwrap_or(key);
        let near: Vec<&str> = config_keys::KEYS
            .iter()
            .map(|d| d.key)
            .filter(|k| k.contains(last))
            .collect();
        bail!(
            "`{key}` is not a config key{}",
            if near.is_empty() {
                "; `train-cli config` lists them all".to_string()
            } else {
                format!("; did you mean {}?", near.join(", "))
            }
        );
    }
    for d in docs {
        println!(
            "{} ({}), default {}\n  {}",
            d.key,
            d.kind,
            config_keys::default_of(d.key).unwrap_or_else(|| "none".into()),
            d.meaning
        );
    }
    Ok(ExitCode::SUCCESS)
}
