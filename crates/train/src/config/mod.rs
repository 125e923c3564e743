//! The run's TOML file: one section per crate (`[model]`, `[data]`, `[optim]`,
//! `[train]`) plus `[run]`. Unknown keys anywhere are errors naming the key and
//! the file; `--set section.key=value` overrides any value; [`RunConfig::validate`]
//! reports every problem at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use clip_optim::OptimConfig;

use crate::error::{Result, TrainError};

mod find;
pub mod keys;
mod sections;

pub use find::find_config;

pub use sections::{
    Advice, Architecture, CheckpointConfig, CompareMethod, CompareSection, DataSection,
    DeviceChoice, DistBackend, EarlyStoppingConfig, EmaConfig, GradSync, Metric, MetricChoice,
    ModelSection, Objective, ReportTo, RunSection, TrainSection, Unfreeze,
};

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub run: RunSection,
    pub model: ModelSection,
    pub data: DataSection,
    pub optim: OptimConfig,
    pub train: TrainSection,
    pub compare: CompareSection,
}

/// Every dotted key of the TOML `text` with its value (an unreadable text has
/// none); a table whose key `whole` accepts stays one value.
pub(crate) fn flatten_toml(
    text: &str,
    whole: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, toml::Value> {
    fn walk(
        prefix: &str,
        t: &toml::Table,
        whole: &dyn Fn(&str) -> bool,
        out: &mut BTreeMap<String, toml::Value>,
    ) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) if !whole(&key) => walk(&key, inner, whole, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(t) = toml::from_str::<toml::Table>(text) {
        walk("", &t, whole, &mut out);
    }
    out
}

/// Sets `dotted.key = value` in a TOML table; `value` is read as TOML, or as a
/// string when it is not valid TOML (`--set run.name=foo`).
fn set_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').ok_or_else(|| {
        TrainError::config(
            spec,
            "an override must look like `section.key=value` (e.g. `optim.lr=3e-5`)",
        )
    })?;
    let key = key.trim();
    let more_than_one = || {
        TrainError::config(
            key,
            format!(
                "the value {raw:?} holds more than one line or TOML value (everything after the first \
                 would be dropped): give one `--set section.key=value` per key"
            ),
        )
    };
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(t) if t.len() > 1 => return Err(more_than_one()),
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) if raw.contains(['\n', '\r']) => return Err(more_than_one()),
        Err(_) => toml::Value::String(raw.trim().into()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::config(key, "is not a dotted key"));
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::config(key, format!("`{p}` is a value, not a section")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A path of serde_ignored as a dotted key (`data.train_transforms[2].op`).
fn dotted(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        P::Map { parent, key } => {
            let p = dotted(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            dotted(parent)
        }
    }
}

/// serde reports an unknown key as "unknown field `k`, expected ... in `a.b`";
/// users want "unknown key `a.b.k`" first.
/// The key a deserialisation error is about (`unknown field `F`` in section `S`, or
/// a bad value `in `S``), with the message reworded to name it.
fn failing_key(msg: &str) -> (Option<String>, String) {
    let msg = msg.trim_end().replace('\n', " ");
    let msg = msg.as_str();
    let field = msg
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(f, _)| f);
    let section = msg
        .rsplit_once("in `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(s, _)| s);
    match (field, section) {
        (Some(f), Some(s)) => (
            Some(format!("{s}.{f}")),
            format!("unknown key `{s}.{f}` ({msg})"),
        ),
        (Some(f), None) => (Some(f.to_string()), format!("unknown key `{f}` ({msg})")),
        (None, Some(s)) => (Some(s.to_string()), format!("`{s}`: {msg}")),
        (None, None) => (None, msg.to_string()),
    }
}

/// Removes the dotted `key` from `table`; false when it is not there.
fn remove_key(table: &mut toml::Table, key: &str) -> bool {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut t = table;
    for p in parts {
        match t.get_mut(p) {
            Some(toml::Value::Table(inner)) => t = inner,
            _ => return false,
        }
    }
    t.remove(last).is_some()
}

/// The longest `run.dist_timeout_s`: a week (a collective that waits longer is hung).
pub const MAX_DIST_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;
/// The largest `run.ddp_bucket_mb` (PyTorch's default is 25).
pub const MAX_DDP_BUCKET_MB: f64 = 65_536.0;
/// The largest batch (`data.loader.batch_size`, `data.eval_batch_size`): 2^20 images.
pub const MAX_BATCH: usize = 1 << 20;
/// The most batches prepared ahead (`data.loader.prefetch`); each holds a whole batch.
pub const MAX_PREFETCH: usize = 64;

impl RunConfig {
    /// Parses TOML text (`origin` names it in errors), applies overrides, rejects
    /// unknown keys and validates.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| TrainError::Parse {
            path: origin.into(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        for o in overrides {
            set_override(&mut table, o)?;
        }
        // Every unknown key and every value of the wrong type at once: each failing
        // key is noted and taken out, and the rest is read again.
        let mut problems = Vec::new();
        let cfg = loop {
            let mut unknown = Vec::new();
            let parsed: std::result::Result<RunConfig, toml::de::Error> =
                serde_ignored::deserialize(table.clone(), |path| unknown.push(dotted(&path)));
            // Each retry reads the table again: an unknown key is reported once.
            for k in unknown {
                let message = format!("unknown key `{k}`");
                if !problems.contains(&message) {
                    problems.push(message);
                }
            }
            match parsed {
                Ok(cfg) => break cfg,
                Err(e) => {
                    let (key, message) = failing_key(&e.to_string());
                    problems.push(message);
                    // A tagged table with a bad `kind` goes whole: without its
                    // tag the retry would report a spurious "missing field `kind`".
                    let key = key.map(|k| match k.strip_suffix(".kind") {
                        Some(table) => table.to_string(),
                        None => k,
                    });
                    let removed = key.is_some_and(|k| remove_key(&mut table, &k));
                    if !removed || problems.len() > 100 {
                        return Err(TrainError::Invalid {
                            path: origin.into(),
                            problems,
                        });
                    }
                }
            }
        };
        if !problems.is_empty() {
            return Err(TrainError::Invalid {
                path: origin.into(),
                problems,
            });
        }
        cfg.validate().map_err(|problems| TrainError::Invalid {
            path: origin.into(),
            problems,
        })?;
        Ok(cfg)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(TrainError::io("cannot read config", path))?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// The config as TOML (what `config.resolved.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// The keys whose values differ from `earlier` (a resolved config's TOML), as
    /// `key: old -> new` lines. Where the run lives (`run.output_dir`, `run.name`)
    /// is not compared, nor how a path is written: two strings naming the same
    /// existing file or folder are equal.
    pub fn differences(&self, earlier: &str) -> Vec<String> {
        let flat = |text: &str| flatten_toml(text, &|_| false);
        let same_path = |a: &toml::Value, b: &toml::Value| match (a.as_str(), b.as_str()) {
            (Some(a), Some(b)) => matches!(
                (Path::new(a).canonicalize(), Path::new(b).canonicalize()),
                (Ok(x), Ok(y)) if x == y
            ),
            _ => false,
        };
        let (old, new) = (flat(earlier), flat(&self.to_toml()));
        let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
        old.keys()
            .chain(new.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| !matches!(k.as_str(), "run.output_dir" | "run.name"))
            .filter_map(|k| {
                let (a, b) = (old.get(k), new.get(k));
                let equal = match (a, b) {
                    (Some(a), Some(b)) => a == b || same_path(a, b),
                    _ => false,
                };
                (!equal).then(|| format!("{k}: {} -> {}", show(a), show(b)))
            })
            .collect()
    }

    /// A stable hash of the resolved config (FNV-1a of its TOML), stored in every
    /// checkpoint.
    pub fn hash(&self) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.to_toml().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> std::result::Result<(), Vec<String>> {
        let mut p = Vec::new();
        let m = &self.model;
        match (&m.pretrained, &m.architecture) {
            (None, None) => p.push(
                "`model.pretrained` (a hub id or folder) or `model.architecture` (random init) is required".into(),
            ),
            (Some(_), Some(_)) => p.push(
                "`model.pretrained` and `model.architecture` exclude each other: pick one".into(),
            ),
            (None, Some(a)) => {
                if let Err(e) = a.config() {
                    p.push(e.to_string());
                }
            }
            _ => {}
        }
        p.extend(m.head.problems("model.head"));
        if m.head.init == clip_model::HeadInit::ZeroShot
            && m.pretrained.is_none()
            && m.tokenizer.is_none()
        {
            p.push("`model.head.init = \"zero_shot\"` needs a tokenizer: `model.pretrained` or `model.tokenizer`".into());
        }
        if self.train.objective == Objective::Contrastive {
            let flyp = "`train.objective = \"contrastive\"`";
            if m.pretrained.is_none() && m.tokenizer.is_none() {
                p.push(format!("{flyp} needs a tokenizer for its captions: `model.pretrained` or `model.tokenizer`"));
            }
            if !m.head.kind.in_embedding_space() {
                p.push(format!("{flyp}: the classifier is the zero-shot head of the text tower: `model.head.kind` must be \"cosine\""));
            }
            if m.head.templates.is_empty() || m.head.templates.iter().any(|t| !t.contains("{}")) {
                p.push(format!("{flyp}: `model.head.templates` make the captions: at least one, each containing `{{}}`"));
            }
            if self.data.loader.mix.enabled() {
                p.push(format!("{flyp}: `data.loader.mix` (MixUp / CutMix) mixes classes, which captions cannot: remove it"));
            }
            if matches!(
                self.train.unfreeze,
                Unfreeze::HeadOnly | Unfreeze::LpFt { .. }
            ) {
                p.push(format!("{flyp} does not train the head (it is made from the text tower): `train.unfreeze` must be \"all\" or \"progressive\""));
            }
        }
        if let Some(l) = &m.lora {
            p.extend(l.problems("model.lora"));
            if !m.head.kind.keeps_text_tower() && l.towers.contains(&clip_model::Tower::Text) {
                p.push(
                    "`model.lora.towers`: the hf head uses the vision tower only; remove `text`"
                        .into(),
                );
            }
            if self.train.unfreeze != Unfreeze::All {
                p.push("`model.lora` trains the adapters and the head: leave `train.unfreeze` at `all`".into());
            }
        }
        p.extend(m.regularization.problems("model.regularization."));
        let d = &self.data;
        if d.train.is_none() {
            p.push("`data.train` is required (e.g. `{ kind = \"image_folder\", path = \"data/train\" }`)".into());
        }
        if d.val.is_none() && !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            p.push(format!(
                "`data.val_fraction` must be in (0, 1) when `data.val` is not given, got {}",
                d.val_fraction
            ));
        }
        for name in d.eval_sets.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                p.push(format!(
                    "`data.eval_sets`: the set name {name:?} must be letters, digits, `_` or `-` (it names metrics and files)"
                ));
            }
        }
        for (key, v) in [("train_limit", d.train_limit), ("val_limit", d.val_limit)] {
            if v == Some(0) {
                p.push(format!("`data.{key}` must be at least 1"));
            }
        }
        if d.loader.batch_size == 0 {
            p.push("`data.loader.batch_size` must be at least 1".into());
        }
        if d.eval_batch_size == Some(0) {
            p.push("`data.eval_batch_size` must be at least 1".into());
        }
        p.extend(d.loader.mix.problems("data.loader.mix"));
        let share = d.loader.max_corrupt_share;
        if !(0.0..=1.0).contains(&share) {
            p.push(format!(
                "`data.loader.max_corrupt_share` must be in [0, 1] (a share of the images), got {share}"
            ));
        }
        for (key, ops) in [
            ("data.train_transforms", &d.train_transforms),
            ("data.eval_transforms", &d.eval_transforms),
        ] {
            if let Some(ops) = ops
                && let Err(e) = clip_data::Pipeline::new(ops.clone(), key)
            {
                p.push(e.to_string());
            }
        }
        p.extend(self.optim.problems("optim"));
        let t = &self.train;
        if t.epochs == 0 && t.max_steps.is_none() {
            p.push("`train.epochs` must be at least 1 (or set `train.max_steps`)".into());
        }
        if t.max_steps == Some(0) {
            p.push("`train.max_steps` must be at least 1".into());
        }
        if t.grad_accum == 0 {
            p.push("`train.grad_accum` must be at least 1".into());
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            p.push(format!(
                "`train.label_smoothing` must be in [0, 1), got {}",
                t.label_smoothing
            ));
        }
        if t.label_smoothing > 0.0 && d.loader.mix.label_smoothing > 0.0 {
            p.push("`train.label_smoothing` and `data.loader.mix.label_smoothing` are both set: use one".into());
        }
        if let Some(e) = t.ema
            && !(e.decay > 0.0 && e.decay < 1.0)
        {
            p.push(format!(
                "`train.ema.decay` must be in (0, 1), got {}",
                e.decay
            ));
        }
        if let Some(es) = &t.early_stopping {
            if es.patience == 0 {
                p.push("`train.early_stopping.patience` must be at least 1".into());
            }
            if !(es.min_delta >= 0.0 && es.min_delta.is_finite()) {
                p.push(format!(
                    "`train.early_stopping.min_delta` must be >= 0, got {}",
                    es.min_delta
                ));
            }
        }
        if t.checkpoints.keep_best == 0 {
            p.push("`train.checkpoints.keep_best` must be at least 1: the selected (best) checkpoint is the one exports, `eval` and the test set use, and it must be kept".into());
        }
        if let Unfreeze::LpFt { probe_epochs } = t.unfreeze
            && t.max_steps.is_none()
            && probe_epochs >= t.epochs
        {
            p.push(format!(
                "`train.unfreeze.probe_epochs` ({probe_epochs}) must be below `train.epochs` ({}): LP-FT probes the head first, then fine-tunes everything; as set, only the head would train (use `kind = \"head_only\"` for that)",
                t.epochs
            ));
        }
        if t.checkpoints.keep_last == 0 {
            p.push("`train.checkpoints.keep_last` must be at least 1 (resuming needs the latest checkpoint)".into());
        }
        for (key, v) in [
            ("train.eval_every_steps", t.eval_every_steps),
            ("train.checkpoints.every_steps", t.checkpoints.every_steps),
        ] {
            if v == Some(0) {
                p.push(format!("`{key}` must be at least 1"));
            }
        }
        if t.log_every_steps == 0 {
            p.push("`train.log_every_steps` must be at least 1".into());
        }
        let methods = &self.compare.methods;
        let position = |m: CompareMethod| methods.iter().position(|x| *x == m);
        if let Some(w) = position(CompareMethod::WiseFt)
            && position(CompareMethod::Full).is_none_or(|f| f > w)
        {
            p.push(
                "`compare.methods`: wise_ft mixes the `full` row's weights: list full before it"
                    .into(),
            );
        }
        if let Some(w) = position(CompareMethod::Soup)
            && methods[..w].iter().filter(|m| m.trains()).count() < 2
        {
            p.push(
                "`compare.methods`: soup averages the training rows listed before it: list at \
                 least two of linear_probe, lora_r8, lora_r16, full, flyp before it"
                    .into(),
            );
        }
        for (i, m) in methods.iter().enumerate() {
            if methods[..i].contains(m) {
                p.push(format!("`compare.methods` lists {} twice", m.name()));
            }
        }
        if self
            .compare
            .wise_alphas
            .iter()
            .any(|a| !(0.0..=1.0).contains(a))
        {
            p.push("`compare.wise_alphas` must lie in [0, 1]".into());
        }
        // One plain path component: the run folder stays inside `output_dir` and
        // `run.overwrite` can never clear anything but it.
        if matches!(self.run.name.as_str(), "" | "." | "..") || self.run.name.contains(['/', '\\'])
        {
            p.push(format!(
                "`run.name` must be a plain folder name, got {:?}",
                self.run.name
            ));
        }
        let most = clip_data::max_threads();
        for (key, n) in [
            ("run.threads", self.run.threads),
            ("data.loader.threads", self.data.loader.threads),
        ] {
            if n > most {
                p.push(format!(
                    "`{key}` = {n} is more than 4x this machine's {} cores ({most} at most; 0 = libtorch's / one per core)",
                    most / 4
                ));
            }
        }
        for (key, v, most) in [
            (
                "run.dist_timeout_s",
                self.run.dist_timeout_s,
                MAX_DIST_TIMEOUT_S,
            ),
            (
                "run.ddp_bucket_mb",
                self.run.ddp_bucket_mb,
                MAX_DDP_BUCKET_MB,
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                p.push(format!("`{key}` must be a positive number, got {v}"));
            } else if v > most {
                p.push(format!(
                    "`{key}` = {v:e} is more than {most}, the most it may be"
                ));
            }
        }
        for (key, v, most) in [
            (
                "data.loader.batch_size",
                Some(d.loader.batch_size),
                MAX_BATCH,
            ),
            ("data.eval_batch_size", d.eval_batch_size, MAX_BATCH),
            (
                "data.loader.prefetch",
                Some(d.loader.prefetch),
                MAX_PREFETCH,
            ),
        ] {
            if let Some(v) = v.filter(|v| *v > most) {
                p.push(format!(
                    "`{key}` = {v} is more than {most}, the most it may be"
                ));
            }
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Precision;
    use clip_optim::LrPolicy;

    const MINIMAL: &str = r#"
[model.architecture]
preset = "tiny"
[data]
train = { kind = "image_folder", path = "data/train" }
"#;

    /// A tagged table whose `kind` is unknown is one problem, naming the kinds,
    /// not also a "missing field `kind`" of the retry without it.
    #[test]
    fn an_unknown_kind_is_one_problem() {
        for set in [
            r#"train.unfreeze={kind="lp_fft"}"#,
            r#"data.train={kind="imagefolder", path="x"}"#,
        ] {
            let err = RunConfig::from_toml(MINIMAL, "t.toml", &[set.to_string()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("1 problem(s)"), "{set}: {err}");
            assert!(err.contains("unknown variant"), "{set}: {err}");
            assert!(!err.contains("missing field"), "{set}: {err}");
        }
    }

    /// Run names that leave `output_dir` (`.`, `..`), thread counts far beyond the
    /// machine and non-positive distributed settings are config errors (before any
    /// folder, thread or process group exists).
    #[test]
    fn run_names_threads_and_distributed_settings_are_checked() {
        let err = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "run.threads=1000000".into(),
                "data.loader.threads=100000".into(),
                "run.dist_timeout_s=0".into(),
                "run.ddp_bucket_mb=-1".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        let too_large = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "run.dist_timeout_s=1e300".into(),
                "run.ddp_bucket_mb=1e9".into(),
                "data.loader.batch_size=100000000".into(),
                "data.eval_batch_size=100000000".into(),
                "data.loader.prefetch=1000000".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        for name in [".", "..", "a/b", ""] {
            let err = RunConfig::from_toml(MINIMAL, "t.toml", &[format!("run.name={name:?}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`run.name` must be a plain folder name"),
                "{name}: {err}"
            );
        }
        for key in [
            "run.threads",
            "data.loader.threads",
            "run.dist_timeout_s",
            "run.ddp_bucket_mb",
        ] {
            assert!(err.contains(&format!("`{key}`")), "{key} missing:\n{err}");
        }
        assert!(too_large.contains("5 problem(s)"), "{too_large}");
        for key in [
            "run.dist_timeout_s",
            "run.ddp_bucket_mb",
            "data.loader.batch_size",
            "data.eval_batch_size",
            "data.loader.prefetch",
        ] {
            assert!(
                too_large.contains(&format!("`{key}` = ")),
                "{key} missing:\n{too_large}"
            );
        }
        let ok = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                format!("run.threads={}", clip_data::max_threads()),
                "run.dist_backend=\"gloo\"".into(),
                "run.grad_sync=\"after_backward\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(ok.run.grad_sync, GradSync::AfterBackward);
    }

    /// A `--set` value holding a second line or value is refused (the rest was
    /// dropped silently); LP-FT without fine-tuning epochs and a run that keeps
    /// no best checkpoint are config errors.
    #[test]
    fn multi_line_overrides_and_plans_that_cannot_work_are_refused() {
        for o in ["optim.lr=1e-3\ntrain.epochs=7", "run.name=a\nb"] {
            let err = RunConfig::from_toml(MINIMAL, "t.toml", &[o.into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("more than one line"), "{o:?}: {err}");
        }
        // A TOML array over several lines is one value.
        let ok =
            RunConfig::from_toml(MINIMAL, "t.toml", &["optim.betas=[0.9,\n0.98]".into()]).unwrap();
        assert_eq!(ok.optim.betas, [0.9, 0.98]);
        let err = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "train.epochs=2".into(),
                "train.unfreeze={kind=\"lp_ft\", probe_epochs=2}".into(),
                "train.checkpoints.keep_best=0".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`train.unfreeze.probe_epochs` (2) must be below"),
            "{err}"
        );
        assert!(
            err.contains("`train.checkpoints.keep_best` must be at least 1"),
            "{err}"
        );
    }

    /// `train.checkpoints.metric` names a metric on `data.val` or on one of
    /// `data.eval_sets`; anything else is an error naming the key and the forms.
    #[test]
    fn a_metric_may_name_an_evaluation_set() {
        let cfg = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "train.checkpoints.metric=\"eval_sets.sketch.v2.loss\"".into(),
                "train.early_stopping={metric=\"top5\"}".into(),
            ],
        )
        .unwrap();
        let m = &cfg.train.checkpoints.metric;
        assert_eq!(
            (m.set.as_deref(), m.kind),
            (Some("sketch.v2"), Metric::Loss)
        );
        assert!(!m.maximize());
        assert_eq!(m.name(), "eval_sets.sketch.v2.loss");
        let es = cfg.train.early_stopping.as_ref().unwrap();
        assert_eq!(es.metric, MetricChoice::val(Metric::Top5));
        // Written back as configs write it.
        let text = toml::to_string(&cfg).unwrap();
        assert!(
            text.contains("metric = \"eval_sets.sketch.v2.loss\""),
            "{text}"
        );
        for bad in [
            "eval_sets.sketch",
            "eval_sets..accuracy",
            "acc",
            "eval_sets.x.recall",
        ] {
            let err = RunConfig::from_toml(
                MINIMAL,
                "t.toml",
                &[format!("train.checkpoints.metric=\"{bad}\"")],
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("train.checkpoints.metric") && err.contains("eval_sets.NAME.accuracy"),
                "{bad}: {err}"
            );
        }
    }

    /// Unknown keys and values of the wrong type: every one reported at once, each
    /// naming its key (a `u64` given -1, a number given a string).
    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_at_once() {
        let err = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "train.epochz=1".into(),
                "optim.lrr=2".into(),
                "train.epochs=-1".into(),
                "train.grad_accum=\"x\"".into(),
                "bogus.key=1".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "unknown key `train.epochz`",
            "unknown key `optim.lrr`",
            "`train.epochs`",
            "`train.grad_accum`",
            "unknown key `bogus`",
        ] {
            assert!(err.contains(key), "{key} missing:\n{err}");
        }
        assert!(err.contains("5 problem(s)"), "{err}");
    }

    /// Two bad values in each section: both are reported, not just the first.
    #[test]
    fn every_section_reports_all_its_problems_at_once() {
        let err = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "model.head={dropout=2.0, scale=-1}".into(),
                "model.regularization={residual_dropout=2.0, drop_path=-0.5}".into(),
                "model.lora={r=0, alpha=-1}".into(),
                "data.loader.mix={mixup_alpha=-1, prob=2}".into(),
                "optim.scaler={growth_factor=0.5, growth_interval=0}".into(),
                "optim.betas=[1.5, 0.999]".into(),
                "optim.eps=0".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "model.head.dropout",
            "model.head.scale",
            "model.regularization.residual_dropout",
            "model.regularization.drop_path",
            "model.lora.r",
            "model.lora.alpha",
            "data.loader.mix.mixup_alpha",
            "data.loader.mix.prob",
            "optim.scaler.growth_factor",
            "optim.scaler.growth_interval",
            "optim.betas[0]",
            "optim.eps",
        ] {
            assert!(err.contains(&format!("`{key}`")), "{key} missing:\n{err}");
        }
    }

    #[test]
    fn compare_methods_are_typed_and_wise_ft_follows_full() {
        let c = RunConfig::from_toml(MINIMAL, "t.toml", &[]).unwrap();
        assert_eq!(c.compare.methods, CompareMethod::ALL.to_vec());
        let err = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &["compare.methods=[\"wise_ft\", \"full\", \"full\"]".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("list full before it"), "{err}");
        assert!(err.contains("lists full twice"), "{err}");
        let err =
            RunConfig::from_toml(MINIMAL, "t.toml", &["compare.methods=[\"lora_r4\"]".into()])
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("lora_r4") && err.contains("compare.methods"),
            "{err}"
        );
        let ok = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &["compare.methods=[\"full\", \"wise_ft\"]".into()],
        );
        assert!(ok.is_ok(), "{ok:?}");
        // A soup needs two training rows before it (zero_shot and wise_ft train nothing).
        let err = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &["compare.methods=[\"zero_shot\", \"full\", \"wise_ft\", \"soup\", \"flyp\"]".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("soup averages the training rows"), "{err}");
        let ok = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &["compare.methods=[\"full\", \"flyp\", \"soup\"]".into()],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn minimal_config_takes_the_tutorial_defaults() {
        let c = RunConfig::from_toml(MINIMAL, "t.toml", &[]).unwrap();
        assert_eq!(c.optim.lr, 1e-5);
        assert_eq!(c.optim.weight_decay, 0.01);
        assert_eq!(c.optim.max_grad_norm, 1.0);
        assert_eq!(c.train.label_smoothing, 0.1);
        assert_eq!(
            c.optim.lr_policy,
            LrPolicy::Llrd {
                decay: 0.95,
                head_lr: None
            }
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let text = format!("{MINIMAL}\n[train]\nepochz = 3\n");
        let err = RunConfig::from_toml(&text, "bad.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("epochz"), "{err}");
        let text = format!("{MINIMAL}\n[model.architecture.vision]\nhiden_size = 3\n");
        let err = RunConfig::from_toml(&text, "bad.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.architecture.vision.hiden_size"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = format!(
            "{MINIMAL}\n[train]\ngrad_accum = 0\nlabel_smoothing = 1.5\n[optim]\nlr = -1.0\n"
        );
        let err = RunConfig::from_toml(&text, "c.toml", &[])
            .unwrap_err()
            .to_string();
        for key in ["train.grad_accum", "train.label_smoothing", "optim.lr"] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn overrides_set_any_value_and_change_the_hash() {
        let base = RunConfig::from_toml(MINIMAL, "t.toml", &[]).unwrap();
        let c = RunConfig::from_toml(
            MINIMAL,
            "t.toml",
            &[
                "optim.lr=3e-5".into(),
                "run.name=exp1".into(),
                "train.precision=\"bf16\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optim.lr, 3e-5);
        assert_eq!(c.run.name, "exp1");
        assert_eq!(c.train.precision, Precision::Bf16);
        assert_ne!(base.hash(), c.hash());
        let err = RunConfig::from_toml(MINIMAL, "t.toml", &["optim.lrr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("optim.lrr"), "{err}");
    }

    #[test]
    fn differences_name_changed_keys_but_not_where_the_run_lives_or_how_a_path_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data.csv");
        std::fs::write(&data, "path,label\n").unwrap();
        let with = |path: &str, extra: &[&str]| {
            let mut o: Vec<String> = vec![format!("data.train={{kind=\"csv\", path={path:?}}}")];
            o.extend(extra.iter().map(|s| s.to_string()));
            RunConfig::from_toml(MINIMAL, "t.toml", &o).unwrap()
        };
        let plain = data.display().to_string();
        let dotted = tmp.path().join(".").join("data.csv").display().to_string();
        let base = with(&plain, &[]);
        let moved = with(&dotted, &["run.output_dir=\"elsewhere\"", "run.name=\"x\""]);
        assert_eq!(moved.differences(&base.to_toml()), Vec::<String>::new());
        let changed = with(&plain, &["train.max_steps=300", "optim.lr=0.5"]);
        let d = changed.differences(&base.to_toml());
        assert!(
            d.len() == 2
                && d[0].starts_with("optim.lr: ")
                && d[0].ends_with("-> 0.5")
                && d[1] == "train.max_steps: (unset) -> 300",
            "{d:?}"
        );
    }

    #[test]
    fn devices_parse_print_and_a_missing_gpu_is_an_error_naming_the_key() {
        for (text, d) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), d);
            assert_eq!(d.to_string().parse::<DeviceChoice>().unwrap(), d);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains(bad) && e.contains("cuda:N"), "{e}");
        }
        let c = RunConfig::from_toml(MINIMAL, "t.toml", &["run.device=\"cuda:2\"".into()]).unwrap();
        assert_eq!(c.run.device, DeviceChoice::Cuda(2));
        assert!(c.to_toml().contains("device = \"cuda:2\""));
        let e = RunConfig::from_toml(MINIMAL, "t.toml", &["run.device=\"tpu\"".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.device") && e.contains("\"tpu\""), "{e}");
        // No machine has 100 GPUs: the error names the key and what libtorch sees.
        let e = DeviceChoice::Cuda(99)
            .resolve("--device")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--device") && e.contains("cuda:99") && e.contains("CUDA device(s)"),
            "{e}"
        );
        assert_eq!(DeviceChoice::Cpu.device().unwrap(), tch::Device::Cpu);
    }

    #[test]
    fn resolved_toml_round_trips() {
        let c = RunConfig::from_toml(MINIMAL, "t.toml", &["train.ema.decay=0.99".into()]).unwrap();
        let back = RunConfig::from_toml(&c.to_toml(), "resolved.toml", &[]).unwrap();
        assert_eq!(c, back);
        assert_eq!(c.hash(), back.hash());
    }

    #[test]
    fn model_source_is_required_and_exclusive() {
        let err = RunConfig::from_toml(
            "[data]\ntrain = { kind = \"csv\", path = \"a.csv\" }",
            "x.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model.pretrained"), "{err}");
        let err = RunConfig::from_toml(
            &format!("{MINIMAL}\n[model]\npretrained = \"openai/clip-vit-base-patch32\"\n"),
            "x.toml",
            &[],
        );
        assert!(err.is_err());
    }
}
