//! Step-for-step parity with torch.optim.AdamW, transformers' cosine schedule,
//! clip_grad_norm_ and torch.amp.GradScaler, on fixtures made by
//! scripts/gen_optim_fixtures.py.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::PathBuf;

use clip_model::Tower;
use clip_optim::{
    AdamW, AdamWConfig, GradScaler, ParamGroup, ScalerConfig, Schedule, Warmup, clip_grad_norm,
};
use tch::{Kind, Tensor};

fn fixtures() -> HashMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/optim/adamw.safetensors");
    clip_model::read_safetensors(&p)
        .unwrap()
        .into_iter()
        .collect()
}

fn leaf(t: &Tensor) -> Tensor {
    t.copy().set_requires_grad(true)
}

/// Gives `p` exactly the gradient `g` (d/dp sum(p * g) = g).
fn set_grad(p: &Tensor, g: &Tensor) {
    (p * g).sum(Kind::Float).backward();
}

fn group(name: &str, params: &[Tensor], lr: f64, wd: f64) -> ParamGroup {
    ParamGroup {
        name: name.into(),
        tower: Tower::Vision,
        depth_min: 0,
        depth_max: 0,
        base_lr: lr,
        weight_decay: wd,
        params: params
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{name}.p{i}"), t.shallow_clone()))
            .collect(),
    }
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

struct MainRun {
    params: Vec<Tensor>,
    opt: AdamW,
}

fn main_run(f: &HashMap<String, Tensor>) -> MainRun {
    let params: Vec<Tensor> = (0..4).map(|i| leaf(&f[&format!("init.p{i}")])).collect();
    let groups = vec![
        group("g0", &params[..2], 1e-2, 0.1),
        group("g1", &params[2..], 3e-3, 0.0),
    ];
    MainRun {
        opt: AdamW::new(groups, AdamWConfig::default()).unwrap(),
        params,
    }
}

/// Runs steps `from..to` of the main fixture run, checking LR, norm and parameters.
fn run_steps(f: &HashMap<String, Tensor>, run: &mut MainRun, from: usize, to: usize) {
    let schedule = Schedule::Cosine {
        warmup: Warmup::Steps(6),
        min_lr_ratio: 0.0,
    }
    .build(60)
    .unwrap();
    for s in from..to {
        run.opt.set_lr_factor(schedule.factor_at(s as u64));
        let want_lr: Vec<f64> = Vec::try_from(&f[&format!("lr.{s}")]).unwrap();
        assert_eq!(run.opt.lrs(), want_lr.as_slice(), "LR at step {s}");
        for (i, p) in run.params.iter().enumerate() {
            set_grad(p, &f[&format!("grad.{s}.p{i}")]);
        }
        let norm = clip_grad_norm(&run.opt.grads(), 1.0).unwrap();
        let want = f[&format!("norm.{s}")].double_value(&[0]);
        assert!(
            (norm - want).abs() <= 1e-6 * want,
            "norm at step {s}: {norm} vs {want}"
        );
        assert_eq!(run.opt.step().unwrap(), 4);
        run.opt.zero_grad().unwrap();
        for (i, p) in run.params.iter().enumerate() {
            let d = rel_diff(p, &f[&format!("param.{s}.p{i}")]);
            assert!(d <= 1e-6, "p{i} after step {s}: relative difference {d}");
        }
    }
}

#[test]
fn adamw_groups_schedule_and_clipping_match_pytorch_for_60_steps() {
    let f = fixtures();
    let mut run = main_run(&f);
    run_steps(&f, &mut run, 0, 60);
}

#[test]
fn save_and_load_mid_run_continues_the_same_trajectory() {
    let f = fixtures();
    let mut straight = main_run(&f);
    run_steps(&f, &mut straight, 0, 60);

    let mut first = main_run(&f);
    run_steps(&f, &mut first, 0, 30);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    first.opt.save(&path).unwrap();
    // A fresh process: new tensors with the saved values, a new optimizer, loaded state.
    let params: Vec<Tensor> = first.params.iter().map(|p| leaf(&p.detach())).collect();
    let groups = vec![
        group("g0", &params[..2], 1e-2, 0.1),
        group("g1", &params[2..], 3e-3, 0.0),
    ];
    let mut resumed = MainRun {
        opt: AdamW::new(groups, AdamWConfig::default()).unwrap(),
        params,
    };
    resumed.opt.load(&path).unwrap();
    assert_eq!(resumed.opt.state_len(), 4);
    run_steps(&f, &mut resumed, 30, 60);
    for (a, b) in straight.params.iter().zip(&resumed.params) {
        assert!(a.equal(b), "resumed run differs from the uninterrupted one");
    }
}

#[test]
fn loading_state_for_other_parameters_is_an_error() {
    let f = fixtures();
    let mut run = main_run(&f);
    run_steps(&f, &mut run, 0, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    run.opt.save(&path).unwrap();
    let other = vec![leaf(&Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)))];
    let mut opt = AdamW::new(vec![group("zz", &other, 1e-3, 0.0)], AdamWConfig::default()).unwrap();
    let err = opt.load(&path).unwrap_err().to_string();
    assert!(
        err.contains("does not train") && err.contains("g0.p0.exp_avg"),
        "{err}"
    );
}

