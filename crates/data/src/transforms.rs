//! The augmentation pipeline: an ordered list of named transforms that behave like
//! torchvision's on PIL images, configured in TOML as tagged tables, e.g.
//!
//! ```toml
//! [[data.train_transforms]]
//! op = "random_resized_crop"
//! size = 224
//! scale = [0.8, 1.0]
//! [[data.train_transforms]]
//! op = "color_jitter"
//! brightness = 0.4
//! ```
//!
//! Image operations work on 8-bit RGB; the pipeline ends in a normalised `CHW` f32
//! buffer (`to_tensor` is implied at the end; `normalize` applies after it).

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::augment::{self, AugmentSpace, apply_augment_op};
use crate::color::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation};
use crate::geometry::{
    CropConvention, center_crop_as, center_crop_offsets, crop, hflip, random_resized_crop_params,
    rotate, sample_box,
};
use crate::image::RgbImage;
use crate::normalize::Normalize;
use crate::resample::{Interpolation, resize, resize_crop, resize_window, shorter_side_size};
use crate::rng::SampleRng;

/// A size: one number (square, or the shorter side for `resize`) or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    One(usize),
    Hw([usize; 2]),
}

/// One transform of the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// Shorter side to `size` (keeping the aspect ratio), or exactly `[h, w]`.
    Resize {
        size: Size,
        #[serde(default)]
        interpolation: Interpolation,
    },
    /// Centre crop (zero-padded where the image is smaller). `convention` picks
    /// the offset rule on odd differences: `"torchvision"` (the default, as
    /// `transforms.CenterCrop`) or `"transformers"` (as `CLIPImageProcessor`).
    CenterCrop {
        size: Size,
        #[serde(default)]
        convention: CropConvention,
    },
    RandomResizedCrop {
        size: Size,
        #[serde(default = "default_scale")]
        scale: [f64; 2],
        #[serde(default = "default_ratio")]
        ratio: [f64; 2],
        #[serde(default)]
        interpolation: Interpolation,
    },
    RandomHorizontalFlip {
        #[serde(default = "half")]
        p: f64,
    },
    /// Factors drawn uniformly from `[1 - x, 1 + x]` (hue from `[-h, h]`), applied
    /// in a random order, as torchvision's `ColorJitter`.
    ColorJitter {
        #[serde(default)]
        brightness: f64,
        #[serde(default)]
        contrast: f64,
        #[serde(default)]
        saturation: f64,
        #[serde(default)]
        hue: f64,
    },
    /// Angle uniform in `[-degrees, degrees]`.
    RandomRotation {
        degrees: f64,
        #[serde(default = "nearest")]
        interpolation: Interpolation,
        #[serde(default)]
        fill: [u8; 3],
    },
    /// torchvision's `TrivialAugmentWide`: one of 14 operations (identity, shears,
    /// translations, rotation, brightness, colour, contrast, sharpness, posterize,
    /// solarize, autocontrast, equalize) at a strength drawn from
    /// `num_magnitude_bins` bins.
    TrivialAugmentWide {
        #[serde(default = "magnitude_bins")]
        num_magnitude_bins: usize,
        #[serde(default = "nearest")]
        interpolation: Interpolation,
        #[serde(default)]
        fill: [u8; 3],
    },
    /// torchvision's `RandAugment`: `num_ops` operations drawn from the same 14,
    /// each at bin `magnitude` of `num_magnitude_bins`.
    RandAugment {
        #[serde(default = "two")]
        num_ops: usize,
        #[serde(default = "nine")]
        magnitude: usize,
        #[serde(default = "magnitude_bins")]
        num_magnitude_bins: usize,
        #[serde(default = "nearest")]
        interpolation: Interpolation,
        #[serde(default)]
        fill: [u8; 3],
    },
    /// `(x - mean) / std` on the `[0, 1]` tensor; CLIP's statistics by default.
    Normalize {
        #[serde(default = "clip_mean")]
        mean: [f32; 3],
        #[serde(default = "clip_std")]
        std: [f32; 3],
    },
    /// Explicit `[0, 255] -> [0, 1]` conversion (implied at the end anyway).
    ToTensor,
    /// torchvision's `RandomErasing` on the normalised tensor (after `normalize`):
    /// with probability `p`, a rectangle of area fraction in `scale` and aspect
    /// ratio in `ratio` is set to `value` (0 = the mean after normalisation).
    RandomErasing {
        #[serde(default = "half")]
        p: f64,
        #[serde(default = "erase_scale")]
        scale: [f64; 2],
        #[serde(default = "erase_ratio")]
        ratio: [f64; 2],
        #[serde(default)]
        value: f32,
    },
}

