//! Parameter groups from tags: LLRD in both forms, discriminative bands, no-decay,
//! frozen towers, and progressive unfreezing.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use clip_model::{ClipClassifier, ClipConfig, HeadConfig, Tower};
use clip_optim::{AdamW, AdamWConfig, GroupConfig, LrPolicy, NoDecay};

use tch::{Kind, Tensor, nn::VarStore};

fn classifier(vs: &VarStore) -> ClipClassifier {
    let mut cfg = ClipConfig::tiny();
    cfg.vision_config.num_hidden_layers = 6;
    ClipClassifier::new(
        &vs.root(),
        &cfg,
        vec!["a".into(), "b".into()],
        &HeadConfig::default(),
    )
    .unwrap()
}

fn blocks(t: Tower) -> u32 {
    match t {
        Tower::Vision => 6,
        Tower::Text => 2,
        _ => 0,
    }
}

fn lr_of(groups: &[clip_optim::ParamGroup], param: &str) -> (f64, f64) {
    let g = groups
        .iter()
        .find(|g| g.params.iter().any(|(n, _)| n == param))
        .unwrap_or_else(|| panic!("{param} in no group"));
    (g.base_lr, g.weight_decay)
}

#[test]
fn standard_llrd_decays_by_depth_and_exempts_norms_biases_embeddings() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = classifier(&vs);
    let cfg = GroupConfig {
        lr: 1e-4,
        lr_policy: LrPolicy::Llrd {
            decay: 0.5,
            head_lr: Some(1e-3),
        },
        ..GroupConfig::default()
    };
    let groups = cfg.build(m.params(), blocks).unwrap();
    let l = 6;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
    // depth d gets lr * decay^(L + 1 - d)
    assert!(close(
        lr_of(&groups, "vision_model.embeddings.patch_embedding.weight").0,
        1e-4 * 0.5f64.powi(l + 1)
    ));
    assert!(close(
        lr_of(&groups, "vision_model.encoder.layers.0.mlp.fc1.weight").0,
        1e-4 * 0.5f64.powi(l)
    ));
    assert!(close(
        lr_of(&groups, "vision_model.encoder.layers.5.mlp.fc1.weight").0,
        1e-4 * 0.5
    ));
    assert!(close(lr_of(&groups, "visual_projection.weight").0, 1e-4));
    assert!(close(lr_of(&groups, "classification_head.weight").0, 1e-3));
    assert_eq!(
        lr_of(&groups, "vision_model.encoder.layers.3.mlp.fc1.weight").1,
        0.01
    );
    for no_decay in [
        "vision_model.encoder.layers.3.mlp.fc1.bias",
        "vision_model.encoder.layers.3.layer_norm1.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding.weight",
        "classification_head.bias",
    ] {
        assert_eq!(lr_of(&groups, no_decay).1, 0.0, "{no_decay}");
    }
    // The text tower and logit_scale are frozen by default: no group at all.
    assert!(
        groups
            .iter()
            .all(|g| g.tower != Tower::Text && g.tower != Tower::Shared)
    );
    let report = clip_optim::GroupReport::new(
        &groups,
        &groups.iter().map(|g| g.base_lr).collect::<Vec<_>>(),
    );
    let table = report.to_string();
    assert!(
        table.contains("head.d7.decay") && table.contains("1.000e-3"),
        "{table}"
    );
    assert_eq!(report.rows.len(), groups.len());
    let in_groups: i64 = report.rows.iter().map(|r| r.parameters).sum();
    assert_eq!(
        in_groups,
        m.params()
            .count(|t| t.tower == Tower::Vision || t.tower == Tower::Head)
    );
}

#[test]
fn tutorial_llrd_and_decay_everything_reproduce_the_tutorial() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = classifier(&vs);
    let cfg = GroupConfig {
        lr: 1e-5,
        no_decay: NoDecay::None,
        lr_policy: LrPolicy::TutorialLlrd { decay: 0.95 },
        ..GroupConfig::default()
    };
    let groups = cfg.build(m.params(), blocks).unwrap();
    for i in 0..6 {
        let (lr, wd) = lr_of(
            &groups,
            &format!("vision_model.encoder.layers.{i}.self_attn.q_proj.weight"),
        );
        assert!(
            (lr - 1e-5 * 0.95f64.powi(6 - 1 - i)).abs() < 1e-18,
            "block {i}: {lr}"
        );
        assert_eq!(wd, 0.01);
    }
    for other in [
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.post_layernorm.bias",
        "classification_head.weight",
    ] {
        assert_eq!(lr_of(&groups, other), (1e-5, 0.01), "{other}");
    }
}

