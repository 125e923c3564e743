//! The files of a run folder: `checkpoints/step-N/` with `trainer_state.json`
//! (the progress that must survive a restart), finding the newest complete one,
//! atomic JSON writes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use clip_model::write_atomic;

use crate::error::{Result, TrainError};
use crate::observe::EvalRecord;
use crate::policies::{CheckpointEntry, EarlyStopping};

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
}

pub(crate) const STATE_FILE: &str = "trainer_state.json";

pub(crate) fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The newest complete checkpoint of a run folder.
pub fn latest_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::Resume {
        path: run_dir.to_path_buf(),
        reason: format!("no checkpoints folder ({e}); is this a run folder?"),
    })?;
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if e.path().join(STATE_FILE).is_file() && best.as_ref().is_none_or(|b| step > b.0) {
            best = Some((step, e.path()));
        }
    }
    best.map(|b| b.1).ok_or_else(|| TrainError::Resume {
        path: run_dir.to_path_buf(),
        reason: "it holds no complete checkpoint".into(),
    })
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    write_atomic(path, text.as_bytes())?;
    Ok(())
}
