use serde::Deserialize;

use crate::DataError;

/// Per-channel `(x - mean) / std`, as torchvision's `Normalize`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// CLIP's image processor statistics (OpenAI).
    pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
    pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
    /// ImageNet statistics, as torchvision's reference scripts use.
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    pub fn clip() -> Self {
        Self {
            mean: Self::CLIP_MEAN,
            std: Self::CLIP_STD,
        }
    }

    pub fn imagenet() -> Self {
        Self {
            mean: Self::IMAGENET_MEAN,
            std: Self::IMAGENET_STD,
        }
    }

    /// Checks that no standard deviation is zero or negative.
    pub fn validate(&self) -> Result<(), DataError> {
        match self.std.iter().position(|s| !(*s > 0.0 && s.is_finite())) {
            Some(i) => Err(DataError::Config {
                key: format!("normalize.std[{i}]"),
                reason: format!("must be a positive finite number, got {}", self.std[i]),
            }),
            None => Ok(()),
        }
    }

    /// Normalises a CHW image of values in `[0, 1]` in place.
    pub fn apply_chw(&self, chw: &mut [f32], height: usize, width: usize) -> Result<(), DataError> {
        let plane = height * width;
        if chw.len() != 3 * plane {
            return Err(DataError::Shape {
                len: chw.len(),
                channels: 3,
                height,
                width,
            });
        }
        for (c, channel) in chw.chunks_exact_mut(plane).enumerate() {
            let (mean, inv_std) = (self.mean[c], 1.0 / self.std[c]);
            channel.iter_mut().for_each(|v| *v = (*v - mean) * inv_std);
        }
        Ok(())
    }
}

/// `HWC` 8-bit RGB to `CHW` floats `v * scale[c] + bias[c]` (`out` holds 3
/// planes of `rgb.len() / 3` values).
pub(crate) fn to_chw(rgb: &[u8], scale: [f32; 3], bias: [f32; 3], out: &mut [f32]) {
    let plane = rgb.len() / 3;
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        let chunks = rgb.as_chunks::<24>().0;
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { to_chw_avx2(chunks, scale, bias, [r, g, b]) };
        done = chunks.len() * 8;
    }
    let pixels = rgb.as_chunks::<3>().0;
    for (i, px) in pixels.iter().enumerate().skip(done) {
        r[i] = px[0] as f32 * scale[0] + bias[0];
        g[i] = px[1] as f32 * scale[1] + bias[1];
        b[i] = px[2] as f32 * scale[2] + bias[2];
    }
}

/// 8 pixels per step; the same multiply-then-add as the scalar loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn to_chw_avx2(chunks: &[[u8; 24]], scale: [f32; 3], bias: [f32; 3], planes: [&mut [f32]; 3]) {
    use std::arch::x86_64::*;
    let scale = scale.map(|s| _mm256_set1_ps(s));
    let bias = bias.map(|b| _mm256_set1_ps(b));
    for (i, chunk) in chunks.iter().enumerate() {
        let rgb = crate::simd::deinterleave(chunk);
        for c in 0..3 {
            let v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(rgb[c]), scale[c]), bias[c]);
            let dst = &mut planes[c][i * 8..i * 8 + 8];
            // SAFETY: `dst` holds 8 floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
        }
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Self::clip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_channel_with_its_own_statistics() {
        let norm = Normalize::imagenet();
        // 1x2 image: channel planes of two pixels each.
        let mut px = vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        norm.apply_chw(&mut px, 1, 2).unwrap();
        let expect = [
            -0.485 / 0.229,
            (1.0 - 0.485) / 0.229,
            -0.456 / 0.224,
            (1.0 - 0.456) / 0.224,
            -0.406 / 0.225,
            (1.0 - 0.406) / 0.225,
        ];
        for (got, want) in px.iter().zip(expect) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    /// The vector path gives the scalar formula's floats exactly (101 pixels:
    /// 12 vector steps and a 5-pixel tail).
    #[test]
    fn to_chw_equals_the_scalar_formula() {
        let rgb: Vec<u8> = (0..303).map(|i| (i * 89 % 256) as u8).collect();
        let (scale, bias) = ([0.1f32, 0.2, 0.3], [-1.5f32, 0.25, 2.0]);
        let mut out = vec![0f32; 303];
        to_chw(&rgb, scale, bias, &mut out);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                assert_eq!(
                    out[c * 101 + i],
                    px[c] as f32 * scale[c] + bias[c],
                    "pixel {i}"
                );
            }
        }
    }

    #[test]
    fn wrong_buffer_length_is_an_error() {
        let err = Normalize::clip()
            .apply_chw(&mut [0.0; 5], 1, 2)
            .unwrap_err();
        assert!(err.to_string().contains("3x1x2"), "{err}");
    }

    #[test]
    fn zero_std_is_rejected_naming_the_key() {
        let cfg: Normalize =
            toml::from_str("mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.0, 0.5]").unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("normalize.std[1]"), "{err}");
    }
}
