//! Flips, crops and rotation with torchvision's (PIL) conventions.

use crate::image::RgbImage;
use crate::resample::Interpolation;
use crate::rng::SampleRng;

pub fn hflip(img: &mut RgbImage) {
    if img.width == 0 {
        return;
    }
    for row in img.data.chunks_exact_mut(img.width * 3) {
        row.as_chunks_mut::<3>().0.reverse();
    }
}

/// The `height x width` region at `(top, left)`; parts outside the image are 0.
pub fn crop(img: &RgbImage, top: i64, left: i64, height: usize, width: usize) -> RgbImage {
    let mut out = RgbImage::filled(width, height, [0, 0, 0]);
    for y in 0..height {
        let sy = top + y as i64;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        let x0 = left.max(0);
        let x1 = (left + width as i64).min(img.width as i64);
        if x1 <= x0 {
            continue;
        }
        let src = &img.data[(sy as usize * img.width + x0 as usize) * 3
            ..(sy as usize * img.width + x1 as usize) * 3];
        let dst_start = (y * width + (x0 - left) as usize) * 3;
        out.data[dst_start..dst_start + src.len()].copy_from_slice(src);
    }
    out
}

/// torchvision's `center_crop`: zero-padded when larger than the image, offsets
/// `round((size - crop) / 2)` (ties to even, as Python's `round`).
pub fn center_crop(img: &RgbImage, height: usize, width: usize) -> RgbImage {
    let (mut top, mut left) = (0i64, 0i64);
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch, cw) = (height as i64, width as i64);
    if cw > w {
        left = -((cw - w) / 2);
    } else {
        left += ((w - cw) as f64 / 2.0).round_ties_even() as i64;
    }
    if ch > h {
        top = -((ch - h) / 2);
    } else {
        top += ((h - ch) as f64 / 2.0).round_ties_even() as i64;
    }
    crop(img, top, left, height, width)
}

/// PIL's `Image.rotate(angle, resample, expand=False, fillcolor=fill)` about the
/// centre: counter-clockwise degrees, nearest or bilinear sampling.
pub fn rotate(
    img: &RgbImage,
    degrees: f64,
    interpolation: Interpolation,
    fill: [u8; 3],
) -> RgbImage {
    let (w, h) = (img.width as f64, img.height as f64);
    let angle = -(degrees % 360.0).to_radians();
    let r15 = |v: f64| (v * 1e15).round() / 1e15;
    let (a, b, d, e) = (
        r15(angle.cos()),
        r15(angle.sin()),
        r15(-angle.sin()),
        r15(angle.cos()),
    );
    let (cx, cy) = (w / 2.0, h / 2.0);
    let c = a * -cx + b * -cy + cx;
    let f = d * -cx + e * -cy + cy;
    let mut out = RgbImage::filled(img.width, img.height, fill);
    if interpolation == Interpolation::Nearest {
        rotate_nearest_fixed(img, [a, b, c, d, e, f], &mut out);
        return out;
    }
    for y in 0..img.height {
        for x in 0..img.width {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            if let Some(p) = bilinear_at(img, a * xo + b * yo + c, d * xo + e * yo + f) {
                let i = (y * img.width + x) * 3;
                out.data[i..i + 3].copy_from_slice(&p);
            }
        }
    }
    out
}

/// PIL's nearest-neighbour affine transform in 16.16 fixed point (`affine_fixed`).
fn rotate_nearest_fixed(img: &RgbImage, m: [f64; 6], out: &mut RgbImage) {
    let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
    let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
    let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
    let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
    let (w, h) = (img.width as i32, img.height as i32);
    let src = img.data.as_chunks::<3>().0;
    if img.width == 0 {
        return;
    }
    for row in out.data.chunks_exact_mut(img.width * 3) {
        let (mut xx, mut yy) = (a2, a5);
        for px in row.as_chunks_mut::<3>().0 {
            let (xin, yin) = (xx >> 16, yy >> 16);
            if (0..w).contains(&xin) && (0..h).contains(&yin) {
                *px = src[(yin * w + xin) as usize];
            }
            xx = xx.wrapping_add(a0);
            yy = yy.wrapping_add(a3);
        }
        a2 = a2.wrapping_add(a1);
        a5 = a5.wrapping_add(a4);
    }
}

/// PIL's bilinear sample at `(xin, yin)` (pixel centres at +0.5), `None` outside.
fn bilinear_at(img: &RgbImage, xin: f64, yin: f64) -> Option<[u8; 3]> {
    if xin < 0.0 || xin >= img.width as f64 || yin < 0.0 || yin >= img.height as f64 {
        return None;
    }
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (x, y) = (xin.floor() as i64, yin.floor() as i64);
    let (dx, dy) = (xin - x as f64, yin - y as f64);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let (x0, x1) = (clip(x, img.width), clip(x + 1, img.width));
    let y0 = clip(y, img.height);
    let mut out = [0u8; 3];
    for (ch, o) in out.iter_mut().enumerate() {
        let at = |xx: usize, yy: usize| img.data[(yy * img.width + xx) * 3 + ch] as f64;
        let v1 = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * dx;
        let v2 = if y + 1 >= 0 && y + 1 < img.height as i64 {
            let y1 = (y + 1) as usize;
            at(x0, y1) + (at(x1, y1) - at(x0, y1)) * dx
        } else {
            v1
        };
        *o = (v1 + (v2 - v1) * dy) as u8; // PIL truncates
    }
    Some(out)
}

/// One draw of torchvision's box sampling (RandomResizedCrop, RandomErasing): an
/// area fraction uniform in `scale`, a log-uniform aspect ratio in `ratio`; returns
/// `(round(sqrt(a * r)), round(sqrt(a / r)))` with Python's rounding.
pub(crate) fn sample_box(
    area: f64,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut SampleRng,
) -> (usize, usize) {
    let target = area * rng.uniform(scale[0], scale[1]);
    let aspect = rng.uniform(ratio[0].ln(), ratio[1].ln()).exp();
    (
        (target * aspect).sqrt().round_ties_even() as usize,
        (target / aspect).sqrt().round_ties_even() as usize,
    )
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 draws of an area fraction
/// in `scale` and a log-uniform aspect ratio in `ratio`, then the central fallback.
/// Returns `(top, left, height, width)`.
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut SampleRng,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    for _ in 0..10 {
        let (w, h) = sample_box(area, scale, ratio, rng);
        if w > 0 && w <= width && h > 0 && h <= height {
            let top = rng.int_range(0, (height - h) as i64) as usize;
            let left = rng.int_range(0, (width - w) as i64) as usize;
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, (width as f64 / ratio[0]).round_ties_even() as usize)
    } else if in_ratio > ratio[1] {
        (
            (height as f64 * ratio[1]).round_ties_even() as usize,
            height,
        )
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}
