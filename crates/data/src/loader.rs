//! Batches: seeded epoch order (optionally class-balanced), samples decoded and
//! augmented in parallel on rayon straight into one contiguous buffer, and a
//! bounded prefetch on a background thread that stops cleanly when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::dataset::Dataset;
use crate::image::{DecodeOptions, ExifOrientation};
use crate::mix::{MixConfig, mix_batch};
use crate::rng::SampleRng;
use crate::transforms::Pipeline;

/// What to do with an image that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCorrupt {
    /// Stop with an error naming the file.
    #[default]
    Error,
    /// Use the next decodable image of the dataset in its place and count it in
    /// [`Batch::replaced`].
    Skip,
}

/// The element type of a batch's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Normalised `f32`, ready for the model.
    #[default]
    F32,
    /// Raw 8-bit pixels; `Batch::to_tensors` normalises them on the device (a
    /// quarter of the host memory and of the host-to-GPU transfer).
    U8,
}

/// How JPEGs are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// Every pixel, as PIL without `draft` (torchvision's pixels).
    #[default]
    Exact,
    /// JPEGs at the largest 1/2, 1/4 or 1/8 DCT scale that still covers the
    /// pipeline's first resize or crop at full resolution (PIL's `draft`, pixel
    /// for pixel): far less decoding for photos two or more times the model's
    /// input size; the pixels differ slightly from an exact decode
    /// (docs/BENCHMARKS.md).
    Draft,
}

/// A batch's images, `batch x 3 x height x width`.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// How batches are formed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Draw classes uniformly (with replacement) instead of the dataset's mix.
    pub balanced: bool,
    pub drop_last: bool,
    /// Decoding threads (0 = all cores).
    pub threads: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// MixUp / CutMix (off by default).
    pub mix: MixConfig,
    pub on_corrupt: OnCorrupt,
    /// With `on_corrupt = "skip"`: the run fails once more than this share of the
    /// dataset's images turned out unreadable (or once a class has lost them all).
    pub max_corrupt_share: f64,
    /// `f32` (normalised on the CPU) or `u8` (normalised on the device).
    pub output: Output,
    /// `exact` or `draft` (reduced-scale JPEG decoding).
    pub decode: Decode,
    /// `ignore` (as PIL's `open` and torchvision) or `apply` (images turned
    /// upright by their EXIF orientation, as transformers' `load_image`).
    pub exif_orientation: ExifOrientation,
    /// An image whose header says it has more pixels is refused before it is
    /// decoded (0: no limit); default PIL's decompression-bomb threshold.
    pub max_image_pixels: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            balanced: false,
            drop_last: false,
            threads: 0,
            prefetch: 2,
            mix: MixConfig::default(),
            on_corrupt: OnCorrupt::Error,
            max_corrupt_share: 0.01,
            output: Output::F32,
            decode: Decode::Exact,
            exif_orientation: ExifOrientation::Ignore,
            max_image_pixels: crate::image::DEFAULT_MAX_IMAGE_PIXELS,
        }
    }
}

/// An undecodable image that `on_corrupt = "skip"` replaced by the next decodable
/// one of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Replaced {
    /// The file (or `idx:N`).
    pub name: String,
    /// Its class in the dataset.
    pub label: usize,
}

