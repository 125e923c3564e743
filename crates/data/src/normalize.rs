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
