//! # clip-data
//!
//! Image sources, decoding, CLIP preprocessing and the augmentation pipeline.
//! Transforms behave like torchvision's on PIL images (Pillow's resampler, PIL's
//! colour blends and HSV, torchvision's crop sampling), checked pixel by pixel
//! against fixtures made with those libraries. Randomness is addressable: a
//! sample's draws come from `(seed, epoch, index)`. The crate builds and tests
//! without libtorch; the `tch` feature turns batches into tensors.
//!
//! Layering: used by `clip-train`; depends on no other crate of the workspace.
//!
//! ```
//! use clip_data::{Pipeline, RgbImage, SampleRng};
//! let img = RgbImage::filled(300, 200, [255, 128, 0]);
//! let eval = Pipeline::clip_eval(224);
//! let mut out = vec![0f32; 3 * 224 * 224];
//! eval.apply_into(img, &mut SampleRng::new(0, 0, 0), &mut out).unwrap();
//! assert!((out[0] - (1.0 - 0.481_454_66) / 0.268_629_54).abs() < 1e-5);
//! ```

mod augment;
mod color;
mod convert;
mod dataset;
mod duplicates;
mod error;
mod geometry;
mod hash;
mod image;
mod jpeg;
mod loader;
mod mix;
mod normalize;
mod preview;
mod resample;
mod rng;
mod simd;
mod sources;
mod synthetic;
mod transforms;

pub use augment::{AugmentOp, AugmentSpace, apply_augment_op, magnitude};
pub use color::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, adjust_sharpness,
    autocontrast, equalize, posterize, solarize,
};
pub use convert::{
    ShardImages, thumbnail_size, webdataset_entry, write_webdataset, write_webdataset_with,
};
pub use dataset::{Dataset, Summary};
pub use duplicates::{OVERLAP_READ_BUDGET, Overlap, Repeats};
pub use error::DataError;
pub use geometry::{
    CropConvention, affine, center_crop, center_crop_as, crop, hflip, random_resized_crop_params,
    rotate, tv_affine,
};
pub use image::{DEFAULT_MAX_IMAGE_PIXELS, DecodeOptions, ExifOrientation, RgbImage};
pub use jpeg::{exif_orientation, libjpeg_turbo_version};
pub use loader::{
    Batch, Decode, EpochIter, Loader, LoaderConfig, OnCorrupt, Output, Pixels, Replaced, Shard,
    max_threads,
};
#[cfg(feature = "tch")]
pub use loader::{DeviceBatch, DeviceBatches};
pub use mix::{MixConfig, beta, mix_batch};
pub use normalize::Normalize;
pub use preview::{Preview, PreviewRow, preview};
pub use resample::{Interpolation, resize, resize_region, shorter_side_size};
pub use rng::SampleRng;
pub use sources::{
    FASHION_MNIST_CLASSES, IMAGE_EXTENSIONS, SourceConfig, SourceDescription, expand_shards,
    image_paths, read_idx,
};
pub use synthetic::write_noise_images;
pub use transforms::{JitterParams, Pipeline, Size, TransformConfig, resized_crop, rotation_angle};

/// The raw bytes of `path` when it is not UTF-8 (`None` when it is): what JSON
/// outputs add as `path_bytes` beside the lossy `path`, so the file can be traced.
pub fn path_bytes(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    path.to_str()
        .is_none()
        .then(|| path.as_os_str().as_bytes().to_vec())
}
