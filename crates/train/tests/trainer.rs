//! End-to-end tests of the training loop on a tiny random CLIP and a generated
//! image folder: learning, resume, accumulation, early stopping, retention,
//! corrupt images, precision modes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use clip_train::{Event, Observer, RunConfig, Trainer};

/// libtorch's generator is global: runs that must be reproducible take turns.
static SERIAL: Mutex<()> = Mutex::new(());

#[path = "../../../tests/support/image_folder.rs"]
mod image_folder;

/// The three classes of the trainer tests' image folders.
pub fn make_folder(root: &Path, per_class: usize) {
    image_folder::make_folder(root, &["circle", "square", "triangle"], per_class);
}

/// Takes the libtorch lock and makes a temporary folder holding a generated
/// image folder at `data/`.
fn setup(per_class: usize) -> (MutexGuard<'static, ()>, tempfile::TempDir, PathBuf) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, per_class);
    (guard, tmp, data)
}

fn config(out: &Path, data: &Path, extra: &[String]) -> RunConfig {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/smoke.toml"
    ))
    .unwrap();
    let mut o = vec![
        format!("run.output_dir={:?}", out.display().to_string()),
        format!(
            "data.train={{kind=\"image_folder\", path={:?}}}",
            data.display().to_string()
        ),
    ];
    o.extend_from_slice(extra);
    RunConfig::from_toml(&text, "smoke.toml", &o).unwrap()
}

fn weights(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    t.model()
        .params()
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                Vec::<f32>::try_from(p.tensor.detach().flatten(0, -1)).unwrap(),
            )
        })
        .collect()
}