/// One batch: `images` is `batch x 3 x height x width`, normalised `f32`, or
/// `u8` pixels that map to the normalised values as `v * scale[c] + bias[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Pixels,
    /// Per-channel `(scale, bias)` from 8-bit values to the normalised ones.
    pub normalize: ([f32; 3], [f32; 3]),
    pub labels: Vec<i64>,
    /// Dataset indices of the samples.
    pub indices: Vec<usize>,
    pub height: usize,
    pub width: usize,
    pub epoch: u64,
    /// Position of the batch in its epoch.
    pub step: usize,
    /// Soft targets `batch x classes` when MixUp/CutMix is on.
    pub targets: Option<Vec<f32>>,
    /// Undecodable images that were replaced (`on_corrupt = "skip"`).
    pub replaced: Vec<Replaced>,
    /// Samples in the global batch this batch is one rank's share of (its own
    /// length when the loader is not sharded).
    pub global_len: usize,
    /// A stand-in: when the last global batch of an epoch has fewer samples than
    /// there are ranks, a rank without a share gets the global batch's first sample
    /// to run (gradient synchronisation needs every rank's backward pass); it must
    /// count for nothing (loss weight 0, no metrics).
    pub placeholder: bool,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples that count: `len()`, or 0 for a placeholder.
    pub fn counted(&self) -> usize {
        if self.placeholder { 0 } else { self.len() }
    }

    /// The normalised `f32` images, when the batch holds them.
    pub fn images_f32(&self) -> Option<&[f32]> {
        match &self.images {
            Pixels::F32(v) => Some(v),
            Pixels::U8(_) => None,
        }
    }

    /// `(images [B, 3, H, W] f32 normalised, labels [B] i64)` on `device`. To
    /// CUDA the batch goes through pinned host memory with a non-blocking copy:
    /// the call returns once the copy is queued, and the copy runs in stream order
    /// before the work queued after it (libtorch keeps the pinned block until
    /// the copy is done). `u8` images travel as bytes and are normalised on the
    /// device, with the same single-precision multiply-then-add as the CPU path.
    #[cfg(feature = "tch")]
    pub fn to_tensors(&self, device: tch::Device) -> (tch::Tensor, tch::Tensor) {
        let shape = [self.len() as i64, 3, self.height as i64, self.width as i64];
        let upload = |t: tch::Tensor| {
            if device.is_cuda() {
                let kind = t.kind();
                t.pin_memory(device).to_device_(device, kind, true, false)
            } else {
                t
            }
        };
        let images = match &self.images {
            Pixels::F32(v) => upload(tch::Tensor::from_slice(v).view(shape)),
            Pixels::U8(v) => {
                let (scale, bias) = self.normalize;
                let per_channel = |x: [f32; 3]| {
                    tch::Tensor::from_slice(&x)
                        .view([1, 3, 1, 1])
                        .to_device(device)
                };
                upload(tch::Tensor::from_slice(v).view(shape)).to_kind(tch::Kind::Float)
                    * per_channel(scale)
                    + per_channel(bias)
            }
        };
        (images, upload(tch::Tensor::from_slice(&self.labels)))
    }
}

/// A batch and its tensors on the device.
#[cfg(feature = "tch")]
pub struct DeviceBatch {
    pub batch: Batch,
    pub images: tch::Tensor,
    pub labels: tch::Tensor,
}

/// An epoch's batches as tensors on a device, one uploaded ahead on request:
/// call [`DeviceBatches::prefetch`] right after queueing a batch's work on the
/// GPU, and the next batch's pinning and copy overlap that work instead of
/// waiting for it (on the CPU it only moves the same work earlier). The batches
/// and their order are the epoch's, prefetched or not.
#[cfg(feature = "tch")]
pub struct DeviceBatches {
    inner: EpochIter,
    device: tch::Device,
    ready: Option<Result<DeviceBatch, DataError>>,
    ended: bool,
    waited: std::time::Duration,
}

#[cfg(feature = "tch")]
impl DeviceBatches {
    pub fn new(inner: EpochIter, device: tch::Device) -> Self {
        Self {
            inner,
            device,
            ready: None,
            ended: false,
            waited: std::time::Duration::ZERO,
        }
    }

    /// The time spent waiting for the loader's batches so far: a loader that keeps
    /// up has them ready, one that does not makes training wait here.
    pub fn waited(&self) -> std::time::Duration {
        self.waited
    }

    /// Uploads the next batch now, unless one is waiting or the epoch has ended.
    pub fn prefetch(&mut self) {
        if self.ready.is_some() || self.ended {
            return;
        }
        let t0 = std::time::Instant::now();
        let next = self.inner.next();
        self.waited += t0.elapsed();
        self.ready = match next {
            Some(Ok(batch)) => {
                let (images, labels) = batch.to_tensors(self.device);
                Some(Ok(DeviceBatch {
                    batch,
                    images,
                    labels,
                }))
            }
            Some(Err(e)) => Some(Err(e)),
            None => {
                self.ended = true;
                None
            }
        };
    }
}

#[cfg(feature = "tch")]
impl Iterator for DeviceBatches {
    type Item = Result<DeviceBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.prefetch();
        self.ready.take()
    }
}

/// The most threads a thread-count setting may ask for: 4x the cores (a typo such
/// as 100000 is an error before any thread is spawned).
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Turns a dataset and a pipeline into batches.
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Dataset,
    pipeline: Arc<Pipeline>,
    config: LoaderConfig,
    seed: u64,
    pool: Arc<rayon::ThreadPool>,
    size: (usize, usize),
    shard: Shard,
}

/// One data-parallel rank's share of every batch: global batch `k` of an epoch is
/// `batch_size x world` consecutive samples of the epoch order (what a single
/// process with that batch size would take), and rank `r` takes its `r`-th
/// contiguous part (the last, smaller global batch is split as evenly as it goes).
/// The union over ranks is the global batch: nothing padded, nothing repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { rank: 0, world: 1 }
    }
}

