//! Vision tower throughput on CPU: forward and forward+backward of
//! `ClipClassifier` (vision tower + projection + head), batch 8 (or
//! `CLIP_BENCH_BATCH`), images/s.
//!
//! `cargo bench -p clip-model --bench vision`
//! `CLIP_BENCH_BATCH=32 cargo bench -p clip-model --bench vision -- vit-b-32`

use clip_model::{ClipClassifier, ClipConfig, HeadConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Kind, Tensor, nn::VarStore};

fn bench(c: &mut Criterion) {
    let batch: i64 = std::env::var("CLIP_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for (name, cfg) in [
        ("tiny", ClipConfig::tiny()),
        ("vit-b-32", ClipConfig::vit_b_32()),
    ] {
        let vs = VarStore::new(tch::Device::Cpu);
        let model = ClipClassifier::new(
            &vs.root(),
            &cfg,
            (0..10).map(|i| i.to_string()).collect(),
            &HeadConfig::default(),
        )
        .expect("model");
        let size = cfg.vision_config.image_size;
        let x = Tensor::randn([batch, 3, size, size], (Kind::Float, tch::Device::Cpu));
        let mut g = c.benchmark_group(format!("vision/{name}/batch{batch}"));
        g.throughput(Throughput::Elements(batch as u64));
        g.sample_size(10);
        g.bench_function("forward", |b| {
            b.iter(|| {
                tch::no_grad(|| {
                    model
                        .forward(&x, clip_model::Pass::eval())
                        .expect("forward")
                })
            })
        });
        g.bench_function("forward_backward", |b| {
            b.iter(|| {
                let loss = model
                    .forward(&x, clip_model::Pass::train())
                    .expect("forward")
                    .sum(Kind::Float);
                loss.backward();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