fn checkpoint_names(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// Sets the stop flag when a given step is reached (what Ctrl-C does).
struct StopAt {
    step: u64,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Observer for StopAt {
    fn event(&mut self, e: &Event) -> clip_train::Result<()> {
        if let Event::Step(m) = e
            && m.step == self.step
        {
            self.flag.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[test]
fn a_tiny_model_overfits_its_training_set() {
    let (_g, tmp, data) = setup(12);
    let val = format!(
        "data.val={{kind=\"image_folder\", path={:?}}}",
        data.display().to_string()
    );
    let cfg = config(
        tmp.path(),
        &data,
        &[
            val,
            "train.epochs=12".into(),
            "train.label_smoothing=0.0".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let report = t.fit(&mut []).unwrap();
    let acc = report.last_eval.unwrap().val.accuracy;
    assert!(acc >= 0.95, "training accuracy {acc}");
    assert_eq!(report.global_step, 12 * 5);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.run_dir.join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["global_step"], 60);
    assert!(report.run_dir.join("config.resolved.toml").is_file());
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted_bit_for_bit() {
    let (_g, tmp, data) = setup(8);
    resumes_exactly(tmp.path(), &data, &[]);
}

/// The same on WebDataset shards of 5 samples: the stops fall mid-shard.
#[test]
fn interrupted_and_resumed_equals_uninterrupted_on_webdataset_shards() {
    let (_g, tmp, data) = setup(8);
    let ds = clip_data::Dataset::load(
        &clip_data::SourceConfig::ImageFolder { path: data.clone() },
        "data.train",
    )
    .unwrap();
    let shards = tmp.path().join("shards");
    let written = clip_data::write_webdataset(&ds, &shards, "part", 5, Some(7)).unwrap();
    assert_eq!(written.len(), 5);
    let source = format!(
        "data.train={{kind=\"webdataset\", path={:?}}}",
        shards
            .join("part-{000000..000004}.tar")
            .display()
            .to_string()
    );
    resumes_exactly(tmp.path(), &data, &[source]);
}

/// The same on Parquet with more training samples than one shuffle window (the
/// row groups are shuffled, then samples within windows), four steps.
#[test]
fn interrupted_and_resumed_equals_uninterrupted_on_parquet_row_groups() {
    // 3 x 480 images, a quarter held out: 1,080 training samples > 1,024.
    let (_g, tmp, data) = setup(480);
    let file = tmp.path().join("train.parquet");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/to_parquet.py"))
        .arg(&data)
        .arg(&file)
        .args(["--row-group-size", "100"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let source = format!(
        "data.train={{kind=\"parquet\", path={:?}}}",
        file.display().to_string()
    );
    resumes_exactly(tmp.path(), &data, &[source, "train.max_steps=4".into()]);
}

/// The same with FLYP's objective: caption templates drawn per sample, the
/// learned logit scale, both towers, the heads remade from the text tower.
#[test]
fn interrupted_and_resumed_equals_uninterrupted_with_the_contrastive_objective() {
    let (_g, tmp, data) = setup(8);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tok = root.join("tests/fixtures/model/tokenizer/tokenizer.json");
    resumes_exactly(
        tmp.path(),
        &data,
        &[
            "train.objective=\"contrastive\"".into(),
            "optim.frozen_towers=[]".into(),
            "model.head.templates=[\"a photo of a {}.\", \"a {} shape.\", \"an image of a {}.\"]"
                .into(),
            format!("model.tokenizer={:?}", tok.display().to_string()),
            "model.architecture.text={hidden_size=32, intermediate_size=64, num_hidden_layers=2, \
             num_attention_heads=4, vocab_size=1514, eos_token_id=1513}"
                .into(),
        ],
    );
}

/// A run stopped twice mid-epoch and resumed ends with the uninterrupted run's
/// weights and EMA evaluation.
fn resumes_exactly(tmp: &Path, data: &Path, overrides: &[String]) {
    // Dropout, drop-path, augmentation, EMA and accumulation all on: every random
    // draw and every piece of state must come back.
    let extra = |name: &str| -> Vec<String> {
        let mut o = vec![
            format!("run.name={name}"),
            "train.epochs=2".into(),
            "train.grad_accum=2".into(),
            "train.ema.decay=0.9".into(),
            "model.regularization.residual_dropout=0.1".into(),
            "model.regularization.drop_path=0.1".into(),
            "model.head.dropout=0.1".into(),
        ];
        o.extend_from_slice(overrides);
        o
    };
    let mut straight = Trainer::new(config(tmp, data, &extra("straight"))).unwrap();
    straight.fit(&mut []).unwrap();

    let mut first = Trainer::new(config(tmp, data, &extra("resumed"))).unwrap();
    let total = first.total_steps();
    assert_eq!(
        total, 4,
        "18 images / batch 8 = 3 batches, 2 per step: 2 steps per epoch (or max_steps)"
    );
    // Stop after step 1 (mid-epoch 0), then after step 3 (mid-epoch 1 of the
    // small data).
    let mut stop: Vec<Box<dyn Observer>> = vec![Box::new(StopAt {
        step: 1,
        flag: first.stop_flag(),
    })];
    let r = first.fit(&mut stop).unwrap();
    assert!(r.interrupted && r.global_step == 1);
    let run = first.run_dir().to_path_buf();
    drop(first);
    let mut second = Trainer::resume(&run, &[]).unwrap();
    assert_eq!(second.state().global_step, 1);
    let mut stop: Vec<Box<dyn Observer>> = vec![Box::new(StopAt {
        step: 3,
        flag: second.stop_flag(),
    })];
    let r = second.fit(&mut stop).unwrap();
    assert!(r.interrupted && r.global_step == 3);
    drop(second);
    let mut third = Trainer::resume(&run, &[]).unwrap();
    let r = third.fit(&mut []).unwrap();
    assert!(!r.interrupted && r.global_step == total);
    for ((n, a), (_, b)) in weights(&straight).iter().zip(weights(&third).iter()) {
        assert!(a == b, "{n} differs after resume");
    }
    assert_eq!(
        straight.state().last_eval.as_ref().unwrap().ema,
        third.state().last_eval.as_ref().unwrap().ema
    );
    // The reported figures resume too: the last evaluation's training loss covers
    // the steps since the evaluation before it, across the resume at step 3.
    assert_eq!(
        straight.state().last_eval.as_ref().unwrap().train_loss,
        third.state().last_eval.as_ref().unwrap().train_loss
    );
}

#[test]
fn early_stopping_stops_and_retention_keeps_what_the_policy_says() {
    let (_g, tmp, data) = setup(8);
    // Nothing improves accuracy by 2.0: the second and third evaluations are bad.
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.epochs=10".into(),
            "train.early_stopping={metric=\"accuracy\", patience=2, min_delta=2.0}".into(),
            "train.checkpoints={keep_last=2, keep_best=1, every_steps=1}".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let r = t.fit(&mut []).unwrap();
    assert!(r.stopped_early);
    assert_eq!(r.epochs_completed, 3);
    let steps_per_epoch = 3; // 18 training images, batch 8
    assert_eq!(r.global_step, 3 * steps_per_epoch);
    // keep_last 2 -> steps 8 and 9; keep_best 1 -> the best scored (epoch ends:
    // steps 3, 6, 9), earliest on ties.
    let best = r.best.unwrap();
    assert!([3, 6, 9].contains(&best.step));
    let mut expected = vec!["step-00000008".to_string(), "step-00000009".to_string()];
    let best_name = format!("step-{:08}", best.step);
    if !expected.contains(&best_name) {
        expected.push(best_name);
        expected.sort();
    }
    assert_eq!(checkpoint_names(&r.run_dir), expected);
}

#[test]
fn a_run_folder_is_never_overwritten_silently_nor_used_by_two_runs() {
    let (_g, tmp, data) = setup(4);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.max_steps=1".into(),
            "optim.schedule={kind=\"constant\"}".into(),
        ],
    );
    Trainer::new(cfg.clone()).unwrap().fit(&mut []).unwrap();
    let err = Trainer::new(cfg.clone()).err().unwrap().to_string();
    assert!(
        err.contains("--resume") && err.contains("run.overwrite"),
        "{err}"
    );
    let mut cfg = cfg;
    cfg.run.overwrite = true;
    // An overwriting run whose config fails (a typo in data.train) leaves the old
    // run as it was.
    let run_dir = cfg.run.dir();
    let before = checkpoint_names(&run_dir);
    assert!(!before.is_empty());
    let mut typo = cfg.clone();
    typo.data.train = Some(clip_data::SourceConfig::ImageFolder {
        path: tmp.path().join("no-such-folder"),
    });
    let err = Trainer::new(typo).err().unwrap().to_string();
    assert!(err.contains("no-such-folder"), "{err}");
    assert_eq!(checkpoint_names(&run_dir), before);
    assert!(run_dir.join("config.resolved.toml").is_file());
    let running = Trainer::new(cfg.clone()).unwrap();
    // A run that starts clears the old one.
    assert!(checkpoint_names(&run_dir).is_empty());

    // While a trainer holds the folder, neither a resume nor an overwriting run may
    // touch it; the error names the holder's PID. Its files stay.
    let pid = std::process::id().to_string();
    let dir = running.run_dir().to_path_buf();
    for err in [
        Trainer::resume(&dir, &[]).err().unwrap().to_string(),
        Trainer::new(cfg.clone()).err().unwrap().to_string(),
    ] {
        assert!(
            err.contains("in use by process") && err.contains(&pid),
            "{err}"
        );
    }
    assert!(dir.join("config.resolved.toml").is_file());
    // Released with the trainer (and by the OS when a process dies).
    drop(running);
    assert!(Trainer::new(cfg).is_ok());
}

#[test]
fn a_damaged_latest_checkpoint_resumes_from_the_newest_intact_one() {
    let (_g, tmp, data) = setup(4);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.max_steps=3".into(),
            "train.checkpoints.every_steps=1".into(),
            "train.checkpoints.keep_last=3".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    t.fit(&mut []).unwrap();
    let run = t.run_dir().to_path_buf();
    drop(t);
    let ckpts = run.join("checkpoints");
    let truncate = |f: PathBuf| {
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    };
    // A half-written optimizer file in the newest checkpoint: resume from step 2.
    truncate(ckpts.join("step-00000003/optimizer.safetensors"));
    assert_eq!(Trainer::resume(&run, &[]).unwrap().state().global_step, 2);
    // Truncated weights in that one too: step 1.
    truncate(ckpts.join("step-00000002/model/model.safetensors"));
    assert_eq!(Trainer::resume(&run, &[]).unwrap().state().global_step, 1);
    // Nothing intact: an error naming the newest damaged file.
    std::fs::write(ckpts.join("step-00000001/trainer_state.json"), "{").unwrap();
    let err = Trainer::resume(&run, &[]).err().unwrap().to_string();
    assert!(
        err.contains("every checkpoint is damaged") && err.contains("step-00000003"),
        "{err}"
    );
}

#[test]
fn runs_that_cannot_train_are_errors_naming_the_key() {
    let (_g, tmp, data) = setup(2);
    std::fs::create_dir_all(data.join("zebra")).unwrap();
    std::fs::write(data.join("zebra/readme.txt"), "no images here").unwrap();
    let err = Trainer::new(config(tmp.path(), &data, &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("data.train") && err.contains("\"zebra\"") && err.contains("no images"),
        "{err}"
    );
    let one = tmp.path().join("one");
    image_folder::make_folder(&one, &["only"], 4);
    let err = Trainer::new(config(tmp.path(), &one, &["run.name=one".into()]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("at least 2"), "{err}");
    // 2^63 - 1 epochs of 3 steps used to wrap the step counter.
    std::fs::remove_dir_all(data.join("zebra")).unwrap();
    let err = Trainer::new(config(
        tmp.path(),
        &data,
        &[
            "train.epochs=9223372036854775807".into(),
            "data.loader.batch_size=1".into(),
        ],
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("train.epochs") && err.contains("overflow"),
        "{err}"
    );
}

#[test]
fn corrupt_images_error_or_are_skipped() {
    let (_g, tmp, data) = setup(6);
    std::fs::write(
        data.join("circle").join("broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    std::fs::write(data.join("square").join("empty.jpg"), b"").unwrap();
    let val = format!(
        "data.val={{kind=\"image_folder\", path={:?}}}",
        data.display().to_string()
    );
    let cfg = config(
        tmp.path(),
        &data,
        &[
            val.clone(),
            "train.max_steps=3".into(),
            "run.name=err".into(),
        ],
    );
    let err = match Trainer::new(cfg) {
        Ok(mut t) => t.fit(&mut []).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("broken.png") || err.contains("empty.jpg"),
        "{err}"
    );
    let skip = |name: &str, share: Option<&str>| {
        let mut o = vec![
            val.clone(),
            "train.max_steps=3".into(),
            format!("run.name={name}"),
            "data.loader.on_corrupt=\"skip\"".into(),
            "optim.schedule={kind=\"constant\"}".into(),
        ];
        o.extend(share.map(|s| format!("data.loader.max_corrupt_share={s}")));
        let cfg = config(tmp.path(), &data, &o);
        Trainer::new(cfg).unwrap().fit(&mut [])
    };
    // 2 of 20 images unreadable: skipped and counted when 50 % may be...
    let r = skip("skip", Some("0.5")).unwrap();
    assert_eq!(r.global_step, 3);
    assert_eq!(r.corrupt_val_images, 2, "the evaluation read every image");
    assert!(r.corrupt_train_images <= 2);
    // ...but 10 % is more than the default 1 %: an error naming the key.
    let err = skip("share", None).unwrap_err().to_string();
    assert!(
        err.contains("max_corrupt_share") && err.contains("unreadable"),
        "{err}"
    );
    // A class whose every image is unreadable would train on substitutes: an error.
    std::fs::create_dir_all(data.join("zigzag")).unwrap();
    std::fs::write(data.join("zigzag/a.png"), b"garbage").unwrap();
    std::fs::write(data.join("zigzag/b.png"), b"garbage").unwrap();
    let err = skip("lost", Some("1.0")).unwrap_err().to_string();
    assert!(
        err.contains("every image of class \"zigzag\"") && err.contains("on_corrupt"),
        "{err}"
    );
}

/// Trains with the metrics files on (as the CLI does) and returns the run folder.
fn fit_with_metrics(cfg: RunConfig) -> clip_train::FitReport {
    let mut t = Trainer::new(cfg).unwrap();
    let files = clip_train::MetricsFiles::open(t.run_dir(), None, 1).unwrap();
    t.fit(&mut [Box::new(files) as Box<dyn Observer>]).unwrap()
}

fn step_lines(run_dir: &Path) -> Vec<clip_train::StepMetrics> {
    clip_train::read_metrics(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|l| match l {
            clip_train::MetricsLine::Step(m) => Some(m),
            clip_train::MetricsLine::Eval(_) => None,
        })
        .collect()
}

/// fp16 with a loss scale far too large: the first steps overflow and are skipped,
/// the scale halves on each and doubles after `growth_interval` good steps, as
/// `torch.amp.GradScaler` does; AdamW steps only on the others.
#[test]
fn fp16_skips_overflowing_steps_and_moves_the_scale_as_torch_amp() {
    let (_g, tmp, data) = setup(6);
    let (init, interval) = (2f64.powi(40), 3);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "run.name=fp16".into(),
            "train.precision=\"fp16\"".into(),
            "train.gradient_checkpointing=true".into(),
            format!("optim.scaler={{init_scale={init:.1}, growth_interval={interval}}}"),
            "train.max_steps=40".into(),
            "train.log_every_steps=1".into(),
        ],
    );
    let r = fit_with_metrics(cfg);
    let steps = step_lines(&r.run_dir);
    assert_eq!(
        steps.len(),
        40,
        "one metrics line per step, skipped ones included"
    );
    // torch.amp.GradScaler.update(): backoff 0.5 on inf/NaN, growth 2.0 after
    // `growth_interval` finite steps in a row.
    let (mut scale, mut good, mut growths) = (init, 0, 0);
    for m in &steps {
        if m.skipped {
            scale *= 0.5;
            good = 0;
            assert!(
                !m.grad_norm.is_finite(),
                "step {}: skipped with a finite norm",
                m.step
            );
        } else {
            good += 1;
            if good == interval {
                scale *= 2.0;
                good = 0;
                growths += 1;
            }
        }
        assert_eq!(m.loss_scale, Some(scale), "step {}", m.step);
    }
    let skipped = steps.iter().filter(|m| m.skipped).count();
    assert!(
        skipped >= 10 && growths >= 1,
        "{skipped} skipped, {growths} growths"
    );
    assert!(steps.last().unwrap().loss.is_finite());
    // AdamW counted only the steps that were taken.
    let ckpt = r.latest_checkpoint.unwrap();
    let opt: std::collections::HashMap<String, tch::Tensor> =
        clip_model::read_safetensors(&ckpt.join("optimizer.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let adam_steps = opt["classification_head.weight.step"].double_value(&[]);
    assert_eq!(adam_steps as usize, 40 - skipped);
}

/// `train.precision_on_cpu` replaces the precision on the CPU (the tutorial's
/// torch.cuda.amp turning itself off): no loss scale is recorded.
#[test]
fn a_collapsing_fp16_loss_scale_stops_the_run() {
    // 16 images per class at batch 1: ~36 steps per epoch, so the scale (halved
    // from 1.0 on every skipped step) collapses before the first evaluation, which
    // would otherwise stop the run on the NaN weights first.
    let (_g, tmp, data) = setup(16);
    // The weights blow up, then every gradient is NaN at any scale: the scale halves
    // each step until it is below fp16's smallest subnormal, and the run stops
    // instead of skipping every step to the end with exit 0.
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.precision=\"fp16\"".into(),
            "optim.scaler={init_scale=1.0}".into(),
            "optim.lr=1e30".into(),
            "optim.lr_policy={kind=\"uniform\"}".into(),
            "optim.max_grad_norm=0.0".into(),
            "optim.schedule={kind=\"constant\"}".into(),
            "train.max_steps=200".into(),
            "data.loader.batch_size=1".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let err = t.fit(&mut []).unwrap_err().to_string();
    assert!(err.contains("loss scale collapsed"), "{err}");
    assert!(
        t.state().global_step < 60,
        "stopped at {}",
        t.state().global_step
    );
}

#[test]
fn nan_weights_and_a_config_without_id2label_are_errors_naming_the_cause() {
    let (_g, tmp, data) = setup(2);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.max_steps=1".into(),
            "optim.schedule={kind=\"constant\"}".into(),
        ],
    );
    let mut t = Trainer::new(cfg.clone()).unwrap();
    t.fit(&mut []).unwrap();
    let run = t.run_dir().to_path_buf();
    drop(t);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = clip_train::load_classifier(&vs, run.to_str().unwrap()).unwrap();
    let ds = clip_data::Dataset::load(cfg.data.train.as_ref().unwrap(), "data").unwrap();
    let pipe = clip_data::Pipeline::clip_eval(16);
    let loader = clip_train::ordered_loader(&cfg.data.loader, ds, pipe, 4, 0).unwrap();
    let eval = |m: &clip_model::ClipClassifier| {
        clip_train::evaluate(
            m,
            &loader,
            clip_train::Precision::Fp32,
            tch::Device::Cpu,
            |_, _| Ok(()),
        )
    };
    assert!(eval(&model).is_ok());
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let _ = v.fill_(f64::NAN);
        }
    });
    let err = eval(&model).unwrap_err().to_string();
    assert!(err.contains("not finite") && err.contains(".png"), "{err}");
    // A classifier's config.json without id2label: an error naming the file and key.
    let dir = clip_train::classifier_dir(&run).unwrap();
    let path = dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("id2label");
    std::fs::write(&path, json.to_string()).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let err = clip_train::load_classifier(&vs, run.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json: id2label") && err.contains("is missing"),
        "{err}"
    );
}

#[test]
fn precision_on_cpu_replaces_fp16_on_the_cpu() {
    let (_g, tmp, data) = setup(4);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.precision=\"fp16\"".into(),
            "train.precision_on_cpu=\"fp32\"".into(),
            "train.max_steps=2".into(),
        ],
    );
    let r = fit_with_metrics(cfg);
    let steps = step_lines(&r.run_dir);
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|m| m.loss_scale.is_none()), "{steps:?}");
}

#[test]
fn progressive_unfreezing_opens_top_blocks_by_epoch() {
    let (_g, tmp, data) = setup(4);
    // Which parameters a run of `unfreeze` changed, by name prefix.
    let moved_by = |name: &str, unfreeze: &str| {
        let cfg = config(
            tmp.path(),
            &data,
            &[
                format!("run.name={name}"),
                "train.epochs=2".into(),
                format!("train.unfreeze={unfreeze}"),
            ],
        );
        let mut t = Trainer::new(cfg).unwrap();
        let before = weights(&t);
        t.fit(&mut []).unwrap();
        let after = weights(&t);
        move |prefix: &str| {
            before
                .iter()
                .zip(&after)
                .filter(|((n, _), _)| n.starts_with(prefix))
                .any(|((_, a), (_, b))| a != b)
        }
    };
    let moved = moved_by("tutorial", "{kind=\"progressive\"}");
    // 2 blocks over 2 epochs: epoch 0 trains the head only, epoch 1 block 1 (the top).
    assert!(moved("classification_head"));
    assert!(moved("vision_model.encoder.layers.1."));
    assert!(!moved("vision_model.encoder.layers.0."));
    assert!(!moved("vision_model.embeddings"));
    assert!(!moved("text_model"));
    // As the tutorial: the post-layernorm and projection never open...
    assert!(!moved("vision_model.post_layernorm"));
    assert!(!moved("visual_projection"));
    // ...unless asked.
    let moved = moved_by("open_post", "{kind=\"progressive\", open_post_layers=true}");
    assert!(moved("vision_model.post_layernorm") && moved("visual_projection"));
    assert!(!moved("vision_model.encoder.layers.0."));
}

#[test]
fn a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint() {
    let (_g, tmp, data) = setup(4);
    // An absurd LR without clipping blows the weights up after the first step.
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "optim.lr=1e30".into(),
            "optim.lr_policy={kind=\"uniform\"}".into(),
            "optim.max_grad_norm=0.0".into(),
            "optim.schedule={kind=\"constant\"}".into(),
            "train.checkpoints.every_steps=1".into(),
            "train.epochs=3".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let err = t.fit(&mut []).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, clip_train::TrainError::NonFinite { step: 2, .. }),
        "{msg}"
    );
    assert!(msg.contains("step 2"), "{msg}");
    assert!(
        msg.contains("the last good checkpoint") && msg.contains("step-00000001"),
        "{msg}"
    );
    // Without a checkpoint before it, the message says so instead.
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "run.name=nockpt".into(),
            "optim.lr=1e30".into(),
            "optim.lr_policy={kind=\"uniform\"}".into(),
            "optim.max_grad_norm=0.0".into(),
            "optim.schedule={kind=\"constant\"}".into(),
            "train.epochs=3".into(),
        ],
    );
    let msg = Trainer::new(cfg)
        .unwrap()
        .fit(&mut [])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no checkpoint was written before it"), "{msg}");
    let run = t.run_dir().to_path_buf();
    assert_eq!(checkpoint_names(&run), vec!["step-00000001".to_string()]);
    drop(t); // releases the run folder's lock
    // Overrides given at a resume are kept by the next resume.
    let with = Trainer::resume(&run, &["train.max_steps=5".into()]).unwrap();
    assert_eq!(with.total_steps(), 5);
    drop(with);
    assert_eq!(Trainer::resume(&run, &[]).unwrap().total_steps(), 5);
    assert!(
        Trainer::resume(&run, &[]).is_ok(),
        "the kept checkpoint resumes"
    );
}

