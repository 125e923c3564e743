//! Evaluation: loss, top-1, top-5, per-class accuracy and the confusion matrix.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use std::path::PathBuf;

use clip_data::{
    Batch, DeviceBatch, DeviceBatches, Loader, Pipeline, Replaced, RgbImage, SampleRng,
};
use clip_model::{ClipClassifier, Pass};

use crate::artifacts::Placement;
use crate::config::Metric;
use crate::error::{Result, TrainError};
use crate::precision::Precision;

/// The metrics of one pass over a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy (without label smoothing).
    pub loss: f64,
    pub accuracy: f64,
    pub top5: f64,
    pub images: usize,
    pub class_names: Vec<String>,
    /// Accuracy of each class = its recall (`null` for a class without images).
    pub per_class: Vec<Option<f64>>,
    /// Precision of each class: right among the images predicted as it (`null`
    /// for a class that is neither present nor predicted; 0 for one present but
    /// never predicted).
    #[serde(default)]
    pub per_class_precision: Vec<Option<f64>>,
    /// F1 of each class (harmonic mean of its precision and recall; 0 where both
    /// are 0).
    #[serde(default)]
    pub per_class_f1: Vec<Option<f64>>,
    /// Unweighted means over the classes present or predicted, as scikit-learn's
    /// `average="macro"` (with `zero_division=0`).
    #[serde(default)]
    pub macro_precision: f64,
    #[serde(default)]
    pub macro_recall: f64,
    #[serde(default)]
    pub macro_f1: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

impl EvalReport {
    pub fn metric(&self, m: Metric) -> f64 {
        match m {
            Metric::Accuracy => self.accuracy,
            Metric::Top5 => self.top5,
            Metric::Loss => self.loss,
        }
    }
}

/// One image's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub path: String,
    pub label: i64,
    pub pred: i64,
    pub logits: Vec<f32>,
}

/// Evaluates `model` on every batch of `loader` (epoch 0, in order); `on_batch`
/// sees each batch with its fp32 logits (for prediction files).
pub fn evaluate(
    model: &ClipClassifier,
    loader: &Loader,
    precision: Precision,
    device: Device,
    on_batch: impl FnMut(&Batch, &Tensor) -> Result<()>,
) -> Result<EvalReport> {
    Ok(
        EvalCounts::collect(model, loader, precision, device, on_batch)?
            .report(model.class_names()),
    )
}

/// The sums an [`EvalReport`] is made of: exact counts that add over the shards
/// of a data-parallel evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalCounts {
    /// Sum of the per-image cross-entropies.
    pub loss_sum: f64,
    pub top5: u64,
    pub images: u64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    /// Unreadable images the loader replaced (`on_corrupt = "skip"`).
    pub replaced: Vec<Replaced>,
}

impl EvalCounts {
    /// Counts over every batch of `loader` (epoch 0, in order; a sharded loader's
    /// placeholders are skipped).
    pub fn collect(
        model: &ClipClassifier,
        loader: &Loader,
        precision: Precision,
        device: Device,
        mut on_batch: impl FnMut(&Batch, &Tensor) -> Result<()>,
    ) -> Result<Self> {
        let classes = model.class_names().len();
        let mut c = Self {
            loss_sum: 0.0,
            top5: 0,
            images: 0,
            confusion: vec![vec![0u64; classes]; classes],
            replaced: Vec::new(),
        };
        let mut batches = DeviceBatches::new(loader.epoch(0, 0), device);
        while let Some(b) = batches.next() {
            let DeviceBatch {
                batch,
                images: x,
                labels: y,
            } = b?;
            if batch.placeholder {
                continue;
            }
            let logits =
                tch::no_grad(|| precision.autocast(device, || model.forward(&x, Pass::eval())))??
                    .to_kind(Kind::Float);
            // The next batch goes up while the device computes this one.
            batches.prefetch();
            if !bool::try_from(logits.isfinite().all())? {
                // NaN weights would otherwise "predict" class 0 everywhere and score
                // that class's share as accuracy.
                return Err(TrainError::NonFiniteOutput {
                    image: loader.dataset().name(batch.indices[0]),
                });
            }
            let loss =
                logits.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0)?;
            c.loss_sum += loss.double_value(&[]);
            let k = classes.min(5) as i64;
            let (_, topk) = logits.topk(k, -1, true, true);
            let hit5 = topk.eq_tensor(&y.unsqueeze(-1)).any_dim(-1, false);
            c.top5 += hit5.sum(Kind::Int64).int64_value(&[]) as u64;
            let pred: Vec<i64> = Vec::try_from(logits.argmax(-1, false))?;
            for (&t, &p) in batch.labels.iter().zip(&pred) {
                c.confusion[t as usize][p as usize] += 1;
            }
            c.images += batch.len() as u64;
            c.replaced.extend(batch.replaced.iter().cloned());
            on_batch(&batch, &logits)?;
        }
        Ok(c)
    }

    /// Replaces the counts with their sums over the ranks (`sum` sums a vector of
    /// f64 in place: exact for counts below 2^53).
    pub fn sum_over(&mut self, sum: impl FnOnce(&mut [f64]) -> Result<()>) -> Result<()> {
        let mut v = vec![self.loss_sum, self.top5 as f64, self.images as f64];
        v.extend(self.confusion.iter().flatten().map(|&x| x as f64));
        sum(&mut v)?;
        self.loss_sum = v[0];
        self.top5 = v[1] as u64;
        self.images = v[2] as u64;
        for (dst, &src) in self.confusion.iter_mut().flatten().zip(&v[3..]) {
            *dst = src as u64;
        }
        Ok(())
    }

    pub fn report(&self, class_names: &[String]) -> EvalReport {
        let classes = self.confusion.len();
        let correct: u64 = (0..classes).map(|i| self.confusion[i][i]).sum();
        let per_class = self
            .confusion
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let total: u64 = row.iter().sum();
                (total > 0).then(|| row[i] as f64 / total as f64)
            })
            .collect();
        let denom = self.images.max(1) as f64;
        let (precision, recall, f1) = per_class_prf(&self.confusion);
        let counted: Vec<usize> = (0..classes).filter(|&i| precision[i].is_some()).collect();
        let mean = |v: &[Option<f64>]| {
            counted.iter().map(|&i| v[i].unwrap_or(0.0)).sum::<f64>() / counted.len().max(1) as f64
        };
        EvalReport {
            loss: self.loss_sum / denom,
            accuracy: correct as f64 / denom,
            top5: self.top5 as f64 / denom,
            images: self.images as usize,
            class_names: class_names.to_vec(),
            macro_precision: mean(&precision),
            macro_recall: mean(&recall),
            macro_f1: mean(&f1),
            per_class,
            per_class_precision: precision,
            per_class_f1: f1,
            confusion: self.confusion.clone(),
        }
    }
}