impl Shard {
    /// This rank's part `[start, end)` of a global batch of `m` samples.
    pub fn range(self, m: usize) -> (usize, usize) {
        (self.rank * m / self.world, (self.rank + 1) * m / self.world)
    }
}

impl Loader {
    pub fn new(
        dataset: Dataset,
        pipeline: Pipeline,
        config: LoaderConfig,
        seed: u64,
    ) -> Result<Self, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::config(
                "data.loader.batch_size",
                "must be at least 1",
            ));
        }
        if config.balanced && !dataset.has_labels() {
            return Err(DataError::config(
                "data.loader.balanced",
                "samples classes evenly: the data has no labels (image-caption pairs)",
            ));
        }
        let size = pipeline.output_size().ok_or_else(|| {
            DataError::config(
                pipeline.section(),
                "must end in a fixed size: add `center_crop` or `random_resized_crop` (or resize to [h, w])",
            )
        })?;
        if config.output == Output::U8 && (config.mix.enabled() || pipeline.erases()) {
            return Err(DataError::config(
                "data.loader.output",
                "\"u8\" leaves normalisation to the device, but random_erasing and \
                 MixUp/CutMix work on normalised f32 images: use \"f32\"",
            ));
        }
        if !(0.0..=1.0).contains(&config.max_corrupt_share) {
            return Err(DataError::config(
                "data.loader.max_corrupt_share",
                format!("must lie in [0, 1], got {}", config.max_corrupt_share),
            ));
        }
        let most = max_threads();
        if config.threads > most {
            return Err(DataError::config(
                "data.loader.threads",
                format!(
                    "{} is more than 4x this machine's {} cores ({most} at most; 0 = one per core)",
                    config.threads,
                    most / 4
                ),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("clip-data-{i}"))
            .build()
            .map_err(|e| DataError::config("data.loader.threads", e.to_string()))?;
        Ok(Self {
            dataset,
            pipeline: Arc::new(pipeline),
            config,
            seed,
            pool: Arc::new(pool),
            size,
            shard: Shard::default(),
        })
    }

    /// This loader as rank `rank` of `world` (see [`Shard`]).
    pub fn sharded(mut self, rank: usize, world: usize) -> Result<Self, DataError> {
        if world == 0 || rank >= world {
            return Err(DataError::config(
                "data.loader",
                format!("rank {rank} of a world of {world}"),
            ));
        }
        self.shard = Shard { rank, world };
        Ok(self)
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Samples per global batch: `batch_size x world`.
    pub fn global_batch_size(&self) -> usize {
        self.config.batch_size * self.shard.world
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Batches per epoch (global batches when sharded: every rank gets as many).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.global_batch_size());
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of dataset indices in `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        let mut rng = SampleRng::new(self.seed, epoch, u64::MAX);
        if self.config.balanced {
            let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.dataset.classes().len()];
            for i in 0..n {
                by_class[self.dataset.label(i)].push(i);
            }
            by_class.retain(|c| !c.is_empty());
            if by_class.is_empty() {
                return Vec::new();
            }
            return (0..n)
                .map(|_| {
                    let c = &by_class[rng.int_range(0, by_class.len() as i64 - 1) as usize];
                    c[rng.int_range(0, c.len() as i64 - 1) as usize]
                })
                .collect();
        }
        if self.config.shuffle {
            self.dataset
                .local_permutation(&mut rng)
                .unwrap_or_else(|| rng.permutation(n))
        } else {
            (0..n).collect()
        }
    }

    /// Builds one batch of the given dataset indices. A sample's random draws come
    /// from `(seed, epoch, index)`, so the batch does not depend on the threads.
    pub fn make_batch(
        &self,
        epoch: u64,
        step: usize,
        indices: &[usize],
    ) -> Result<Batch, DataError> {
        let (h, w) = self.size;
        let per = 3 * h * w;
        let indices_len = indices.len();
        let replaced = std::sync::Mutex::new(Vec::new());
        let mut used: Vec<usize> = indices.to_vec();
        let mut images = match self.config.output {
            Output::F32 => Pixels::F32(vec![0f32; indices.len() * per]),
            Output::U8 => Pixels::U8(vec![0u8; indices.len() * per]),
        };
        let load = |i: &mut usize| {
            let img = self.decode_or_replace(i, &replaced)?;
            Ok::<_, DataError>((img, SampleRng::new(self.seed, epoch, *i as u64)))
        };
        // Each sample straight into its slot of the batch buffer, in parallel.
        fn fill<T: Send>(
            buf: &mut [T],
            per: usize,
            used: &mut [usize],
            f: impl Fn(&mut [T], &mut usize) -> Result<(), DataError> + Sync,
        ) -> Result<(), DataError> {
            buf.par_chunks_mut(per)
                .zip(used.par_iter_mut())
                .try_for_each(|(out, i)| f(out, i))
        }
        self.pool.install(|| match &mut images {
            Pixels::F32(buf) => fill(buf, per, &mut used, |out, i| {
                let (img, mut rng) = load(i)?;
                self.pipeline.apply_into(img, &mut rng, out).map(|_| ())
            }),
            Pixels::U8(buf) => fill(buf, per, &mut used, |out, i| {
                let (img, mut rng) = load(i)?;
                self.pipeline.apply_into_u8(img, &mut rng, out).map(|_| ())
            }),
        })?;
        let mut replaced = replaced.into_inner().unwrap_or_else(|e| e.into_inner());
        replaced.sort();
        let indices = used;
        let labels: Vec<i64> = indices
            .iter()
            .map(|&i| self.dataset.label(i) as i64)
            .collect();
        let targets = match &mut images {
            Pixels::F32(images) if self.config.mix.enabled() => Some(images),
            _ => None,
        }
        .map(|images| {
            let mut rng = SampleRng::new(self.seed, epoch, (1 << 63) | step as u64);
            let classes = self.dataset.classes().len();
            mix_batch(images, &labels, h, w, classes, &self.config.mix, &mut rng).0
        });
        Ok(Batch {
            images,
            normalize: self.pipeline.normalization(),
            labels,
            indices,
            height: h,
            width: w,
            epoch,
            step,
            targets,
            replaced,
            global_len: indices_len,
            placeholder: false,
        })
    }

    /// Decodes item `*i`; with `on_corrupt = "skip"`, moves `*i` to the next
    /// decodable item and records the replaced name.
    fn decode_or_replace(
        &self,
        i: &mut usize,
        replaced: &std::sync::Mutex<Vec<Replaced>>,
    ) -> Result<crate::RgbImage, DataError> {
        let n = self.dataset.len();
        let mut first_err = None;
        for k in 0..n {
            let j = (*i + k) % n;
            let reduction = |w, h| self.pipeline.draft_reduction(w, h);
            let options = DecodeOptions {
                reduction: match self.config.decode {
                    Decode::Exact => None,
                    Decode::Draft => Some(&reduction),
                },
                exif_orientation: self.config.exif_orientation,
                max_pixels: self.config.max_image_pixels,
            };
            let image = self.dataset.image_with(j, &options);
            match image {
                Ok(img) => {
                    if k > 0 {
                        if let Ok(mut r) = replaced.lock() {
                            r.push(Replaced {
                                name: self.dataset.name(*i),
                                label: self.dataset.label(*i),
                            });
                        }
                        *i = j;
                    }
                    return Ok(img);
                }
                Err(e) if self.config.on_corrupt == OnCorrupt::Error => return Err(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| DataError::config("data", "the dataset is empty")))
    }

    /// The batches of `epoch` from `start` on, prepared `prefetch` ahead on a
    /// background thread.
    pub fn epoch(&self, epoch: u64, start: usize) -> EpochIter {
        let order = self.epoch_order(epoch);
        let b = self.global_batch_size();
        let total = self.batches_per_epoch();
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (loader, stop2) = (self.clone(), stop.clone());
        let worker = std::thread::Builder::new()
            .name("clip-data-prefetch".into())
            .spawn(move || produce(&loader, epoch, &order, b, start, total, &tx, &stop2))
            .ok();
        EpochIter {
            rx: Some(rx),
            stop,
            worker,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn produce(
    loader: &Loader,
    epoch: u64,
    order: &[usize],
    b: usize,
    start: usize,
    total: usize,
    tx: &SyncSender<Result<Batch, DataError>>,
    stop: &AtomicBool,
) {
    for step in start..total {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let global = &order[step * b..((step + 1) * b).min(order.len())];
        let (lo, hi) = loader.shard.range(global.len());
        let batch = if lo < hi {
            loader.make_batch(epoch, step, &global[lo..hi])
        } else {
            loader.make_batch(epoch, step, &global[..1]).map(|mut b| {
                b.placeholder = true;
                b
            })
        }
        .map(|mut batch| {
            batch.global_len = global.len();
            batch
        });
        let failed = batch.is_err();
        if tx.send(batch).is_err() || failed {
            return;
        }
    }
}

/// Iterator over an epoch's batches; dropping it stops the background thread.
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks a producer waiting to send.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