#[test]
fn an_unwritable_run_folder_fails_before_training() {
    let (_g, tmp, data) = setup(2);
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cfg = config(&file, &data, &[]);
    let err = Trainer::new(cfg).err().unwrap().to_string();
    assert!(err.contains("a-file"), "{err}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model")
        .join(name)
}

#[test]
fn wise_ft_endpoints_reproduce_the_zero_shot_and_fine_tuned_accuracies() {
    let (_g, tmp, data) = setup(6);
    let mut cfg = config(tmp.path(), &data, &["train.epochs=2".into()]);
    cfg.model.architecture = None;
    cfg.model.pretrained = Some(fixture("tiny-a").display().to_string());
    cfg.model.head.init = clip_model::HeadInit::ZeroShot;
    cfg.data.train_transforms = None;
    let mut t = Trainer::new(cfg).unwrap();
    t.fit(&mut []).unwrap();
    let run = t.run_dir().to_path_buf();
    drop(t);

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut ft = clip_train::load_classifier(&vs, &run.display().to_string()).unwrap();
    let vs0 = tch::nn::VarStore::new(tch::Device::Cpu);
    let templates = vec!["a photo of a {}.".to_string()];
    let zs = clip_train::zero_shot_like(
        &vs0,
        &fixture("tiny-a").display().to_string(),
        &ft,
        &templates,
        None,
    )
    .unwrap();
    let ds = clip_data::Dataset::load(
        &clip_data::SourceConfig::ImageFolder { path: data.clone() },
        "data.train",
    )
    .unwrap();
    let mut rc = RunConfig::default();
    rc.data.eval_batch_size = Some(7);
    let loader =
        clip_train::eval_loader(&rc, ds.clone(), clip_data::Pipeline::clip_eval(32)).unwrap();
    let acc = |m: &clip_model::ClipClassifier| {
        clip_train::evaluate(
            m,
            &loader,
            clip_train::Precision::Fp32,
            tch::Device::Cpu,
            |_, _| Ok(()),
        )
        .unwrap()
    };
    let (a0, a1) = (acc(&zs), acc(&ft));
    let r = clip_train::wise_ft(
        &zs,
        &mut ft,
        &[0.0, 0.5, 1.0],
        ds,
        &[],
        7,
        clip_train::Placement {
            device: tch::Device::Cpu,
            precision: clip_train::Precision::Fp32,
        },
    )
    .unwrap();
    assert_eq!(r.points[0].accuracy, a0.accuracy);
    assert_eq!(r.points[0].loss, a0.loss);
    assert_eq!(r.points[2].accuracy, a1.accuracy);
    assert_eq!(r.points[2].loss, a1.loss);
    assert!(r.points.iter().all(|p| p.accuracy <= r.best_accuracy));
    // The model is left at the best alpha.
    let best = acc(&ft);
    assert_eq!(best.accuracy, r.best_accuracy);
}