#[test]
fn discriminative_bands_follow_thirds_of_the_blocks() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = classifier(&vs);
    let cfg = GroupConfig {
        lr_policy: serde_json::from_str(r#"{"kind": "discriminative"}"#).unwrap(),
        ..GroupConfig::default()
    };
    let groups = cfg.build(m.params(), blocks).unwrap();
    let lr = |n: &str| lr_of(&groups, n).0;
    assert_eq!(lr("vision_model.embeddings.patch_embedding.weight"), 1e-6);
    assert_eq!(lr("vision_model.encoder.layers.0.mlp.fc2.weight"), 1e-6);
    assert_eq!(lr("vision_model.encoder.layers.1.mlp.fc2.weight"), 1e-6);
    assert_eq!(lr("vision_model.encoder.layers.2.mlp.fc2.weight"), 5e-6);
    assert_eq!(lr("vision_model.encoder.layers.3.mlp.fc2.weight"), 5e-6);
    assert_eq!(lr("vision_model.encoder.layers.4.mlp.fc2.weight"), 1e-5);
    assert_eq!(lr("vision_model.post_layernorm.weight"), 1e-5);
    assert_eq!(lr("classification_head.weight"), 1e-4);
}

#[test]
fn bad_values_are_all_reported_with_their_keys() {
    let cfg: GroupConfig = toml::from_str(
        r#"
        lr = -1.0
        weight_decay = -0.1
        [lr_policy]
        kind = "llrd"
        decay = 1.5
        "#,
    )
    .unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    for key in ["optim.lr", "optim.weight_decay", "optim.lr_policy.decay"] {
        assert!(err.contains(key), "{err}");
    }
    let err = toml::from_str::<GroupConfig>("lr_polcy = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("lr_polcy"), "{err}");
}

#[test]
fn progressive_unfreezing_adds_fresh_state_and_keeps_the_rest() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = classifier(&vs);
    m.params().set_trainable(false, |_| true);
    m.params().set_trainable(true, |t| t.tower == Tower::Head);
    let groups = GroupConfig::default().build(m.params(), blocks).unwrap();
    let mut opt = AdamW::new(groups, AdamWConfig::default()).unwrap();
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let step = |opt: &mut AdamW| {
        m.forward(&x, clip_model::Pass::train())
            .unwrap()
            .sum(Kind::Float)
            .backward();
        let n = opt.step().unwrap();
        opt.zero_grad().unwrap();
        n
    };
    assert_eq!(step(&mut opt), 2, "only the head has gradients");
    assert_eq!(opt.state_len(), 2);
    let head = m
        .params()
        .get("classification_head.weight")
        .unwrap()
        .tensor
        .copy();
    // Open the top block: it joins with zero moments; the head keeps its state.
    m.params().set_tower_trainable(Tower::Vision, 6..=7, true);
    let opened = m
        .params()
        .select(|t| t.tower == Tower::Vision && t.depth >= 6)
        .count();
    assert_eq!(step(&mut opt), 2 + opened);
    assert_eq!(opt.state_len(), 2 + opened);
    assert!(
        !m.params()
            .get("classification_head.weight")
            .unwrap()
            .tensor
            .equal(&head)
    );
    let dir = tempfile::tempdir().unwrap();
    opt.save(&dir.path().join("o.safetensors")).unwrap();
    let saved = clip_model::read_safetensors(&dir.path().join("o.safetensors")).unwrap();
    let step_of = |name: &str| {
        saved
            .iter()
            .find(|(n, _)| n == &format!("{name}.step"))
            .unwrap()
            .1
            .double_value(&[])
    };
    assert_eq!(step_of("classification_head.weight"), 2.0);
    assert_eq!(step_of("vision_model.post_layernorm.weight"), 1.0);
}
