//! Image <-> text retrieval on image-caption pairs, as open_clip's
//! `get_clip_metrics` and clip_benchmark compute it: the embeddings of every
//! pair (summed over data-parallel shards), recall at 1 / 5 / 10 and the mean and
//! median rank in both directions, the captions of one image file grouped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use clip_data::{Batch, DeviceBatches, Loader};
use clip_model::{ClipClassifier, ClipTokenizer, Pass, l2_normalize};

use crate::captions::caption_ids;
use crate::error::{Result, TrainError};
use crate::precision::Precision;

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
    pub(crate) fn zeros(model: &ClipClassifier, data: &clip_data::Dataset) -> Self {
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
    pub(crate) fn add(
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
}
