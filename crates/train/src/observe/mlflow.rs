//! MLflow tracking (`train.report_to = ["mlflow"]`), written straight into an
//! MLflow file store (`mlruns/`), the layout MLflow's own `FileStore` reads:
//! `<experiment id>/meta.yaml`, and per run `meta.yaml`, `params/<key>` (the
//! resolved config, flattened), `metrics/<key>` (`timestamp value step` lines:
//! the same series as TensorBoard), `tags/` and `artifacts/` (the plots, the
//! summary and the config, copied when the run ends).
//!
//! Where: `MLFLOW_TRACKING_URI` (`file:/path/mlruns` or a folder; default
//! `./mlruns`, as MLflow's); the experiment: `MLFLOW_EXPERIMENT_NAME` (default
//! MLflow's `Default`). The run's id is kept in `<run>/mlflow.json`, so a resume
//! continues the same MLflow run, its series cut at the checkpoint's step as
//! `metrics.jsonl` is (no duplicate steps). MLflow 3 reads file stores only with
//! `MLFLOW_ALLOW_FILE_STORE=true`. Tracking servers (`http://...`) are not
//! written to yet: such a URI is an error at the start of the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::observe::series;
use crate::observe::{Event, Observer};

/// Where a run folder's MLflow run is (`<run>/mlflow.json`).
const LINK_FILE: &str = "mlflow.json";

/// MLflow's `RunStatus` values as its file store writes them.
const RUNNING: u8 = 1;
const FINISHED: u8 = 3;
const KILLED: u8 = 5;

/// The files of a run folder copied to the MLflow run's artifacts at the end.
const ARTIFACTS: &[&str] = &[
    "config.resolved.toml",
    "summary.json",
    "metrics.csv",
    "loss.png",
    "accuracy.png",
    "lr.png",
    "confusion.png",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Link {
    store: PathBuf,
    experiment_id: String,
    run_id: String,
}

/// Milliseconds since the epoch.
fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// 32 hex digits (MLflow's run ids are uuid4 hex), from the clock, the process
/// and a counter through FNV-1a.
fn new_run_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let fnv = |salt: u64| {
        seed.bytes().fold(0xcbf29ce484222325 ^ salt, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        })
    };
    format!("{:016x}{:016x}", fnv(1), fnv(2))
}

/// The file store `MLFLOW_TRACKING_URI` names (default `./mlruns`).
fn store_from_env() -> Result<PathBuf> {
    let uri = std::env::var("MLFLOW_TRACKING_URI").unwrap_or_else(|_| "mlruns".into());
    let path = if let Some(rest) = uri.strip_prefix("file://") {
        rest.to_string()
    } else if let Some(rest) = uri.strip_prefix("file:") {
        rest.to_string()
    } else if uri.contains("://") || uri.starts_with("sqlite:") || uri.starts_with("databricks") {
        return Err(TrainError::config(
            "train.report_to",
            format!(
                "MLFLOW_TRACKING_URI={uri}: only MLflow file stores are written (`file:/path/mlruns` or a \
                 folder); tracking servers and databases are not supported yet"
            ),
        ));
    } else {
        uri
    };
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path)
        .map_err(TrainError::io("cannot create the MLflow store", &path))?;
    path.canonicalize()
        .map_err(TrainError::io("cannot resolve the MLflow store", &path))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(TrainError::io("cannot create", parent))?;
    }
    std::fs::write(path, text).map_err(TrainError::io("cannot write", path))
}

/// A YAML single-quoted string.
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The experiment called `name` in `store` (its id), created when missing;
/// MLflow's `Default` experiment (id 0) is created with a new store.
fn experiment(store: &Path, name: &str) -> Result<String> {
    let meta = |id: &str, name: &str| {
        let t = now_ms();
        format!(
            "artifact_location: {}\ncreation_time: {t}\neffective_trace_archival_retention: null\n\
             experiment_id: {}\nlast_update_time: {t}\nlifecycle_stage: active\nname: {}\n\
             trace_location: null\nworkspace: default\n",
            yaml_str(&format!("file://{}", store.join(id).display())),
            yaml_str(id),
            yaml_str(name)
        )
    };
    if !store.join("0/meta.yaml").is_file() {
        write(&store.join("0/meta.yaml"), &meta("0", "Default"))?;
    }
    let entries = std::fs::read_dir(store).map_err(TrainError::io("cannot read", store))?;
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path().join("meta.yaml")).unwrap_or_default();
        let found = text.lines().any(|l| {
            l.strip_prefix("name: ")
                .is_some_and(|v| v.trim().trim_matches('\'').trim_matches('"') == name)
        });
        if found {
            return Ok(e.file_name().to_string_lossy().into_owned());
        }
    }
    // MLflow's ids are large random integers; the clock's nanoseconds serve.
    let id = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos())
        % 1_000_000_000_000_000_000)
        .to_string();
    write(&store.join(&id).join("meta.yaml"), &meta(&id, name))?;
    Ok(id)
}