/// A figure per class (`None` where it does not apply).
type PerClass = Vec<Option<f64>>;

/// Each class's precision, recall and F1 from `confusion[true][predicted]`: `None`
/// for a class neither present nor predicted, 0 for a ratio with nothing to
/// divide by (scikit-learn's `zero_division=0`).
fn per_class_prf(confusion: &[Vec<u64>]) -> (PerClass, PerClass, PerClass) {
    let n = confusion.len();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (mut p, mut r, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let tp = confusion[i][i];
        let support: u64 = confusion[i].iter().sum();
        let predicted: u64 = confusion.iter().map(|row| row[i]).sum();
        if support == 0 && predicted == 0 {
            p.push(None);
            r.push(None);
            f.push(None);
            continue;
        }
        let (pi, ri) = (ratio(tp, predicted), ratio(tp, support));
        p.push(Some(pi));
        r.push(Some(ri));
        f.push(Some(if pi + ri > 0.0 {
            2.0 * pi * ri / (pi + ri)
        } else {
            0.0
        }));
    }
    (p, r, f)
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

/// Top-`k` classes of each image, in batches of `batch_size`; an image that
/// cannot be read or decoded gets its error instead (the others are classified).
pub fn predict_images(
    model: &ClipClassifier,
    pipeline: &Pipeline,
    images: &[PathBuf],
    k: usize,
    placement: Placement,
    batch_size: usize,
) -> Result<Vec<(PathBuf, ImagePrediction)>> {
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
            match RgbImage::open(path)
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
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Precision, recall and F1 per class and their macro means, as scikit-learn's
    /// `precision_recall_fscore_support(average="macro", zero_division=0)` counts
    /// them: over the classes present or predicted (class 2 is neither; class 3 is
    /// predicted once, never present).
    #[test]
    fn precision_recall_and_f1_per_class_and_macro() {
        let counts = EvalCounts {
            loss_sum: 0.0,
            top5: 0,
            images: 8,
            confusion: vec![
                vec![3, 1, 0, 0],
                vec![1, 2, 0, 1],
                vec![0, 0, 0, 0],
                vec![0, 0, 0, 0],
            ],
            replaced: Vec::new(),
        };
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let r = counts.report(&names);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let p = [Some(0.75), Some(2.0 / 3.0), None, Some(0.0)];
        let f = [Some(0.75), Some(4.0 / 7.0), None, Some(0.0)];
        for i in 0..4 {
            assert_eq!(r.per_class_precision[i].is_some(), p[i].is_some(), "{i}");
            assert!(close(
                r.per_class_precision[i].unwrap_or(0.0),
                p[i].unwrap_or(0.0)
            ));
            assert!(close(r.per_class_f1[i].unwrap_or(0.0), f[i].unwrap_or(0.0)));
        }
        assert_eq!(r.per_class, vec![Some(0.75), Some(0.5), None, None]);
        assert!(
            close(r.macro_precision, (0.75 + 2.0 / 3.0) / 3.0),
            "{}",
            r.macro_precision
        );
        assert!(
            close(r.macro_recall, (0.75 + 0.5) / 3.0),
            "{}",
            r.macro_recall
        );
        assert!(
            close(r.macro_f1, (0.75 + 4.0 / 7.0) / 3.0),
            "{}",
            r.macro_f1
        );
        assert!(close(r.accuracy, 5.0 / 8.0));
    }
}
