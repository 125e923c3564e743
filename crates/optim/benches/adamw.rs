//! One AdamW step over the `vit-b-32` vision tower's parameters (87.5M + projection),
//! ours (fused multi-tensor kernel) vs tch's `nn::AdamW` (libtorch's C++ optimizer).
//!
//! `cargo bench -p clip-optim --bench adamw`

use clip_model::{ClipConfig, ClipModel, Tower};
use clip_optim::{AdamW, AdamWConfig, GroupConfig, LrPolicy};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Kind, Tensor};

fn model_with_grads(vs: &VarStore) -> ClipModel {
    let m = ClipModel::new(&vs.root(), &ClipConfig::vit_b_32()).expect("model");
    m.params()
        .set_trainable(false, |t| t.tower != Tower::Vision);
    for p in m.params().select(|t| t.tower == Tower::Vision) {
        let g = Tensor::randn(p.tensor.size(), (Kind::Float, tch::Device::Cpu));
        (&p.tensor * g).sum(Kind::Float).backward();
    }
    m
}

fn bench(c: &mut Criterion) {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = model_with_grads(&vs);
    let numel = m.params().count(|t| t.tower == Tower::Vision);
    let cfg = GroupConfig {
        lr: 1e-5,
        lr_policy: LrPolicy::Llrd {
            decay: 0.95,
            head_lr: None,
        },
        frozen_towers: vec![Tower::Text, Tower::Shared, Tower::Head],
        ..GroupConfig::default()
    };
    let groups = cfg.build(m.params(), |_| 12).expect("groups");
    let mut ours = AdamW::new(groups, AdamWConfig::default()).expect("adamw");
    let mut g = c.benchmark_group(format!("adamw_step/vit-b-32-vision/{numel}-params"));
    g.throughput(Throughput::Elements(numel as u64));
    g.sample_size(20);
    g.bench_function("ours_fused", |b| b.iter(|| ours.step().expect("step")));
    drop(ours);

    let vs2 = VarStore::new(tch::Device::Cpu);
    let m2 = model_with_grads(&vs2);
    for (_, t) in vs2.variables() {
        if !t.grad().defined() {
            let _ = t.shallow_clone().set_requires_grad(false);
        }
    }
    let mut theirs = tch::nn::AdamW::default()
        .build(&vs2, 1e-5)
        .expect("tch adamw");
    g.bench_function("tch_nn_adamw", |b| b.iter(|| theirs.step()));
    g.finish();
    drop(m2);
}

criterion_group!(benches, bench);
criterion_main!(benches);
