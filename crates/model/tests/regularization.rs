//! Dropout, drop-path and head dropout: off by default, active only in training,
//! and replayed exactly by gradient checkpointing.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;

use clip_model::{ClipClassifier, ClipModel, GradTape, HeadConfig, ModelFiles, Regularization};
use tch::{Kind, Tensor, nn::VarStore};

fn load() -> (VarStore, ClipModel) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model/tiny-b");
    let vs = VarStore::new(tch::Device::Cpu);
    let m = ClipModel::from_files(&vs.root(), &ModelFiles::from_dir(&dir).unwrap()).unwrap();
    (vs, m)
}

fn pixels() -> Tensor {
    tch::manual_seed(3);
    Tensor::randn([4, 3, 20, 20], (Kind::Float, tch::Device::Cpu))
}

fn pooled(m: &ClipModel, x: &Tensor, train: bool) -> Tensor {
    let pass = clip_model::Pass {
        train,
        ..clip_model::Pass::eval()
    };
    tch::no_grad(|| m.vision(x, pass).unwrap().pooled)
}

/// libtorch's default generator is global: tests that draw from it run one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

const REG: Regularization = Regularization {
    attention_dropout: 0.2,
    residual_dropout: 0.3,
    drop_path: 0.2,
};

#[test]
fn everything_is_off_by_default_and_only_active_in_training() {
    let _rng = rng_lock();
    let (_vs, mut m) = load();
    let x = pixels();
    let eval = pooled(&m, &x, false);
    assert!(
        pooled(&m, &x, true).equal(&eval),
        "default training forward must equal eval"
    );
    m.set_regularization(REG).unwrap();
    assert!(
        !pooled(&m, &x, true).equal(&eval),
        "dropout must change the training forward"
    );
    assert!(
        pooled(&m, &x, false).equal(&eval),
        "eval must ignore dropout"
    );
    let rates: Vec<f64> = m
        .vision_model
        .encoder
        .layers
        .iter()
        .map(|l| l.drop_path_rate())
        .collect();
    assert_eq!(
        rates,
        vec![0.0, 0.1, 0.2],
        "drop-path rises linearly with depth"
    );
    let bad = Regularization {
        drop_path: 1.0,
        ..REG
    };
    assert!(
        m.set_regularization(bad)
            .unwrap_err()
            .to_string()
            .contains("model.regularization.drop_path")
    );
}

fn grads_with_dropout(checkpointing: bool) -> Vec<Tensor> {
    let (_vs, mut m) = load();
    m.set_regularization(REG).unwrap();
    m.set_gradient_checkpointing(checkpointing);
    let x = pixels();
    tch::manual_seed(42);
    let mut tape = GradTape::new();
    let out = m
        .vision(&x, clip_model::Pass::train().tape(&mut tape))
        .unwrap();
    assert_eq!(tape.len(), if checkpointing { 3 } else { 0 });
    let loss = (m.visual_projection.forward(&out.pooled) * 0.5)
        .tanh()
        .sum(Kind::Float);
    tape.backward(&loss).unwrap();
    m.params()
        .select(|t| t.tower == clip_model::Tower::Vision)
        .map(|p| p.tensor.grad().copy())
        .collect()
}

#[test]
fn checkpointing_replays_dropout_exactly() {
    let _rng = rng_lock();
    let plain = grads_with_dropout(false);
    let ckpt = grads_with_dropout(true);
    let mut nonzero = 0;
    for (a, b) in plain.iter().zip(&ckpt) {
        if !a.defined() {
            assert!(!b.defined());
            continue;
        }
        let d = (a - b).abs().max().double_value(&[]);
        assert!(d < 1e-6, "gradient differs by {d} with checkpointing");
        nonzero += i32::from(a.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    assert!(nonzero > 10);
}

#[test]
fn head_dropout_acts_in_training_only() {
    let _rng = rng_lock();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model/tiny-b");
    let vs = VarStore::new(tch::Device::Cpu);
    let head = HeadConfig {
        dropout: 0.5,
        ..HeadConfig::default()
    };
    let c = ClipClassifier::from_clip(
        &vs.root(),
        &ModelFiles::from_dir(&dir).unwrap(),
        vec!["a".into(), "b".into()],
        &head,
        None,
    )
    .unwrap();
    let x = pixels();
    let (e1, e2, t) = tch::no_grad(|| {
        (
            c.forward(&x, clip_model::Pass::eval()).unwrap(),
            c.forward(&x, clip_model::Pass::eval()).unwrap(),
            c.forward(&x, clip_model::Pass::train()).unwrap(),
        )
    });
    assert!(e1.equal(&e2));
    assert!(!t.equal(&e1));
}
