//! The random parameters of the augmentations follow torchvision's `get_params`
//! distributions: statistics of 20,000 of our draws against those of 100,000 of
//! torchvision's (tests/fixtures/data/draws.json, scripts/gen_draw_fixtures.py).
//! The tolerances are several standard errors wide, and far narrower than what a
//! wrong range (e.g. scale (0.08, 1) for (0.8, 1), or a missing aspect-ratio
//! draw) moves.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use clip_data::{
    JitterParams, Pipeline, RgbImage, SampleRng, TransformConfig, adjust_brightness,
    adjust_contrast, adjust_saturation, random_resized_crop_params, rotate, rotation_angle,
};
use serde_json::Value;

const N: u64 = 20_000;

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data/draws.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Each sample's draws come from its own `(seed, epoch, index)` stream, as in the
/// loader.
fn rng(i: u64) -> SampleRng {
    SampleRng::new(42, 0, i)
}

struct Stats {
    mean: f64,
    std: f64,
    q: [f64; 3],
    min: f64,
    max: f64,
}

fn stats(mut x: Vec<f64>) -> Stats {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    x.sort_by(f64::total_cmp);
    let q = [0.1, 0.5, 0.9].map(|p| x[((x.len() - 1) as f64 * p).round() as usize]);
    Stats {
        mean,
        std,
        q,
        min: x[0],
        max: x[x.len() - 1],
    }
}

fn close(what: &str, ours: f64, theirs: &Value, tol: f64) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours:.5}, torchvision {theirs:.5} (tolerance {tol})"
    );
}

fn compare(what: &str, ours: &Stats, theirs: &Value, tol: f64) {
    close(&format!("{what} mean"), ours.mean, &theirs["mean"], tol);
    close(&format!("{what} std"), ours.std, &theirs["std"], tol);
    for (i, q) in ["q10", "q50", "q90"].iter().enumerate() {
        close(&format!("{what} {q}"), ours.q[i], &theirs[q], 2.0 * tol);
    }
    assert!(
        ours.min >= theirs["min"].as_f64().unwrap() - 2.0 * tol
            && ours.max <= theirs["max"].as_f64().unwrap() + 2.0 * tol,
        "{what}: our range [{}, {}] leaves torchvision's [{}, {}]",
        ours.min,
        ours.max,
        theirs["min"],
        theirs["max"]
    );
}

#[test]
fn random_resized_crop_boxes_follow_torchvisions_distribution() {
    for case in fixture()["random_resized_crop"].as_array().unwrap() {
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let pair = |k: &str| -> [f64; 2] {
            let v = case[k].as_array().unwrap();
            [v[0].as_f64().unwrap(), v[1].as_f64().unwrap()]
        };
        let (scale, ratio) = (pair("scale"), pair("ratio"));
        let boxes: Vec<_> = (0..N)
            .map(|i| random_resized_crop_params(w, h, scale, ratio, &mut rng(i)))
            .collect();
        let what = format!("{w}x{h} scale {scale:?}");
        let area = stats(
            boxes
                .iter()
                .map(|&(_, _, bh, bw)| (bh * bw) as f64 / (w * h) as f64)
                .collect(),
        );
        compare(&format!("{what}: area"), &area, &case["area"], 0.006);
        let log_ratio = stats(
            boxes
                .iter()
                .map(|&(_, _, bh, bw)| (bw as f64 / bh as f64).ln())
                .collect(),
        );
        compare(
            &format!("{what}: log ratio"),
            &log_ratio,
            &case["log_ratio"],
            0.008,
        );
        let cx = boxes
            .iter()
            .map(|&(_, left, _, bw)| (left as f64 + bw as f64 / 2.0) / w as f64)
            .sum::<f64>()
            / N as f64;
        let cy = boxes
            .iter()
            .map(|&(top, _, bh, _)| (top as f64 + bh as f64 / 2.0) / h as f64)
            .sum::<f64>()
            / N as f64;
        close(&format!("{what}: centre x"), cx, &case["center_x"], 0.005);
        close(&format!("{what}: centre y"), cy, &case["center_y"], 0.005);
        // The central fallback after ten failed tries.
        let in_ratio = w as f64 / h as f64;
        let (fw, fh) = if in_ratio < ratio[0] {
            (w, (w as f64 / ratio[0]).round() as usize)
        } else if in_ratio > ratio[1] {
            ((h as f64 * ratio[1]).round() as usize, h)
        } else {
            (w, h)
        };
        let fallback = ((h - fh) / 2, (w - fw) / 2, fh, fw);
        let share = boxes.iter().filter(|b| **b == fallback).count() as f64 / N as f64;
        close(
            &format!("{what}: fallback share"),
            share,
            &case["fallback"],
            0.01,
        );
    }
}