fn magnitude_bins() -> usize {
    31
}
fn two() -> usize {
    2
}
fn nine() -> usize {
    9
}
fn erase_scale() -> [f64; 2] {
    [0.02, 0.33]
}
fn erase_ratio() -> [f64; 2] {
    [0.3, 3.3]
}

fn default_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn half() -> f64 {
    0.5
}
fn nearest() -> Interpolation {
    Interpolation::Nearest
}
fn clip_mean() -> [f32; 3] {
    Normalize::CLIP_MEAN
}
fn clip_std() -> [f32; 3] {
    Normalize::CLIP_STD
}

impl Size {
    fn hw(self) -> (usize, usize) {
        match self {
            Size::One(s) => (s, s),
            Size::Hw([h, w]) => (h, w),
        }
    }
}

/// A validated, ready-to-run list of transforms.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    ops: Vec<TransformConfig>,
    /// The config key the list came from (named in the loader's errors).
    section: String,
}

/// The area-fraction and aspect-ratio ranges of a box sampler (RandomResizedCrop
/// allows the whole image, RandomErasing does not).
fn check_box(
    key: &dyn Fn(&str) -> String,
    scale: [f64; 2],
    ratio: [f64; 2],
    whole: bool,
    problems: &mut Vec<String>,
) {
    let upper_ok = if whole {
        scale[1] <= 1.0
    } else {
        scale[1] < 1.0
    };
    if !(scale[0] > 0.0 && scale[0] <= scale[1] && upper_ok) {
        let bound = if whole { "<= 1" } else { "< 1" };
        problems.push(format!(
            "`{}` must satisfy 0 < min <= max {bound}, got {scale:?}",
            key("scale")
        ));
    }
    if !(ratio[0] > 0.0 && ratio[0] <= ratio[1]) {
        problems.push(format!(
            "`{}` must satisfy 0 < min <= max, got {ratio:?}",
            key("ratio")
        ));
    }
}

fn check_factor(key: String, v: f64, max: f64, problems: &mut Vec<String>) {
    if !(0.0..=max).contains(&v) {
        problems.push(format!("`{key}` must be in [0, {max}], got {v}"));
    }
}

/// The settings TrivialAugmentWide and RandAugment share.
fn check_policy(
    key: &dyn Fn(&str) -> String,
    bins: usize,
    interpolation: Interpolation,
    problems: &mut Vec<String>,
) {
    if !(2..=1000).contains(&bins) {
        problems.push(format!(
            "`{}` must be in 2..=1000, got {bins}",
            key("num_magnitude_bins")
        ));
    }
    check_affine_interpolation(key("interpolation"), interpolation, problems);
}

/// Rotations and affine maps sample like PIL's: nearest or bilinear.
fn check_affine_interpolation(key: String, i: Interpolation, problems: &mut Vec<String>) {
    if i == Interpolation::Bicubic {
        problems.push(format!(
            "`{key}`: rotations and affine maps support \"nearest\" or \"bilinear\", got \"bicubic\""
        ));
    }
}

