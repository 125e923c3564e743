//! Resizing with Pillow's convolution resampler, reproduced exactly: separable
//! filters whose support widens with the downscale factor (antialiasing), 22-bit
//! fixed-point coefficients, horizontal pass then vertical pass with 8-bit
//! rounding in between. torchvision's `resize` on PIL images and CLIP's image
//! processor both use it.

use std::ops::Range;

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

/// Per output pixel: first input index and tap count, and fixed-point weights
/// (`ksize` per pixel, zero past the pixel's taps).
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

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Rows of 8-bit RGB pixels inside a larger buffer: row `r` starts at
/// `offset + r * stride` and holds `len` bytes.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [u8],
    offset: usize,
    stride: usize,
    len: usize,
}

impl<'a> Rows<'a> {
    fn row(&self, r: usize) -> &'a [u8] {
        let start = self.offset + r * self.stride;
        &self.data[start..start + self.len]
    }
}

/// Horizontal pass: each of `rows` rows of `src` to `out_w` pixels.
fn horizontal(src: Rows, rows: usize, out_w: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked above).
        unsafe { simd::horizontal_avx2(src, c, &mut out, out_w) };
        return out;
    }
    for (y, out) in out.chunks_exact_mut(out_w * 3).enumerate() {
        horizontal_row_scalar(src.row(y), c, out, 0..out_w);
    }
    out
}

/// The output pixels `pixels` of one row of the horizontal pass.
fn horizontal_row_scalar(row: &[u8], c: &Coeffs, out: &mut [u8], pixels: Range<usize>) {
    let px_out = &mut out.as_chunks_mut::<3>().0[pixels.clone()];
    for (xx, px) in pixels.zip(px_out) {
        let (xmin, n) = c.bounds[xx];
        let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
        let src = &row[xmin * 3..(xmin + n) * 3];
        let mut acc = [HALF; 3];
        for (p, &w) in src.as_chunks::<3>().0.iter().zip(k) {
            for ch in 0..3 {
                acc[ch] += p[ch] as i32 * w;
            }
        }
        *px = acc.map(clip8);
    }
}

/// Vertical pass: `out_h` rows, each a weighted sum of rows of `src`.
fn vertical(src: Rows, out_h: usize, c: &Coeffs) -> Vec<u8> {
    let mut out = vec![0u8; src.len * out_h];
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked above).
        unsafe { simd::vertical_avx2(src, c, &mut out) };
        return out;
    }
    vertical_scalar(src, c, &mut out);
    out
}

