//! Starting a training the way a command line asks for it: a fresh run from a
//! config, a resumed run folder, or, after torchrun restarted the group
//! (`--max-restarts`), the config's run continued from its newest checkpoint.

use std::path::{Path, PathBuf};

use super::Trainer;
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::parallel::DataParallel;
use crate::run::checkpoint::latest_checkpoint;

/// How [`Trainer::launch`] started the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launched {
    /// A fresh run from the config.
    Fresh,
    /// A run continued from its checkpoint `from` at step `step`; `restart` is
    /// torchrun's restart count when a restart made it continue.
    Resumed {
        dir: PathBuf,
        from: PathBuf,
        step: u64,
        restart: Option<u32>,
    },
}

impl Trainer {
    /// The run a training command asks for: `resume` (a run folder) continues a
    /// run with `overrides` on top of its config; `config` starts one, except in
    /// a group torchrun restarted, where the config's run continues from its
    /// newest checkpoint when it has one (instead of starting over, or refusing
    /// its folder). Giving both, or neither, is an error. The run's test set
    /// (`data.test`) is read before anything trains, so a wrong path fails early.
    /// `allow_data_change` lets a resumed run continue on data that changed
    /// since its checkpoint.
    pub fn launch(
        config: Option<&Path>,
        resume: Option<&Path>,
        overrides: &[String],
        allow_data_change: bool,
    ) -> Result<(Self, Launched)> {
        let restart = DataParallel::restart_count();
        let no_config = || {
            TrainError::Usage(
                "no config given: pass --config FILE (see configs/) or --resume RUN_DIR; --help lists the commands".into(),
            )
        };
        let (dir, restarted) = match (resume, config) {
            (Some(dir), Some(cfg)) => {
                return Err(TrainError::Usage(format!(
                    "--config {} and --resume {} exclude each other: a resumed run continues with its own {}/config.resolved.toml; change its values with --set (they are kept for later resumes)",
                    cfg.display(),
                    dir.display(),
                    dir.display()
                )));
            }
            (None, None) => return Err(no_config()),
            (Some(dir), None) => (Some(dir.to_path_buf()), None),
            (None, Some(cfg)) if restart > 0 => {
                let dir = RunConfig::load(cfg, overrides)?.run.dir();
                match latest_checkpoint(&dir) {
                    Ok(_) => (Some(dir), Some(restart)),
                    Err(_) => (None, None),
                }
            }
            (None, Some(_)) => (None, None),
        };
        let (trainer, launched) = match dir {
            Some(dir) => {
                let t = Trainer::resume_with(&dir, overrides, allow_data_change)?;
                let launched = Launched::Resumed {
                    from: t.resumed_from().map(Path::to_path_buf).unwrap_or_default(),
                    step: t.state().global_step,
                    restart: restarted,
                    dir,
                };
                (t, launched)
            }
            None => {
                let cfg = RunConfig::load(config.ok_or_else(no_config)?, overrides)?;
                (Trainer::new(cfg)?, Launched::Fresh)
            }
        };
        if trainer.is_main()
            && let Some(src) = &trainer.cfg.data.test
        {
            crate::run::test_set::test_set(src, trainer.model.class_names())?;
        }
        Ok((trainer, launched))
    }
}
