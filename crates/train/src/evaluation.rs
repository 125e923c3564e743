//! Evaluation: loss, top-1, top-5, per-class accuracy and the confusion matrix.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use std::collections::HashMap;
use std::path::PathBuf;

use clip_data::{
    Batch, DeviceBatch, DeviceBatches, Loader, Pipeline, Replaced, RgbImage, SampleRng,
};
use clip_model::{ClipClassifier, ClipTokenizer, Pass, l2_normalize};

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
    /// Image <-> text retrieval over the images' captions (image-caption data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<Retrieval>,
}

impl EvalReport {
    pub fn metric(&self, m: Metric) -> f64 {
        match m {
            Metric::Accuracy => self.accuracy,
            Metric::Top5 => self.top5,
            Metric::Loss => self.loss,
            // Checked when the run is built: its validation data has captions.
            Metric::MeanRecall => self.retrieval.as_ref().map_or(f64::NAN, |r| r.mean_recall),
        }
    }
}

/// One direction of retrieval, as open_clip reports it: recall at 1, 5 and 10
/// (the share of queries whose own match is among the first k results) and the
/// mean and median rank of the match (1 = first).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankMetrics {
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    pub mean_rank: f64,
    /// `floor(median(rank - 1)) + 1`, as open_clip computes it.
    pub median_rank: f64,
}

impl RankMetrics {
    /// From each query's 0-based rank of its match.
    fn of(ranks: &[i64]) -> Self {
        let n = ranks.len().max(1) as f64;
        let share = |k: i64| ranks.iter().filter(|&&r| r < k).count() as f64 / n;
        let mut sorted = ranks.to_vec();
        sorted.sort_unstable();
        let m = sorted.len();
        let median = match m {
            0 => 0.0,
            _ if m % 2 == 1 => sorted[m / 2] as f64,
            _ => (sorted[m / 2 - 1] + sorted[m / 2]) as f64 / 2.0,
        };
        Self {
            r1: share(1),
            r5: share(5),
            r10: share(10),
            mean_rank: ranks.iter().sum::<i64>() as f64 / n + 1.0,
            median_rank: median.floor() + 1.0,
        }
    }
}

/// Image <-> text retrieval on images with one or more captions each: every
/// image ranks all the captions by cosine similarity, every caption all the
/// images. A caption's match is its image; an image's is the best-ranked of its
/// captions (as clip_benchmark's COCO / Flickr30k retrieval: a hit at k when any
/// of them is among the first k). With one caption per image this is open_clip's
/// `get_clip_metrics`. A tie with the match counts for the match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    pub image_to_text: RankMetrics,
    pub text_to_image: RankMetrics,
    /// The mean of the six recalls (`train.early_stopping.metric = "mean_recall"`).
    pub mean_recall: f64,
    /// Distinct images (the image -> text queries).
    #[serde(default)]
    pub images: usize,
    /// Captions (the text -> image queries).
    #[serde(default)]
    pub captions: usize,
}

