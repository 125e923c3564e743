//! torchvision's automatic augmentation policies on PIL images: `TrivialAugmentWide`
//! (one random operation at a random strength) and `RandAugment` (`num_ops`
//! random operations at a fixed strength). The operations, their magnitude bins
//! (torchvision's `_augmentation_space`, computed in `f32` as `torch.linspace`
//! does) and their effect (`_apply_op`) follow torchvision; the draws come from
//! the sample's own generator.

use crate::color::{
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_sharpness, autocontrast,
    equalize, posterize, solarize,
};
use crate::geometry::{rotate, tv_affine};
use crate::image::RgbImage;
use crate::resample::Interpolation;
use crate::rng::SampleRng;

/// One operation of the augmentation space, in torchvision's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentOp {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
}

impl AugmentOp {
    pub const ALL: [AugmentOp; 14] = [
        AugmentOp::Identity,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateX,
        AugmentOp::TranslateY,
        AugmentOp::Rotate,
        AugmentOp::Brightness,
        AugmentOp::Color,
        AugmentOp::Contrast,
        AugmentOp::Sharpness,
        AugmentOp::Posterize,
        AugmentOp::Solarize,
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
    ];

    /// Whether torchvision flips the magnitude's sign with probability 1/2.
    pub fn signed(self) -> bool {
        matches!(
            self,
            AugmentOp::ShearX
                | AugmentOp::ShearY
                | AugmentOp::TranslateX
                | AugmentOp::TranslateY
                | AugmentOp::Rotate
                | AugmentOp::Brightness
                | AugmentOp::Color
                | AugmentOp::Contrast
                | AugmentOp::Sharpness
        )
    }
}

/// Which policy's magnitude table to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentSpace {
    /// `TrivialAugmentWide`'s wide ranges.
    Wide,
    /// `RandAugment`'s ranges for an image of `width x height` (translations
    /// scale with the image).
    Rand { width: usize, height: usize },
}

/// `torch.linspace(start, end, steps)[i]` in single precision (torch's CPU
/// kernel: from the start for the first half, from the end for the second).
fn linspace(start: f32, end: f32, steps: usize, i: usize) -> f32 {
    if steps <= 1 {
        return start;
    }
    let step = (end - start) / (steps - 1) as f32;
    // torch's kernels are compiled with floating-point contraction: each
    // element is one fused multiply-add.
    if i < steps / 2 {
        step.mul_add(i as f32, start)
    } else {
        (-step).mul_add((steps - i - 1) as f32, end)
    }
}

/// The magnitude of `op` in bin `bin` of `bins` (`None` for operations without
/// a magnitude), before any sign flip.
pub fn magnitude(op: AugmentOp, space: AugmentSpace, bins: usize, bin: usize) -> Option<f64> {
    let wide = space == AugmentSpace::Wide;
    let lin = |end: f64| Some(linspace(0.0, end as f32, bins, bin) as f64);
    let strength = if wide { 0.99 } else { 0.9 };
    match op {
        AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => None,
        AugmentOp::ShearX | AugmentOp::ShearY => lin(if wide { 0.99 } else { 0.3 }),
        AugmentOp::TranslateX | AugmentOp::TranslateY => match space {
            AugmentSpace::Wide => lin(32.0),
            AugmentSpace::Rand { width, height } => {
                let side = if op == AugmentOp::TranslateX {
                    width
                } else {
                    height
                };
                lin(150.0 / 331.0 * side as f64)
            }
        },
        AugmentOp::Rotate => lin(if wide { 135.0 } else { 30.0 }),
        AugmentOp::Brightness | AugmentOp::Color | AugmentOp::Contrast | AugmentOp::Sharpness => {
            lin(strength)
        }
        AugmentOp::Posterize => {
            // 8 - round(arange(bins) / ((bins - 1) / k)), in f32, ties to even.
            let k = if wide { 6.0 } else { 4.0 };
            let divisor = ((bins.saturating_sub(1)) as f64 / k) as f32;
            Some(8.0 - (bin as f32 / divisor).round_ties_even() as i32 as f64)
        }
        AugmentOp::Solarize => Some(linspace(255.0, 0.0, bins, bin) as f64),
    }
}

