//! The files of a run folder: `config.resolved.toml`, `checkpoints/step-N/` with
//! `trainer_state.json` (the progress that must survive a restart), the newest
//! complete checkpoint, atomic checkpoint and JSON writes.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use clip_model::write_atomic;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::policies::{CheckpointEntry, EarlyStopping};
use crate::report::EvalRecord;

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
}

fn one() -> usize {
    1
}

const STATE_FILE: &str = "trainer_state.json";

fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The checkpoints of a run folder that hold a trainer state, newest first.
fn checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
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
fn holds_a_run(run_dir: &Path) -> bool {
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
    let model = safetensors_in(&ckpt.join("model"));
    if model.is_empty() {
        return Err(format!("no weights in {}", ckpt.join("model").display()));
    }
    let optimizer = ckpt.join("optimizer.safetensors");
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

/// An exclusive lock on `dir/.lock` (flock: released by the OS when the process
/// ends, so a crash leaves no stale lock), with this process's PID written in it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(TrainError::io("cannot open the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => {
            let pid = std::process::id().to_string();
            file.set_len(0)
                .and_then(|()| file.write_all(pid.as_bytes()))
                .map_err(TrainError::io("cannot write the lock file", &path))?;
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(TrainError::InUse {
                dir: dir.to_path_buf(),
                holder: holder.trim().to_string(),
            })
        }
        Err(TryLockError::Error(e)) => Err(TrainError::Io {
            action: "cannot lock",
            path,
            source: e,
        }),
    }
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let value = serde_json::to_value(value).map_err(|e| TrainError::Io {
        action: "cannot serialise",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut text = String::new();
    compact_pretty(&value, 0, &mut text);
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// JSON indented as `to_string_pretty` does, except that an array of numbers,
/// strings, booleans or nulls stays on one line (a confusion matrix is one line
/// per class, not one per count).
fn compact_pretty(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Array(items) if items.iter().all(|x| !x.is_array() && !x.is_object()) => {
            out.push_str(&Value::Array(items.clone()).to_string());
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, x) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                compact_pretty(x, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, x)) in map.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                compact_pretty(x, indent + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The config a run was started with (and resumes with).
pub(crate) const CONFIG_FILE: &str = "config.resolved.toml";

/// The resolved config a checkpoint was written with (what a resume compares).
pub(crate) const CHECKPOINT_CONFIG_FILE: &str = "config.toml";

/// The lock file of a run folder (it holds the PID of the process training in it).
const LOCK_FILE: &str = ".lock";

/// A run folder: `output_dir/name`.
#[derive(Debug, Clone)]
pub(crate) struct RunFolder {
    dir: PathBuf,
    /// The exclusive lock of the process that trains in it (rank 0 of a
    /// data-parallel run); the OS releases it when the process ends, crash or not.
    lock: Option<Arc<File>>,
}

impl RunFolder {
    /// Claims `cfg`'s run folder for a fresh run: creates it and takes its lock,
    /// refusing one that holds a run unless `run.overwrite`. Nothing is cleared or
    /// written yet: [`RunFolder::start`] does that once the run is built, so a
    /// config that fails (a typo in `data.train`) leaves an old run untouched.
    pub(crate) fn claim(cfg: &RunConfig) -> Result<Self> {
        let dir = cfg.run.dir();
        std::fs::create_dir_all(&dir)
            .map_err(TrainError::io("cannot create the run folder", &dir))?;
        let lock = lock(&dir)?;
        if holds_a_run(&dir) && !cfg.run.overwrite {
            return Err(TrainError::config(
                "run.name",
                format!(
                    "the run folder {} already holds a run: continue it with `--resume {}`, pick another `run.name`, or set `run.overwrite = true`",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(Self {
            dir,
            lock: Some(Arc::new(lock)),
        })
    }

    /// Starts the fresh run in the claimed folder: clears an old run (everything but
    /// the lock it holds) and writes `config.resolved.toml`.
    pub(crate) fn start(&self, cfg: &RunConfig) -> Result<()> {
        let dir = &self.dir;
        let entries = std::fs::read_dir(dir).map_err(TrainError::io("cannot clear", dir))?;
        for e in entries {
            let path = e.map_err(TrainError::io("cannot clear", dir))?.path();
            if path.file_name().is_some_and(|n| n == LOCK_FILE) {
                continue;
            }
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.map_err(TrainError::io("cannot clear", &path))?;
        }
        std::fs::create_dir_all(checkpoints_dir(dir))
            .map_err(TrainError::io("cannot create the run folder", dir))?;
        self.save_config(cfg)
    }

    /// Writes `config.resolved.toml`: a fresh run's config, or the one a resumed
    /// run continues with (its overrides included, so the next resume keeps them).
    pub(crate) fn save_config(&self, cfg: &RunConfig) -> Result<()> {
        write_atomic(&self.dir.join(CONFIG_FILE), cfg.to_toml().as_bytes())?;
        Ok(())
    }

    /// Takes the run folder's exclusive lock (resuming: rank 0 only).
    pub(crate) fn lock(&mut self) -> Result<()> {
        self.lock = Some(Arc::new(lock(&self.dir)?));
        Ok(())
    }

    /// An existing run and its resolved config with `overrides` applied; the run
    /// lives where it is, whatever its `output_dir` said.
    pub(crate) fn open(dir: &Path, overrides: &[String]) -> Result<(Self, RunConfig)> {
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(TrainError::Resume {
                path: dir.to_path_buf(),
                reason: format!(
                    "no {CONFIG_FILE}: give the folder a run was written to (output_dir/name)"
                ),
            });
        }
        let mut cfg = RunConfig::load(&cfg_path, overrides)?;
        if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
            cfg.run.output_dir = parent.to_path_buf();
            cfg.run.name = name.to_string_lossy().into();
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                lock: None,
            },
            cfg,
        ))
    }

    /// The folder of a run that another process (data-parallel rank 0) created.
    pub(crate) fn at(dir: PathBuf) -> Self {
        Self { dir, lock: None }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn latest_checkpoint(&self) -> Result<PathBuf> {
        latest_checkpoint(&self.dir)
    }

    /// The folder of checkpoint `name`.
    pub(crate) fn checkpoint(&self, name: &str) -> PathBuf {
        checkpoints_dir(&self.dir).join(name)
    }

    /// Whether checkpoint `name` is still on disk.
    pub(crate) fn has_checkpoint(&self, name: &str) -> bool {
        self.checkpoint(name).is_dir()
    }

    /// The progress saved in checkpoint `ckpt`.
    pub(crate) fn read_state(ckpt: &Path) -> Result<TrainState> {
        let path = ckpt.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(TrainError::io("cannot read", &path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Resume {
            path: ckpt.to_path_buf(),
            reason: format!("{STATE_FILE} is unreadable: {e}"),
        })
    }

    /// The resolved config checkpoint `ckpt` was written with (none in checkpoints
    /// of earlier versions).
    pub(crate) fn checkpoint_config(ckpt: &Path) -> Option<String> {
        std::fs::read_to_string(ckpt.join(CHECKPOINT_CONFIG_FILE)).ok()
    }

    /// Writes checkpoint `name` atomically: `fill` writes into a temporary folder,
    /// which is renamed once complete, so a crash or a full disk never leaves a
    /// broken checkpoint (and a failed write removes the temporary folder).
    pub(crate) fn write_checkpoint(
        &self,
        name: &str,
        state: &TrainState,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dir = checkpoints_dir(&self.dir);
        let tmp = dir.join(format!(".tmp-{name}"));
        let final_dir = dir.join(name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(TrainError::io("cannot clear", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(TrainError::io("cannot create", &tmp))?;
        let written = fill(&tmp).and_then(|()| write_json(&tmp.join(STATE_FILE), state));
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
    pub(crate) fn remove_checkpoint(&self, name: &str) {
        let p = self.checkpoint(name);
        if let Err(e) = std::fs::remove_dir_all(&p) {
            tracing::warn!("cannot delete old checkpoint {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `summary.json` and friends: field order kept, arrays of scalars on one line,
    /// and the same value when read back.
    #[test]
    fn json_files_are_indented_with_scalar_arrays_on_one_line() {
        let v = serde_json::json!({
            "z_first": 1,
            "confusion": [[1, 2], [3, 4]],
            "names": ["a", "b"],
            "nested": {"empty": [], "obj": {}, "x": null},
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_json(&p, &v).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "{\n  \"z_first\": 1,\n  \"confusion\": [\n    [1,2],\n    [3,4]\n  ],\n  \"names\": [\"a\",\"b\"],\n  \"nested\": {\n    \"empty\": [],\n    \"obj\": {},\n    \"x\": null\n  }\n}\n"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
