//! Decoding to 8-bit RGB, as PIL's `Image.open(path).convert("RGB")` does: JPEGs
//! through libjpeg-turbo (PIL's decoder, [`crate::jpeg`]), other formats through
//! the `image` crate.

use std::path::Path;

use image::DynamicImage;

use crate::DataError;

/// Whether images are turned upright by their EXIF orientation
/// (`data.loader.exif_orientation`). PIL's `Image.open` and torchvision's
/// `ImageFolder` do not (the default); transformers' `load_image`, which its
/// pipelines use on paths, does (`ImageOps.exif_transpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExifOrientation {
    /// The pixels as stored.
    #[default]
    Ignore,
    /// JPEGs turned by their EXIF orientation tag, as `ImageOps.exif_transpose`.
    Apply,
}

impl std::str::FromStr for ExifOrientation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignore" => Ok(Self::Ignore),
            "apply" => Ok(Self::Apply),
            other => Err(format!("{other:?}: expected \"ignore\" or \"apply\"")),
        }
    }
}

/// The most pixels an image may have before it is decoded: PIL's
/// decompression-bomb error threshold (`2 x Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;

/// How an encoded image becomes pixels.
#[derive(Clone, Copy)]
pub struct DecodeOptions<'a> {
    /// Draft decoding (`data.loader.decode = "draft"`): a JPEG at the DCT scale
    /// this allows for its stored `(width, height)` ([`RgbImage::decode_draft`]).
    pub reduction: Option<&'a dyn Fn(usize, usize) -> usize>,
    pub exif_orientation: ExifOrientation,
    /// An image whose header says it has more pixels is refused before decoding
    /// (`data.loader.max_image_pixels`; 0: no limit): a small file can hold a huge
    /// image.
    pub max_pixels: u64,
}