/// torchvision's `_apply_op`: `op` at `magnitude` (already signed).
pub fn apply_augment_op(
    img: RgbImage,
    op: AugmentOp,
    magnitude: f64,
    interpolation: Interpolation,
    fill: [u8; 3],
) -> RgbImage {
    let mut img = img;
    // torchvision: shears of atan(magnitude) degrees about the origin, integer
    // translations about the centre.
    let shear = magnitude.atan().to_degrees();
    let affine = |img: &RgbImage, translate, shear, center| {
        tv_affine(img, 0.0, translate, shear, center, interpolation, fill)
    };
    match op {
        AugmentOp::Identity => {}
        AugmentOp::ShearX => img = affine(&img, [0, 0], [shear, 0.0], Some([0.0; 2])),
        AugmentOp::ShearY => img = affine(&img, [0, 0], [0.0, shear], Some([0.0; 2])),
        AugmentOp::TranslateX => img = affine(&img, [magnitude as i64, 0], [0.0; 2], None),
        AugmentOp::TranslateY => img = affine(&img, [0, magnitude as i64], [0.0; 2], None),
        AugmentOp::Rotate => img = rotate(&img, magnitude, interpolation, fill),
        AugmentOp::Brightness => adjust_brightness(&mut img, 1.0 + magnitude),
        AugmentOp::Color => adjust_saturation(&mut img, 1.0 + magnitude),
        AugmentOp::Contrast => adjust_contrast(&mut img, 1.0 + magnitude),
        AugmentOp::Sharpness => adjust_sharpness(&mut img, 1.0 + magnitude),
        AugmentOp::Posterize => posterize(&mut img, magnitude as u8),
        AugmentOp::Solarize => solarize(&mut img, magnitude),
        AugmentOp::AutoContrast => autocontrast(&mut img),
        AugmentOp::Equalize => equalize(&mut img),
    }
    img
}

/// One draw of an operation: uniform over the 14, a bin (`bin`, or uniform when
/// `None`), a sign for the signed ones.
pub(crate) fn draw(
    rng: &mut SampleRng,
    space: AugmentSpace,
    bins: usize,
    bin: Option<usize>,
) -> (AugmentOp, f64) {
    let op = AugmentOp::ALL[rng.int_range(0, AugmentOp::ALL.len() as i64 - 1) as usize];
    if magnitude(op, space, bins, 0).is_none() {
        return (op, 0.0);
    }
    let bin = bin.unwrap_or_else(|| rng.int_range(0, bins as i64 - 1) as usize);
    let mut m = magnitude(op, space, bins, bin).unwrap_or(0.0);
    if op.signed() && rng.bernoulli(0.5) {
        m = -m;
    }
    (op, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posterize_and_solarize_bins_span_torchvisions_ranges() {
        let wide: Vec<f64> = (0..31)
            .filter_map(|b| magnitude(AugmentOp::Posterize, AugmentSpace::Wide, 31, b))
            .collect();
        assert_eq!((wide[0], wide[30]), (8.0, 2.0));
        let rand = AugmentSpace::Rand {
            width: 10,
            height: 10,
        };
        assert_eq!(magnitude(AugmentOp::Posterize, rand, 31, 30), Some(4.0));
        assert_eq!(magnitude(AugmentOp::Solarize, rand, 31, 0), Some(255.0));
        assert_eq!(magnitude(AugmentOp::Solarize, rand, 31, 30), Some(0.0));
        assert_eq!(magnitude(AugmentOp::Equalize, rand, 31, 3), None);
    }

    #[test]
    fn draws_cover_every_operation_and_both_signs() {
        let mut seen = std::collections::HashSet::new();
        let mut negative = false;
        for i in 0..2000 {
            let (op, m) = draw(&mut SampleRng::new(1, 0, i), AugmentSpace::Wide, 31, None);
            seen.insert(format!("{op:?}"));
            negative |= m < 0.0;
        }
        assert_eq!(seen.len(), 14);
        assert!(negative);
    }
}
