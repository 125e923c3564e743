//! Events of a run and the observers that watch them: progress bars
//! ([`progress`]), tracing logs ([`log`]), metrics files ([`metrics_files`]),
//! plots ([`plots`]) and TensorBoard event files ([`tensorboard`]). Observers
//! never change the run. Adding one: a file here implementing [`Observer`], and
//! its line in [`run_observers`] when a config setting asks for it.

pub(crate) mod log;
pub(crate) mod metrics_files;
pub(crate) mod mlflow;
pub(crate) mod plots;
pub(crate) mod progress;
mod series;
pub(crate) mod tensorboard;

use std::path::{Path, PathBuf};

use crate::config::{ReportTo, RunConfig};
use crate::error::Result;
use crate::report::{EvalRecord, FitReport, StepMetrics};

pub use log::Log;
pub use metrics_files::MetricsFiles;
pub use mlflow::Mlflow;
pub use plots::Plots;
pub use progress::{BatchProgress, Progress};
pub use tensorboard::{TensorBoard, tensorboard_dir};

/// What the start of a run looks like.
#[derive(Debug, Clone)]
pub struct StartInfo {
    pub run_dir: PathBuf,
    pub epochs: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub start_step: u64,
    pub train_images: usize,
    pub val_images: usize,
    pub groups: String,
    /// Steps between logged step lines (`train.log_every_steps`).
    pub log_every_steps: u64,
    /// Steps between mid-epoch evaluations (`train.eval_every_steps`).
    pub eval_every_steps: Option<u64>,
}

/// Events of a run, in order.
#[derive(Debug)]
pub enum Event<'a> {
    Start(&'a StartInfo),
    EpochStart {
        epoch: u64,
        trainable: i64,
    },
    Step(&'a StepMetrics),
    /// An evaluation begins (its results follow as `Eval`).
    EvalStart,
    Eval(&'a EvalRecord),
    Checkpoint(&'a Path),
    Finish(&'a FitReport),
}

/// Watches a run.
pub trait Observer {
    fn event(&mut self, event: &Event) -> Result<()>;
}

/// What a run prints on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Console {
    /// Progress bars on a terminal, plain lines in a file; one line per
    /// evaluation; `tracing` lines for checkpoints and warnings.
    #[default]
    Human,
    /// Warnings and errors only.
    Quiet,
    /// One JSON object per line (`tracing`'s JSON): the start, every
    /// `train.log_every_steps`-th step with its metrics, evaluations,
    /// checkpoints, the finish, warnings and errors.
    Json,
}

/// The observers of a run in `run_dir` under `cfg` (rank 0's): metrics files,
/// plots, TensorBoard event files when `train.report_to` lists `"tensorboard"`,
/// and what `console` prints. `resumed_step`: the checkpoint step a resumed run
/// continues from (later lines are dropped).
pub struct RunObservers {
    pub observers: Vec<Box<dyn Observer>>,
    /// The TensorBoard event file, when one is written.
    pub tensorboard: Option<PathBuf>,
    /// Where the MLflow run is (its store folder or server page), when one is written.
    pub mlflow: Option<String>,
}

/// See [`RunObservers`].
pub fn run_observers(
    run_dir: &Path,
    cfg: &RunConfig,
    resumed_step: Option<u64>,
    console: Console,
) -> Result<RunObservers> {
    let every = cfg.train.log_every_steps;
    let mut observers: Vec<Box<dyn Observer>> = vec![
        Box::new(MetricsFiles::open(run_dir, resumed_step, every)?),
        Box::new(Plots::new(run_dir)),
        Box::new(Log::new(console == Console::Json, every)),
    ];
    let (mut tensorboard, mut mlflow) = (None, None);
    for to in &cfg.train.report_to {
        match to {
            ReportTo::Tensorboard => {
                let tb = TensorBoard::open(run_dir, resumed_step, every, &cfg.to_toml())?;
                tensorboard = Some(tb.path().to_path_buf());
                observers.push(Box::new(tb));
            }
            ReportTo::Mlflow => {
                let m = Mlflow::open(run_dir, cfg, resumed_step)?;
                mlflow = Some(m.describe());
                observers.push(Box::new(m));
            }
        }
    }
    if console == Console::Human {
        observers.push(Box::new(Progress::default()));
    }
    Ok(RunObservers {
        observers,
        tensorboard,
        mlflow,
    })
}