impl Default for DecodeOptions<'_> {
    fn default() -> Self {
        Self {
            reduction: None,
            exif_orientation: ExifOrientation::default(),
            max_pixels: DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

/// Refuses an image whose header says it has more than `max` pixels (0: any).
fn check_pixels(bytes: &[u8], max: u64) -> Result<(), image::ImageError> {
    if max == 0 {
        return Ok(());
    }
    let dims = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    match dims {
        Some((w, h)) if u64::from(w) * u64::from(h) > max => Err(image::ImageError::Decoding(
            image::error::DecodingError::new(
                image::error::ImageFormatHint::Unknown,
                format!(
                    "{w}x{h} is {} pixels, over the limit of {max} checked before decoding \
                     (`data.loader.max_image_pixels`, as PIL's guard against decompression \
                     bombs): raise it, or set 0 for no limit",
                    u64::from(w) * u64::from(h)
                ),
            ),
        )),
        // No readable header: the decoder says what is wrong.
        _ => Ok(()),
    }
}

/// For an output pixel `(x, y)` of a turned `w x h` image, the input pixel.
type Source = fn(usize, usize, usize, usize) -> (usize, usize);

/// An 8-bit RGB image, row-major, interleaved (`HWC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self, DataError> {
        if data.len() != width * height * 3 {
            return Err(DataError::Shape {
                len: data.len(),
                channels: 3,
                height,
                width,
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// An image filled with one colour.
    pub fn filled(width: usize, height: usize, rgb: [u8; 3]) -> Self {
        Self {
            width,
            height,
            data: if rgb == [rgb[0]; 3] {
                vec![rgb[0]; width * height * 3]
            } else {
                [rgb].repeat(width * height).into_flattened()
            },
        }
    }

    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The image turned upright by its EXIF `orientation` (1 to 8), as PIL's
    /// `ImageOps.exif_transpose` does; 1 or an unknown value leaves it as it is.
    pub fn apply_orientation(self, orientation: u16) -> Self {
        let (w, h) = (self.width, self.height);
        // Output size and, for an output pixel, the input pixel it takes.
        let (ow, oh, from): (usize, usize, Source) = match orientation {
            // FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM
            2 => (w, h, |x, y, w, _| (w - 1 - x, y)),
            3 => (w, h, |x, y, w, h| (w - 1 - x, h - 1 - y)),
            4 => (w, h, |x, y, _, h| (x, h - 1 - y)),
            // TRANSPOSE, ROTATE_270 (clockwise), TRANSVERSE, ROTATE_90
            5 => (h, w, |x, y, _, _| (y, x)),
            6 => (h, w, |x, y, _, h| (y, h - 1 - x)),
            7 => (h, w, |x, y, w, h| (w - 1 - y, h - 1 - x)),
            8 => (h, w, |x, y, w, _| (w - 1 - y, x)),
            _ => return self,
        };
        let mut data = Vec::with_capacity(self.data.len());
        for y in 0..oh {
            for x in 0..ow {
                let (sx, sy) = from(x, y, w, h);
                let i = (sy * w + sx) * 3;
                data.extend_from_slice(&self.data[i..i + 3]);
            }
        }
        Self {
            width: ow,
            height: oh,
            data,
        }
    }

    /// Decodes an image file (JPEG, PNG, WebP, BMP, GIF's first frame).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        Self::open_with(path, Self::decode)
    }

    /// Decodes an image file; a JPEG at the DCT reduction (1/2, 1/4 or 1/8) that
    /// `reduction(width, height)` allows (see [`RgbImage::decode_draft`]).
    pub fn open_draft(
        path: &Path,
        reduction: impl Fn(usize, usize) -> usize,
    ) -> Result<Self, DataError> {
        Self::open_with(path, |bytes| Self::decode_draft(bytes, reduction))
    }

    /// Reads `path` and decodes it with `decode`; errors name the file.
    fn open_with(
        path: &Path,
        decode: impl FnOnce(&[u8]) -> Result<Self, image::ImageError>,
    ) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        decode(&bytes).map_err(|source| DataError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A JPEG decoded at reduced scale through libjpeg-turbo's scaled inverse
    /// DCT, what PIL's `Image.draft` does: 1/2, 1/4 or 1/8 of each side, the
    /// largest of those not above `reduction(width, height)` (the full size's);
    /// below 2 it decodes exactly as [`RgbImage::decode`]. The pixels are PIL's
    /// after `draft` (they differ from decoding in full and resizing). Other
    /// formats decode in full.
    pub fn decode_draft(
        bytes: &[u8],
        reduction: impl Fn(usize, usize) -> usize,
    ) -> Result<Self, image::ImageError> {
        if !crate::jpeg::is_jpeg(bytes) {
            return Self::decode(bytes);
        }
        Self::from_jpeg(bytes, reduction)
    }

    /// A JPEG through libjpeg-turbo ([`crate::jpeg::decode`]).
    fn from_jpeg(
        bytes: &[u8],
        reduction: impl Fn(usize, usize) -> usize,
    ) -> Result<Self, image::ImageError> {
        let (width, height, data) = crate::jpeg::decode(bytes, reduction).map_err(jpeg_error)?;
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Decodes encoded bytes as `options` say (draft scale, EXIF orientation).
    pub fn decode_with(bytes: &[u8], options: &DecodeOptions) -> Result<Self, image::ImageError> {
        check_pixels(bytes, options.max_pixels)?;
        let img = match options.reduction {
            Some(r) => Self::decode_draft(bytes, r)?,
            None => Self::decode(bytes)?,
        };
        Ok(match options.exif_orientation {
            ExifOrientation::Apply => match crate::jpeg::exif_orientation(bytes) {
                Some(o) => img.apply_orientation(o),
                None => img,
            },
            ExifOrientation::Ignore => img,
        })
    }

    /// Decodes an image file as `options` say; errors name the file.
    pub fn open_with_options(path: &Path, options: &DecodeOptions) -> Result<Self, DataError> {
        Self::open_with(path, |bytes| Self::decode_with(bytes, options))
    }

    /// Decodes encoded bytes, converting every mode to RGB as PIL's
    /// `convert("RGB")`: alpha dropped (not composited), grey replicated, palette
    /// expanded; 16-bit grey clamped to 255 (PIL's `I;16` → `L`), 16-bit colour
    /// reduced to its high byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, image::ImageError> {
        if crate::jpeg::is_jpeg(bytes) {
            // libjpeg-turbo, as PIL: the pixels of `Image.open(p).convert("RGB")`.
            return Self::from_jpeg(bytes, |_, _| 1);
        }
        let img = image::load_from_memory(bytes)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(image::ImageError::Decoding(
                image::error::DecodingError::new(
                    image::error::ImageFormatHint::Unknown,
                    format!("the image has no pixels ({w}x{h})"),
                ),
            ));
        }
        let data = match img {
            DynamicImage::ImageLuma16(g) => g
                .into_raw()
                .into_iter()
                .flat_map(|v| [v.min(255) as u8; 3])
                .collect(),
            DynamicImage::ImageLumaA16(g) => g
                .into_raw()
                .chunks_exact(2)
                .flat_map(|p| [p[0].min(255) as u8; 3])
                .collect(),
            DynamicImage::ImageRgb16(c) => {
                c.into_raw().into_iter().map(|v| (v >> 8) as u8).collect()
            }
            DynamicImage::ImageRgba16(c) => c
                .into_raw()
                .chunks_exact(4)
                .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
                .collect(),
            other => other.into_rgb8().into_raw(),
        };
        Ok(Self {
            width: w,
            height: h,
            data,
        })
    }
}

/// A libjpeg-turbo failure as the `image` crate's decoding error.
fn jpeg_error(message: String) -> image::ImageError {
    image::ImageError::Decoding(image::error::DecodingError::new(
        image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
        message,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An image with more pixels than the limit is refused from its header,
    /// saying its size and the key that raises the limit; 0 lifts it.
    #[test]
    fn images_over_the_pixel_limit_are_refused_before_decoding() {
        let mut png = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut png),
            &[7u8; 20 * 30 * 3],
            20,
            30,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .unwrap();
        let limited = DecodeOptions {
            max_pixels: 599,
            ..DecodeOptions::default()
        };
        let e = RgbImage::decode_with(&png, &limited)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("20x30 is 600 pixels") && e.contains("data.loader.max_image_pixels"),
            "{e}"
        );
        for max in [600, 0, DEFAULT_MAX_IMAGE_PIXELS] {
            let ok = DecodeOptions {
                max_pixels: max,
                ..DecodeOptions::default()
            };
            assert_eq!(RgbImage::decode_with(&png, &ok).unwrap().width, 20);
        }
    }
}