#[test]
fn color_jitter_and_rotation_draws_follow_torchvisions_distribution() {
    let fx = fixture();
    let draws: Vec<JitterParams> = (0..N)
        .map(|i| JitterParams::draw([0.4, 0.4, 0.4, 0.0], &mut rng(i)))
        .collect();
    let b = stats(draws.iter().map(|p| p.brightness).collect());
    compare(
        "brightness factor",
        &b,
        &fx["color_jitter"]["brightness"],
        0.006,
    );
    for (k, name) in ["brightness", "contrast", "saturation", "hue"]
        .iter()
        .enumerate()
    {
        let first = draws.iter().filter(|p| p.order[0] == k).count() as f64 / N as f64;
        close(
            &format!("P({name} first)"),
            first,
            &fx["color_jitter"]["brightness_first"],
            0.015,
        );
    }
    let angles = stats((0..N).map(|i| rotation_angle(15.0, &mut rng(i))).collect());
    compare("rotation angle", &angles, &fx["random_rotation"], 0.2);
}

/// The pipeline applies exactly these draws (same stream, same order).
#[test]
fn the_pipeline_uses_these_draws() {
    let img = RgbImage::new(9, 7, (0..9 * 7 * 3).map(|i| (i * 37 % 251) as u8).collect()).unwrap();
    let jitter = Pipeline::new(
        vec![TransformConfig::ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.0,
        }],
        "t",
    )
    .unwrap();
    let rotation = Pipeline::new(
        vec![TransformConfig::RandomRotation {
            degrees: 15.0,
            interpolation: clip_data::Interpolation::Nearest,
            fill: [0, 0, 0],
        }],
        "t",
    )
    .unwrap();
    for i in 0..20 {
        let p = JitterParams::draw([0.4, 0.4, 0.4, 0.0], &mut rng(i));
        let mut want = img.clone();
        for k in &p.order {
            match k {
                0 => adjust_brightness(&mut want, p.brightness),
                1 => adjust_contrast(&mut want, p.contrast),
                2 => adjust_saturation(&mut want, p.saturation),
                _ => {}
            }
        }
        assert_eq!(
            jitter.apply_u8(img.clone(), &mut rng(i)),
            want,
            "sample {i}"
        );
        let angle = rotation_angle(15.0, &mut rng(i));
        let want = rotate(&img, angle, clip_data::Interpolation::Nearest, [0, 0, 0]);
        assert_eq!(
            rotation.apply_u8(img.clone(), &mut rng(i)),
            want,
            "sample {i}"
        );
    }
}

#[test]
fn horizontal_flip_happens_with_probability_p() {
    let img = RgbImage::new(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
    for p in [0.5, 0.2] {
        let flip = Pipeline::new(vec![TransformConfig::RandomHorizontalFlip { p }], "t").unwrap();
        let flipped = (0..N)
            .filter(|&i| flip.apply_u8(img.clone(), &mut rng(i)).data[0] == 255)
            .count() as f64
            / N as f64;
        // Standard error sqrt(p (1 - p) / N) < 0.0036.
        assert!((flipped - p).abs() < 0.015, "p = {p}: flipped {flipped}");
    }
}
