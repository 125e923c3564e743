//! One function per subcommand: compose library calls, print results.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use tch::nn;

use clip_data::{Dataset, LoaderConfig, Pipeline};
use clip_model::{ClipClassifier, HeadConfig};
use clip_train::{
    EvalCounts, Log, MetricsFiles, Observer, Placement, Plots, Progress, RunConfig, Trainer,
    load_classifier, load_datasets, ordered_loader, predictions, source_from_path,
};

use crate::{PlacementArgs, TrainArgs};

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
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rank: usize,
    world: usize,
) -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let first = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
                        eprintln!(
                            "\nsecond signal ({name}): exiting now without a checkpoint (the last one is intact)"
                        );
                        signal_hook::low_level::exit(128 + sig);
                    }
                    continue;
                }
                let _ = seen.compare_exchange(0, sig as usize, Ordering::SeqCst, Ordering::SeqCst);
                if rank == 0 {
                    eprintln!(
                        "\n{name}: finishing the current step and writing a checkpoint{}",
                        if world == 1 {
                            " (Ctrl-C again to quit now)"
                        } else {
                            " (every rank stops at the same step)"
                        }
                    );
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(first)
}

fn load_config(path: &Path, overrides: &[String]) -> anyhow::Result<RunConfig> {
    Ok(RunConfig::load(path, overrides)?)
}

