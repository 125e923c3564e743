//! Flips, crops and rotation with torchvision's (PIL) conventions.

use serde::{Deserialize, Serialize};

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

/// Where a centre crop starts along an axis that is longer than the crop. The two
/// libraries CLIP users compare against disagree by one pixel when the difference
/// `size - crop` is odd (e.g. a 95-pixel side cropped to 64: 16 vs 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropConvention {
    /// torchvision's `CenterCrop`: `round((size - crop) / 2)`, ties to even.
    #[default]
    Torchvision,
    /// transformers' image processors (`CLIPImageProcessor`, slow and fast):
    /// `(size - crop) // 2`.
    Transformers,
}

/// torchvision's `center_crop`: zero-padded when larger than the image, offsets
/// `round((size - crop) / 2)` (ties to even, as Python's `round`).
pub fn center_crop(img: &RgbImage, height: usize, width: usize) -> RgbImage {
    center_crop_as(img, height, width, CropConvention::Torchvision)
}

/// A centre crop with the offsets of `convention`; where the crop is larger than
/// the image, the image sits at `(crop - size) // 2` in zero padding (both
/// torchvision and transformers' default `CLIPImageProcessor`).
pub fn center_crop_as(
    img: &RgbImage,
    height: usize,
    width: usize,
    convention: CropConvention,
) -> RgbImage {
    let (top, left) = center_crop_offsets(img.width, img.height, width, height, convention);
    crop(img, top, left, height, width)
}

/// `(top, left)` of a centre crop of `crop_w x crop_h` from a `w x h` image
/// (negative: zero padding).
pub(crate) fn center_crop_offsets(
    w: usize,
    h: usize,
    crop_w: usize,
    crop_h: usize,
    convention: CropConvention,
) -> (i64, i64) {
    let offset = |size: usize, crop: usize| {
        let (size, crop) = (size as i64, crop as i64);
        if crop > size {
            -((crop - size) / 2)
        } else {
            match convention {
                CropConvention::Torchvision => {
                    ((size - crop) as f64 / 2.0).round_ties_even() as i64
                }
                CropConvention::Transformers => (size - crop) / 2,
            }
        }
    };
    (offset(h, crop_h), offset(w, crop_w))
}

/// PIL's `Image.rotate(angle, resample, expand=False, fillcolor=fill)` about the
/// centre: counter-clockwise degrees, nearest or bilinear sampling.
pub fn rotate(
    img: &RgbImage,
    degrees: f64,
    interpolation: Interpolation,
    fill: [u8; 3],
) -> RgbImage {
    // Python's `angle % 360.0` (non-negative), and PIL's exact shortcuts.
    let degrees = degrees.rem_euclid(360.0);
    let square = img.width == img.height;
    if degrees == 0.0 {
        return img.clone();
    }
    if degrees == 180.0 || (square && (degrees == 90.0 || degrees == 270.0)) {
        return quarter_turns(img, (degrees / 90.0) as usize);
    }
    let (w, h) = (img.width as f64, img.height as f64);
    let angle = -degrees.to_radians();
    // Python's `round(v, 15)`: the correctly rounded 15-decimal value.
    let r15 = |v: f64| format!("{v:.15}").parse::<f64>().unwrap_or(v);
    let (a, b, d, e) = (
        r15(angle.cos()),
        r15(angle.sin()),
        r15(-angle.sin()),
        r15(angle.cos()),
    );
    let (cx, cy) = (w / 2.0, h / 2.0);
    let c = a * -cx + b * -cy + cx;
    let f = d * -cx + e * -cy + cy;
    affine(img, [a, b, c, d, e, f], interpolation, fill)
}

/// PIL's `transpose(ROTATE_90 | ROTATE_180 | ROTATE_270)`: `turns` quarter turns
/// counter-clockwise (1 and 3 only for square images).
fn quarter_turns(img: &RgbImage, turns: usize) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let src = img.data.as_chunks::<3>().0;
    let mut out = img.clone();
    let dst = out.data.as_chunks_mut::<3>().0;
    for y in 0..h {
        for x in 0..w {
            dst[y * w + x] = match turns {
                1 => src[x * w + (w - 1 - y)],
                2 => src[(h - 1 - y) * w + (w - 1 - x)],
                _ => src[(h - 1 - x) * w + y],
            };
        }
    }
    out
}

/// PIL's `Image.transform(size, AFFINE, matrix, resample, fillcolor=fill)` at the
/// input's size: output pixel `(x, y)` samples the input at `(a x + b y + c,
/// d x + e y + f)` (pixel centres at +0.5). Nearest sampling goes through PIL's
/// three engines (pure scaling, 16.16 fixed point, floating point) as PIL picks
/// them; bilinear through its generic engine. Bicubic is refused by validation.
pub fn affine(
    img: &RgbImage,
    m: [f64; 6],
    interpolation: Interpolation,
    fill: [u8; 3],
) -> RgbImage {
    let mut out = RgbImage::filled(img.width, img.height, fill);
    if img.width == 0 || img.height == 0 {
        return out;
    }
    if interpolation != Interpolation::Nearest {
        // Compiled for AVX2 where available: `floor` becomes one instruction.
        crate::simd::with_avx2(
            #[inline(always)]
            || {
                for (y, row) in out.data.chunks_exact_mut(img.width * 3).enumerate() {
                    for (x, px) in row.as_chunks_mut::<3>().0.iter_mut().enumerate() {
                        let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
                        let (xin, yin) =
                            (m[0] * xo + m[1] * yo + m[2], m[3] * xo + m[4] * yo + m[5]);
                        if let Some(p) = bilinear_at(img, xin, yin) {
                            *px = p;
                        }
                    }
                }
            },
        );
    } else if m[1] == 0.0 && m[3] == 0.0 {
        affine_scale(img, m, &mut out);
    } else {
        let (w, h) = (img.width as f64, img.height as f64);
        let fits = |x: f64, y: f64| {
            (x * m[0] + y * m[1] + m[2]).abs() < 32768.0
                && (x * m[3] + y * m[4] + m[5]).abs() < 32768.0
        };
        if fits(0.0, 0.0) && fits(w, h) && fits(0.0, h) && fits(w, 0.0) {
            affine_nearest_fixed(img, m, &mut out);
        } else {
            affine_nearest_float(img, m, &mut out);
        }
    }
    out
}

