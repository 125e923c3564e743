//! `train-cli convert`: a dataset written as WebDataset shards, and the
//! `data.train` entry that reads them back.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::dataset::Dataset;
use crate::image::RgbImage;
use crate::resample::{Interpolation, resize};

/// How `convert` stores each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardImages {
    /// Images whose longer side exceeds this are scaled down to it (the aspect
    /// kept as PIL's `thumbnail` rounds it, bicubic with Pillow's antialiasing)
    /// and re-encoded as JPEG; the others are stored as they are.
    pub max_side: Option<usize>,
    /// The JPEG quality of re-encoded images.
    pub quality: u8,
}

impl Default for ShardImages {
    fn default() -> Self {
        Self {
            max_side: None,
            quality: 90,
        }
    }
}

/// The size PIL's `thumbnail((n, n))` gives a `width x height` image: the longer
/// side `n`, the other the rounding (down or up) that keeps the aspect ratio
/// closest; `None` when the image already fits.
pub fn thumbnail_size(width: usize, height: usize, n: usize) -> Option<(usize, usize)> {
    if width <= n && height <= n {
        return None;
    }
    let aspect = width as f64 / height as f64;
    // Of floor and ceil of `v` (at least 1), the one `err` finds closer.
    let round = |v: f64, err: &dyn Fn(f64) -> f64| -> usize {
        let (lo, hi) = (v.floor(), v.ceil());
        let pick = if err(hi) < err(lo) { hi } else { lo };
        (pick as usize).max(1)
    };
    let nf = n as f64;
    Some(if aspect <= 1.0 {
        // Taller than wide: the height is n.
        (round(nf * aspect, &|x| (aspect - x / nf).abs()), n)
    } else {
        (
            n,
            round(nf / aspect, &|y| {
                if y == 0.0 {
                    0.0
                } else {
                    (aspect - nf / y).abs()
                }
            }),
        )
    })
}

/// Item `i` of `data` as `images` says to store it: its bytes and extension.
fn stored(data: &Dataset, i: usize, images: &ShardImages) -> Result<(Vec<u8>, String), DataError> {
    let (bytes, ext) = data.encoded(i)?;
    let Some(n) = images.max_side else {
        return Ok((bytes, ext));
    };
    let img = RgbImage::decode(&bytes).map_err(|source| DataError::Decode {
        path: data.name(i).into(),
        source,
    })?;
    let Some((w, h)) = thumbnail_size(img.width, img.height, n) else {
        return Ok((bytes, ext));
    };
    let small = resize(&img, w, h, Interpolation::Bicubic);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, images.quality)
        .encode(
            &small.data,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| DataError::Encode {
            path: data.name(i).into(),
            source,
        })?;
    Ok((out, "jpg".into()))
}

/// [`write_webdataset_with`] storing every image as it is.
pub fn write_webdataset(
    data: &Dataset,
    dir: &std::path::Path,
    prefix: &str,
    shard_size: usize,
    shuffle: Option<u64>,
) -> Result<Vec<PathBuf>, DataError> {
    write_webdataset_with(
        data,
        dir,
        prefix,
        shard_size,
        shuffle,
        &ShardImages::default(),
    )
}

/// Writes `data` as WebDataset shards `dir/{prefix}-000000.tar`, ... of
/// `shard_size` samples: `NNNNNNNN.<ext>` (the image as stored, or downscaled as
/// `images` says), `NNNNNNNN.cls`
/// (its class index, when labelled) and `NNNNNNNN.txt` (its caption for
/// image-caption data, else its class name). Samples keep the
/// source's order, or are shuffled with `shuffle`'s seed (for readers that stream
/// shards in order). Each shard is written to a temporary name and renamed.
/// Returns the shards written.
pub fn write_webdataset_with(
    data: &Dataset,
    dir: &std::path::Path,
    prefix: &str,
    shard_size: usize,
    shuffle: Option<u64>,
    images: &ShardImages,
) -> Result<Vec<PathBuf>, DataError> {
    if shard_size == 0 {
        return Err(DataError::config("--shard-size", "must be at least 1"));
    }
    if images.max_side == Some(0) {
        return Err(DataError::config("--max-side", "must be at least 1"));
    }
    if !(1..=100).contains(&images.quality) {
        return Err(DataError::config(
            "--quality",
            format!("must be in 1..=100, got {}", images.quality),
        ));
    }
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let order: Vec<usize> = match shuffle {
        Some(seed) => crate::SampleRng::new(seed, 0, u64::MAX).permutation(data.len()),
        None => (0..data.len()).collect(),
    };
    let mut written = Vec::new();
    for (s, chunk) in order.chunks(shard_size).enumerate() {
        let path = dir.join(format!("{prefix}-{s:06}.tar"));
        let tmp = dir.join(format!(".{prefix}-{s:06}.tar.tmp"));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        for &i in chunk {
            let (bytes, ext) = stored(data, i, images)?;
            let label = data.label(i);
            let mut members = vec![(ext, bytes)];
            if data.has_labels() {
                members.push(("cls".to_string(), label.to_string().into_bytes()));
            }
            // `.txt`: the caption (open_clip's shards), else the class name.
            let text = match data.caption(i) {
                Some(c) => Some(c.to_string()),
                None => data.classes().get(label).cloned(),
            };
            if let Some(t) = text {
                members.push(("txt".to_string(), t.into_bytes()));
            }
            for (ext, bytes) in members {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_cksum();
                builder
                    .append_data(&mut header, format!("{i:08}.{ext}"), bytes.as_slice())
                    .map_err(io(&tmp))?;
            }
        }
        builder
            .into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The `data.train = ...` entry (a TOML inline table) that reads the shards
/// [`write_webdataset`] wrote for `data` into `dir` as `prefix-NNNNNN.tar`: a
/// brace range over them (one shard: its name), `data`'s class names when it has
/// labels, `caption_extension = "txt"` when it has captions.
pub fn webdataset_entry(data: &Dataset, dir: &Path, prefix: &str, shards: usize) -> String {
    let last = shards.saturating_sub(1);
    let pattern = if last == 0 {
        dir.join(format!("{prefix}-000000.tar"))
    } else {
        dir.join(format!("{prefix}-{{000000..{last:06}}}.tar"))
    };
    // JSON strings (and arrays of them) are TOML basic strings.
    let mut entry = format!(
        "{{ kind = \"webdataset\", path = {}",
        serde_json::Value::from(pattern.display().to_string())
    );
    if data.has_labels() {
        entry.push_str(&format!(
            ", class_names = {}",
            serde_json::Value::from(data.classes().to_vec())
        ));
    }
    if data.has_captions() {
        entry.push_str(", caption_extension = \"txt\"");
    }
    entry.push_str(" }");
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PIL's `thumbnail((n, n))` sizes (Pillow 13.0.0).
    #[test]
    fn thumbnail_sizes_are_pils() {
        for (w, h, n, want) in [
            (640, 427, 256, Some((256, 171))),
            (427, 640, 256, Some((171, 256))),
            (3840, 2563, 384, Some((384, 256))),
            (1000, 3, 100, Some((100, 1))),
            (200, 200, 64, Some((64, 64))),
            (100, 80, 256, None),
            (256, 100, 256, None),
        ] {
            assert_eq!(thumbnail_size(w, h, n), want, "{w}x{h} to {n}");
        }
    }
}
