//! MLflow tracking (`train.report_to = ["mlflow"]`) to where
//! `MLFLOW_TRACKING_URI` points:
//!
//! - a file store (`file:/path/mlruns` or a folder; default `./mlruns`, as
//!   MLflow's), written directly in the layout MLflow's own `FileStore` reads:
//!   `<experiment id>/meta.yaml`, and per run `meta.yaml`, `params/<key>` (the
//!   resolved config, flattened), `metrics/<key>` (`timestamp value step` lines:
//!   the same series as TensorBoard), `tags/` and `artifacts/` (the plots, the
//!   summary and the config, copied when the run ends). MLflow 3 reads file
//!   stores only with `MLFLOW_ALLOW_FILE_STORE=true`.
//! - a tracking server (`http://host:5000`, `https://...`), through its REST API
//!   (`/api/2.0/mlflow/...`): the experiment found or created by name, the run
//!   created with its params, metrics in batches, artifacts uploaded through the
//!   server's artifact proxy (`mlflow-artifacts:` URIs) or copied when the run's
//!   artifact location is a local folder. `MLFLOW_TRACKING_TOKEN` (bearer) or
//!   `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (basic) authenticate.
//!   A server that cannot be reached at the start is an error; a request that
//!   fails later is a warning, and the training goes on.
//!
//! The experiment: `MLFLOW_EXPERIMENT_NAME` (default MLflow's `Default`). The
//! run's id is kept in `<run>/mlflow.json`, so a resume continues the same MLflow
//! run without duplicate steps: a file store's series are cut at the
//! checkpoint's step as `metrics.jsonl` is; a server keeps what it has, and the
//! resumed run logs only the steps after the last one it holds.

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
    /// The file store's folder, or the server's URI.
    store: String,
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

/// Where `MLFLOW_TRACKING_URI` points.
enum Target {
    Files(PathBuf),
    Server(Server),
}

/// The path of a `file:` URI (`file:///a/b`, `file:/a/b`).
fn file_uri_path(uri: &str) -> Option<&str> {
    uri.strip_prefix("file://")
        .or_else(|| uri.strip_prefix("file:"))
}

/// The file store or tracking server `MLFLOW_TRACKING_URI` names (default
/// `./mlruns`).
fn target_from_env() -> Result<Target> {
    let uri = std::env::var("MLFLOW_TRACKING_URI").unwrap_or_else(|_| "mlruns".into());
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Target::Server(Server::new(&uri)));
    }
    let path = if let Some(rest) = file_uri_path(&uri) {
        rest.to_string()
    } else if uri.contains("://") || uri.starts_with("sqlite:") || uri.starts_with("databricks") {
        return Err(TrainError::config(
            "train.report_to",
            format!(
                "MLFLOW_TRACKING_URI={uri}: MLflow file stores (`file:/path/mlruns` or a folder) \
                 and tracking servers (`http://host:5000`) are written; for a database or \
                 Databricks, serve it with `mlflow server --backend-store-uri {uri}` and point \
                 MLFLOW_TRACKING_URI at the server"
            ),
        ));
    } else {
        uri
    };
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path)
        .map_err(TrainError::io("cannot create the MLflow store", &path))?;
    path.canonicalize()
        .map(Target::Files)
        .map_err(TrainError::io("cannot resolve the MLflow store", &path))
}

/// An MLflow tracking server's REST API.
struct Server {
    /// The URI without a trailing `/`.
    base: String,
    agent: ureq::Agent,
    /// The `Authorization` header, from the environment.
    auth: Option<String>,
}

/// A REST request's outcome: the JSON answer, or what went wrong (with the
/// server's error code when it answered one).
type Answer = std::result::Result<serde_json::Value, (Option<String>, String)>;

impl Server {
    fn new(uri: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (
            env("MLFLOW_TRACKING_TOKEN"),
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(token), _, _) => Some(format!("Bearer {token}")),
            (None, Some(user), password) => {
                use base64::Engine;
                let pair = format!("{user}:{}", password.unwrap_or_default());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            _ => None,
        };
        Self {
            base: uri.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(60))
                .build(),
            auth,
        }
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let r = self.agent.request(method, url);
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    /// The answer of `call` as JSON, or the error MLflow gave.
    fn answer(call: std::result::Result<ureq::Response, ureq::Error>) -> Answer {
        match call {
            Ok(r) => r
                .into_json::<serde_json::Value>()
                .map_err(|e| (None, format!("an answer that is not JSON: {e}"))),
            Err(ureq::Error::Status(code, r)) => {
                let body: serde_json::Value = r.into_json().unwrap_or_default();
                let error_code = body["error_code"].as_str().map(String::from);
                let message = body["message"].as_str().unwrap_or("").to_string();
                Err((
                    error_code,
                    format!("HTTP {code} {message}").trim().to_string(),
                ))
            }
            Err(e) => Err((None, e.to_string())),
        }
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        let mut r = self.request("GET", &format!("{}/api/2.0/mlflow/{path}", self.base));
        for (k, v) in query {
            r = r.query(k, v);
        }
        Self::answer(r.call())
    }