impl Pipeline {
    /// Validates every transform (reporting all problems, each with its position
    /// in `section`, e.g. `data.train_transforms[2].scale`).
    pub fn new(ops: Vec<TransformConfig>, section: &str) -> Result<Self, DataError> {
        let mut problems = Vec::new();
        let mut normalized = false;
        for (i, op) in ops.iter().enumerate() {
            let key = |k: &str| format!("{section}[{i}].{k}");
            if normalized
                && !matches!(
                    op,
                    TransformConfig::ToTensor | TransformConfig::RandomErasing { .. }
                )
            {
                problems.push(format!(
                    "`{}`: image transforms must come before `normalize`",
                    key("op")
                ));
            }
            match op {
                TransformConfig::Resize { size, .. }
                | TransformConfig::CenterCrop { size, .. }
                | TransformConfig::RandomResizedCrop { size, .. } => {
                    let (h, w) = size.hw();
                    if h == 0 || w == 0 {
                        problems.push(format!("`{}` must be positive", key("size")));
                    }
                }
                _ => {}
            }
            match op {
                TransformConfig::RandomResizedCrop { scale, ratio, .. } => {
                    check_box(&key, *scale, *ratio, true, &mut problems)
                }
                TransformConfig::RandomHorizontalFlip { p } => {
                    check_factor(key("p"), *p, 1.0, &mut problems)
                }
                TransformConfig::RandomErasing {
                    p, scale, ratio, ..
                } => {
                    check_factor(key("p"), *p, 1.0, &mut problems);
                    check_box(&key, *scale, *ratio, false, &mut problems);
                }
                TransformConfig::ColorJitter {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                } => {
                    check_factor(key("brightness"), *brightness, 1.0, &mut problems);
                    check_factor(key("contrast"), *contrast, 1.0, &mut problems);
                    check_factor(key("saturation"), *saturation, 1.0, &mut problems);
                    check_factor(key("hue"), *hue, 0.5, &mut problems);
                }
                TransformConfig::RandomRotation {
                    degrees,
                    interpolation,
                    ..
                } => {
                    check_factor(key("degrees"), *degrees, 180.0, &mut problems);
                    check_affine_interpolation(key("interpolation"), *interpolation, &mut problems);
                }
                TransformConfig::TrivialAugmentWide {
                    num_magnitude_bins,
                    interpolation,
                    ..
                } => check_policy(&key, *num_magnitude_bins, *interpolation, &mut problems),
                TransformConfig::RandAugment {
                    num_ops,
                    magnitude,
                    num_magnitude_bins,
                    interpolation,
                    ..
                } => {
                    check_policy(&key, *num_magnitude_bins, *interpolation, &mut problems);
                    if magnitude >= num_magnitude_bins {
                        problems.push(format!(
                            "`{}` must be below num_magnitude_bins ({num_magnitude_bins}), got {magnitude}",
                            key("magnitude")
                        ));
                    }
                    if !(1..=16).contains(num_ops) {
                        problems.push(format!(
                            "`{}` must be in 1..=16, got {num_ops}",
                            key("num_ops")
                        ));
                    }
                }
                TransformConfig::Normalize { mean, std } => {
                    if let Err(e) = (Normalize {
                        mean: *mean,
                        std: *std,
                    })
                    .validate()
                    {
                        problems.push(format!("{}: {e}", key("std")));
                    }
                    normalized = true;
                }
                TransformConfig::Resize { .. }
                | TransformConfig::CenterCrop { .. }
                | TransformConfig::ToTensor => {}
            }
        }
        if problems.is_empty() {
            Ok(Self {
                ops,
                section: section.to_string(),
            })
        } else {
            Err(DataError::config(section, problems.join("; ")))
        }
    }

    /// CLIP's evaluation preprocessing (transformers' `CLIPImageProcessor`): shorter
    /// side to `size` with bicubic, centre crop `size` at transformers' offsets,
    /// rescale, CLIP normalisation.
    pub fn clip_eval(size: usize) -> Self {
        Self::clip_processor(size, Normalize::clip())
    }

    /// transformers' `CLIPImageProcessor` with `shortest_edge = crop = size` and the
    /// given statistics: bicubic resize of the shorter side, centre crop with
    /// transformers' offsets (`(size - crop) // 2`), rescale and normalise.
    pub fn clip_processor(size: usize, norm: Normalize) -> Self {
        Self {
            section: "data.eval_transforms".into(),
            ops: vec![
                TransformConfig::Resize {
                    size: Size::One(size),
                    interpolation: Interpolation::Bicubic,
                },
                TransformConfig::CenterCrop {
                    size: Size::One(size),
                    convention: CropConvention::Transformers,
                },
                TransformConfig::Normalize {
                    mean: norm.mean,
                    std: norm.std,
                },
            ],
        }
    }

