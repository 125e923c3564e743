//! # clip-data
//!
//! Image sources, decoding, CLIP preprocessing and the augmentation pipeline on
//! rayon. Batches are assembled into plain contiguous buffers; the optional `tch`
//! feature turns them into tensors, so without it this crate builds and tests
//! without libtorch.
//!
//! Layering: used by `clip-train`; depends on no other crate of the workspace.
//!
//! ```
//! use clip_data::Normalize;
//! let norm = Normalize::clip();
//! let mut pixels = vec![0.5f32; 3 * 2 * 2]; // CHW, values in [0, 1]
//! norm.apply_chw(&mut pixels, 2, 2).unwrap();
//! assert!((pixels[0] - (0.5 - 0.481_454_66) / 0.268_629_54).abs() < 1e-6);
//! ```

mod error;
mod normalize;

pub use error::DataError;
pub use normalize::Normalize;
