//! Times the data pipeline on one thread, per image: decode alone, decode + the
//! tutorial's training augmentation, decode + CLIP's eval preprocessing, and
//! decode + RandomResizedCrop/flip/TrivialAugmentWide. Prints JSON.
//! Used by scripts/bench_data_vs_torchvision.py.
//!
//! `cargo run --release -p clip-data --example pipeline_bench -- IMAGE... [--repeat N] [--decode-only]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clip_data::{Interpolation, Normalize, Pipeline, RgbImage, SampleRng, Size, TransformConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let files: Vec<PathBuf> = args
        .iter()
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .map(PathBuf::from)
        .collect();
    anyhow::ensure!(
        !files.is_empty(),
        "usage: pipeline_bench IMAGE... [--repeat N]"
    );
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| f.display().to_string()))
        .collect::<Result<_, _>>()?;
    let train = Pipeline::tutorial_train(224, Normalize::imagenet());
    let eval = Pipeline::clip_eval(224);
    // RandomResizedCrop(224) + flip + TrivialAugmentWide + normalize.
    let trivial = Pipeline::new(
        vec![
            TransformConfig::RandomResizedCrop {
                size: Size::One(224),
                scale: [0.08, 1.0],
                ratio: [0.75, 4.0 / 3.0],
                interpolation: Interpolation::Bilinear,
            },
            TransformConfig::RandomHorizontalFlip { p: 0.5 },
            TransformConfig::TrivialAugmentWide {
                num_magnitude_bins: 31,
                interpolation: Interpolation::Nearest,
                fill: [0; 3],
            },
            TransformConfig::Normalize {
                mean: Normalize::IMAGENET_MEAN,
                std: Normalize::IMAGENET_STD,
            },
        ],
        "trivial",
    )?;
    let mut out = vec![0f32; 3 * 224 * 224];
    let mut result = serde_json::Map::new();
    let mut per_image = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        for b in &bytes {
            RgbImage::decode(b)?;
        }
        per_image.push(t.elapsed().as_secs_f64() * 1e3 / bytes.len() as f64);
    }
    result.insert("decode_ms_per_image".into(), median(per_image).into());
    // The `image` crate's JPEG decoder (zune-jpeg): what decoded JPEGs before
    // libjpeg-turbo (its pixels are not PIL's).
    let mut per_image = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        for b in &bytes {
            let _ = image::load_from_memory(b)?.into_rgb8();
        }
        per_image.push(t.elapsed().as_secs_f64() * 1e3 / bytes.len() as f64);
    }
    result.insert("decode_zune_ms_per_image".into(), median(per_image).into());
    if args.iter().any(|a| a == "--decode-only") {
        println!("{}", serde_json::Value::Object(result));
        return Ok(());
    }
    // Where the tutorial pipeline's time goes: its steps added one at a time
    // (each prefix ends in the crop, so each is a valid pipeline), decoded images
    // given, the differences being each step's cost.
    let ops = train.ops().to_vec();
    let decoded: Vec<RgbImage> = bytes
        .iter()
        .map(|b| RgbImage::decode(b))
        .collect::<Result<_, _>>()?;
    let mut previous = 0.0;
    for k in 1..=ops.len() {
        let prefix = Pipeline::new(ops[..k].to_vec(), "breakdown")?;
        let mut per_image = Vec::new();
        for r in 0..repeat {
            let t = Instant::now();
            for (i, img) in decoded.iter().enumerate() {
                prefix.apply_into(
                    img.clone(),
                    &mut SampleRng::new(0, r as u64, i as u64),
                    &mut out,
                )?;
            }
            per_image.push(t.elapsed().as_secs_f64() * 1e3 / bytes.len() as f64);
        }
        let total = median(per_image);
        let name = serde_json::to_value(&ops[k - 1])?["op"]
            .as_str()
            .unwrap_or("op")
            .to_string();
        result.insert(format!("step_{k}_{name}_ms"), (total - previous).into());
        previous = total;
    }
    for (name, pipeline) in [("train", &train), ("eval", &eval), ("trivial", &trivial)] {
        let mut per_image = Vec::new();
        for r in 0..repeat {
            let t = Instant::now();
            for (i, b) in bytes.iter().enumerate() {
                let img = RgbImage::decode(b)?;
                pipeline.apply_into(img, &mut SampleRng::new(0, r as u64, i as u64), &mut out)?;
            }
            per_image.push(t.elapsed().as_secs_f64() * 1e3 / bytes.len() as f64);
        }
        result.insert(format!("{name}_ms_per_image"), median(per_image).into());
    }
    // `data.loader.decode = "draft"`: JPEGs at the reduced DCT scale each
    // pipeline allows, its time, and how far its output is from the exact path's
    // (same random draws), in 8-bit levels (normalised difference x std x 255).
    for (name, pipeline) in [("train", &train), ("eval", &eval)] {
        let reduce = |w: usize, h: usize| pipeline.draft_reduction(w, h);
        let mut per_image = Vec::new();
        for r in 0..repeat {
            let t = Instant::now();
            for (i, b) in bytes.iter().enumerate() {
                let img = RgbImage::decode_draft(b, reduce)?;
                pipeline.apply_into(img, &mut SampleRng::new(0, r as u64, i as u64), &mut out)?;
            }
            per_image.push(t.elapsed().as_secs_f64() * 1e3 / bytes.len() as f64);
        }
        result.insert(
            format!("{name}_draft_ms_per_image"),
            median(per_image).into(),
        );
        let (mut sum, mut max, mut n, mut reduced) = (0.0f64, 0.0f64, 0usize, 0usize);
        let mut exact = vec![0f32; out.len()];
        for (i, b) in bytes.iter().enumerate() {
            let full = RgbImage::decode(b)?;
            let (w, h) = (full.width, full.height);
            reduced += usize::from(reduce(w, h) >= 2);
            pipeline.apply_into(full, &mut SampleRng::new(0, 0, i as u64), &mut exact)?;
            let img = RgbImage::decode_draft(b, reduce)?;
            pipeline.apply_into(img, &mut SampleRng::new(0, 0, i as u64), &mut out)?;
            let plane = out.len() / 3;
            for (j, (a, e)) in out.iter().zip(&exact).enumerate() {
                let d = f64::from((a - e).abs())
                    * f64::from(Normalize::IMAGENET_STD[j / plane])
                    * 255.0;
                sum += d;
                max = max.max(d);
                n += 1;
            }
        }
        result.insert(
            format!("{name}_draft_mean_abs_levels"),
            (sum / n as f64).into(),
        );
        result.insert(format!("{name}_draft_max_abs_levels"), max.into());
        result.insert(format!("{name}_draft_reduced_images"), reduced.into());
    }
    println!("{}", serde_json::Value::Object(result));
    Ok(())
}