/// Every key of the resolved config with its value as text.
fn params(cfg: &RunConfig) -> Vec<(String, String)> {
    crate::config::flatten_toml(&cfg.to_toml(), &|_| false)
        .into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// The MLflow run of a training run.
pub struct Mlflow {
    /// `<store>/<experiment>/<run id>`.
    dir: PathBuf,
    run_folder: PathBuf,
    log_every: u64,
    meta: RunMeta,
}

/// What the run's `meta.yaml` says.
#[derive(Debug, Clone)]
struct RunMeta {
    experiment_id: String,
    run_id: String,
    run_name: String,
    start_time: u128,
    end_time: Option<u128>,
    status: u8,
    user: String,
}

impl RunMeta {
    fn yaml(&self, dir: &Path) -> String {
        format!(
            "artifact_uri: {}\nend_time: {}\nentry_point_name: ''\nexperiment_id: {}\n\
             lifecycle_stage: active\nrun_id: {}\nrun_name: {}\nsource_name: ''\nsource_type: 4\n\
             source_version: ''\nstart_time: {}\nstatus: {}\ntags: []\nuser_id: {}\n",
            yaml_str(&format!("file://{}", dir.join("artifacts").display())),
            self.end_time.map_or("null".to_string(), |t| t.to_string()),
            yaml_str(&self.experiment_id),
            self.run_id,
            yaml_str(&self.run_name),
            self.start_time,
            self.status,
            yaml_str(&self.user)
        )
    }
}

impl Mlflow {
    /// The MLflow run of the training run in `run_folder` under `cfg`: the one
    /// its `mlflow.json` names when resumed (`resumed_step`: its series cut after
    /// that step), else a new one in the store and experiment the environment
    /// names.
    pub fn open(run_folder: &Path, cfg: &RunConfig, resumed_step: Option<u64>) -> Result<Self> {
        let store = store_from_env()?;
        let link_path = run_folder.join(LINK_FILE);
        let earlier: Option<Link> = std::fs::read_to_string(&link_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(|l: &Link| l.store == store);
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let (link, start_time) = match (earlier, resumed_step) {
            (Some(link), Some(step)) => {
                let dir = link.store.join(&link.experiment_id).join(&link.run_id);
                cut_metrics(&dir.join("metrics"), step)?;
                let start = std::fs::read_to_string(dir.join("meta.yaml"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("start_time: ")?.trim().parse().ok())
                    })
                    .unwrap_or_else(now_ms);
                (link, start)
            }
            _ => {
                let name =
                    std::env::var("MLFLOW_EXPERIMENT_NAME").unwrap_or_else(|_| "Default".into());
                let link = Link {
                    experiment_id: experiment(&store, &name)?,
                    run_id: new_run_id(),
                    store: store.clone(),
                };
                let text = serde_json::to_string_pretty(&link).unwrap_or_default();
                clip_model::write_atomic(&link_path, text.as_bytes())?;
                (link, now_ms())
            }
        };
        let dir = link.store.join(&link.experiment_id).join(&link.run_id);
        let me = Self {
            meta: RunMeta {
                experiment_id: link.experiment_id,
                run_id: link.run_id,
                run_name: cfg.run.name.clone(),
                start_time,
                end_time: None,
                status: RUNNING,
                user: user.clone(),
            },
            dir,
            run_folder: run_folder.to_path_buf(),
            log_every: cfg.train.log_every_steps,
        };
        me.write_meta()?;
        for (k, v) in [
            ("mlflow.runName", cfg.run.name.as_str()),
            ("mlflow.source.type", "LOCAL"),
            ("mlflow.source.name", "train-cli"),
            ("mlflow.user", user.as_str()),
        ] {
            write(&me.dir.join("tags").join(k), v)?;
        }
        for (k, v) in params(cfg) {
            write(&me.dir.join("params").join(&k), &v)?;
        }
        std::fs::create_dir_all(me.dir.join("artifacts"))
            .map_err(TrainError::io("cannot create", &me.dir))?;
        Ok(me)
    }

    /// The MLflow run's folder in the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_meta(&self) -> Result<()> {
        write(&self.dir.join("meta.yaml"), &self.meta.yaml(&self.dir))
    }

    fn log(&self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let t = now_ms();
        for (k, v) in values {
            let path = self.dir.join("metrics").join(k);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(TrainError::io("cannot create", parent))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(TrainError::io("cannot open", &path))?;
            let value = if v.is_finite() {
                v.to_string()
            } else {
                "nan".into()
            };
            writeln!(f, "{t} {value} {step}").map_err(TrainError::io("cannot write", &path))?;
        }
        Ok(())
    }

    fn finish(&mut self, interrupted: bool) -> Result<()> {
        for name in ARTIFACTS {
            let src = self.run_folder.join(name);
            if src.is_file() {
                let dst = self.dir.join("artifacts").join(name);
                std::fs::copy(&src, &dst).map_err(TrainError::io("cannot copy", &src))?;
            }
        }
        self.meta.status = if interrupted { KILLED } else { FINISHED };
        self.meta.end_time = Some(now_ms());
        self.write_meta()
    }
}

/// Drops the lines of every metric file under `dir` whose step is after `step`.
fn cut_metrics(dir: &Path, step: u64) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            cut_metrics(&path, step)?;
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(TrainError::io("cannot read", &path))?;
        let kept: String = text
            .lines()
            .filter(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, kept).map_err(TrainError::io("cannot write", &path))?;
    }
    Ok(())
}

impl Observer for Mlflow {
    fn event(&mut self, event: &Event) -> Result<()> {
        if let Event::Finish(report) = event {
            return self.finish(report.interrupted);
        }
        match series::scalars(event, self.log_every) {
            Some((step, values)) => self.log(step, &values),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_run_id(), new_run_id());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn yaml_strings_escape_quotes() {
        assert_eq!(yaml_str("it's"), "'it''s'");
    }
}