    /// The tutorial's training augmentation: `RandomResizedCrop(size, scale=(0.8, 1.0))`,
    /// horizontal flip, `ColorJitter(0.4, 0.4, 0.4)`, `RandomRotation(15)`, normalise.
    /// The tutorial's snippet normalises with ImageNet's statistics; a pretrained CLIP
    /// expects its own, which this preset uses (`Normalize::imagenet()` reproduces the
    /// snippet).
    pub fn tutorial_train(size: usize, norm: Normalize) -> Self {
        Self {
            section: "data.train_transforms".into(),
            ops: vec![
                TransformConfig::RandomResizedCrop {
                    size: Size::One(size),
                    scale: [0.8, 1.0],
                    ratio: default_ratio(),
                    interpolation: Interpolation::Bilinear,
                },
                TransformConfig::RandomHorizontalFlip { p: 0.5 },
                TransformConfig::ColorJitter {
                    brightness: 0.4,
                    contrast: 0.4,
                    saturation: 0.4,
                    hue: 0.0,
                },
                TransformConfig::RandomRotation {
                    degrees: 15.0,
                    interpolation: Interpolation::Nearest,
                    fill: [0, 0, 0],
                },
                TransformConfig::Normalize {
                    mean: norm.mean,
                    std: norm.std,
                },
            ],
        }
    }

    pub fn ops(&self) -> &[TransformConfig] {
        &self.ops
    }

    /// The config key of the list (`data.train_transforms`, `data.eval_transforms`).
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Runs the 8-bit image operations (everything but `normalize`/`to_tensor`).
    pub fn apply_u8(&self, mut img: RgbImage, rng: &mut SampleRng) -> RgbImage {
        let mut i = 0;
        while i < self.ops.len() {
            // `resize` then `center_crop` inside it (CLIP's preprocessing): only
            // the kept pixels are resampled; same bytes, no randomness involved.
            if let (
                TransformConfig::Resize {
                    size,
                    interpolation,
                },
                Some(TransformConfig::CenterCrop {
                    size: crop,
                    convention,
                }),
            ) = (&self.ops[i], self.ops.get(i + 1))
            {
                let (w, h) = resize_target(*size, &img);
                let (ch, cw) = crop.hw();
                if ch <= h && cw <= w {
                    let (top, left) = center_crop_offsets(w, h, cw, ch, *convention);
                    let window = [left as usize, top as usize, cw, ch];
                    img = resize_window(&img, w, h, *interpolation, window);
                    i += 2;
                    continue;
                }
            }
            img = apply_one(&self.ops[i], img, rng);
            i += 1;
        }
        img
    }

    /// The full pipeline into `out` (`3 x H x W` f32), which must have the output size.
    pub fn apply_into(
        &self,
        img: RgbImage,
        rng: &mut SampleRng,
        out: &mut [f32],
    ) -> Result<(usize, usize), DataError> {
        let img = self.apply_u8(img, rng);
        let (h, w) = (img.height, img.width);
        let plane = h * w;
        if out.len() != 3 * plane {
            return Err(DataError::Shape {
                len: out.len(),
                channels: 3,
                height: h,
                width: w,
            });
        }
        let (scale, bias) = self.normalization();
        crate::normalize::to_chw(&img.data, scale, bias, out);
        for op in &self.ops {
            if let TransformConfig::RandomErasing {
                p,
                scale,
                ratio,
                value,
            } = op
            {
                random_erasing(out, h, w, *p, *scale, *ratio, *value, rng);
            }
        }
        Ok((h, w))
    }

    /// Like `apply_into` but stops before normalisation: `out` receives the 8-bit
    /// `3 x H x W` planes (`normalization()` maps them to what `apply_into` gives).
    /// Pipelines with `random_erasing` (which works on normalised values) are
    /// refused.
    pub fn apply_into_u8(
        &self,
        img: RgbImage,
        rng: &mut SampleRng,
        out: &mut [u8],
    ) -> Result<(usize, usize), DataError> {
        if self.erases() {
            return Err(DataError::config(
                "data.loader.output",
                "random_erasing needs f32 output (it erases normalised values)",
            ));
        }
        let img = self.apply_u8(img, rng);
        let (h, w) = (img.height, img.width);
        if out.len() != 3 * h * w {
            return Err(DataError::Shape {
                len: out.len(),
                channels: 3,
                height: h,
                width: w,
            });
        }
        let (r, gb) = out.split_at_mut(h * w);
        let (g, b) = gb.split_at_mut(h * w);
        for (((px, r), g), b) in img.data.as_chunks::<3>().0.iter().zip(r).zip(g).zip(b) {
            (*r, *g, *b) = (px[0], px[1], px[2]);
        }
        Ok((h, w))
    }

