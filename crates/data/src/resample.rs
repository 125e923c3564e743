//! Resizing with Pillow's convolution resampler, reproduced exactly: separable
//! filters whose support widens with the downscale factor (antialiasing), 22-bit
//! fixed-point coefficients, horizontal pass then vertical pass with 8-bit
//! rounding in between. torchvision's `resize` on PIL images and CLIP's image
//! processor both use it.

use serde::{Deserialize, Serialize};

use crate::image::RgbImage;

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    Nearest,
    #[default]
    Bilinear,
    Bicubic,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn nearest(x: f64) -> f64 {
    if (-0.5..0.5).contains(&x) { 1.0 } else { 0.0 }
}

/// Per output pixel: first input index, and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the span
/// `[in0, in1)` of an axis of `in_size` pixels mapped onto `out_size` pixels.
fn coeffs(in_size: usize, in0: f64, in1: f64, out_size: usize, filter: Interpolation) -> Coeffs {
    let (f, support): (fn(f64) -> f64, f64) = match filter {
        Interpolation::Nearest => (nearest, 0.5),
        Interpolation::Bilinear => (bilinear, 1.0),
        Interpolation::Bicubic => (bicubic, 2.0),
    };
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = f((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal(src: &RgbImage, out_w: usize, c: &Coeffs) -> RgbImage {
    let mut data = vec![0u8; out_w * src.height * 3];
    for y in 0..src.height {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        let out = &mut data[y * out_w * 3..(y + 1) * out_w * 3];
        for (xx, px) in out.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = c.bounds[xx];
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let src = &row[xmin * 3..(xmin + n) * 3];
            let half = 1i32 << (PRECISION_BITS - 1);
            let (mut a0, mut a1, mut a2) = (half, half, half);
            for (p, &w) in src.chunks_exact(3).zip(k) {
                a0 += p[0] as i32 * w;
                a1 += p[1] as i32 * w;
                a2 += p[2] as i32 * w;
            }
            px[0] = clip8(a0);
            px[1] = clip8(a1);
            px[2] = clip8(a2);
        }
    }
    RgbImage {
        width: out_w,
        height: src.height,
        data,
    }
}

fn vertical(src: &RgbImage, out_h: usize, c: &Coeffs) -> RgbImage {
    let stride = src.width * 3;
    let mut data = vec![0u8; src.width * out_h * 3];
    let mut acc = vec![0i32; stride];
    for yy in 0..out_h {
        let (ymin, n) = c.bounds[yy];
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        acc.fill(1i32 << (PRECISION_BITS - 1));
        for (y, &w) in k.iter().enumerate() {
            let row = &src.data[(ymin + y) * stride..(ymin + y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in data[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage {
        width: src.width,
        height: out_h,
        data,
    }
}

/// Resizes the region `box_ = (left, top, right, bottom)` of `src` (in pixels,
/// fractional allowed) to `width x height`, as Pillow's `Image.resize(size, filter,
/// box)`.
pub fn resize_region(
    src: &RgbImage,
    width: usize,
    height: usize,
    box_: [f64; 4],
    filter: Interpolation,
) -> RgbImage {
    let [left, top, right, bottom] = box_;
    let need_h = width != src.width || left != 0.0 || right != src.width as f64;
    let need_v = height != src.height || top != 0.0 || bottom != src.height as f64;
    let mut img = src.clone();
    if need_h {
        // Only the rows the vertical pass reads need a horizontal pass.
        let cv = coeffs(src.height, top, bottom, height, filter);
        let (first, last) = if need_v {
            let first = cv.bounds.first().map_or(0, |b| b.0);
            let last = cv.bounds.last().map_or(src.height, |b| b.0 + b.1);
            (first, last)
        } else {
            (0, src.height)
        };
        let rows = RgbImage {
            width: src.width,
            height: last - first,
            data: src.data[first * src.width * 3..last * src.width * 3].to_vec(),
        };
        img = horizontal(&rows, width, &coeffs(src.width, left, right, width, filter));
        if need_v {
            let mut cv = cv;
            for b in &mut cv.bounds {
                b.0 -= first;
            }
            return vertical(&img, height, &cv);
        }
        return img;
    }
    if need_v {
        img = vertical(
            &img,
            height,
            &coeffs(src.height, top, bottom, height, filter),
        );
    }
    img
}

/// Resizes the whole image to `width x height`.
pub fn resize(src: &RgbImage, width: usize, height: usize, filter: Interpolation) -> RgbImage {
    resize_region(
        src,
        width,
        height,
        [0.0, 0.0, src.width as f64, src.height as f64],
        filter,
    )
}

/// The size torchvision and transformers give when the shorter side becomes
/// `size`: the longer side is `int(size * long / short)`.
pub fn shorter_side_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as usize)
    } else {
        ((size as f64 * width as f64 / height as f64) as usize, size)
    }
}
