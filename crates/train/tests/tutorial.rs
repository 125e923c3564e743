//! configs/tutorial.toml against the tutorial's own Python (get_parameter_groups,
//! AdamW, get_cosine_schedule_with_warmup on openai/clip-vit-base-patch32's
//! architecture), recorded by scripts/gen_tutorial_fixtures.py.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clip_model::{ClipClassifier, ClipConfig, HeadConfig};
use clip_optim::TensorRow;
use clip_train::{Precision, RunConfig, param_groups};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/tutorial/groups.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tutorial() -> RunConfig {
    RunConfig::load(&root().join("configs/tutorial.toml"), &[]).unwrap()
}

/// The tutorial's `model.classifier.*` is our `classification_head.*`.
fn our_name(tutorial_name: &str) -> String {
    match tutorial_name.strip_prefix("classifier.") {
        Some(rest) => format!("classification_head.{rest}"),
        None => tutorial_name.to_string(),
    }
}

#[test]
fn tutorial_config_gives_every_tensor_the_tutorials_lr_and_weight_decay() {
    let cfg = tutorial();
    assert_eq!(
        cfg.model.pretrained.as_deref(),
        Some("openai/clip-vit-base-patch32")
    );
    // The architecture of openai/clip-vit-base-patch32 (no weights needed: the
    // groups depend on names and shapes only).
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let classes: Vec<String> = (0..10).map(|i| format!("class{i}")).collect();
    let head = HeadConfig {
        init: clip_model::HeadInit::Random,
        ..cfg.model.head.clone()
    };
    let model = ClipClassifier::new(
        &vs.root(),
        &ClipConfig::preset("vit-b-32").unwrap(),
        classes,
        &head,
    )
    .unwrap();
    let (groups, _) = param_groups(&cfg, &model).unwrap();
    let lrs: Vec<f64> = groups.iter().map(|g| g.base_lr).collect();
    let ours: HashMap<String, TensorRow> = TensorRow::list(model.params(), &groups, &lrs)
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();

    let fx = fixture();
    let params = fx["params"].as_array().unwrap();
    assert_eq!(params.len(), ours.len(), "tensor count");
    let (mut updated, mut left_out) = (0, 0);
    for p in params {
        let name = our_name(p["name"].as_str().unwrap());
        let row = ours
            .get(&name)
            .unwrap_or_else(|| panic!("{name}: not in our model"));
        let numel: i64 = row.shape.iter().product();
        assert_eq!(numel, p["numel"].as_i64().unwrap(), "{name}: numel");
        // What PyTorch's AdamW updates: in a group and given a gradient.
        if p["in_optimizer"].as_bool().unwrap() && p["has_grad"].as_bool().unwrap() {
            let (lr, wd) = (
                p["lr"].as_f64().unwrap(),
                p["weight_decay"].as_f64().unwrap(),
            );
            let our_lr = row
                .lr
                .unwrap_or_else(|| panic!("{name}: not optimised by us"));
            assert!(
                (our_lr - lr).abs() <= 1e-15 * lr.abs().max(1e-300) + 1e-20,
                "{name}: lr {our_lr} vs the tutorial's {lr}"
            );
            assert_eq!(row.weight_decay, Some(wd), "{name}: weight decay");
            updated += 1;
        } else {
            // Dropped by get_parameter_groups (text encoder layers) or never given
            // a gradient by a classification loss (the rest of the text side and
            // logit_scale): AdamW never touches them, and neither do we.
            assert!(
                row.group.is_none(),
                "{name}: we optimise it, the tutorial does not"
            );
            left_out += 1;
        }
    }
    // Vision tower and visual_projection (200 tensors) + classifier (2); the text
    // tower, text_projection and logit_scale (198).
    assert_eq!((updated, left_out), (202, 198));
    // Block 0 of 12 at 1e-5 * 0.95^11, embeddings and head at 1e-5.
    let q0 = &ours["vision_model.encoder.layers.0.self_attn.q_proj.weight"];
    assert!((q0.lr.unwrap() - 1e-5 * 0.95f64.powi(11)).abs() < 1e-20);
    assert_eq!(ours["classification_head.bias"].lr, Some(1e-5));
    assert_eq!(
        ours["vision_model.post_layernorm.bias"].weight_decay,
        Some(0.01)
    );
}

#[test]
fn tutorial_config_schedule_equals_transformers_with_truncated_warmup() {
    let fx = fixture();
    let s = &fx["schedule"];
    let steps = s["steps"].as_u64().unwrap();
    let schedule = tutorial().optim.schedule.build(steps).unwrap();
    assert_eq!(
        schedule.warmup_steps(),
        s["warmup_steps"].as_u64().unwrap(),
        "int(0.1 * {steps})"
    );
    for (step, f) in s["factors"].as_array().unwrap().iter().enumerate() {
        let (ours, theirs) = (schedule.factor_at(step as u64), f.as_f64().unwrap());
        assert!(
            (ours - theirs).abs() < 1e-12,
            "step {step}: {ours} vs {theirs}"
        );
    }
}

#[test]
fn tutorial_config_states_the_rest_of_the_recipe() {
    let cfg = tutorial();
    let fx = fixture();
    // The "Trainable parameters" line on transformers' CLIPModel (the tutorial
    // prints 149,620,224; see the README).
    assert_eq!(fx["trainable_params"].as_i64(), Some(151_277_313));
    let t = &cfg.train;
    assert_eq!(t.grad_accum, 4);
    assert_eq!(t.precision, Precision::Fp16);
    assert_eq!(t.precision_on_cpu, Some(Precision::Fp32));
    assert_eq!(t.label_smoothing, 0.1);
    assert!(t.gradient_checkpointing && t.early_stopping.is_some());
    assert!(t.checkpoints.keep_last > 1);
    let o = &cfg.optim;
    assert_eq!((o.betas, o.eps, o.max_grad_norm), ([0.9, 0.999], 1e-8, 1.0));
    // GradScaler(): PyTorch's defaults, stated.
    let sc = &cfg.optim.scaler;
    assert_eq!(
        (
            sc.init_scale,
            sc.growth_factor,
            sc.backoff_factor,
            sc.growth_interval
        ),
        (65536.0, 2.0, 0.5, 2000)
    );
    // The tutorial's augmentation, op by op: RandomResizedCrop(224, scale=(0.8,
    // 1.0)), RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.4),
    // RandomRotation(15), ToTensor(), Normalize(ImageNet's mean and std).
    #[derive(serde::Deserialize)]
    struct Ops {
        ops: Vec<clip_data::TransformConfig>,
    }
    let want: Ops = toml::from_str(
        r#"ops = [
            { op = "random_resized_crop", size = 224, scale = [0.8, 1.0] },
            { op = "random_horizontal_flip" },
            { op = "color_jitter", brightness = 0.4, contrast = 0.4, saturation = 0.4 },
            { op = "random_rotation", degrees = 15 },
            { op = "to_tensor" },
            { op = "normalize", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] },
        ]"#,
    )
    .unwrap();
    assert_eq!(cfg.data.train_transforms.as_deref(), Some(&want.ops[..]));
    assert_eq!(cfg.model.regularization.residual_dropout, 0.1);
    assert_eq!(cfg.model.head.dropout, 0.0);
}
