//! The checkpoint layout, and the one place that writes, reads, verifies and
//! locates checkpoints. A run keeps them in `<run>/checkpoints/step-NNNNNNNN/`:
//!
//! - `model/`: the classifier as `ClipClassifier::save_pretrained` writes it;
//! - `config.toml`: the resolved config it was written with (a resume compares);
//! - `optimizer.safetensors`: AdamW's moments and step counts;
//! - `scaler.safetensors`: the fp16 GradScaler (fp16 runs only);
//! - `ema.safetensors`: the EMA of the trained weights (`train.ema` only);
//! - `trainer_state.json`: the progress that must survive a restart
//!   ([`TrainState`]), written last.
//!
//! A checkpoint is written into `.tmp-<name>` and renamed once complete, so a
//! crash or a full disk never leaves a broken one; a damaged one found later
//! (a copy cut short) is skipped with a warning when locating the newest.
//! A new data-parallel strategy that shards optimizer state (ZeRO-1) adds its
//! files here, in [`Contents`] and [`Checkpoint::restore`].

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn;

use clip_model::{ClipClassifier, write_safetensors};
use clip_optim::AdamW;

use crate::config::RunConfig;
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::mixed_precision::MixedPrecision;
use crate::policies::{CheckpointEntry, EarlyStopping};
use crate::report::{EvalRecord, read_summary, write_json};

/// A run folder's checkpoints folder.
pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
/// The model folder inside a checkpoint.
pub(crate) const MODEL_DIR: &str = "model";
/// The resolved config a checkpoint was written with (what a resume compares).
const CONFIG_FILE: &str = "config.toml";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const SCALER_FILE: &str = "scaler.safetensors";
const EMA_FILE: &str = "ema.safetensors";
pub(crate) const STATE_FILE: &str = "trainer_state.json";
/// A run's test result, in its folder ([`TestResult`], written by `run::test_set`).
pub(crate) const TEST_FILE: &str = "test.json";

/// `test.json`: the test set's evaluation and the checkpoint it was made with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TestResult {
    pub checkpoint: PathBuf,
    pub test: crate::eval::EvalReport,
}

/// Progress that must survive a restart (`trainer_state.json` in a checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// The epoch in progress (0-based).
    pub epoch: u64,
    /// The next micro-batch of that epoch.
    pub batch_in_epoch: usize,
    /// Optimizer steps done.
    pub global_step: u64,
    pub early_stopping: EarlyStopping,
    pub checkpoints: Vec<CheckpointEntry>,
    pub config_hash: String,
    /// Training wall time before this process, seconds.
    pub wall_s: f64,
    pub stopped_early: bool,
    /// The latest evaluation.
    pub last_eval: Option<EvalRecord>,
    /// Data-parallel ranks that wrote it (1 for one process).
    #[serde(default = "one")]
    pub world_size: usize,
    /// The training losses summed since the last evaluation, and their steps (the
    /// next evaluation's `train_loss` covers them across a resume).
    #[serde(default)]
    pub loss_since_eval: (f64, u64),
    /// What the run trains and validates on (absent in checkpoints written
    /// before it was kept): a resume on other data is refused unless allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataFingerprint>,
}

/// The run's data as a resume compares it: a hash of the training and of the
/// validation listing (names and labels), and their sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub train: String,
    pub train_images: usize,
    pub val: String,
    pub val_images: usize,
}

impl std::fmt::Display for DataFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} training images ({}), {} validation images ({})",
            self.train_images, self.train, self.val_images, self.val
        )
    }
}

impl DataFingerprint {
    /// The fingerprint of `train` and `val` as `cfg` reads them.
    pub fn of(cfg: &RunConfig, train: &clip_data::Dataset, val: &clip_data::Dataset) -> Self {
        let root = |s: &Option<clip_data::SourceConfig>| {
            s.as_ref()
                .map(|s| s.describe().location)
                .unwrap_or_default()
        };
        let train_root = root(&cfg.data.train);
        let val_root = match cfg.data.val {
            Some(_) => root(&cfg.data.val),
            None => train_root.clone(),
        };
        Self {
            train: train.listing_hash(&train_root),
            train_images: train.len(),
            val: val.listing_hash(&val_root),
            val_images: val.len(),
        }
    }