    /// Whether the pipeline has a `random_erasing` step.
    pub fn erases(&self) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, TransformConfig::RandomErasing { .. }))
    }

    /// Per-channel `(scale, bias)` taking 8-bit values to the pipeline's output:
    /// `v / 255` then its `normalize` (if any), folded into one multiply-add.
    pub fn normalization(&self) -> ([f32; 3], [f32; 3]) {
        let norm = self.ops.iter().find_map(|op| match op {
            TransformConfig::Normalize { mean, std } => Some((*mean, *std)),
            _ => None,
        });
        match norm {
            Some((mean, std)) => (
                std.map(|s| 1.0 / (255.0 * s)),
                [0, 1, 2].map(|c| -mean[c] / std[c]),
            ),
            None => ([1.0 / 255.0; 3], [0.0; 3]),
        }
    }

    /// How much a `width x height` image may shrink before the pipeline sees it
    /// (`data.loader.decode = "draft"`) without its first geometric step ever
    /// upsampling because of it: `resize` to a shorter side `s` allows
    /// `shorter / s`; `random_resized_crop` to `s` with areas from `scale[0]` and
    /// aspect ratios up to `ratio[1]` allows `sqrt(scale[0] x w x h / ratio[1]) / s`
    /// (the smallest crop's shorter side stays at least `s`); anything else 1.
    pub fn draft_reduction(&self, width: usize, height: usize) -> usize {
        let first = self.ops.iter().find(|op| {
            !matches!(
                op,
                TransformConfig::RandomHorizontalFlip { .. } | TransformConfig::ColorJitter { .. }
            )
        });
        let (w, h) = (width as f64, height as f64);
        let allowed = match first {
            Some(TransformConfig::Resize {
                size: Size::One(s), ..
            }) => w.min(h) / *s as f64,
            Some(TransformConfig::Resize {
                size: Size::Hw([sh, sw]),
                ..
            }) => (w / *sw as f64).min(h / *sh as f64),
            Some(TransformConfig::RandomResizedCrop {
                size, scale, ratio, ..
            }) => {
                let (sh, sw) = size.hw();
                let smallest = (scale[0] * w * h / ratio[1].max(1.0 / ratio[0])).sqrt();
                smallest / sh.max(sw) as f64
            }
            _ => 1.0,
        };
        if allowed.is_finite() && allowed >= 1.0 {
            allowed.floor() as usize
        } else {
            1
        }
    }

    /// The output `(height, width)` for an input of the given size, when fixed by a
    /// crop or an exact resize (`None` if it depends on the input's aspect ratio).
    pub fn output_size(&self) -> Option<(usize, usize)> {
        let mut size = None;
        for op in &self.ops {
            match op {
                TransformConfig::CenterCrop { size: s, .. }
                | TransformConfig::RandomResizedCrop { size: s, .. } => size = Some(s.hw()),
                TransformConfig::Resize {
                    size: Size::Hw([h, w]),
                    ..
                } => size = Some((*h, *w)),
                TransformConfig::Resize {
                    size: Size::One(_), ..
                } => size = None,
                _ => {}
            }
        }
        size
    }
}

/// `(width, height)` after `resize` to `size`.
fn resize_target(size: Size, img: &RgbImage) -> (usize, usize) {
    match size {
        Size::One(s) => shorter_side_size(img.width, img.height, s),
        Size::Hw([h, w]) => (w, h),
    }
}