#[test]
fn amsgrad_matches_pytorch() {
    let f = fixtures();
    let p = leaf(&f["ams.init.p"]);
    let cfg = AdamWConfig {
        amsgrad: true,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(vec![group("g", std::slice::from_ref(&p), 5e-3, 0.05)], cfg).unwrap();
    for s in 0..20 {
        set_grad(&p, &f[&format!("ams.grad.{s}")]);
        opt.step().unwrap();
        opt.zero_grad().unwrap();
        let d = rel_diff(&p, &f[&format!("ams.param.{s}")]);
        assert!(d <= 1e-6, "amsgrad step {s}: {d}");
    }
}

#[test]
fn clipping_non_finite_gradients_matches_pytorch() {
    let f = fixtures();
    let grads: Vec<Tensor> = (0..2)
        .map(|i| f[&format!("nonfinite.in.{i}")].copy())
        .collect();
    let norm = clip_grad_norm(&grads, 1.0).unwrap();
    assert_eq!(norm, f["nonfinite.norm"].double_value(&[0]));
    assert!(norm.is_infinite());
    for (i, g) in grads.iter().enumerate() {
        let want = &f[&format!("nonfinite.out.{i}")];
        let same = g.isnan().eq_tensor(&want.isnan()).all().int64_value(&[]) == 1;
        let finite = g.isfinite();
        let close =
            g.masked_select(&finite)
                .allclose(&want.masked_select(&finite), 0.0, 0.0, false);
        assert!(same && close, "clipped grads {i}: {g} vs {want}");
    }
}

#[test]
fn grad_scaler_matches_pytorch_scale_and_skips() {
    let f = fixtures();
    let p = leaf(&f["scaler.init.p"]);
    let w = &f["scaler.w"];
    let mut opt = AdamW::new(
        vec![group("g", std::slice::from_ref(&p), 0.01, 0.01)],
        AdamWConfig::default(),
    )
    .unwrap();
    let cfg = ScalerConfig {
        growth_interval: 3,
        ..ScalerConfig::default()
    };
    let mut scaler = GradScaler::new(cfg, tch::Device::Cpu).unwrap();
    let scales: Vec<f64> = Vec::try_from(&f["scaler.scale"]).unwrap();
    let skipped: Vec<i64> = Vec::try_from(&f["scaler.skipped"]).unwrap();
    for s in 0..25 {
        let loss = (&p * w).sum(Kind::Float) * (1.0 + 0.1 * s as f64);
        scaler.scale(&loss).backward();
        if [4, 5, 11, 20].contains(&s) {
            let _ = p.grad().get(0).fill_(f64::INFINITY);
        }
        let stepped = scaler.step(&mut opt).unwrap();
        scaler.update().unwrap();
        opt.zero_grad().unwrap();
        assert_eq!(stepped, skipped[s] == 0, "skip decision at step {s}");
        assert_eq!(scaler.scale_value(), scales[s], "scale after step {s}");
        let d = rel_diff(&p, &f[&format!("scaler.param.{s}")]);
        assert!(d <= 1e-6, "param after step {s}: {d}");
    }
    // Its state round-trips.
    let dir = tempfile::tempdir().unwrap();
    scaler.save(&dir.path().join("scaler.safetensors")).unwrap();
    let mut other = GradScaler::new(ScalerConfig::default(), tch::Device::Cpu).unwrap();
    other.load(&dir.path().join("scaler.safetensors")).unwrap();
    assert_eq!(other.scale_value(), scaler.scale_value());
}
