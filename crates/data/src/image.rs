//! Decoding to 8-bit RGB, as PIL's `Image.open(path).convert("RGB")` does.

use std::path::Path;

use image::DynamicImage;

use crate::DataError;

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

    /// Decodes an image file (JPEG, PNG, WebP, BMP, GIF's first frame).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        Self::open_with(path, Self::decode)
    }

    /// Decodes an image file; a JPEG at the DCT reduction (1/4 or 1/8) that
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

    /// A JPEG decoded at reduced scale through the scaled inverse DCT (what PIL's
    /// `Image.draft` does with libjpeg): 1/4 or 1/8 of each side, the larger of
    /// those not above `reduction(width, height)` (the full size's); below 4 it
    /// decodes exactly as [`RgbImage::decode`] (at 1/2 this decoder's slower
    /// entropy decoding ate the saving: docs/BENCHMARKS.md). 2.4x less time for
    /// 10-megapixel photos; the pixels differ from decoding in full and resizing
    /// (docs/BENCHMARKS.md). Other formats decode in full.
    pub fn decode_draft(
        bytes: &[u8],
        reduction: impl Fn(usize, usize) -> usize,
    ) -> Result<Self, image::ImageError> {
        if !bytes.starts_with(&[0xFF, 0xD8]) {
            return Self::decode(bytes);
        }
        let bad = |e: jpeg_decoder::Error| {
            image::ImageError::Decoding(image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                e,
            ))
        };
        let mut d = jpeg_decoder::Decoder::new(bytes);
        d.read_info().map_err(bad)?;
        let Some(info) = d.info() else {
            return Self::decode(bytes);
        };
        let (w, h) = (usize::from(info.width), usize::from(info.height));
        let allowed = reduction(w, h);
        let k = [8usize, 4].into_iter().find(|&k| k <= allowed).unwrap_or(1);
        if k == 1 || w == 0 || h == 0 {
            return Self::decode(bytes);
        }
        // The decoder picks the smallest scale giving at least this size.
        let (sw, sh) = d
            .scale(w.div_ceil(k) as u16, h.div_ceil(k) as u16)
            .map_err(bad)?;
        let pixels = d.decode().map_err(bad)?;
        let Some(info) = d.info() else {
            return Self::decode(bytes);
        };
        let (sw, sh) = (usize::from(sw), usize::from(sh));
        let data = match info.pixel_format {
            jpeg_decoder::PixelFormat::RGB24 => pixels,
            jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&g| [g; 3]).collect(),
            // 16-bit and CMYK JPEGs are rare: decoded in full, as the exact path does.
            _ => return Self::decode(bytes),
        };
        if data.len() != sw * sh * 3 {
            return Self::decode(bytes);
        }
        Ok(Self {
            width: sw,
            height: sh,
            data,
        })
    }

    /// Decodes encoded bytes, converting every mode to RGB as PIL's
    /// `convert("RGB")`: alpha dropped (not composited), grey replicated, palette
    /// expanded; 16-bit grey clamped to 255 (PIL's `I;16` → `L`), 16-bit colour
    /// reduced to its high byte.
    pub fn decode(bytes: &[u8]) -> Result<Self, image::ImageError> {
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