#[test]
fn lora_training_changes_only_adapters_and_head_and_lp_ft_probes_first() {
    let (_g, tmp, data) = setup(4);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "run.name=lora".into(),
            "train.epochs=2".into(),
            "model.lora={r=4, alpha=8}".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let before = weights(&t);
    let r = t.fit(&mut []).unwrap();
    let adapters = t
        .model()
        .params()
        .count(|p| p.module == clip_model::Module::Adapter);
    assert_eq!(
        adapters,
        2 * 2 * (4 * 32 + 32 * 4),
        "2 blocks x q,v x (A + B)"
    );
    assert_eq!(r.trainable_parameters, adapters + 3 * 16 + 3);
    for ((n, a), (_, b)) in before.iter().zip(weights(&t).iter()) {
        let trainable = n.contains("lora_") || n.starts_with("classification_head");
        if !trainable {
            assert!(a == b, "{n} changed under LoRA");
        } else if n.contains("lora_B") || n.starts_with("classification_head") {
            assert!(a != b, "{n} did not train");
        }
    }
    // The export is a merged plain model plus a PEFT adapter folder.
    let out = tmp.path().join("export");
    let files = clip_train::export(&r.run_dir, &out, false, false).unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.contains("adapter_model.safetensors"))
    );
    let peft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(peft["r"], 4);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let merged = clip_model::ClipClassifier::load(&vs.root(), &out).unwrap();
    assert!(merged.clip.lora().is_none());

    let cfg = config(
        tmp.path(),
        &data,
        &[
            "run.name=lpft".into(),
            "train.epochs=2".into(),
            "train.unfreeze={kind=\"lp_ft\", probe_epochs=1}".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let before = weights(&t);
    let mut stop: Vec<Box<dyn Observer>> = vec![Box::new(StopAt {
        step: 2,
        flag: t.stop_flag(),
    })];
    t.fit(&mut stop).unwrap();
    for ((n, a), (_, b)) in before.iter().zip(weights(&t).iter()) {
        assert_eq!(
            a != b,
            n.starts_with("classification_head"),
            "{n} after the probe epoch"
        );
    }
    let run = t.run_dir().to_path_buf();
    drop(t);
    let mut t = Trainer::resume(&run, &[]).unwrap();
    t.fit(&mut []).unwrap();
    let moved = before
        .iter()
        .zip(weights(&t).iter())
        .any(|((n, a), (_, b))| n.starts_with("vision_model.encoder") && a != b);
    assert!(moved, "the second epoch fine-tunes the tower");
}

#[test]
fn exports_and_checkpoints_carry_the_runs_eval_preprocessing() {
    let (_g, tmp, data) = setup(4);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.max_steps=1".into(),
            "optim.schedule={kind=\"constant\"}".into(),
            "data.eval_transforms=[{op=\"resize\", size=16, interpolation=\"bicubic\"}, {op=\"center_crop\", size=16}, {op=\"normalize\", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]}]".into(),
        ],
    );
    let r = Trainer::new(cfg).unwrap().fit(&mut []).unwrap();
    let out = tmp.path().join("export");
    clip_train::export(&r.run_dir, &out, false, false).unwrap();
    let from_export = clip_train::eval_pipeline_for(&out, 16).unwrap();
    let ckpt = clip_train::classifier_dir(&r.run_dir).unwrap();
    let from_ckpt = clip_train::eval_pipeline_for(&ckpt, 16).unwrap();
    // The checkpoint evaluates as the run did; the export as transformers will
    // read its preprocessor_config.json: CLIPImageProcessor with the run's
    // statistics (its centre crop follows transformers, not torchvision).
    let run_cfg = RunConfig::load(&r.run_dir.join("config.resolved.toml"), &[]).unwrap();
    assert_eq!(
        from_ckpt.ops(),
        run_cfg.data.eval_transforms.unwrap().as_slice()
    );
    let imagenet = clip_data::Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    assert_eq!(
        from_export.ops(),
        clip_data::Pipeline::clip_processor(16, imagenet).ops()
    );
}

