//! Evaluation: loss, top-1, top-5, per-class accuracy, precision, recall and F1,
//! the confusion matrix, and retrieval on image-caption data ([`retrieval`]),
//! as exact counts that add over data-parallel shards.

pub(crate) mod retrieval;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use clip_data::{Batch, DeviceBatch, DeviceBatches, Loader, Replaced};
use clip_model::{ClipClassifier, ClipTokenizer, Pass};

use crate::config::{Metric, MetricChoice};
use crate::error::{Result, TrainError};
use crate::precision::Precision;

pub use retrieval::{Embeddings, RankMetrics, Retrieval};

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
    /// Image <-> text retrieval over the images' captions (image-caption data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<Retrieval>,
    /// The same model on each of `data.eval_sets`, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_sets: std::collections::BTreeMap<String, EvalReport>,
}

impl EvalReport {
    /// The figure `m` names: on this report, or on one of its eval sets (NaN
    /// when that set was not measured).
    pub fn metric(&self, m: &MetricChoice) -> f64 {
        match &m.set {
            Some(set) => self
                .eval_sets
                .get(set)
                .map_or(f64::NAN, |r| r.figure(m.kind)),
            None => self.figure(m.kind),
        }
    }

    fn figure(&self, m: Metric) -> f64 {
        match m {
            Metric::Accuracy => self.accuracy,
            Metric::Top5 => self.top5,
            Metric::Loss => self.loss,
            // Checked when the run is built: its validation data has captions.
            Metric::MeanRecall => self.retrieval.as_ref().map_or(f64::NAN, |r| r.mean_recall),
        }
    }
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
    EvalCounts::collect(model, loader, precision, device, None, on_batch)?
        .report(model.class_names())
}

/// The data at `path` (see [`clip_data::SourceConfig::from_path`]; errors name
/// `--data`) labelled with `classes`, matched by name (any order, a subset).
/// Data without a single image is an error (an evaluation of nothing would
/// report an accuracy of 0).
pub fn data_for(path: &std::path::Path, classes: &[String]) -> Result<clip_data::Dataset> {
    let src = clip_data::SourceConfig::from_path(path, "--data")?;
    let ds = clip_data::Dataset::load(&src, "--data")?.with_classes(classes, "--data")?;
    if ds.is_empty() {
        return Err(TrainError::config(
            "--data",
            format!(
                "{} holds no images to evaluate ({})",
                path.display(),
                ds.summary()
            ),
        ));
    }
    Ok(ds)
}

/// `model` on every image of `data` in batches of `batch_size` (turned by their
/// EXIF orientation when `exif_orientation` says so), preprocessed by
/// `pipeline`, on `device` in `precision`; image <-> text retrieval too when the
/// data has captions and a `tokenizer` is given. `on_batch` sees each batch with
/// its fp32 logits (for per-image predictions).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_data(
    model: &ClipClassifier,
    pipeline: clip_data::Pipeline,
    data: clip_data::Dataset,
    tokenizer: Option<&ClipTokenizer>,
    batch_size: usize,
    exif_orientation: clip_data::ExifOrientation,
    precision: Precision,
    device: Device,
    on_batch: impl FnMut(&Loader, &Batch, &Tensor) -> Result<()>,
) -> Result<EvalReport> {
    let mut on_batch = on_batch;
    let loader = crate::assembly::ordered_loader(
        &clip_data::LoaderConfig {
            exif_orientation,
            ..clip_data::LoaderConfig::default()
        },
        data,
        pipeline,
        batch_size,
        0,
    )?;
    EvalCounts::collect(model, &loader, precision, device, tokenizer, |b, logits| {
        on_batch(&loader, b, logits)
    })?
    .report(model.class_names())
}

/// The sums an [`EvalReport`] is made of: exact counts that add over the shards
/// of a data-parallel evaluation.
#[derive(Debug)]
pub struct EvalCounts {
    /// Sum of the per-image cross-entropies.
    pub loss_sum: f64,
    pub top5: u64,
    pub images: u64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    /// Unreadable images the loader replaced (`on_corrupt = "skip"`).
    pub replaced: Vec<Replaced>,
    /// For retrieval, when the data has captions and a tokenizer was given.
    pub embeddings: Option<Embeddings>,
}

impl EvalCounts {
    /// Counts over every batch of `loader` (epoch 0, in order; a sharded loader's
    /// placeholders are skipped). With `captions` (a tokenizer) and data that
    /// has captions, also the embeddings that image <-> text retrieval ranks.
    pub fn collect(
        model: &ClipClassifier,
        loader: &Loader,
        precision: Precision,
        device: Device,
        captions: Option<&ClipTokenizer>,
        mut on_batch: impl FnMut(&Batch, &Tensor) -> Result<()>,
    ) -> Result<Self> {
        let classes = model.class_names().len();
        let data = loader.dataset();
        let retrieval = captions.filter(|_| data.has_captions());
        let embeddings = retrieval.map(|_| Embeddings::zeros(model, data));
        let mut c = Self {
            loss_sum: 0.0,
            top5: 0,
            images: 0,
            confusion: vec![vec![0u64; classes]; classes],
            replaced: Vec::new(),
            embeddings,
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
            let (logits, image_embeds) = tch::no_grad(|| {
                precision.autocast(device, || model.forward_with_embeds(&x, Pass::eval()))
            })??;
            let logits = logits.to_kind(Kind::Float);
            if let (Some(tok), Some(e)) = (retrieval, c.embeddings.as_mut()) {
                e.add(model, data, &batch, image_embeds, tok, precision, device)?;
            }
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
    /// The embeddings are summed too ([`Embeddings::sum_over`]).
    pub fn sum_over(&mut self, mut sum: impl FnMut(&mut [f64]) -> Result<()>) -> Result<()> {
        let mut v = vec![self.loss_sum, self.top5 as f64, self.images as f64];
        v.extend(self.confusion.iter().flatten().map(|&x| x as f64));
        sum(&mut v)?;
        self.loss_sum = v[0];
        self.top5 = v[1] as u64;
        self.images = v[2] as u64;
        for (dst, &src) in self.confusion.iter_mut().flatten().zip(&v[3..]) {
            *dst = src as u64;
        }
        if let Some(e) = &mut self.embeddings {
            e.sum_over(sum)?;
        }
        Ok(())
    }

    pub fn report(&self, class_names: &[String]) -> Result<EvalReport> {
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
        Ok(EvalReport {
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
            retrieval: self
                .embeddings
                .as_ref()
                .map(Embeddings::retrieval)
                .transpose()?,
            eval_sets: Default::default(),
        })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
            embeddings: None,
        };
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let r = counts.report(&names).unwrap();
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
