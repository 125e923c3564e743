//! Per-image throughput of the data pipeline on one thread (decode excluded):
//! the tutorial's training augmentation and CLIP's eval preprocessing on a
//! 500x375 image, and a 32-image batch through the loader on all threads.
//!
//! `cargo bench -p clip-data --bench pipeline`

use clip_data::{Normalize, Pipeline, RgbImage, SampleRng};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn image() -> RgbImage {
    let (w, h) = (500usize, 375usize);
    let data = (0..w * h)
        .flat_map(|i| [(i % w) as u8, (i / w) as u8, (i * 7 % 251) as u8])
        .collect();
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn bench(c: &mut Criterion) {
    let img = image();
    let mut out = vec![0f32; 3 * 224 * 224];
    let mut g = c.benchmark_group("pipeline/500x375");
    g.throughput(Throughput::Elements(1));
    for (name, p) in [
        (
            "tutorial_train",
            Pipeline::tutorial_train(224, Normalize::clip()),
        ),
        ("clip_eval", Pipeline::clip_eval(224)),
    ] {
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                p.apply_into(img.clone(), &mut SampleRng::new(0, 0, i), &mut out)
                    .expect("apply")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
