//! A run folder (`output_dir/name`): claimed with an exclusive lock by the
//! process that trains in it, cleared only once a fresh run is built, its
//! `config.resolved.toml`, and its checkpoints ([`crate::run::checkpoint`]).

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip_model::write_atomic;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::run::checkpoint::{Checkpoints, holds_a_run};

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

/// The config a run was started with (and resumes with).
pub(crate) const CONFIG_FILE: &str = "config.resolved.toml";

/// The lock file of a run folder (it holds the PID of the process training in it).
const LOCK_FILE: &str = ".lock";

/// A run folder: `output_dir/name`.
#[derive(Debug, Clone)]
pub(crate) struct RunFolder {
    dir: PathBuf,
    /// The exclusive lock of the process that trains in it (rank 0 of a
    /// data-parallel run); the OS releases it when the process ends, crash or not.
    lock: Option<Arc<File>>,
    /// The folder's device and inode when the lock was taken: a folder deleted
    /// or replaced under a running run is noticed before anything else is saved.
    identity: Option<(u64, u64)>,
}

/// The device and inode of `dir`, `None` when it is not there.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
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
            identity: identity(&dir),
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
        self.checkpoints().create()?;
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
        self.identity = identity(&self.dir);
        Ok(())
    }

    /// An error when the folder this process locked was deleted, moved or
    /// replaced since: what would be saved now (a checkpoint, the summary) would
    /// land in a folder nobody finds, or recreate a run folder without its run.
    pub(crate) fn check_present(&self) -> Result<()> {
        match self.identity {
            Some(id) if identity(&self.dir) != Some(id) => Err(TrainError::Io {
                action: "the run folder was deleted, moved or replaced during the run, stopping:",
                path: self.dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "nothing more can be saved there; the last checkpoint is wherever the folder went (resume it from there)",
                ),
            }),
            _ => Ok(()),
        }
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
                identity: None,
            },
            cfg,
        ))
    }

    /// The folder of a run that another process (data-parallel rank 0) created.
    pub(crate) fn at(dir: PathBuf) -> Self {
        Self {
            dir,
            lock: None,
            identity: None,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its checkpoints.
    pub(crate) fn checkpoints(&self) -> Checkpoints {
        Checkpoints::of_run(&self.dir)
    }
}
