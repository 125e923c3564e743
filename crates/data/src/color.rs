//! Colour adjustments as torchvision applies them to PIL images (PIL's
//! `ImageEnhance` blends and HSV conversion), reproduced to the same 8-bit values.

use crate::image::RgbImage;

/// PIL's `Image.blend(a, b, alpha)` on 8-bit data, in single precision (`alpha`
/// is a C `float`): interpolation truncates, extrapolation is clipped.
#[inline]
fn blend(a: u8, b: u8, alpha: f64) -> u8 {
    let alpha = alpha as f32;
    let t = a as f32 + alpha * (b as i32 - a as i32) as f32;
    if (0.0..=1.0).contains(&alpha) {
        t as u8
    } else if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

/// PIL's RGB → L conversion (ITU-R 601-2 luma, 16-bit fixed point).
#[inline]
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Applies `v -> blend(base, v, factor)` through a 256-entry table.
fn blend_all(img: &mut RgbImage, base: u8, factor: f64) {
    let lut: Vec<u8> = (0..=255u8).map(|v| blend(base, v, factor)).collect();
    img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// `adjust_brightness`: blend with black.
pub fn adjust_brightness(img: &mut RgbImage, factor: f64) {
    blend_all(img, 0, factor);
}

/// `adjust_contrast`: blend with the rounded mean of the grey image.
pub fn adjust_contrast(img: &mut RgbImage, factor: f64) {
    let n = (img.width * img.height).max(1);
    let sum: u64 = img.data.chunks_exact(3).map(|p| luma(p) as u64).sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    img.data
        .iter_mut()
        .for_each(|v| *v = blend(mean, *v, factor));
}

/// `adjust_saturation`: blend with the grey image.
pub fn adjust_saturation(img: &mut RgbImage, factor: f64) {
    for p in img.data.chunks_exact_mut(3) {
        let g = luma(p);
        for v in p.iter_mut() {
            *v = blend(g, *v, factor);
        }
    }
}

fn rgb_to_hsv(p: &[u8]) -> [u8; 3] {
    let (r, g, b) = (p[0], p[1], p[2]);
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let rc = (maxc - r) as f32 / cr;
    let gc = (maxc - g) as f32 / cr;
    let bc = (maxc - b) as f32 / cr;
    // C evaluates `2.0 + rc - bc` in double and stores the float result.
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + rc as f64 - bc as f64) as f32
    } else {
        (4.0 + gc as f64 - rc as f64) as f32
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    let uh = ((h as f64 * 255.0) as i32).clamp(0, 255) as u8;
    let us = ((s as f64 * 255.0) as i32).clamp(0, 255) as u8;
    [uh, us, maxc]
}

fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let hh = h as f32 as f64 * 6.0 / 255.0;
    let i = hh.floor() as i32;
    let f = (hh - i as f64) as f32 as f64;
    let fs = (s as f64 / 255.0) as f32 as f64;
    let vf = v as f64;
    let clip = |x: f64| (x.round() as i32).clamp(0, 255) as u8;
    let p = clip(vf * (1.0 - fs));
    let q = clip(vf * (1.0 - fs * f));
    let t = clip(vf * (1.0 - fs * (1.0 - f)));
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// `adjust_hue`: shift PIL's 8-bit hue channel by `int(factor * 255)`, wrapping.
pub fn adjust_hue(img: &mut RgbImage, factor: f64) {
    let shift = ((factor * 255.0) as i32).rem_euclid(256) as u8;
    for p in img.data.chunks_exact_mut(3) {
        let [h, s, v] = rgb_to_hsv(p);
        p.copy_from_slice(&hsv_to_rgb(h.wrapping_add(shift), s, v));
    }
}

fn apply_lut(img: &mut RgbImage, luts: &[[u8; 256]; 3]) {
    for p in img.data.chunks_exact_mut(3) {
        for (c, v) in p.iter_mut().enumerate() {
            *v = luts[c][*v as usize];
        }
    }
}

fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for p in img.data.chunks_exact(3) {
        for c in 0..3 {
            h[c][p[c] as usize] += 1;
        }
    }
    h
}

/// `posterize`: keep the `bits` high bits of each channel.
pub fn posterize(img: &mut RgbImage, bits: u8) {
    let mask = !((1u16 << (8 - bits.min(8))) - 1) as u8;
    img.data.iter_mut().for_each(|v| *v &= mask);
}

/// `solarize`: invert every value at or above `threshold`.
pub fn solarize(img: &mut RgbImage, threshold: u8) {
    img.data.iter_mut().for_each(|v| {
        if *v >= threshold {
            *v = 255 - *v
        }
    });
}

/// PIL's `ImageOps.autocontrast` (no cutoff): stretch each channel's range to 0..255.
pub fn autocontrast(img: &mut RgbImage) {
    let hist = histograms(img);
    let luts = hist.map(|h| {
        let mut lut = [0u8; 256];
        let lo = h.iter().position(|&n| n > 0).unwrap_or(0);
        let hi = h.iter().rposition(|&n| n > 0).unwrap_or(0);
        if hi <= lo {
            lut.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        } else {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            for (i, v) in lut.iter_mut().enumerate() {
                *v = ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8;
            }
        }
        lut
    });
    apply_lut(img, &luts);
}

/// PIL's `ImageOps.equalize`: per-channel histogram equalisation.
pub fn equalize(img: &mut RgbImage) {
    let hist = histograms(img);
    let luts = hist.map(|h| {
        let mut lut = [0u8; 256];
        let used: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
        let step = if used.len() <= 1 {
            0
        } else {
            (used.iter().sum::<u64>() - used[used.len() - 1]) / 255
        };
        if step == 0 {
            lut.iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        } else {
            let mut n = step / 2;
            for (i, v) in lut.iter_mut().enumerate() {
                *v = (n / step).min(255) as u8;
                n += h[i];
            }
        }
        lut
    });
    apply_lut(img, &luts);
}

/// PIL's `ImageFilter.SMOOTH` (3x3, centre 5, others 1, over 13) in single
/// precision, in PIL's order of operations; the outermost pixels are copied.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let k = [
        1.0f32 / 13.0,
        1.0f32 / 13.0,
        1.0f32 / 13.0,
        1.0f32 / 13.0,
        5.0f32 / 13.0,
        1.0f32 / 13.0,
        1.0f32 / 13.0,
        1.0f32 / 13.0,
        1.0f32 / 13.0,
    ];
    let px = |x: usize, y: usize, c: usize| img.data[(y * w + x) * 3 + c] as f32;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let row = |yy: usize, kk: &[f32]| {
                    px(x - 1, yy, c) * kk[0] + px(x, yy, c) * kk[1] + px(x + 1, yy, c) * kk[2]
                };
                let mut ss = 0.5f32;
                ss += row(y + 1, &k[0..3]);
                ss += row(y, &k[3..6]);
                ss += row(y - 1, &k[6..9]);
                out.data[(y * w + x) * 3 + c] = ss.clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// `adjust_sharpness`: blend with PIL's smoothed image.
pub fn adjust_sharpness(img: &mut RgbImage, factor: f64) {
    let smoothed = smooth(img);
    for (v, s) in img.data.iter_mut().zip(&smoothed.data) {
        *v = blend(*s, *v, factor);
    }
}