pub fn train(args: TrainArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut overrides = args.overrides.clone();
    if let Some(d) = &args.output_dir {
        overrides.push(format!("run.output_dir={:?}", d.display().to_string()));
    }
    // torchrun --max-restarts: a restarted group continues from the run's latest
    // checkpoint instead of starting over (or refusing the existing folder).
    let restart_dir = match (&args.resume, &args.config) {
        (None, Some(cfg)) if clip_train::DataParallel::restart_count() > 0 => {
            let dir = load_config(cfg, &overrides)?.run.dir();
            clip_train::latest_checkpoint(&dir).is_ok().then_some(dir)
        }
        _ => None,
    };
    if let Some(dir) = &restart_dir {
        eprintln!(
            "torchrun restart {}: continuing {} from its latest checkpoint",
            clip_train::DataParallel::restart_count(),
            dir.display()
        );
    }
    if let (Some(dir), Some(cfg)) = (&args.resume, &args.config) {
        bail!(
            "--config {} and --resume {} exclude each other: a resumed run continues with its own {}/config.resolved.toml; change its values with --set (they are kept for later resumes)",
            cfg.display(),
            dir.display(),
            dir.display()
        );
    }
    let mut trainer = match (args.resume.as_ref().or(restart_dir.as_ref()), &args.config) {
        (Some(dir), _) => {
            let t = Trainer::resume(dir, &overrides)?;
            eprintln!(
                "resuming {} from {} (step {})",
                dir.display(),
                t.resumed_from()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                t.state().global_step
            );
            t
        }
        (None, Some(cfg)) => Trainer::new(load_config(cfg, &overrides)?)?,
        (None, None) => bail!(
            "no config given: pass --config FILE (see configs/) or --resume RUN_DIR; --help lists the commands"
        ),
    };
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
        eprintln!(
            "data-parallel: {world} ranks, global batch {} (batch_size {b} x {world} ranks x grad_accum {accum})",
            b * world * accum
        );
    }
    let run_dir = trainer.run_dir().to_path_buf();
    let model_report = trainer.model().report();
    eprintln!("run folder: {}", run_dir.display());
    eprintln!("{model_report}");
    eprintln!("{}", trainer.group_report());
    let resumed_step = trainer.resumed_from().map(|_| trainer.state().global_step);
    let mut observers: Vec<Box<dyn Observer>> = vec![
        Box::new(MetricsFiles::open(
            &run_dir,
            resumed_step,
            trainer.config().train.log_every_steps,
        )?),
        Box::new(Plots::new(&run_dir)),
        Box::new(Log),
    ];
    if trainer
        .config()
        .train
        .report_to
        .contains(&clip_train::ReportTo::Tensorboard)
    {
        let tb = clip_train::TensorBoard::open(
            &run_dir,
            resumed_step,
            trainer.config().train.log_every_steps,
            &trainer.config().to_toml(),
        )?;
        eprintln!(
            "TensorBoard: {} (view: tensorboard --logdir {})",
            tb.path().display(),
            clip_train::tensorboard_dir(&run_dir).display()
        );
        observers.push(Box::new(tb));
    }
    if !quiet {
        observers.push(Box::new(Progress::default()));
    }
    // The test set is read now, so that a wrong path fails before the training.
    if let Some(src) = &trainer.config().data.test {
        clip_train::test_set(src, trainer.model().class_names())?;
    }
    let report = trainer.fit(&mut observers)?;
    if let Some(e) = &report.last_eval {
        eprintln!(
            "validation: accuracy {:.2}%, top-5 {:.2}%, loss {:.4} ({} images)",
            e.val.accuracy * 100.0,
            e.val.top5 * 100.0,
            e.val.loss,
            e.val.images
        );
    }
    if let Some(b) = &report.best {
        eprintln!(
            "best {} {:.4} at step {}: {}",
            b.metric,
            b.value,
            b.step,
            b.checkpoint.display()
        );
    }
    eprintln!(
        "peak memory: {:.0} MiB {}{} over {:.1} s of training",
        report.peak_memory_mib,
        report.memory_kind.label(),
        report
            .peak_reserved_mib
            .map(|r| format!(" ({r:.0} MiB reserved)"))
            .unwrap_or_default(),
        report.wall_s
    );
    eprintln!(
        "plots: {dir}/loss.png, accuracy.png, lr.png, confusion.png; metrics: {dir}/metrics.jsonl, metrics.csv; summary: {dir}/summary.json",
        dir = run_dir.display()
    );
    if report.interrupted {
        eprintln!(
            "interrupted at step {}; continue with: train-cli --resume {}",
            report.global_step,
            run_dir.display()
        );
        return Ok(interrupted());
    }
    if let Some(t) = clip_train::evaluate_test(&run_dir, trainer.config())? {
        eprintln!(
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
        eprintln!(
            "stopped early at step {} (no improvement)",
            report.global_step
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A fine-tuned model and the evaluation preprocessing it was trained for.
fn classifier_with_pipeline(
    vs: &nn::VarStore,
    spec: &str,
    ema: bool,
) -> anyhow::Result<(ClipClassifier, Pipeline)> {
    let dir = clip_train::classifier_dir(Path::new(spec))?;
    let model = clip_train::load_classifier_from(vs, &dir, ema)?;
    let size = model.clip.config().vision_config.image_size as usize;
    Ok((model, clip_train::eval_pipeline_for(&dir, size)?))
}

fn dataset_from(path: &Path) -> anyhow::Result<Dataset> {
    let src = source_from_path(path)?;
    Dataset::load(&src, "--data").with_context(|| format!("loading {}", path.display()))
}

/// The dataset at `path` labelled with `model`'s classes, matched by name
/// ([`Dataset::with_classes`]).
fn dataset_for(path: &Path, model: &ClipClassifier) -> anyhow::Result<Dataset> {
    Ok(dataset_from(path)?.with_classes(model.class_names(), "--data")?)
}

fn write_jsonl<T: serde::Serialize>(out: &mut impl Write, rows: &[T]) -> anyhow::Result<()> {
    for r in rows {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}

/// Evaluates `model` (which `spec` names) on `data`; data with captions gets
/// image <-> text retrieval too, with the model's tokenizer.
fn run_eval(
    spec: &str,
    model: &ClipClassifier,
    pipeline: Pipeline,
    data: &Path,
    output: Option<&Path>,
    batch_size: usize,
    place: Placement,
) -> anyhow::Result<ExitCode> {
    let ds = dataset_for(data, model)?;
    let tokenizer = match ds.has_captions() {
        true => Some(clip_train::model_tokenizer(spec, model)?),
        false => None,
    };
    announce(place);
    let loader = ordered_loader(&LoaderConfig::default(), ds, pipeline, batch_size, 0)?;
    let mut out = match output {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        )),
        None => None,
    };
    let report = EvalCounts::collect(
        model,
        &loader,
        place.precision,
        place.device,
        tokenizer.as_ref(),
        |b, logits| {
            if let Some(o) = out.as_mut() {
                let rows = predictions(&loader, b, logits)?;
                write_jsonl(o, &rows).map_err(|e| clip_train::TrainError::Io {
                    action: "cannot write predictions",
                    path: PathBuf::from("predictions"),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
            Ok(())
        },
    )?
    .report(model.class_names())?;
    if let Some(mut o) = out {
        o.flush()?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn eval(
    model: &str,
    data: &Path,
    output: Option<&Path>,
    batch_size: usize,
    placement: PlacementArgs,
    ema: bool,
) -> anyhow::Result<ExitCode> {
    let place = placement.resolve(model)?;
    let vs = nn::VarStore::new(place.device);
    let (clf, pipeline) = classifier_with_pipeline(&vs, model, ema)?;
    run_eval(model, &clf, pipeline, data, output, batch_size, place)
}

pub fn zero_shot(
    model: &str,
    data: &Path,
    template: Option<String>,
    templates: Option<&Path>,
    output: Option<&Path>,
    batch_size: usize,
    placement: PlacementArgs,
) -> anyhow::Result<ExitCode> {
    let place = placement.resolve(model)?;
    let templates: Vec<String> = match (template, templates) {
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
    let ds = dataset_from(data)?;
    let vs = nn::VarStore::new(place.device);
    let clf = clip_train::zero_shot_classifier(
        &vs,
        model,
        ds.classes().to_vec(),
        &templates,
        false,
        None,
    )?;
    let size = clf.clip.config().vision_config.image_size as usize;
    run_eval(
        model,
        &clf,
        Pipeline::clip_eval(size),
        data,
        output,
        batch_size,
        place,
    )
}

pub fn predict(
    model: &str,
    images: &[PathBuf],
    top_k: usize,
    json: bool,
    batch_size: usize,
    placement: PlacementArgs,
) -> anyhow::Result<ExitCode> {
    if top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let images = image_paths(images)?;
    let place = placement.resolve(model)?;
    let vs = nn::VarStore::new(place.device);
    let (model, pipe) = classifier_with_pipeline(&vs, model, false)?;
    announce(place);
    let mut failed = 0;
    for (path, top) in clip_train::predict_images(&model, &pipe, &images, top_k, place, batch_size)?
    {
        match (top, json) {
            (Ok(top), true) => println!("{}", serde_json::json!({"path": path, "top": top})),
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
                    println!("{}", serde_json::json!({"path": path, "error": why}));
                } else {
                    println!("{}: error: {why}", path.display());
                }
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} image(s) could not be classified",
            images.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The images the arguments name: files as given (one that cannot be read gets
/// its error row), folders' images (recursively, sorted), and glob patterns
/// (`'photos/*.jpg'`, sorted).
fn image_paths(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| {
                clip_data::IMAGE_EXTENSIONS
                    .contains(&x.to_string_lossy().to_ascii_lowercase().as_str())
            }) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for a in args {
        let text = a.to_string_lossy();
        if a.is_dir() {
            walk(a, &mut out)?;
        } else if !a.exists() && text.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(&text)
                .with_context(|| format!("{text} is not a valid glob"))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if found.is_empty() {
                bail!("{text} matches no file");
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(a.clone());
        }
    }
    if out.is_empty() {
        bail!(
            "no images: {} hold(s) no image files",
            args.iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

pub fn export(checkpoint: &Path, output: &Path, ema: bool) -> anyhow::Result<ExitCode> {
    let files = clip_train::export(checkpoint, output, ema)?;
    eprintln!(
        "exported {} to {}: {}",
        checkpoint.display(),
        output.display(),
        files.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn convert(
    data: &Path,
    output: &Path,
    shard_size: usize,
    prefix: &str,
    shuffle: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if prefix.is_empty() || prefix.contains(['/', '{', '}', '*', '?', '[']) {
        bail!("--prefix must be a plain file name prefix, got {prefix:?}");
    }
    let src = clip_train::source_from_path(data)?;
    let ds = clip_data::Dataset::load(&src, "--data")?;
    let summary = ds.summary();
    for (path, why) in &summary.skipped {
        eprintln!("left out {}: {why}", path.display());
    }
    let shards = clip_data::write_webdataset(&ds, output, prefix, shard_size, shuffle)?;
    eprintln!(
        "wrote {} to {} shard(s) in {}",
        ds.summary(),
        shards.len(),
        output.display()
    );
    let last = shards.len().saturating_sub(1);
    let pattern = if last == 0 {
        output.join(format!("{prefix}-000000.tar"))
    } else {
        output.join(format!("{prefix}-{{000000..{last:06}}}.tar"))
    };
    // The `data.train = ...` entry (JSON strings are TOML basic strings).
    let mut entry = format!(
        "{{ kind = \"webdataset\", path = {}",
        serde_json::to_string(&pattern.display().to_string())?
    );
    if ds.has_labels() {
        entry.push_str(&format!(
            ", class_names = {}",
            serde_json::to_string(ds.classes())?
        ));
    }
    if ds.has_captions() {
        entry.push_str(", caption_extension = \"txt\"");
    }
    println!("{entry} }}");
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(
    config: Option<&Path>,
    model: Option<&str>,
    overrides: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    match (config, model) {
        (Some(cfg_path), _) => {
            let r = clip_train::inspect_config(&load_config(cfg_path, overrides)?)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{}\n{}", r.parameters, r.groups);
            }
        }
        (None, Some(spec)) => {
            let report = clip_train::model_report(spec)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
        (None, None) => bail!("give --config FILE or --model M"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn preview(
    config: &Path,
    output: &Path,
    images: usize,
    views: usize,
    overrides: &[String],
) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config, overrides)?;
    let (train, _) = load_datasets(&cfg)?;
    // The augmentation's own output size when it fixes one: no model files needed
    // (a hub id need not be downloaded to preview its augmentation).
    let fixed = cfg
        .data
        .train_transforms
        .as_ref()
        .and_then(|ops| Pipeline::new(ops.clone(), "data.train_transforms").ok())
        .and_then(|p| p.output_size())
        .filter(|(h, w)| h == w);
    let size = match fixed {
        Some((h, _)) => h,
        None => clip_train::image_size_of(&cfg)?,
    };
    let (pipe, _) = clip_train::pipelines(&cfg, size)?;
    clip_data::write_preview(output, &train, &pipe, images, views, cfg.run.seed)?;
    eprintln!(
        "wrote {} ({images} images x {views} augmented views, originals on the left)",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn bench(
    config: &Path,
    steps: usize,
    warmup: usize,
    overrides: &[String],
) -> anyhow::Result<ExitCode> {
    if steps == 0 {
        bail!("--steps must be at least 1 (the timed steps)");
    }
    let tmp = std::env::temp_dir().join(format!("train-cli-bench-{}", std::process::id()));
    let mut o = overrides.to_vec();
    o.push(format!("run.output_dir={:?}", tmp.display().to_string()));
    o.push("run.overwrite=true".into());
    let mut cfg = load_config(config, &o)?;
    // Throughput needs images, not these images: data that is not there (a fresh
    // clone's configs/smoke.toml) is replaced by generated JPEGs, loudly.
    let missing = |s: &Option<clip_data::SourceConfig>| match s {
        Some(
            clip_data::SourceConfig::ImageFolder { path }
            | clip_data::SourceConfig::Csv { path, .. },
        ) => (!path.exists()).then(|| path.clone()),
        Some(clip_data::SourceConfig::Idx { images, .. }) => {
            (!images.exists()).then(|| images.clone())
        }
        Some(clip_data::SourceConfig::Webdataset { path, .. }) => {
            clip_data::expand_shards(path, "data.train")
                .is_err()
                .then(|| path.into())
        }
        Some(clip_data::SourceConfig::Parquet { path, .. }) => glob::glob(path)
            .map_or(true, |mut g| g.next().is_none())
            .then(|| path.into()),
        None => None,
    };
    if let Some(path) = missing(&cfg.data.train) {
        let images = cfg.data.loader.batch_size * cfg.train.grad_accum * (warmup + steps + 1);
        let per_class = (images * 5 / 4).div_ceil(4).max(8);
        let dir = tmp.join("synthetic");
        write_synthetic_images(&dir, 4, per_class)?;
        eprintln!(
            "bench: {} does not exist: timing on {} generated 320x240 JPEGs in 4 classes ({})",
            path.display(),
            4 * per_class,
            dir.display()
        );
        o.push(format!(
            "data.train={{kind=\"image_folder\", path={:?}}}",
            dir.display().to_string()
        ));
        if missing(&cfg.data.val).is_some() {
            o.push(format!(
                "data.val={{kind=\"image_folder\", path={:?}}}",
                dir.display().to_string()
            ));
        }
        cfg = load_config(config, &o)?;
    }
    let result = (|| -> anyhow::Result<(clip_train::BenchReport, bool)> {
        let mut trainer = Trainer::new(cfg)?;
        Ok((trainer.bench(warmup, steps)?, trainer.is_main()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let (report, main) = result?;
    if main {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `classes x per_class` noise JPEGs (320x240, quality 90) in `dir/classN/`.
fn write_synthetic_images(dir: &Path, classes: usize, per_class: usize) -> anyhow::Result<()> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for c in 0..classes {
        let class = dir.join(format!("class{c}"));
        std::fs::create_dir_all(&class)
            .with_context(|| format!("cannot create {}", class.display()))?;
        for i in 0..per_class {
            let pixels: Vec<u8> = (0..320 * 240 * 3)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            let path = class.join(format!("{i}.jpg"));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
                .encode(&pixels, 320, 240, image::ExtendedColorType::Rgb8)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn wise(
    zero_shot: &str,
    fine_tuned: &str,
    alphas: &str,
    data: &Path,
    output: Option<&Path>,
    template: &str,
    tokenizer: Option<&Path>,
    batch_size: usize,
    placement: PlacementArgs,
) -> anyhow::Result<ExitCode> {
    let place = placement.resolve(fine_tuned)?;
    let alphas: Vec<f64> = alphas
        .split(',')
        .map(|a| {
            a.trim()
                .parse::<f64>()
                .with_context(|| format!("--alphas: {a:?} is not a number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let vs = nn::VarStore::new(place.device);
    let mut ft = load_classifier(&vs, fine_tuned)?;
    let vs0 = nn::VarStore::new(place.device);
    let zs = clip_train::zero_shot_like(&vs0, zero_shot, &ft, &[template.to_string()], tokenizer)?;
    announce(place);
    let ds = dataset_for(data, &ft)?;
    let report = clip_train::wise_ft(&zs, &mut ft, &alphas, ds, batch_size, place)?;
    for p in &report.points {
        let bar = "#".repeat((p.accuracy * 40.0).round() as usize);
        eprintln!("alpha {:.2}: {:6.2}% {bar}", p.alpha, p.accuracy * 100.0);
    }
    eprintln!(
        "best alpha {:.2}: {:.2}%",
        report.best_alpha,
        report.best_accuracy * 100.0
    );
    if let Some(dir) = output {
        ft.save_pretrained(&dir.join("model"))?;
        std::fs::write(
            dir.join("wise_ft.json"),
            serde_json::to_string_pretty(&report)?,
        )
        .with_context(|| format!("cannot write {}", dir.join("wise_ft.json").display()))?;
        eprintln!("saved the best mix to {}/model", dir.display());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn compare(
    config: &Path,
    output: &Path,
    overrides: &[String],
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    if clip_train::DataParallel::launched()? {
        bail!(
            "compare runs its trainings one after another in one process: start it without torchrun/srun \
             (each method's training can be run data-parallel on its own with `train`)"
        );
    }
    let exe = std::env::current_exe().context("cannot find the train-cli executable")?;
    let mut run_job = |job: &clip_train::TrainJob| -> clip_train::Result<()> {
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
        if quiet {
            cmd.arg("--quiet");
        }
        eprintln!(
            "compare: {} {}",
            if job.resume { "resuming" } else { "training" },
            job.run_dir.display()
        );
        let status = cmd.status().map_err(|e| clip_train::TrainError::Io {
            action: "cannot start",
            path: exe.clone(),
            source: e,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(clip_train::TrainError::Resume {
                path: job.run_dir.clone(),
                reason: format!(
                    "the training job exited with {status}; rerun compare to resume it"
                ),
            })
        }
    };
    let report = clip_train::compare(config, overrides, output, &mut run_job)?;
    println!("{}", clip_train::markdown(&report));
    eprintln!(
        "report: {0}/report.md, {0}/report.json, {0}/accuracy.png",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Says where a command runs its model, once the model has loaded.
fn announce(place: Placement) {
    eprintln!(
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