    fn post(&self, path: &str, body: serde_json::Value) -> Answer {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        Self::answer(self.request("POST", &url).send_json(body))
    }

    /// `what` failed: the error that names this server.
    fn error(&self, what: &str, (code, reason): (Option<String>, String)) -> TrainError {
        TrainError::Tracker {
            server: self.base.clone(),
            what: what.into(),
            reason: match code {
                Some(c) => format!("{reason} ({c})"),
                None => reason,
            },
        }
    }

    /// The id of the experiment called `name`, created when missing.
    fn experiment(&self, name: &str) -> Result<String> {
        match self.get("experiments/get-by-name", &[("experiment_name", name)]) {
            Ok(v) => v["experiment"]["experiment_id"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| self.error("experiments/get-by-name", (None, v.to_string()))),
            Err((Some(code), _)) if code == "RESOURCE_DOES_NOT_EXIST" => {
                let v = self
                    .post("experiments/create", serde_json::json!({ "name": name }))
                    .map_err(|e| self.error("experiments/create", e))?;
                v["experiment_id"]
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| self.error("experiments/create", (None, v.to_string())))
            }
            Err(e) => Err(self.error("experiments/get-by-name", e)),
        }
    }

    /// Uploads `file` as the artifact `name` of a run whose artifacts are at
    /// `artifact_uri`: through the server's proxy (`mlflow-artifacts:`), or
    /// copied into a local folder (`file:` or a path).
    fn upload(
        &self,
        artifact_uri: &str,
        name: &str,
        file: &Path,
    ) -> std::result::Result<(), String> {
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/<path>` or `mlflow-artifacts://host/<path>`.
            let path = match rest.strip_prefix("//") {
                Some(hosted) => hosted.split_once('/').map_or("", |(_, p)| p),
                None => rest.trim_start_matches('/'),
            };
            let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}/{name}",
                self.base
            );
            return Self::answer(self.request("PUT", &url).send_bytes(&bytes))
                .map(|_| ())
                .map_err(|(_, why)| why);
        }
        let local = match file_uri_path(artifact_uri) {
            Some(path) => path,
            None if !artifact_uri.contains("://") => artifact_uri,
            None => {
                return Err(format!(
                    "the run's artifact location {artifact_uri} is not one this tool writes to \
                     (the server's proxy, `mlflow server --serve-artifacts`, or a local folder)"
                ));
            }
        };
        let dst = Path::new(local).join(name);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(file, &dst)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", dst.display()))
    }
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
    run_folder: PathBuf,
    log_every: u64,
    sink: Sink,
}

/// Where the run's figures go.
enum Sink {
    /// `<store>/<experiment>/<run id>` of a file store, and its `meta.yaml`.
    Files {
        dir: PathBuf,
        meta: RunMeta,
    },
    Server(ServerRun),
}

/// A run on a tracking server.
struct ServerRun {
    server: Server,
    experiment_id: String,
    run_id: String,
    artifact_uri: String,
    /// Per metric, the last step the server holds from before a resume: those
    /// steps are not logged again.
    held: std::collections::HashMap<String, u64>,
    /// Requests that failed since the start (the first is a warning).
    failures: u64,
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

/// The run's tags, as MLflow's own client sets them.
fn tags<'a>(cfg: &'a RunConfig, user: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("mlflow.runName", cfg.run.name.as_str()),
        ("mlflow.source.type", "LOCAL"),
        ("mlflow.source.name", "train-cli"),
        ("mlflow.user", user),
    ]
}

/// Pairs as MLflow's REST API lists tags and params: `[{"key": k, "value": v}]`.
fn key_values<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<serde_json::Value> {
    pairs
        .into_iter()
        .map(|(k, v)| serde_json::json!({ "key": k, "value": v }))
        .collect()
}

/// MLflow's limits per `runs/log-batch` request.
const BATCH_PARAMS: usize = 100;
const BATCH_METRICS: usize = 1000;