/// JPEGs of every flavour train (not only evaluate): Adobe CMYK, YCCK and grey
/// files among them decode (as PIL does) in the training loader and in
/// evaluation, with no image left out or failing the run.
#[test]
fn jpegs_of_every_flavour_including_cmyk_and_grey_train() {
    let (_guard, tmp, _) = setup(1);
    let jpegs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data/jpeg");
    let data = tmp.path().join("jpegs");
    for (class, names) in [
        ("cat", ["cmyk", "grey", "progressive_444", "baseline_420"]),
        ("dog", ["ycck", "arith", "restart_420", "baseline_422"]),
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for n in names {
            let file = format!("{n}.jpg");
            std::fs::copy(jpegs.join(&file), data.join(class).join(&file)).unwrap();
        }
    }
    let cfg = config(
        tmp.path(),
        &data,
        &[
            format!(
                "data.val={{kind=\"image_folder\", path={:?}}}",
                data.display().to_string()
            ),
            "data.loader.batch_size=4".into(),
            "train.epochs=2".into(),
        ],
    );
    let report = Trainer::new(cfg).unwrap().fit(&mut []).unwrap();
    assert_eq!(report.global_step, 4);
    assert_eq!(
        (report.corrupt_train_images, report.corrupt_val_images),
        (0, 0)
    );
    let eval = report.last_eval.unwrap();
    assert_eq!(eval.val.images, 8);
    assert!(eval.val.loss.is_finite());
}