impl Retrieval {
    /// From L2-normalised embeddings of `m` images and `n` captions, caption `j`
    /// describing image `image_of[j]` (`0..m`, every image at least once).
    pub fn of(image: &Tensor, text: &Tensor, image_of: &[usize]) -> Result<Self> {
        let (m, n) = (image.size()[0], text.size()[0]);
        let mut described = vec![false; m as usize];
        let mut in_range = true;
        for &i in image_of {
            match described.get_mut(i) {
                Some(d) => *d = true,
                None => in_range = false,
            }
        }
        if !in_range || image_of.len() as i64 != n || described.contains(&false) {
            return Err(TrainError::config(
                "retrieval",
                format!(
                    "{n} captions of {m} images need one image index in 0..{m} per caption \
                     and at least one caption per image (got {} indices)",
                    image_of.len()
                ),
            ));
        }
        let (image, text) = (image.to_kind(Kind::Float), text.to_kind(Kind::Float));
        let owner = Tensor::from_slice(&image_of.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .to_device(image.device());
        // Each query's 0-based rank of its match: the keys scoring above it.
        // `matched(sims, start, len)` gives the match's score for a chunk of
        // queries (a similarity matrix of 1,024 rows at a time).
        let ranks = |queries: &Tensor,
                     keys: &Tensor,
                     matched: &dyn Fn(&Tensor, i64, i64) -> Tensor|
         -> Result<Vec<i64>> {
            let q = queries.size()[0];
            let mut out = Vec::with_capacity(q as usize);
            for start in (0..q).step_by(1024) {
                let len = (q - start).min(1024);
                let sims = queries.narrow(0, start, len).f_matmul(&keys.tr())?;
                let better = sims.gt_tensor(&matched(&sims, start, len)).sum_dim_intlist(
                    1,
                    false,
                    Kind::Int64,
                );
                out.extend(Vec::<i64>::try_from(better)?);
            }
            Ok(out)
        };
        // An image's best-scoring caption of its own.
        let i2t = ranks(&image, &text, &|sims, start, len| {
            let own = Tensor::arange_start(start, start + len, (Kind::Int64, sims.device()));
            let mine = owner.unsqueeze(0).eq_tensor(&own.unsqueeze(1));
            sims.masked_fill(&mine.logical_not(), f64::NEG_INFINITY)
                .amax(1, true)
        })?;
        // A caption's image.
        let t2i = ranks(&text, &image, &|sims, start, len| {
            sims.gather(1, &owner.narrow(0, start, len).unsqueeze(1), false)
        })?;
        let (i2t, t2i) = (RankMetrics::of(&i2t), RankMetrics::of(&t2i));
        let mean_recall = (i2t.r1 + i2t.r5 + i2t.r10 + t2i.r1 + t2i.r5 + t2i.r10) / 6.0;
        Ok(Self {
            image_to_text: i2t,
            text_to_image: t2i,
            mean_recall,
            images: m as usize,
            captions: n as usize,
        })
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
    EvalCounts::collect(model, loader, precision, device, None, on_batch)?
        .report(model.class_names())
}

/// The token ids, on `device`, of the captions of `data`'s items `indices`.
pub(crate) fn caption_ids(
    data: &clip_data::Dataset,
    indices: &[usize],
    tokenizer: &ClipTokenizer,
    device: Device,
) -> Result<Tensor> {
    let captions: Vec<&str> = indices
        .iter()
        .map(|&i| data.caption(i).unwrap_or_default())
        .collect();
    Ok(tokenizer.encode(&captions)?.to_device(device))
}

/// Image and caption embeddings of an image-caption evaluation set, L2-normalised:
/// row `i` is the dataset's item `i` (zero on the rows another rank embeds, until
/// [`Embeddings::sum_over`]).
#[derive(Debug)]
pub struct Embeddings {
    pub image: Tensor,
    pub text: Tensor,
    /// Items naming the same image file (COCO's five captions per image as
    /// five rows) are one image: each item's first item with its image.
    first_of: Vec<usize>,
}

impl Embeddings {
    fn zeros(model: &ClipClassifier, data: &clip_data::Dataset) -> Self {
        let rows = data.len();
        let dim = model.clip.config().projection_dim;
        let zeros = || Tensor::zeros([rows as i64, dim], (Kind::Float, Device::Cpu));
        let mut first = HashMap::new();
        let first_of = (0..rows)
            .map(|i| *first.entry(data.name(i)).or_insert(i))
            .collect();
        Self {
            image: zeros(),
            text: zeros(),
            first_of,
        }
    }

    /// Records `batch` of `data`: its images' embeddings `image` (from the
    /// caller's forward: `None` for a head without them) and its captions'.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        model: &ClipClassifier,
        data: &clip_data::Dataset,
        batch: &Batch,
        image: Option<Tensor>,
        tokenizer: &ClipTokenizer,
        precision: Precision,
        device: Device,
    ) -> Result<()> {
        let image = image.ok_or_else(|| {
            TrainError::config(
                "model.head.kind",
                "retrieval needs CLIP's image embeddings: the \"cosine\" head",
            )
        })?;
        let ids = caption_ids(data, &batch.indices, tokenizer, device)?;
        let text = tch::no_grad(|| precision.autocast(device, || model.clip.text_features(&ids)))??;
        let rows = Tensor::from_slice(&batch.indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let cpu = |t: &Tensor| t.to_kind(Kind::Float).to_device(Device::Cpu);
        self.image = self.image.index_copy(0, &rows, &cpu(&image));
        self.text = self.text.index_copy(0, &rows, &cpu(&l2_normalize(&text)));
        Ok(())
    }

    /// The embeddings of every image-caption pair of `loader` (epoch 0; a sharded
    /// loader's placeholders are skipped).
    pub fn collect(
        model: &ClipClassifier,
        loader: &Loader,
        precision: Precision,
        device: Device,
        tokenizer: &ClipTokenizer,
    ) -> Result<Self> {
        let data = loader.dataset();
        let mut e = Self::zeros(model, data);
        let mut batches = DeviceBatches::new(loader.epoch(0, 0), device);
        while let Some(b) = batches.next() {
            let b = b?;
            if b.batch.placeholder {
                continue;
            }
            let (_, image) = tch::no_grad(|| {
                precision.autocast(device, || {
                    model.forward_with_embeds(&b.images, Pass::eval())
                })
            })??;
            batches.prefetch();
            e.add(model, data, &b.batch, image, tokenizer, precision, device)?;
        }
        Ok(e)
    }

    /// Replaces the embeddings with their sums over the ranks (`sum` sums a
    /// vector in place; each row comes from the one rank that embedded it).
    pub fn sum_over(&mut self, sum: impl FnOnce(&mut [f64]) -> Result<()>) -> Result<()> {
        let mut v = Vec::<f64>::try_from(
            Tensor::cat(&[&self.image, &self.text], 0)
                .flatten(0, -1)
                .to_kind(Kind::Double),
        )?;
        sum(&mut v)?;
        let n = self.image.numel();
        let size = self.image.size();
        let back = |part: &[f64]| {
            Tensor::from_slice(part)
                .to_kind(Kind::Float)
                .view(size.as_slice())
        };
        self.image = back(&v[..n]);
        self.text = back(&v[n..]);
        Ok(())
    }

    /// Image <-> text retrieval over the pairs, the items of one image file one
    /// image with several captions.
    pub fn retrieval(&self) -> Result<Retrieval> {
        let mut image_of = Vec::with_capacity(self.first_of.len());
        let mut distinct = Vec::new();
        for (i, &first) in self.first_of.iter().enumerate() {
            if first == i {
                distinct.push(i as i64);
                image_of.push(distinct.len() - 1);
            } else {
                image_of.push(image_of[first]);
            }
        }
        let images = self.image.index_select(0, &Tensor::from_slice(&distinct));
        Retrieval::of(&images, &self.text, &image_of)
    }
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Recall at k as open_clip's `get_clip_metrics` computes it: each query's
    /// position in `argsort(similarities, descending)`, written out per query.
    fn argsort_recall(queries: &Tensor, keys: &Tensor, k: usize) -> f64 {
        let sims = Vec::<Vec<f32>>::try_from(queries.matmul(&keys.tr())).unwrap();
        let hits = sims
            .iter()
            .enumerate()
            .filter(|(i, row)| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                order.iter().position(|j| j == i).unwrap() < k
            })
            .count();
        hits as f64 / sims.len() as f64
    }

    #[test]
    fn retrieval_recall_ranks_each_pair_among_all() {
        // 3 pairs in 2-d: image 0's own caption ranks 2nd (caption 1 is nearer);
        // image 2 is as near caption 0 as its own (a tie counts for the match);
        // caption 0's own image ranks 3rd; the other pairs are each other's nearest.
        let image = Tensor::from_slice(&[1.0f32, 0.0, 0.8, 0.6, 0.0, 1.0]).view([3, 2]);
        let text = Tensor::from_slice(&[0.6f32, 0.8, 0.9, 0.436, -0.6, 0.8]).view([3, 2]);
        let r = Retrieval::of(&image, &text, &[0, 1, 2]).unwrap();
        assert_eq!(r.image_to_text.r1, 2.0 / 3.0);
        assert_eq!(r.text_to_image.r1, 2.0 / 3.0);
        assert_eq!(r.text_to_image.r5, 1.0);
        assert_eq!((r.image_to_text.r5, r.text_to_image.r5), (1.0, 1.0));
        // 1,500 random pairs (chunks of 1,024 queries), against the argsort count.
        tch::manual_seed(0);
        let n = |t: Tensor| l2_normalize(&t);
        let image = n(Tensor::randn([1500, 8], (Kind::Float, Device::Cpu)));
        let text = n(&image + Tensor::randn([1500, 8], (Kind::Float, Device::Cpu)) * 0.3);
        let r = Retrieval::of(&image, &text, &(0..1500).collect::<Vec<_>>()).unwrap();
        assert_eq!((r.images, r.captions), (1500, 1500));
        for (at, q, k) in [
            (r.image_to_text, &image, &text),
            (r.text_to_image, &text, &image),
        ] {
            assert_eq!(at.r1, argsort_recall(q, k, 1));
            assert_eq!(at.r5, argsort_recall(q, k, 5));
            assert_eq!(at.r10, argsort_recall(q, k, 10));
            assert!(at.r1 > 0.0 && at.r1 < at.r10 && at.r10 < 1.0, "{at:?}");
        }
        let mean = [r.image_to_text, r.text_to_image]
            .iter()
            .map(|a| a.r1 + a.r5 + a.r10)
            .sum::<f64>()
            / 6.0;
        assert!((r.mean_recall - mean).abs() < 1e-12);
    }

    /// Several captions per image: an image's match is the best-ranked of its
    /// captions, a caption's its image.
    #[test]
    fn retrieval_counts_any_of_an_images_captions() {
        // Image 0 has captions 0 and 2: caption 2 is its nearest (caption 0
        // alone would rank 2nd); caption 0 is nearer image 1 than its own.
        let image = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let text = Tensor::from_slice(&[0.6f32, 0.8, 0.0, 1.0, 1.0, 0.0]).view([3, 2]);
        let r = Retrieval::of(&image, &text, &[0, 1, 0]).unwrap();
        assert_eq!((r.images, r.captions), (2, 3));
        assert_eq!((r.image_to_text.r1, r.image_to_text.mean_rank), (1.0, 1.0));
        assert_eq!((r.text_to_image.r1, r.text_to_image.r5), (2.0 / 3.0, 1.0));
        assert_eq!(r.text_to_image.mean_rank, 4.0 / 3.0);
        // Each caption's image named; each image with a caption.
        for bad in [&[0, 1][..], &[0, 0, 0], &[0, 1, 2]] {
            let e = Retrieval::of(&image, &text, bad).unwrap_err().to_string();
            assert!(e.contains("3 captions of 2 images"), "{e}");
        }
    }

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