impl Mlflow {
    /// The MLflow run of the training run in `run_folder` under `cfg`: the one
    /// its `mlflow.json` names when resumed (`resumed_step`: a file store's
    /// series cut after that step), else a new one in the store or server and
    /// experiment the environment names.
    pub fn open(run_folder: &Path, cfg: &RunConfig, resumed_step: Option<u64>) -> Result<Self> {
        let target = target_from_env()?;
        let store = match &target {
            Target::Files(p) => p.display().to_string(),
            Target::Server(s) => s.base.clone(),
        };
        let link_path = run_folder.join(LINK_FILE);
        let earlier: Option<Link> = std::fs::read_to_string(&link_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(|l: &Link| l.store == store)
            .filter(|_| resumed_step.is_some());
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let experiment_name =
            std::env::var("MLFLOW_EXPERIMENT_NAME").unwrap_or_else(|_| "Default".into());
        let save_link = |link: &Link| {
            let text = serde_json::to_string_pretty(link).unwrap_or_default();
            clip_model::write_atomic(&link_path, text.as_bytes())
        };
        let sink = match target {
            Target::Files(store) => {
                let (link, start_time) = match earlier.zip(resumed_step) {
                    Some((link, step)) => {
                        let dir = store.join(&link.experiment_id).join(&link.run_id);
                        cut_metrics(&dir.join("metrics"), step)?;
                        let start = std::fs::read_to_string(dir.join("meta.yaml"))
                            .ok()
                            .and_then(|t| {
                                t.lines().find_map(|l| {
                                    l.strip_prefix("start_time: ")?.trim().parse().ok()
                                })
                            })
                            .unwrap_or_else(now_ms);
                        (link, start)
                    }
                    None => {
                        let link = Link {
                            experiment_id: experiment(&store, &experiment_name)?,
                            run_id: new_run_id(),
                            store: store.display().to_string(),
                        };
                        save_link(&link)?;
                        (link, now_ms())
                    }
                };
                let dir = store.join(&link.experiment_id).join(&link.run_id);
                let meta = RunMeta {
                    experiment_id: link.experiment_id,
                    run_id: link.run_id,
                    run_name: cfg.run.name.clone(),
                    start_time,
                    end_time: None,
                    status: RUNNING,
                    user: user.clone(),
                };
                write(&dir.join("meta.yaml"), &meta.yaml(&dir))?;
                for (k, v) in tags(cfg, &user) {
                    write(&dir.join("tags").join(k), v)?;
                }
                for (k, v) in params(cfg) {
                    write(&dir.join("params").join(&k), &v)?;
                }
                std::fs::create_dir_all(dir.join("artifacts"))
                    .map_err(TrainError::io("cannot create", &dir))?;
                Sink::Files { dir, meta }
            }
            Target::Server(server) => {
                let run = match earlier {
                    Some(link) => ServerRun::resume(server, link)?,
                    None => {
                        let run = ServerRun::create(server, &experiment_name, cfg, &user)?;
                        save_link(&Link {
                            store,
                            experiment_id: run.experiment_id.clone(),
                            run_id: run.run_id.clone(),
                        })?;
                        run
                    }
                };
                Sink::Server(run)
            }
        };
        Ok(Self {
            run_folder: run_folder.to_path_buf(),
            log_every: cfg.train.log_every_steps,
            sink,
        })
    }

    /// Where the run is, for a person: the file store's run folder and how to
    /// view it, or the run's page on the server.
    pub fn describe(&self) -> String {
        match &self.sink {
            Sink::Files { dir, .. } => format!(
                "run {} (view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {})",
                dir.display(),
                dir.parent()
                    .and_then(Path::parent)
                    .map_or_else(String::new, |s| s.display().to_string())
            ),
            Sink::Server(r) => format!(
                "run {}/#/experiments/{}/runs/{}",
                r.server.base, r.experiment_id, r.run_id
            ),
        }
    }

    fn log(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let t = now_ms();
        let dir = match &mut self.sink {
            Sink::Files { dir, .. } => dir,
            Sink::Server(r) => {
                r.log(step, t, values);
                return Ok(());
            }
        };
        for (k, v) in values {
            let path = dir.join("metrics").join(k);
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
        let files: Vec<(&str, PathBuf)> = ARTIFACTS
            .iter()
            .map(|name| (*name, self.run_folder.join(name)))
            .filter(|(_, src)| src.is_file())
            .collect();
        match &mut self.sink {
            Sink::Files { dir, meta } => {
                for (name, src) in files {
                    let dst = dir.join("artifacts").join(name);
                    std::fs::copy(&src, &dst).map_err(TrainError::io("cannot copy", &src))?;
                }
                meta.status = if interrupted { KILLED } else { FINISHED };
                meta.end_time = Some(now_ms());
                write(&dir.join("meta.yaml"), &meta.yaml(dir))
            }
            Sink::Server(r) => {
                for (name, src) in files {
                    if let Err(why) = r.server.upload(&r.artifact_uri, name, &src) {
                        r.failed(&format!("uploading {name}"), &why);
                    }
                }
                let status = if interrupted { "KILLED" } else { "FINISHED" };
                let body = serde_json::json!({
                    "run_id": r.run_id, "status": status, "end_time": now_ms() as u64,
                });
                if let Err((_, why)) = r.server.post("runs/update", body) {
                    r.failed("runs/update", &why);
                }
                Ok(())
            }
        }
    }
}

impl ServerRun {
    /// A new run in the experiment `name` (created when missing), with the
    /// config's params and MLflow's tags.
    fn create(server: Server, name: &str, cfg: &RunConfig, user: &str) -> Result<Self> {
        let experiment_id = server.experiment(name)?;
        let tags = key_values(tags(cfg, user));
        let v = server
            .post(
                "runs/create",
                serde_json::json!({
                    "experiment_id": experiment_id,
                    "run_name": cfg.run.name,
                    "start_time": now_ms() as u64,
                    "user_id": user,
                    "tags": tags,
                }),
            )
            .map_err(|e| server.error("runs/create", e))?;
        let info = &v["run"]["info"];
        let (Some(run_id), Some(artifact_uri)) =
            (info["run_id"].as_str(), info["artifact_uri"].as_str())
        else {
            return Err(server.error("runs/create", (None, v.to_string())));
        };
        let params = params(cfg);
        for chunk in params.chunks(BATCH_PARAMS) {
            let params = key_values(chunk.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            server
                .post(
                    "runs/log-batch",
                    serde_json::json!({ "run_id": run_id, "params": params }),
                )
                .map_err(|e| server.error("runs/log-batch (params)", e))?;
        }
        Ok(Self {
            experiment_id,
            run_id: run_id.into(),
            artifact_uri: artifact_uri.into(),
            server,
            held: Default::default(),
            failures: 0,
        })
    }

    /// The run `link` names, running again; the steps it holds are not logged
    /// again (MLflow cannot delete a metric's later values).
    fn resume(server: Server, link: Link) -> Result<Self> {
        let v = server
            .get("runs/get", &[("run_id", &link.run_id)])
            .map_err(|e| server.error("runs/get", e))?;
        let run = &v["run"];
        let artifact_uri = run["info"]["artifact_uri"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // A run's latest value of a metric is the one of its largest step
        // (MLflow orders by step, then time): the last step it holds.
        let held = run["data"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let step = m["step"]
                    .as_u64()
                    .or_else(|| m["step"].as_str()?.parse().ok())?;
                Some((m["key"].as_str()?.to_string(), step))
            })
            .collect();
        server
            .post(
                "runs/update",
                serde_json::json!({ "run_id": link.run_id, "status": "RUNNING" }),
            )
            .map_err(|e| server.error("runs/update", e))?;
        Ok(Self {
            server,
            experiment_id: link.experiment_id,
            run_id: link.run_id,
            artifact_uri,
            held,
            failures: 0,
        })
    }

    /// Logs the finite `values` at `step` the run does not hold yet.
    fn log(&mut self, step: u64, t: u128, values: &[(String, f64)]) {
        let metrics: Vec<serde_json::Value> = values
            .iter()
            .filter(|(k, v)| v.is_finite() && self.held.get(k).is_none_or(|&h| step > h))
            .map(|(k, v)| {
                serde_json::json!({ "key": k, "value": v, "timestamp": t as u64, "step": step })
            })
            .collect();
        for chunk in metrics.chunks(BATCH_METRICS) {
            let body = serde_json::json!({ "run_id": self.run_id, "metrics": chunk });
            if let Err((_, why)) = self.server.post("runs/log-batch", body) {
                self.failed("runs/log-batch", &why);
            }
        }
    }

    /// A request that failed during the run: a warning the first time, then
    /// counted (the training goes on).
    fn failed(&mut self, what: &str, why: &str) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(
                "MLflow tracking server {}: {what}: {why} (the training goes on; later \
                 failures are counted in the last warning)",
                self.server.base
            );
        } else {
            tracing::debug!("MLflow: {what}: {why}");
        }
    }
}

impl Drop for ServerRun {
    fn drop(&mut self) {
        if self.failures > 1 {
            tracing::warn!(
                "MLflow tracking server {}: {} requests failed in this run",
                self.server.base,
                self.failures
            );
        }
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