    /// How `now` differs from this one, for a message; `None` when it does not.
    pub fn change(&self, now: &Self) -> Option<String> {
        let side = |what: &str, before: (&str, usize), after: (&str, usize)| {
            (before.0 != after.0).then(|| match before.1 == after.1 {
                true => format!("the {} {what} images are others (or relabelled)", after.1),
                false => format!("{what} images: {} then, {} now", before.1, after.1),
            })
        };
        let changes: Vec<String> = [
            side(
                "training",
                (&self.train, self.train_images),
                (&now.train, now.train_images),
            ),
            side(
                "validation",
                (&self.val, self.val_images),
                (&now.val, now.val_images),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!changes.is_empty()).then(|| changes.join("; "))
    }
}

fn one() -> usize {
    1
}

/// The checkpoints of a run folder that hold a trainer state, newest first.
fn checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = run_dir.join(CHECKPOINTS_DIR);
    let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::Resume {
        path: run_dir.to_path_buf(),
        reason: format!("no checkpoints folder ({e}); is this a run folder?"),
    })?;
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Whether the run folder holds a run (a checkpoint with a trainer state, intact
/// or not).
pub(crate) fn holds_a_run(run_dir: &Path) -> bool {
    checkpoints(run_dir).is_ok_and(|c| !c.is_empty())
}

/// The newest intact checkpoint of a run folder. A newer damaged one (a truncated
/// or unreadable weights, optimizer or state file, e.g. from a full disk or a copy
/// cut short) is skipped with a warning naming it and why.
pub fn latest_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    let mut damaged: Vec<(PathBuf, String)> = Vec::new();
    for ckpt in checkpoints(run_dir)? {
        match check_intact(&ckpt) {
            Ok(()) => {
                for (bad, why) in &damaged {
                    tracing::warn!(
                        "checkpoint {} is damaged ({why}); using the older {}",
                        bad.display(),
                        ckpt.display()
                    );
                }
                return Ok(ckpt);
            }
            Err(why) => damaged.push((ckpt, why)),
        }
    }
    let reason = match damaged.first() {
        None => "it holds no complete checkpoint".to_string(),
        Some((bad, why)) => format!(
            "every checkpoint is damaged; the newest, {}: {why}",
            bad.display()
        ),
    };
    Err(TrainError::Resume {
        path: run_dir.to_path_buf(),
        reason,
    })
}

