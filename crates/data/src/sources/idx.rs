//! The MNIST family's IDX files (gzipped or not): an images file
//! `[n, rows, cols]` of grey bytes and a labels file `[n]`; class names default to
//! `"0"`, `"1"`, ...

use std::io::Read;
use std::path::Path;

use super::{Place, Source, Storage, file_place, io};
use crate::DataError;
use crate::image::{DecodeOptions, RgbImage};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Grey images, `count x rows x cols`, held in memory.
#[derive(Debug)]
struct Idx {
    /// The images file's device and inode.
    file: String,
    pixels: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Storage for Idx {
    fn name(&self, k: usize) -> String {
        format!("idx:{k}")
    }

    fn len(&self) -> usize {
        self.pixels.len() / (self.rows * self.cols).max(1)
    }

    fn places(&self) -> Vec<Place> {
        let size = (self.rows * self.cols) as u64;
        (0..self.len())
            .map(|k| Place {
                at: format!("{}#{k}", self.file),
                size: Some(size),
            })
            .collect()
    }

    /// The hash of the grey pixels (the images are in memory).
    fn content_hash(&self, k: usize) -> Result<u64, DataError> {
        let n = self.rows * self.cols;
        Ok(crate::hash::hash_bytes(&self.pixels[k * n..(k + 1) * n]))
    }

    /// The grey image (IDX files carry no orientation or JPEG to draft).
    fn image(&self, k: usize, _options: &DecodeOptions) -> Result<RgbImage, DataError> {
        let n = self.rows * self.cols;
        let grey = &self.pixels[k * n..(k + 1) * n];
        Ok(RgbImage {
            width: self.cols,
            height: self.rows,
            data: grey.iter().flat_map(|&g| [g; 3]).collect(),
        })
    }

    /// The image encoded as PNG.
    fn encoded(&self, k: usize) -> Result<(Vec<u8>, String), DataError> {
        let img = self.image(k, &DecodeOptions::default())?;
        let mut bytes = Vec::new();
        image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
            .ok_or_else(|| DataError::config("data", "an IDX image of the wrong size"))?
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|source| DataError::Encode {
                path: self.name(k).into(),
                source,
            })?;
        Ok((bytes, "png".into()))
    }
}

/// Reads the images and labels files; errors name `key`'s fields.
pub(crate) fn read(
    images: &Path,
    labels: &Path,
    class_names: Option<Vec<String>>,
    key: &str,
) -> Result<Source, DataError> {
    let (dims, pixels) = read_idx(images)?;
    let (ldims, label_bytes) = read_idx(labels)?;
    if dims.len() != 3 || ldims.len() != 1 || dims[0] != ldims[0] || dims[1..].contains(&0) {
        return Err(DataError::config(
            key,
            format!(
                "IDX files do not match: {} has dims {dims:?}, {} has {ldims:?} (expected [n, rows, cols] and [n], rows and cols at least 1)",
                images.display(),
                labels.display()
            ),
        ));
    }
    let labels: Vec<usize> = label_bytes.iter().map(|&l| l as usize).collect();
    let n_classes = labels.iter().max().map_or(0, |m| m + 1);
    let classes = match class_names {
        Some(names) if names.len() >= n_classes => names,
        Some(names) => {
            return Err(DataError::config(
                format!("{key}.class_names"),
                format!("{} names for labels up to {}", names.len(), n_classes - 1),
            ));
        }
        None => (0..n_classes).map(|i| i.to_string()).collect(),
    };
    Ok(Source {
        storage: Box::new(Idx {
            file: file_place(images).0,
            pixels,
            rows: dims[1],
            cols: dims[2],
        }),
        classes,
        labels,
        captions: None,
        skipped: Vec::new(),
    })
}

/// Reads an IDX file of unsigned bytes (gzipped when it starts with gzip's magic).
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let raw = std::fs::read(path).map_err(io(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io(path))?;
        out
    } else {
        raw
    };
    let bad = |reason: String| DataError::config(path.display().to_string(), reason);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("its header's dimensions {dims:?} overflow")))?;
    if bytes.len() - header != n {
        return Err(bad(format!(
            "holds {} data bytes, its header says {n}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..].to_vec()))
}
