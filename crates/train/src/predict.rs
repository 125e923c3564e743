//! Per-image predictions: the rows of `eval --output` and `predict`'s top
//! classes of image files.

use std::path::PathBuf;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use clip_data::{Batch, DecodeOptions, ExifOrientation, Loader, Pipeline, RgbImage, SampleRng};
use clip_model::{ClipClassifier, Pass};

use crate::device::Placement;
use crate::error::Result;

/// One image's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The file (characters that are not UTF-8 replaced).
    pub path: String,
    /// The path's raw bytes when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub label: i64,
    pub pred: i64,
    pub logits: Vec<f32>,
}

/// Per-image predictions of a batch.
pub fn predictions(loader: &Loader, batch: &Batch, logits: &Tensor) -> Result<Vec<Prediction>> {
    let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(logits.to_kind(Kind::Float))?;
    Ok(batch
        .indices
        .iter()
        .zip(&batch.labels)
        .zip(rows)
        .map(|((&i, &label), logits)| {
            let pred = logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                )
                .0 as i64;
            Prediction {
                path: loader.dataset().name(i),
                path_bytes: loader.dataset().name_bytes(i),
                label,
                pred,
                logits,
            }
        })
        .collect())
}

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub label: String,
    pub probability: f32,
}

/// An image's top classes, or why it could not be classified.
pub type ImagePrediction = std::result::Result<Vec<Scored>, String>;

/// Top-`k` classes of each image, in batches of `batch_size`, each turned by its
/// EXIF orientation when `exif_orientation` says so; an image that cannot be
/// read or decoded gets its error instead (the others are classified).
/// `on_batch` hears how many images each batch held (progress).
#[allow(clippy::too_many_arguments)]
pub fn predict_images(
    model: &ClipClassifier,
    pipeline: &Pipeline,
    images: &[PathBuf],
    k: usize,
    placement: Placement,
    batch_size: usize,
    exif_orientation: ExifOrientation,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<(PathBuf, ImagePrediction)>> {
    let decode = DecodeOptions {
        exif_orientation,
        ..DecodeOptions::default()
    };
    let size = model.clip.config().vision_config.image_size as usize;
    let k = k.clamp(1, model.class_names().len());
    let per = 3 * size * size;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let mut buf = vec![0f32; chunk.len() * per];
        let mut failed: Vec<Option<String>> = vec![None; chunk.len()];
        let mut n = 0;
        for (path, why) in chunk.iter().zip(failed.iter_mut()) {
            let dst = &mut buf[n * per..(n + 1) * per];
            match RgbImage::open_with_options(path, &decode)
                .and_then(|img| pipeline.apply_into(img, &mut SampleRng::new(0, 0, 0), dst))
            {
                Ok(_) => n += 1,
                Err(e) => *why = Some(e.to_string()),
            }
        }
        let (p, i) = if n == 0 {
            (Vec::new(), Vec::new())
        } else {
            let x = Tensor::from_slice(&buf[..n * per])
                .view([n as i64, 3, size as i64, size as i64])
                .to_device(placement.device);
            let logits = tch::no_grad(|| {
                placement
                    .precision
                    .autocast(placement.device, || model.forward(&x, Pass::eval()))
            })??;
            let probs = logits.to_kind(Kind::Float).softmax(-1, Kind::Float);
            let (p, i) = probs.topk(k as i64, -1, true, true);
            let p: Vec<f32> = Vec::try_from(p.to_device(Device::Cpu).view([-1]))?;
            let i: Vec<i64> = Vec::try_from(i.to_device(Device::Cpu).view([-1]))?;
            (p, i)
        };
        let mut row = 0;
        for (path, why) in chunk.iter().zip(failed) {
            if let Some(why) = why {
                out.push((path.clone(), Err(why)));
                continue;
            }
            let top = (row * k..(row + 1) * k)
                .map(|j| Scored {
                    label: model.class_names()[i[j] as usize].clone(),
                    probability: p[j],
                })
                .collect();
            out.push((path.clone(), Ok(top)));
            row += 1;
        }
        on_batch(chunk.len());
    }
    Ok(out)
}