fn vertical_scalar(src: Rows, c: &Coeffs, out: &mut [u8]) {
    let mut acc = vec![0i32; src.len];
    for (yy, out) in out.chunks_exact_mut(src.len).enumerate() {
        let (ymin, n) = c.bounds[yy];
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        acc.fill(HALF);
        for (y, &w) in k.iter().enumerate() {
            for (a, &p) in acc.iter_mut().zip(src.row(ymin + y)) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// The same integer arithmetic as the scalar passes, 8 lanes at a time: results
/// are identical.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Coeffs, HALF, PRECISION_BITS, Rows, horizontal_row_scalar};

    /// 8 output pixels at a time: tap `k` of the 8 is one gather of 4 bytes per
    /// pixel (RGB + one ignored byte), split into channel lanes and multiplied by
    /// the 8 weights of that tap (zero past a pixel's own taps).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn horizontal_avx2(src: Rows, c: &Coeffs, out: &mut [u8], out_w: usize) {
        // Per group of 8 outputs: byte offsets of the first taps, the tap count
        // (the group's largest) and the weights transposed to [tap][lane].
        let groups: Vec<([i32; 8], usize, usize, Vec<i32>)> = (0..out_w / 8)
            .map(|g| {
                let xs = g * 8..g * 8 + 8;
                let taps = xs.clone().map(|x| c.bounds[x].1).max().unwrap_or(0);
                let offsets = std::array::from_fn(|l| (c.bounds[g * 8 + l].0 * 3) as i32);
                let end = xs.clone().map(|x| c.bounds[x].0 + taps).max().unwrap_or(0);
                let mut w = vec![0i32; taps * 8];
                for (l, x) in xs.enumerate() {
                    for k in 0..c.bounds[x].1 {
                        w[k * 8 + l] = c.weights[x * c.ksize + k];
                    }
                }
                (offsets, taps, end, w)
            })
            .collect();
        let half = _mm256_set1_epi32(HALF);
        let byte = _mm256_set1_epi32(0xff);
        for (y, out) in out.chunks_exact_mut(out_w * 3).enumerate() {
            let row_start = src.offset + y * src.stride;
            // Bytes readable from the row start; a group whose last gather would
            // pass the buffer's end (the last row only) goes scalar.
            let readable = src.data.len() - row_start;
            let base = src.data[row_start..].as_ptr();
            for (g, (offsets, taps, end, w)) in groups.iter().enumerate() {
                if end * 3 + 1 > readable {
                    horizontal_row_scalar(src.row(y), c, out, g * 8..g * 8 + 8);
                    continue;
                }
                // SAFETY: `offsets` holds 8 x i32 and `w` taps x 8 x i32.
                let idx = unsafe { _mm256_loadu_si256(offsets.as_ptr() as *const __m256i) };
                let mut acc = [half; 3];
                for k in 0..*taps {
                    let at = _mm256_add_epi32(idx, _mm256_set1_epi32((k * 3) as i32));
                    // SAFETY: every lane reads 4 bytes at (xmin + k) * 3 <= end * 3 - 3,
                    // inside `readable` (checked above).
                    let (v, wk) = unsafe {
                        (
                            _mm256_i32gather_epi32::<1>(base as *const i32, at),
                            _mm256_loadu_si256(w.as_ptr().add(k * 8) as *const __m256i),
                        )
                    };
                    let ch = [
                        _mm256_and_si256(v, byte),
                        _mm256_and_si256(_mm256_srli_epi32::<8>(v), byte),
                        _mm256_and_si256(_mm256_srli_epi32::<16>(v), byte),
                    ];
                    for (a, ch) in acc.iter_mut().zip(ch) {
                        *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(ch, wk));
                    }
                }
                let px = crate::simd::interleave(
                    acc.map(|a| _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(a)),
                );
                out[g * 24..g * 24 + 24].copy_from_slice(&px);
            }
            horizontal_row_scalar(src.row(y), c, out, out_w / 8 * 8..out_w);
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn vertical_avx2(src: Rows, c: &Coeffs, out: &mut [u8]) {
        let half = _mm256_set1_epi32(HALF);
        for (yy, out) in out.chunks_exact_mut(src.len).enumerate() {
            let (ymin, n) = c.bounds[yy];
            let w = &c.weights[yy * c.ksize..yy * c.ksize + n];
            let mut x = 0;
            while x + 8 <= src.len {
                let mut acc = half;
                for (k, &wk) in w.iter().enumerate() {
                    let row = &src.row(ymin + k)[x..x + 8];
                    // SAFETY: `row` holds 8 bytes.
                    let p = unsafe {
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(row.as_ptr() as *const __m128i))
                    };
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(p, _mm256_set1_epi32(wk)));
                }
                let v = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
                let v16 =
                    _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let b = _mm_packus_epi16(v16, v16);
                out[x..x + 8].copy_from_slice(&_mm_cvtsi128_si64(b).to_le_bytes());
                x += 8;
            }
            for (i, o) in out.iter_mut().enumerate().skip(x) {
                let mut a = HALF;
                for (k, &wk) in w.iter().enumerate() {
                    a += src.row(ymin + k)[i] as i32 * wk;
                }
                *o = super::clip8(a);
            }
        }
    }
}

impl Coeffs {
    /// The coefficients of output pixels `start..start + len` only.
    fn window(self, start: usize, len: usize) -> Coeffs {
        Coeffs {
            bounds: self.bounds[start..start + len].to_vec(),
            weights: self.weights[start * self.ksize..(start + len) * self.ksize].to_vec(),
            ksize: self.ksize,
        }
    }
}

/// Resizes the region `box_ = (left, top, right, bottom)` of the `rect = (left,
/// top, width, height)` part of `src` (the box relative to the rectangle, whose
/// edges bound the filters as if it were the whole image) to `width x height`,
/// and returns the `window = (x, y, w, h)` part of that result (the whole of it
/// when `None`), computing only the pixels it keeps.
fn resample(
    src: &RgbImage,
    rect: [usize; 4],
    (width, height): (usize, usize),
    box_: [f64; 4],
    filter: Interpolation,
    window: Option<[usize; 4]>,
) -> RgbImage {
    let [rl, rt, rw, rh] = rect;
    let [left, top, right, bottom] = box_;
    let [wx, wy, ww, wh] = window.unwrap_or([0, 0, width, height]);
    let need_h = width != rw || left != 0.0 || right != rw as f64;
    let need_v = height != rh || top != 0.0 || bottom != rh as f64;
    let ch = need_h.then(|| coeffs(rw, left, right, width, filter).window(wx, ww));
    let cv = need_v.then(|| coeffs(rh, top, bottom, height, filter).window(wy, wh));
    // Without a horizontal pass the window's columns are the input's.
    let (col0, cols) = if need_h { (0, rw) } else { (wx, ww) };
    let stride = src.width * 3;
    let view = |first_row: usize| Rows {
        data: &src.data,
        offset: (rt + first_row) * stride + (rl + col0) * 3,
        stride,
        len: cols * 3,
    };
    let image = |data| RgbImage {
        width: ww,
        height: wh,
        data,
    };
    match (ch, cv) {
        (None, None) => crop_rows(view(wy), ww, wh),
        (None, Some(cv)) => image(vertical(view(0), wh, &cv)),
        (Some(ch), None) => image(horizontal(view(wy), wh, ww, &ch)),
        (Some(ch), Some(mut cv)) => {
            // Only the rows the vertical pass reads need a horizontal pass.
            let first = cv.bounds.first().map_or(0, |b| b.0);
            let last = cv.bounds.last().map_or(rh, |b| b.0 + b.1);
            for b in &mut cv.bounds {
                b.0 -= first;
            }
            let h = horizontal(view(first), last - first, ww, &ch);
            let rows = Rows {
                data: &h,
                offset: 0,
                stride: ww * 3,
                len: ww * 3,
            };
            image(vertical(rows, wh, &cv))
        }
    }
}

