//! Throughput of the data pipeline, images/s:
//! - `decode/jpeg_500x375`: JPEG decoding alone;
//! - `transform/*`: each transform alone, on the image it sees in the tutorial's
//!   pipeline (500x375 for crops and resizes, 224x224 after the crop);
//! - `pipeline/*`: decode + the tutorial's training augmentation, and decode +
//!   CLIP's eval preprocessing, on one thread and on all threads (rayon).
//!
//! `cargo bench -p clip-data --bench pipeline`

use clip_data::{
    Interpolation, Normalize, Pipeline, RgbImage, SampleRng, Size, TransformConfig,
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, hflip, rotate,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

/// A 500x375 photo-like image: gradients plus noise (noise keeps JPEG honest).
fn image(seed: u64) -> RgbImage {
    let (w, h) = (500usize, 375usize);
    let mut rng = SampleRng::new(seed, 0, 0);
    let data = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            let n = (rng.next_u64() % 41) as i32 - 20;
            [x as i32 + n, y as i32 + n, (x + y) as i32 / 2 + n].map(|v| v.clamp(0, 255) as u8)
        })
        .collect();
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(
            &img.data,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .expect("encode jpeg");
    out
}

fn transforms(c: &mut Criterion) {
    let big = image(0);
    let small = clip_data::resize(&big, 224, 224, Interpolation::Bilinear);
    let mut g = c.benchmark_group("transform");
    g.throughput(Throughput::Elements(1));
    let one = |op: TransformConfig| Pipeline::new(vec![op], "bench").expect("valid");
    let mut out = vec![0f32; 3 * 224 * 224];
    let mut i = 0u64;
    for (name, p) in [
        (
            "random_resized_crop_500x375_bilinear",
            one(TransformConfig::RandomResizedCrop {
                size: Size::One(224),
                scale: [0.8, 1.0],
                ratio: [0.75, 4.0 / 3.0],
                interpolation: Interpolation::Bilinear,
            }),
        ),
        (
            "resize_500x375_bicubic",
            one(TransformConfig::Resize {
                size: Size::One(224),
                interpolation: Interpolation::Bicubic,
            }),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                p.apply_u8(big.clone(), &mut SampleRng::new(0, 0, i))
            })
        });
    }
    for (name, w, h) in [
        ("resize_h_only_500x375_to_224x375", 224, 375),
        ("resize_v_only_500x375_to_500x224", 500, 224),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| clip_data::resize(&big, w, h, Interpolation::Bilinear))
        });
    }
    let mut bench_small = |name: &str, f: &dyn Fn(&mut RgbImage)| {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut img = small.clone();
                f(&mut img);
                img
            })
        });
    };
    bench_small("hflip_224", &|img| hflip(img));
    bench_small("brightness_224", &|img| adjust_brightness(img, 1.3));
    bench_small("contrast_224", &|img| adjust_contrast(img, 1.3));
    bench_small("saturation_224", &|img| adjust_saturation(img, 1.3));
    bench_small("hue_224", &|img| adjust_hue(img, 0.1));
    bench_small("sharpness_224", &|img| {
        clip_data::adjust_sharpness(img, 1.5)
    });
    bench_small("rotate_nearest_224", &|img| {
        *img = rotate(img, 10.0, Interpolation::Nearest, [0; 3])
    });
    bench_small("rotate_bilinear_224", &|img| {
        *img = rotate(img, 10.0, Interpolation::Bilinear, [0; 3])
    });
    for (name, op) in [
        (
            "trivial_augment_wide_224",
            TransformConfig::TrivialAugmentWide {
                num_magnitude_bins: 31,
                interpolation: Interpolation::Nearest,
                fill: [0; 3],
            },
        ),
        (
            "rand_augment_2_9_224",
            TransformConfig::RandAugment {
                num_ops: 2,
                magnitude: 9,
                num_magnitude_bins: 31,
                interpolation: Interpolation::Nearest,
                fill: [0; 3],
            },
        ),
    ] {
        let p = one(op);
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                p.apply_u8(small.clone(), &mut SampleRng::new(0, 0, i))
            })
        });
    }
    let norm = Pipeline::new(
        vec![TransformConfig::Normalize {
            mean: Normalize::CLIP_MEAN,
            std: Normalize::CLIP_STD,
        }],
        "bench",
    )
    .expect("valid");
    g.bench_function("to_tensor_normalize_224", |b| {
        b.iter(|| {
            norm.apply_into(small.clone(), &mut SampleRng::new(0, 0, 0), &mut out)
                .expect("apply")
        })
    });
    g.finish();
}

fn pipelines(c: &mut Criterion) {
    let files: Vec<Vec<u8>> = (0..16).map(|s| jpeg(&image(s))).collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("jpeg_500x375", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|f| RgbImage::decode(f).expect("decode").data.len())
                .sum::<usize>()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(files.len() as u64));
    let threads = rayon::current_num_threads();
    for (name, p) in [
        (
            "tutorial_train",
            Pipeline::tutorial_train(224, Normalize::clip()),
        ),
        ("clip_eval", Pipeline::clip_eval(224)),
    ] {
        let run = |f: &Vec<u8>, i: usize, epoch: u64| {
            let mut out = vec![0f32; 3 * 224 * 224];
            let img = RgbImage::decode(f).expect("decode");
            p.apply_into(img, &mut SampleRng::new(0, epoch, i as u64), &mut out)
                .expect("apply");
            out[0]
        };
        let mut epoch = 0u64;
        g.bench_function(format!("{name}_jpeg_1_thread"), |b| {
            b.iter(|| {
                epoch += 1;
                files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| run(f, i, epoch))
                    .sum::<f32>()
            })
        });
        g.bench_function(format!("{name}_jpeg_{threads}_threads"), |b| {
            b.iter(|| {
                epoch += 1;
                files
                    .par_iter()
                    .enumerate()
                    .map(|(i, f)| run(f, i, epoch))
                    .sum::<f32>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, transforms, pipelines);
criterion_main!(benches);
