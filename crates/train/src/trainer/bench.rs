//! `train-cli bench`: steady-state training speed and the loader's, on the
//! config's data or, where that is not on the machine, on generated images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clip_data::DeviceBatches;

use super::Trainer;
use crate::config::RunConfig;
use crate::device::{peak_memory, reset_peak_memory};
use crate::error::Result;
use crate::report::BenchReport;

/// The run a benchmark times: the config with `overrides`, its run folder in a
/// temporary folder (removed when this is dropped), and generated images in
/// place of training data that is not there.
#[derive(Debug)]
pub struct BenchSetup {
    pub config: RunConfig,
    /// Set when the config's training data is missing: what was timed instead.
    pub synthetic: Option<String>,
    tmp: PathBuf,
}

impl Drop for BenchSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

impl BenchSetup {
    /// The config at `path` with `overrides`, ready to time `warmup + steps`
    /// steps. Throughput needs images, not these images: data that is not there
    /// (a fresh clone's configs/smoke.toml) is replaced by 320x240 noise JPEGs in
    /// 4 classes, and [`BenchSetup::synthetic`] says so.
    pub fn new(path: &Path, overrides: &[String], warmup: usize, steps: usize) -> Result<Self> {
        let tmp = std::env::temp_dir().join(format!("train-cli-bench-{}", std::process::id()));
        let mut o = overrides.to_vec();
        o.push(format!("run.output_dir={:?}", tmp.display().to_string()));
        o.push("run.overwrite=true".into());
        let mut setup = Self {
            config: RunConfig::load(path, &o)?,
            synthetic: None,
            tmp,
        };
        let missing = setup.config.data.train.as_ref().and_then(|s| s.missing());
        if let Some(missing) = missing {
            let cfg = &setup.config;
            let images = cfg.data.loader.batch_size * cfg.train.grad_accum * (warmup + steps + 1);
            let per_class = (images * 5 / 4).div_ceil(4).max(8);
            let dir = setup.tmp.join("synthetic");
            clip_data::write_noise_images(&dir, 4, per_class)?;
            setup.synthetic = Some(format!(
                "{} does not exist: timing on {} generated 320x240 JPEGs in 4 classes ({})",
                missing.display(),
                4 * per_class,
                dir.display()
            ));
            let folder = format!(
                "{{kind=\"image_folder\", path={:?}}}",
                dir.display().to_string()
            );
            o.push(format!("data.train={folder}"));
            if cfg.data.val.as_ref().and_then(|s| s.missing()).is_some() {
                o.push(format!("data.val={folder}"));
            }
            setup.config = RunConfig::load(path, &o)?;
        }
        Ok(setup)
    }
}

impl Trainer {
    /// Steady-state training speed: `warmup` untimed steps, then `steps` timed
    /// ones (no evaluation, no checkpoints), and the loader alone over as many
    /// batches. Leaves the run folder untouched. Under torchrun every rank runs it
    /// and the report adds the ranks' images/s together.
    pub fn bench(&mut self, warmup: usize, steps: usize) -> Result<BenchReport> {
        self.apply_unfreeze(self.steps.epochs.saturating_sub(1));
        let accum = self.cfg.train.grad_accum;
        let batches = self.train.batches_per_epoch();
        let mut times = Vec::with_capacity(steps);
        let mut images = 0usize;
        let mut epoch = 0u64;
        let mut iter = DeviceBatches::new(self.train.epoch(epoch, 0), self.device);
        let mut pos = 0usize;
        // Time the timed steps spent waiting for batches (summed over the epochs).
        let (mut waited, mut waited_before) = (0.0, 0.0);
        for i in 0..warmup + steps {
            if pos + accum > batches {
                epoch += 1;
                waited += iter.waited().as_secs_f64();
                iter = DeviceBatches::new(self.train.epoch(epoch, 0), self.device);
                pos = 0;
            }
            if i == warmup {
                waited_before = waited + iter.waited().as_secs_f64();
            }
            if i == warmup {
                // The timed steps are the phase the memory figures describe.
                reset_peak_memory(self.device);
            }
            let t0 = Instant::now();
            let outcome = self.train_step(&mut iter, accum, epoch)?;
            pos += accum;
            if i >= warmup {
                times.push(t0.elapsed().as_secs_f64());
                images += outcome.images;
            }
        }
        let loader_wait_s = waited + iter.waited().as_secs_f64() - waited_before;
        drop(iter);
        let memory = peak_memory(self.device);
        let train_time: f64 = times.iter().sum();
        let t0 = Instant::now();
        let mut loader_images = 0usize;
        let mut e = 0;
        while loader_images < images.max(1) {
            for b in self.train.epoch(1000 + e, 0) {
                loader_images += b?.len();
                if loader_images >= images.max(1) {
                    break;
                }
            }
            e += 1;
        }
        let loader_time = t0.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        let world = self.parallel.world();
        let mut global = [images as f64, train_time];
        self.parallel.sum(&mut global)?;
        Ok(BenchReport {
            world_size: world,
            global_train_images_per_s: global[0] / (global[1] / world as f64).max(1e-9),
            steps,
            batch_size: self.cfg.data.loader.batch_size,
            grad_accum: accum,
            precision: self.amp.precision(),
            train_images_per_s: images as f64 / train_time.max(1e-9),
            step_images_per_s: images as f64 / (train_time - loader_wait_s).max(1e-9),
            loader_wait_share: (loader_wait_s / train_time.max(1e-9)).clamp(0.0, 1.0),
            loader_images_per_s: loader_images as f64 / loader_time.max(1e-9),
            median_step_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
            peak_memory_mib: memory.peak_mib,
            memory_kind: memory.kind,
            peak_reserved_mib: memory.peak_reserved_mib,
            trainable_parameters: self.model.params().trainable_count(),
        })
    }
}