/// Whether every file a resume reads in `ckpt` is whole: the trainer state parses,
/// and each safetensors file is as long as its header says.
fn check_intact(ckpt: &Path) -> std::result::Result<(), String> {
    let state = ckpt.join(STATE_FILE);
    let text = std::fs::read_to_string(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    serde_json::from_str::<TrainState>(&text).map_err(|e| format!("{}: {e}", state.display()))?;
    let safetensors_in = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let model = safetensors_in(&ckpt.join(MODEL_DIR));
    if model.is_empty() {
        return Err(format!("no weights in {}", ckpt.join(MODEL_DIR).display()));
    }
    let optimizer = ckpt.join(OPTIMIZER_FILE);
    if !optimizer.is_file() {
        return Err(format!("{} is missing", optimizer.display()));
    }
    for f in model.into_iter().chain(safetensors_in(ckpt)) {
        safetensors_whole(&f).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(())
}

/// A safetensors file's length equals its header's (8-byte length, JSON header,
/// then the data up to the largest tensor end offset).
fn safetensors_whole(path: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| "shorter than a safetensors header".to_string())?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) {
        return Err(format!("its header claims {n} bytes, the file has {len}"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format!("unreadable header: {e}"))?;
    let end = header
        .as_object()
        .map(|o| {
            o.values()
                .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let want = 8 + n + end;
    if len != want {
        return Err(format!(
            "{len} bytes where its header says {want} (truncated?)"
        ));
    }
    Ok(())
}

/// What a checkpoint holds, for writing.
pub(crate) struct Contents<'a> {
    pub model: &'a ClipClassifier,
    pub config: &'a RunConfig,
    pub optimizer: &'a AdamW,
    pub precision: &'a MixedPrecision,
    pub ema: Option<&'a Ema>,
    /// The progress, listing this checkpoint too.
    pub state: &'a TrainState,
}

/// The checkpoints of one run folder.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// The checkpoints of the run in `run_dir`.
    pub(crate) fn of_run(run_dir: &Path) -> Self {
        Self {
            dir: run_dir.join(CHECKPOINTS_DIR),
        }
    }

    /// Creates the checkpoints folder.
    pub(crate) fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(TrainError::io("cannot create the run folder", &self.dir))
    }

    /// The folder of checkpoint `name`.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether checkpoint `name` is still on disk.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.path(name).is_dir()
    }

    /// Writes checkpoint `name` atomically (see the module docs); returns its
    /// folder. A failed write removes the temporary folder.
    pub(crate) fn write(&self, name: &str, c: &Contents) -> Result<PathBuf> {
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let final_dir = self.dir.join(name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(TrainError::io("cannot clear", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(TrainError::io("cannot create", &tmp))?;
        let written = fill(&tmp, c).and_then(|()| write_json(&tmp.join(STATE_FILE), c.state));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir)
                .map_err(TrainError::io("cannot replace", &final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(TrainError::io("cannot finish", &final_dir))?;
        Ok(final_dir)
    }

    /// Deletes checkpoint `name` (retention); a failure is logged, not fatal.
    pub(crate) fn remove(&self, name: &str) {
        let p = self.path(name);
        if let Err(e) = std::fs::remove_dir_all(&p) {
            tracing::warn!("cannot delete old checkpoint {}: {e}", p.display());
        }
    }
}

/// Every file of a checkpoint but its state, into `dir`.
fn fill(dir: &Path, c: &Contents) -> Result<()> {
    c.model.save_pretrained(&dir.join(MODEL_DIR))?;
    let config = dir.join(CONFIG_FILE);
    std::fs::write(&config, c.config.to_toml()).map_err(TrainError::io("cannot write", &config))?;
    c.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
    c.precision.save(&dir.join(SCALER_FILE))?;
    if let Some(e) = c.ema {
        write_safetensors(&dir.join(EMA_FILE), &e.tensors(), Default::default())?;
    }
    Ok(())
}

/// One checkpoint folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    pub(crate) fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its model folder (what exports, `eval` and `predict` load).
    pub(crate) fn model_dir(&self) -> PathBuf {
        self.dir.join(MODEL_DIR)
    }

    /// The classifier it holds, built on `vs`.
    pub(crate) fn load_model(&self, vs: &nn::VarStore) -> Result<ClipClassifier> {
        Ok(ClipClassifier::load(&vs.root(), &self.model_dir())?)
    }

    /// The progress it saved.
    pub(crate) fn state(&self) -> Result<TrainState> {
        let path = self.dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(TrainError::io("cannot read", &path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Resume {
            path: self.dir.clone(),
            reason: format!("{STATE_FILE} is unreadable: {e}"),
        })
    }

    /// The resolved config it was written with (none in checkpoints of earlier
    /// versions).
    pub(crate) fn config_text(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(CONFIG_FILE)).ok()
    }

    /// Restores the optimizer, the fp16 scaler and the EMA from it.
    pub(crate) fn restore(
        &self,
        optimizer: &mut AdamW,
        precision: &mut MixedPrecision,
        ema: Option<&Ema>,
    ) -> Result<()> {
        optimizer.load(&self.dir.join(OPTIMIZER_FILE))?;
        precision.load(&self.dir.join(SCALER_FILE))?;
        if let Some(e) = ema {
            e.load(&self.dir.join(EMA_FILE))?;
        }
        Ok(())
    }
}

/// The EMA weights saved beside the model folder `model_dir` of a checkpoint
/// (none beside an export, or in a run without `train.ema`).
pub(crate) fn ema_beside(model_dir: &Path) -> Option<PathBuf> {
    model_dir
        .parent()
        .map(|c| c.join(EMA_FILE))
        .filter(|p| p.is_file())
}

/// What is known of the weights of a checkpoint's model folder: the step they
/// were saved at, their validation (the trainer evaluates before it saves, so it
/// is the saved progress's latest evaluation when that fell at the same step;
/// a checkpoint written between evaluations has none), and the run's test result
/// when `test.json` was measured with this checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub step: u64,
    pub eval: Option<EvalRecord>,
    pub test: Option<crate::eval::EvalReport>,
}

/// [`Measured`] for `model_dir`, when it is a checkpoint's model folder.
pub(crate) fn measured(model_dir: &Path) -> Option<Measured> {
    let ckpt = Checkpoint::at(model_dir.parent()?);
    let state = ckpt.state().ok()?;
    let eval = state.last_eval.filter(|e| e.step == state.global_step);
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    let test = ckpt
        .dir()
        .parent()
        .and_then(Path::parent)
        .and_then(|run| std::fs::read_to_string(run.join(TEST_FILE)).ok())
        .and_then(|t| serde_json::from_str::<TestResult>(&t).ok())
        .filter(|t| same(&t.checkpoint, ckpt.dir()))
        .map(|t| t.test);
    Some(Measured {
        step: state.global_step,
        eval,
        test,
    })
}

/// The model folder a run folder stands for: its best checkpoint's (the
/// `summary.json` of a finished run names it), else its newest intact one's.
pub(crate) fn selected_model_dir(run_dir: &Path) -> Result<PathBuf> {
    let best = read_summary(run_dir)
        .and_then(|r| r.best.map(|b| b.checkpoint))
        .filter(|p| p.join(MODEL_DIR).is_dir());
    let ckpt = match best {
        Some(p) => p,
        None => latest_checkpoint(run_dir)?,
    };
    Ok(ckpt.join(MODEL_DIR))
}
