//! Colour adjustments as torchvision applies them to PIL images (PIL's
//! `ImageEnhance` blends and HSV conversion), reproduced to the same 8-bit values.

use crate::image::RgbImage;
use crate::simd;

/// PIL's `Image.blend(a, b, alpha)` on 8-bit data, in single precision (`alpha`
/// is a C `float`): interpolation truncates, extrapolation is clipped (one
/// clamp-then-truncate does both, without a branch).
#[inline(always)]
fn blend(a: u8, b: u8, alpha: f32) -> u8 {
    (a as f32 + alpha * (b as f32 - a as f32)).clamp(0.0, 255.0) as u8
}

/// PIL's RGB → L conversion (ITU-R 601-2 luma, 16-bit fixed point).
#[inline(always)]
fn luma(p: &[u8; 3]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Applies `v -> blend(base, v, factor)` to every value: 8 at a time in AVX2
/// lanes, else through a 256-entry table.
fn blend_all(img: &mut RgbImage, base: u8, factor: f64) {
    let alpha = factor as f32;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        let (chunks, rest) = img.data.as_chunks_mut::<8>();
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { blend_const_avx2(chunks, base, alpha) };
        rest.iter_mut().for_each(|v| *v = blend(base, *v, alpha));
        return;
    }
    let mut lut = [0u8; 256];
    for (v, l) in lut.iter_mut().enumerate() {
        *l = blend(base, v as u8, alpha);
    }
    img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// `blend` against one base value, 8 values per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn blend_const_avx2(chunks: &mut [[u8; 8]], base: u8, alpha: f32) {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(alpha), _mm256_set1_ps(base as f32));
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    for chunk in chunks {
        let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(
            *chunk,
        ))));
        let t = _mm256_add_ps(b, _mm256_mul_ps(a, _mm256_sub_ps(v, b)));
        let t = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));
        *chunk = simd::pack8(t);
    }
}

/// `adjust_brightness`: blend with black.
pub fn adjust_brightness(img: &mut RgbImage, factor: f64) {
    blend_all(img, 0, factor);
}

/// `adjust_contrast`: blend with the rounded mean of the grey image.
pub fn adjust_contrast(img: &mut RgbImage, factor: f64) {
    let n = (img.width * img.height).max(1);
    let sum = luma_sum(&img.data);
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    blend_all(img, mean, factor);
}

/// `adjust_saturation`: blend with the grey image.
pub fn adjust_saturation(img: &mut RgbImage, factor: f64) {
    saturate(&mut img.data, factor as f32);
}

/// Blends every value with its pixel's grey level.
fn saturate(data: &mut [u8], alpha: f32) {
    let (chunks, rest) = data.as_chunks_mut::<24>();
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { saturate_avx2(chunks, alpha) };
    } else {
        saturate_scalar(chunks.as_flattened_mut(), alpha);
    }
    #[cfg(not(target_arch = "x86_64"))]
    saturate_scalar(chunks.as_flattened_mut(), alpha);
    saturate_scalar(rest, alpha);
}

fn saturate_scalar(data: &mut [u8], alpha: f32) {
    for p in data.as_chunks_mut::<3>().0 {
        let g = luma(p);
        *p = p.map(|v| blend(g, v, alpha));
    }
}

/// 8 pixels (24 values) at a time: PIL's integer luma and the same
/// single-precision blend as `blend`, in 8 lanes per channel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn saturate_avx2(chunks: &mut [[u8; 24]], alpha: f32) {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(alpha);
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    for chunk in chunks {
        let rgb = simd::deinterleave(chunk);
        let grey = _mm256_cvtepi32_ps(simd::luma(rgb));
        let out = rgb.map(|c| {
            let v = _mm256_cvtepi32_ps(c);
            let t = _mm256_add_ps(grey, _mm256_mul_ps(a, _mm256_sub_ps(v, grey)));
            _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi))
        });
        *chunk = simd::interleave(out);
    }
}

