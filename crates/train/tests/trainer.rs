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

/// `root/<class>/<i>.png`: 16x16 images, each class its own colour and stripe
/// direction, with per-image noise.
pub fn make_folder(root: &Path, per_class: usize) {
    let classes: [(&str, [u8; 3], bool); 3] = [
        ("circle", [200, 40, 40], true),
        ("square", [40, 200, 40], false),
        ("triangle", [40, 40, 200], true),
    ];
    for (k, (name, rgb, horizontal)) in classes.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let mut data = Vec::with_capacity(16 * 16 * 3);
            for y in 0..16usize {
                for x in 0..16usize {
                    let stripe = if *horizontal { y } else { x } % 4 < 2;
                    for (c, &v) in rgb.iter().enumerate() {
                        let noise = ((i * 31 + x * 7 + y * 13 + c * 5 + k) % 23) as i32 - 11;
                        let base = if stripe {
                            i32::from(v)
                        } else {
                            i32::from(v) / 2
                        };
                        data.push((base + noise).clamp(0, 255) as u8);
                    }
                }
            }
            image::save_buffer(
                dir.join(format!("{i}.png")),
                &data,
                16,
                16,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        }
    }
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
    // Dropout, drop-path, augmentation, EMA and accumulation all on: every random
    // draw and every piece of state must come back.
    let extra = |name: &str| -> Vec<String> {
        vec![
            format!("run.name={name}"),
            "train.epochs=2".into(),
            "train.grad_accum=2".into(),
            "train.ema.decay=0.9".into(),
            "model.regularization.residual_dropout=0.1".into(),
            "model.regularization.drop_path=0.1".into(),
            "model.head.dropout=0.1".into(),
        ]
    };
    let mut straight = Trainer::new(config(tmp.path(), &data, &extra("straight"))).unwrap();
    straight.fit(&mut []).unwrap();

    let mut first = Trainer::new(config(tmp.path(), &data, &extra("resumed"))).unwrap();
    let total = first.total_steps();
    assert_eq!(
        total, 4,
        "18 images / batch 8 = 3 batches, 2 per step: 2 steps per epoch"
    );
    // Stop mid-epoch (after step 1 of epoch 0), then mid-epoch 1 (step 3).
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
}

#[test]
fn accumulation_matches_one_big_batch() {
    let (_g, tmp, data) = setup(8);
    let run = |name: &str, batch: usize, accum: usize| -> Vec<(String, Vec<f32>)> {
        let cfg = config(
            tmp.path(),
            &data,
            &[
                format!("run.name={name}"),
                format!("data.loader.batch_size={batch}"),
                format!("train.grad_accum={accum}"),
                "data.train_transforms=[{op=\"resize\", size=16}, {op=\"center_crop\", size=16}, {op=\"normalize\"}]".into(),
                "data.val_fraction=0.5".into(),
                "train.max_steps=1".into(),
                "optim.schedule={kind=\"constant\"}".into(),
            ],
        );
        let mut t = Trainer::new(cfg).unwrap();
        t.fit(&mut []).unwrap();
        weights(&t)
    };
    let a = run("b8", 8, 1);
    let b = run("b2x4", 2, 4);
    let mut changed = 0;
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        // k_proj's bias has a zero gradient in exact arithmetic (softmax is
        // shift-invariant); AdamW's first step turns its rounding noise into +-lr.
        if n.ends_with("k_proj.bias") {
            continue;
        }
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + u.abs()), "{n}: {u} vs {v}");
        }
        changed += usize::from(n.starts_with("vision_model") || n.starts_with("classification"));
    }
    assert!(changed > 0);
    // And it is a real update: the weights moved from their initial values.
    let c = run("b8-again", 8, 1);
    assert_eq!(a, c, "same config, same weights");
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
fn a_run_folder_is_never_overwritten_silently() {
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
    assert!(Trainer::new(cfg).is_ok());
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
    let cfg = config(
        tmp.path(),
        &data,
        &[
            val,
            "train.max_steps=3".into(),
            "run.name=skip".into(),
            "data.loader.on_corrupt=\"skip\"".into(),
            "optim.schedule={kind=\"constant\"}".into(),
        ],
    );
    let r = Trainer::new(cfg).unwrap().fit(&mut []).unwrap();
    assert_eq!(r.global_step, 3);
}

#[test]
fn bf16_and_fp16_train_with_finite_losses() {
    let (_g, tmp, data) = setup(6);
    for p in ["bf16", "fp16"] {
        let cfg = config(
            tmp.path(),
            &data,
            &[
                format!("run.name={p}"),
                format!("train.precision=\"{p}\""),
                "train.gradient_checkpointing=true".into(),
                "train.epochs=2".into(),
            ],
        );
        let mut t = Trainer::new(cfg).unwrap();
        let r = t.fit(&mut []).unwrap();
        let e = r.last_eval.unwrap();
        assert!(e.val.loss.is_finite(), "{p}: {}", e.val.loss);
        let lines = std::fs::read_to_string(r.run_dir.join("metrics.jsonl")).unwrap_or_default();
        assert!(lines.is_empty() || !lines.contains("NaN"));
    }
}

#[test]
fn progressive_unfreezing_opens_top_blocks_by_epoch() {
    let (_g, tmp, data) = setup(4);
    let cfg = config(
        tmp.path(),
        &data,
        &[
            "train.epochs=2".into(),
            "train.unfreeze={kind=\"progressive\"}".into(),
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let before = weights(&t);
    t.fit(&mut []).unwrap();
    let after = weights(&t);
    let moved = |prefix: &str| {
        before
            .iter()
            .zip(&after)
            .filter(|((n, _), _)| n.starts_with(prefix))
            .any(|((_, a), (_, b))| a != b)
    };
    // 2 blocks over 2 epochs: epoch 0 trains the head only, epoch 1 block 1 (the top).
    assert!(moved("classification_head"));
    assert!(moved("vision_model.encoder.layers.1."));
    assert!(!moved("vision_model.encoder.layers.0."));
    assert!(!moved("vision_model.embeddings"));
    assert!(!moved("text_model"));
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
    let run = t.run_dir().to_path_buf();
    assert_eq!(checkpoint_names(&run), vec!["step-00000001".to_string()]);
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
    let ds = clip_data::Dataset::load(&clip_data::SourceConfig::ImageFolder { path: data.clone() })
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
    let r = clip_train::wise_ft(&zs, &mut ft, &[0.0, 0.5, 1.0], ds, 7).unwrap();
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
    let files = clip_train::export(&r.run_dir, &out).unwrap();
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
    clip_train::export(&r.run_dir, &out).unwrap();
    let from_export = clip_train::eval_pipeline_for(&out, 16).unwrap();
    let ckpt = clip_train::classifier_dir(&r.run_dir).unwrap();
    let from_ckpt = clip_train::eval_pipeline_for(&ckpt, 16).unwrap();
    assert_eq!(from_export.ops(), from_ckpt.ops());
    let has_imagenet = from_export.ops().iter().any(|op| {
        matches!(op, clip_data::TransformConfig::Normalize { mean, .. } if (mean[0] - 0.485).abs() < 1e-6)
    });
    assert!(has_imagenet, "{:?}", from_export.ops());
}
