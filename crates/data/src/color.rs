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