/// The sum of the pixels' grey levels.
fn luma_sum(data: &[u8]) -> u64 {
    let scalar = |d: &[u8]| -> u64 { d.as_chunks::<3>().0.iter().map(|p| luma(p) as u64).sum() };
    let (chunks, rest) = data.as_chunks::<24>();
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { luma_sum_avx2(chunks) } + scalar(rest);
    }
    scalar(chunks.as_flattened()) + scalar(rest)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn luma_sum_avx2(chunks: &[[u8; 24]]) -> u64 {
    use std::arch::x86_64::*;
    let mut total = 0u64;
    // 8 lanes of at most 255 each: 2^20 chunks cannot overflow a u32 lane.
    for block in chunks.chunks(1 << 20) {
        let mut acc = _mm256_setzero_si256();
        for chunk in block {
            acc = _mm256_add_epi32(acc, simd::luma(simd::deinterleave(chunk)));
        }
        let mut lanes = [0u32; 8];
        // SAFETY: `lanes` holds 8 x u32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
        total += lanes.iter().map(|&v| v as u64).sum::<u64>();
    }
    total
}

#[inline(always)]
fn rgb_to_hsv(p: &[u8; 3]) -> [u8; 3] {
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

#[inline(always)]
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
    // Compiled for AVX2 where available (`floor`/`round` become instructions).
    simd::with_avx2(
        #[inline(always)]
        || {
            for p in img.data.as_chunks_mut::<3>().0 {
                let [h, s, v] = rgb_to_hsv(p);
                *p = hsv_to_rgb(h.wrapping_add(shift), s, v);
            }
        },
    );
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

/// `solarize`: invert every value at or above `threshold` (PIL's
/// `ImageOps.solarize` keeps `v < threshold`; the threshold may be fractional).
pub fn solarize(img: &mut RgbImage, threshold: f64) {
    img.data.iter_mut().for_each(|v| {
        if *v as f64 >= threshold {
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
#[inline(always)]
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let (side, centre) = (1.0f32 / 13.0, 5.0f32 / 13.0);
    let stride = w * 3;
    // Byte `j` of an interior row: its pixel's neighbours are bytes j - 3 and j + 3,
    // so one loop over the row's inner bytes covers every channel (and vectorises).
    let n = stride - 6;
    let taps = |y: usize| {
        let row = &img.data[y * stride..(y + 1) * stride];
        (&row[0..n], &row[3..n + 3], &row[6..n + 6])
    };
    for y in 1..h - 1 {
        let (d0, d1, d2) = taps(y + 1);
        let (m0, m1, m2) = taps(y);
        let (u0, u1, u2) = taps(y - 1);
        let o = &mut out.data[y * stride + 3..y * stride + 3 + n];
        for j in 0..n {
            let mut ss = 0.5f32;
            ss += d0[j] as f32 * side + d1[j] as f32 * side + d2[j] as f32 * side;
            ss += m0[j] as f32 * side + m1[j] as f32 * centre + m2[j] as f32 * side;
            ss += u0[j] as f32 * side + u1[j] as f32 * side + u2[j] as f32 * side;
            o[j] = ss.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `adjust_sharpness`: blend with PIL's smoothed image.
pub fn adjust_sharpness(img: &mut RgbImage, factor: f64) {
    simd::with_avx2(
        #[inline(always)]
        || {
            let smoothed = smooth(img);
            for (v, s) in img.data.iter_mut().zip(&smoothed.data) {
                *v = blend(*s, *v, factor as f32);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 2_654_435_761) >> 7) as u8).collect()
    }

    /// The vector kernels give the scalar kernels' bytes (lengths not a multiple
    /// of 8 pixels exercise the tails; factors below 0 and above 1 the clipping).
    #[test]
    fn vector_kernels_equal_scalar() {
        let data = noise(3 * 1001);
        let scalar: u64 = data.as_chunks::<3>().0.iter().map(|p| luma(p) as u64).sum();
        assert_eq!(luma_sum(&data), scalar);
        for alpha in [-0.7f32, 0.0, 0.37, 1.0, 1.4, 2.9] {
            let mut fast = data.clone();
            saturate(&mut fast, alpha);
            let mut slow = data.clone();
            saturate_scalar(&mut slow, alpha);
            assert_eq!(fast, slow, "alpha {alpha}");
            let mut img = RgbImage::new(1001, 1, data.clone()).unwrap_or_else(|e| panic!("{e}"));
            blend_all(&mut img, 77, alpha as f64);
            let want: Vec<u8> = data.iter().map(|&v| blend(77, v, alpha)).collect();
            assert_eq!(img.data, want, "blend_all alpha {alpha}");
        }
    }
}