fn apply_one(op: &TransformConfig, img: RgbImage, rng: &mut SampleRng) -> RgbImage {
    match op {
        TransformConfig::Resize {
            size,
            interpolation,
        } => {
            let (w, h) = resize_target(*size, &img);
            resize(&img, w, h, *interpolation)
        }
        TransformConfig::CenterCrop { size, convention } => {
            let (h, w) = size.hw();
            center_crop_as(&img, h, w, *convention)
        }
        TransformConfig::RandomResizedCrop {
            size,
            scale,
            ratio,
            interpolation,
        } => {
            let (top, left, h, w) =
                random_resized_crop_params(img.width, img.height, *scale, *ratio, rng);
            resized_crop(&img, top, left, h, w, size.hw(), *interpolation)
        }
        TransformConfig::RandomHorizontalFlip { p } => {
            let mut img = img;
            if rng.bernoulli(*p) {
                hflip(&mut img);
            }
            img
        }
        TransformConfig::ColorJitter {
            brightness,
            contrast,
            saturation,
            hue,
        } => {
            let mut img = img;
            let p = JitterParams::draw([*brightness, *contrast, *saturation, *hue], rng);
            for i in p.order {
                match i {
                    0 if *brightness > 0.0 => adjust_brightness(&mut img, p.brightness),
                    1 if *contrast > 0.0 => adjust_contrast(&mut img, p.contrast),
                    2 if *saturation > 0.0 => adjust_saturation(&mut img, p.saturation),
                    3 if *hue > 0.0 => adjust_hue(&mut img, p.hue),
                    _ => {}
                }
            }
            img
        }
        TransformConfig::RandomRotation {
            degrees,
            interpolation,
            fill,
        } => rotate(&img, rotation_angle(*degrees, rng), *interpolation, *fill),
        TransformConfig::TrivialAugmentWide {
            num_magnitude_bins,
            interpolation,
            fill,
        } => {
            let (op, m) = augment::draw(rng, AugmentSpace::Wide, *num_magnitude_bins, None);
            apply_augment_op(img, op, m, *interpolation, *fill)
        }
        TransformConfig::RandAugment {
            num_ops,
            magnitude,
            num_magnitude_bins,
            interpolation,
            fill,
        } => {
            let mut img = img;
            for _ in 0..*num_ops {
                let space = AugmentSpace::Rand {
                    width: img.width,
                    height: img.height,
                };
                let (op, m) = augment::draw(rng, space, *num_magnitude_bins, Some(*magnitude));
                img = apply_augment_op(img, op, m, *interpolation, *fill);
            }
            img
        }
        TransformConfig::Normalize { .. }
        | TransformConfig::ToTensor
        | TransformConfig::RandomErasing { .. } => img,
    }
}

/// torchvision's `ColorJitter.get_params`: a random order of the four adjustments
/// (0 brightness, 1 contrast, 2 saturation, 3 hue) and factors drawn uniformly from
/// `[max(0, 1 - x), 1 + x]` (hue from `[-h, h]`).
#[derive(Debug, Clone, PartialEq)]
pub struct JitterParams {
    pub order: Vec<usize>,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
}

impl JitterParams {
    /// Draws for `[brightness, contrast, saturation, hue]` strengths.
    pub fn draw(strength: [f64; 4], rng: &mut SampleRng) -> Self {
        let order = rng.permutation(4);
        let mut factor = |x: f64| rng.uniform((1.0 - x).max(0.0), 1.0 + x);
        let (brightness, contrast, saturation) = (
            factor(strength[0]),
            factor(strength[1]),
            factor(strength[2]),
        );
        let hue = rng.uniform(-strength[3], strength[3]);
        Self {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
}

/// torchvision's `RandomRotation.get_params`: an angle uniform in
/// `[-degrees, degrees]`.
pub fn rotation_angle(degrees: f64, rng: &mut SampleRng) -> f64 {
    rng.uniform(-degrees, degrees)
}

/// torchvision's `resized_crop`: crop `height x width` at `(top, left)`, then
/// resize to `size = (height, width)`.
pub fn resized_crop(
    img: &RgbImage,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    size: (usize, usize),
    interpolation: Interpolation,
) -> RgbImage {
    if top + height <= img.height && left + width <= img.width {
        return resize_crop(img, [top, left, height, width], size, interpolation);
    }
    let cropped = crop(img, top as i64, left as i64, height, width);
    resize(&cropped, size.1, size.0, interpolation)
}

/// torchvision's `RandomErasing.get_params` and erase, on a `3 x h x w` buffer.
#[allow(clippy::too_many_arguments)]
fn random_erasing(
    out: &mut [f32],
    h: usize,
    w: usize,
    p: f64,
    scale: [f64; 2],
    ratio: [f64; 2],
    value: f32,
    rng: &mut SampleRng,
) {
    if !rng.bernoulli(p) {
        return;
    }
    let area = (h * w) as f64;
    for _ in 0..10 {
        let (eh, ew) = sample_box(area, scale, ratio, rng);
        if !(eh < h && ew < w) || eh == 0 || ew == 0 {
            continue;
        }
        let top = rng.int_range(0, (h - eh) as i64) as usize;
        let left = rng.int_range(0, (w - ew) as i64) as usize;
        for c in 0..3 {
            for y in top..top + eh {
                let row = c * h * w + y * w;
                out[row + left..row + left + ew].fill(value);
            }
        }
        return;
    }
}