fn crop_rows(rows: Rows, width: usize, height: usize) -> RgbImage {
    let mut data = Vec::with_capacity(rows.len * height);
    for r in 0..height {
        data.extend_from_slice(rows.row(r));
    }
    RgbImage {
        width,
        height,
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
    resample(
        src,
        [0, 0, src.width, src.height],
        (width, height),
        box_,
        filter,
        None,
    )
}

/// torchvision's `resized_crop` on a PIL image: the `height x width` region at
/// `(top, left)` (inside the image) resized to `size = (height, width)`, without
/// copying the region first.
pub fn resize_crop(
    src: &RgbImage,
    [top, left, height, width]: [usize; 4],
    size: (usize, usize),
    filter: Interpolation,
) -> RgbImage {
    resample(
        src,
        [left, top, width, height],
        (size.1, size.0),
        [0.0, 0.0, width as f64, height as f64],
        filter,
        None,
    )
}

/// `resize` to `width x height` followed by the `window = (x, y, w, h)` crop of
/// the result (inside it), computing only the kept pixels: the same bytes as
/// resizing and then cropping.
pub fn resize_window(
    src: &RgbImage,
    width: usize,
    height: usize,
    filter: Interpolation,
    window: [usize; 4],
) -> RgbImage {
    resample(
        src,
        [0, 0, src.width, src.height],
        (width, height),
        [0.0, 0.0, src.width as f64, src.height as f64],
        filter,
        Some(window),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Resizing only a window gives the bytes of resizing everything and
    /// cropping, with and without each pass.
    #[test]
    fn resize_window_equals_resize_then_crop() {
        let (w, h) = (41usize, 29usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 67 % 253) as u8).collect();
        let src = RgbImage {
            width: w,
            height: h,
            data,
        };
        for filter in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for (ow, oh, win) in [
                (30, 20, [3, 2, 24, 17]),
                (41, 20, [5, 0, 30, 20]),
                (30, 29, [0, 4, 30, 21]),
                (41, 29, [1, 1, 39, 27]),
                (60, 50, [12, 0, 40, 50]),
            ] {
                let full = resize(&src, ow, oh, filter);
                let [x, y, cw, ch] = win;
                let want = crate::geometry::crop(&full, y as i64, x as i64, ch, cw);
                let got = resize_window(&src, ow, oh, filter, win);
                assert_eq!(got, want, "{filter:?} {ow}x{oh} window {win:?}");
            }
        }
    }

    /// The SIMD passes give exactly the scalar passes' bytes, on crops that touch
    /// the end of the buffer (where the 4-byte loads must not run past it).
    #[test]
    fn simd_passes_equal_scalar() {
        let (w, h) = (37usize, 23usize);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i * 131 % 251) as u8).collect();
        for filter in [
            Interpolation::Nearest,
            Interpolation::Bilinear,
            Interpolation::Bicubic,
        ] {
            for (rl, rt, rw, rh, ow, oh) in [
                (0, 0, 37, 23, 11, 29),
                (5, 3, 32, 20, 50, 7),
                (1, 0, 36, 23, 13, 23),
            ] {
                let rows = Rows {
                    data: &data,
                    offset: (rt * w + rl) * 3,
                    stride: w * 3,
                    len: rw * 3,
                };
                let ch = coeffs(rw, 0.0, rw as f64, ow, filter);
                let got = horizontal(rows, rh, ow, &ch);
                let mut want = vec![0u8; ow * rh * 3];
                for (y, out) in want.chunks_exact_mut(ow * 3).enumerate() {
                    horizontal_row_scalar(rows.row(y), &ch, out, 0..ow);
                }
                assert_eq!(got, want, "horizontal {filter:?} {rw}x{rh} -> {ow}");
                let cv = coeffs(rh, 0.0, rh as f64, oh, filter);
                let got = vertical(rows, oh, &cv);
                let mut want = vec![0u8; rw * 3 * oh];
                vertical_scalar(rows, &cv, &mut want);
                assert_eq!(got, want, "vertical {filter:?} {rw}x{rh} -> {oh}");
            }
        }
    }
}