/// PIL's `COORD`: truncation, and -1 for anything negative.
fn coord(v: f64) -> i64 {
    if v < 0.0 { -1 } else { v as i64 }
}

/// PIL's `ImagingScaleAffine`: nearest sampling when the matrix only scales and
/// shifts, with the column lookup tabulated once.
fn affine_scale(img: &RgbImage, m: [f64; 6], out: &mut RgbImage) {
    let src = img.data.as_chunks::<3>().0;
    let mut xo = m[2] + m[0] * 0.5;
    let columns: Vec<Option<usize>> = (0..img.width)
        .map(|_| {
            let xin = coord(xo);
            xo += m[0];
            (0..img.width as i64).contains(&xin).then_some(xin as usize)
        })
        .collect();
    let mut yo = m[5] + m[4] * 0.5;
    for row in out.data.chunks_exact_mut(img.width * 3) {
        let yi = coord(yo);
        yo += m[4];
        if !(0..img.height as i64).contains(&yi) {
            continue;
        }
        let line = &src[yi as usize * img.width..(yi as usize + 1) * img.width];
        for (px, col) in row.as_chunks_mut::<3>().0.iter_mut().zip(&columns) {
            if let Some(x) = col {
                *px = line[*x];
            }
        }
    }
}

/// PIL's nearest-neighbour affine transform in 16.16 fixed point (`affine_fixed`).
fn affine_nearest_fixed(img: &RgbImage, m: [f64; 6], out: &mut RgbImage) {
    let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
    let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
    let mut a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5);
    let mut a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
    let (w, h) = (img.width as i32, img.height as i32);
    let src = img.data.as_chunks::<3>().0;
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

/// PIL's floating-point nearest-neighbour affine loop (coordinates too large for
/// 16.16 fixed point).
fn affine_nearest_float(img: &RgbImage, m: [f64; 6], out: &mut RgbImage) {
    let (w, h) = (img.width as i64, img.height as i64);
    let src = img.data.as_chunks::<3>().0;
    let mut xo = m[2] + m[1] * 0.5 + m[0] * 0.5;
    let mut yo = m[5] + m[4] * 0.5 + m[3] * 0.5;
    for row in out.data.chunks_exact_mut(img.width * 3) {
        let (mut xx, mut yy) = (xo, yo);
        for px in row.as_chunks_mut::<3>().0 {
            let (xin, yin) = (coord(xx), coord(yy));
            if (0..w).contains(&xin) && (0..h).contains(&yin) {
                *px = src[(yin * w + xin) as usize];
            }
            xx += m[0];
            yy += m[3];
        }
        xo += m[1];
        yo += m[4];
    }
}

/// torchvision's `F.affine` on a PIL image (its `_get_inverse_affine_matrix`):
/// rotation `angle` and shears `shear = [x, y]` in degrees, integer `translate`,
/// about `center` (the image centre when `None`), scale 1.
pub fn tv_affine(
    img: &RgbImage,
    angle: f64,
    translate: [i64; 2],
    shear: [f64; 2],
    center: Option<[f64; 2]>,
    interpolation: Interpolation,
    fill: [u8; 3],
) -> RgbImage {
    let [cx, cy] = center.unwrap_or([img.width as f64 * 0.5, img.height as f64 * 0.5]);
    let (tx, ty) = (translate[0] as f64, translate[1] as f64);
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    affine(img, m, interpolation, fill)
}

/// PIL's bilinear sample at `(xin, yin)` (pixel centres at +0.5), `None` outside:
/// edge columns/rows clamped, the row below replaced by the row itself at the
/// bottom edge, the result truncated.
#[inline(always)]
fn bilinear_at(img: &RgbImage, xin: f64, yin: f64) -> Option<[u8; 3]> {
    let (w, h) = (img.width, img.height);
    if xin < 0.0 || xin >= w as f64 || yin < 0.0 || yin >= h as f64 {
        return None;
    }
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (xf, yf) = (xin.floor(), yin.floor());
    let (dx, dy) = (xin - xf, yin - yf);
    let (x, y) = (xf as i64, yf as i64);
    let clip = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let (x0, x1, y0) = (clip(x, w), clip(x + 1, w), clip(y, h));
    let y1 = if y + 1 >= 0 && y + 1 < h as i64 {
        (y + 1) as usize
    } else {
        y0
    };
    let px = img.data.as_chunks::<3>().0;
    let (a0, a1, b0, b1) = (
        px[y0 * w + x0],
        px[y0 * w + x1],
        px[y1 * w + x0],
        px[y1 * w + x1],
    );
    Some(std::array::from_fn(|c| {
        let lerp = |a: f64, b: f64, d: f64| a + (b - a) * d;
        let v1 = lerp(a0[c] as f64, a1[c] as f64, dx);
        let v2 = lerp(b0[c] as f64, b1[c] as f64, dx);
        lerp(v1, v2, dy) as u8 // PIL truncates
    }))
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
