//! The sections of a run's TOML file that clip-train owns (`[run]`, `[model]`,
//! `[data]`, `[train]`, `[compare]`; `[optim]` is clip-optim's), with their
//! defaults: data, not behaviour.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use clip_data::{LoaderConfig, SourceConfig, TransformConfig};
use clip_model::{ClipConfig, HeadConfig, LoraConfig, Regularization, TextConfig, VisionConfig};

use crate::error::{Result, TrainError};
use crate::precision::Precision;

/// `[compare]`: what `train-cli compare` runs beside the config's own recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareSection {
    /// Rows to produce, in order (`wise_ft` needs `full` before it).
    pub methods: Vec<CompareMethod>,
    /// Base LR of the LoRA runs (adapters usually want far more than full
    /// fine-tuning's); default 10x `optim.lr`.
    pub lora_lr: Option<f64>,
    /// Head LR of the linear probe; default the config's head LR.
    pub probe_lr: Option<f64>,
    /// WiSE-FT mixing coefficients.
    pub wise_alphas: Vec<f64>,
    /// Prompt templates of the zero-shot classifier.
    pub templates: Vec<String>,
}

/// A row of `train-cli compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareMethod {
    /// CLIP's zero-shot classifier, no training.
    ZeroShot,
    /// The head alone on frozen features.
    LinearProbe,
    /// LoRA adapters of rank 8 / 16 (and the head).
    LoraR8,
    LoraR16,
    /// The config's own recipe.
    Full,
    /// The `full` row's weights mixed with the zero-shot model's.
    WiseFt,
    /// FLYP: the config's recipe with `train.objective = "contrastive"` (both
    /// towers, captions from `compare.templates`).
    Flyp,
    /// The uniform and greedy model soups (Wortsman et al. 2022) of the training
    /// rows listed before it, selected on the validation split (two rows; not in
    /// the default list).
    Soup,
}

impl CompareMethod {
    /// Every row, in the default order.
    pub const ALL: [CompareMethod; 7] = [
        CompareMethod::ZeroShot,
        CompareMethod::LinearProbe,
        CompareMethod::LoraR8,
        CompareMethod::LoraR16,
        CompareMethod::Full,
        CompareMethod::WiseFt,
        CompareMethod::Flyp,
    ];

    /// Whether the row trains a run of its own (in `<output>/<name>`).
    pub fn trains(self) -> bool {
        matches!(
            self,
            CompareMethod::LinearProbe
                | CompareMethod::LoraR8
                | CompareMethod::LoraR16
                | CompareMethod::Full
                | CompareMethod::Flyp
        )
    }

    /// The name in configs, reports and run folders.
    pub fn name(self) -> &'static str {
        match self {
            CompareMethod::ZeroShot => "zero_shot",
            CompareMethod::LinearProbe => "linear_probe",
            CompareMethod::LoraR8 => "lora_r8",
            CompareMethod::LoraR16 => "lora_r16",
            CompareMethod::Full => "full",
            CompareMethod::WiseFt => "wise_ft",
            CompareMethod::Flyp => "flyp",
            CompareMethod::Soup => "soup",
        }
    }
}

impl Default for CompareSection {
    fn default() -> Self {
        Self {
            methods: CompareMethod::ALL.to_vec(),
            lora_lr: None,
            probe_lr: None,
            wise_alphas: (0..=10).map(|i| f64::from(i) / 10.0).collect(),
            templates: vec!["a photo of a {}.".into()],
        }
    }
}

/// The device a run or command uses: `"auto"` (CUDA device 0 when libtorch sees
/// one, else the CPU), `"cpu"`, `"cuda"` (device 0) or `"cuda:N"`. In a
/// data-parallel run each rank uses CUDA device `LOCAL_RANK` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad =
            || format!("{s:?} is not a device: use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"");
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `[run]`: name, output folder, seed, device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    pub name: String,
    /// The run folder is `output_dir/name`.
    pub output_dir: PathBuf,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Replace an existing run folder instead of refusing to touch it.
    pub overwrite: bool,
    /// libtorch intra-op threads (0 = libtorch's default).
    pub threads: usize,
    /// Data parallelism under torchrun or srun: the c10d backend (`auto`: Gloo on
    /// the CPU, NCCL on CUDA).
    pub dist_backend: DistBackend,
    /// A collective that does not complete within this many seconds (a dead or
    /// hung rank) ends every rank with an error naming the failed one.
    pub dist_timeout_s: f64,
    /// Gradient bucket size of DDP's Reducer, MB (DDP's `bucket_cap_mb`).
    pub ddp_bucket_mb: f64,
    /// How gradients are synchronised: `reducer` (DDP's c10d Reducer: buckets
    /// all-reduced while the backward runs) or `after_backward` (one coalesced
    /// all-reduce once the backward is done; no overlap).
    pub grad_sync: GradSync,
    /// Advice warnings not to print at the start of a run.
    pub silence_advice: Vec<Advice>,
}

/// The tutorial's guidance, warned about at the start of a run
/// (`run.silence_advice` silences each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// Full fine-tuning on fewer than [`Advice::SMALL_DATA`] training images.
    SmallData,
    /// A learning rate above [`Advice::HIGH_LR`] on a pretrained vision tower.
    HighLr,
    /// No gradient checkpointing on a GPU whose memory the run's estimate
    /// (nearly) exceeds.
    GpuMemory,
}

impl Advice {
    /// Below this many training images, full fine-tuning tends to overfit.
    pub const SMALL_DATA: usize = 1000;
    /// Above this learning rate, a pretrained vision tower's features tend to be
    /// destroyed rather than adapted.
    pub const HIGH_LR: f64 = 1e-4;

    pub fn name(self) -> &'static str {
        match self {
            Advice::SmallData => "small_data",
            Advice::HighLr => "high_lr",
            Advice::GpuMemory => "gpu_memory",
        }
    }
}

/// `run.dist_backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistBackend {
    #[default]
    Auto,
    Gloo,
    Nccl,
}

/// `run.grad_sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradSync {
    #[default]
    Reducer,
    AfterBackward,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            name: "run".into(),
            output_dir: "runs".into(),
            seed: 42,
            device: DeviceChoice::Auto,
            overwrite: false,
            threads: 0,
            dist_backend: DistBackend::Auto,
            dist_timeout_s: 600.0,
            ddp_bucket_mb: 25.0,
            grad_sync: GradSync::Reducer,
            silence_advice: Vec::new(),
        }
    }
}

impl RunSection {
    pub fn dir(&self) -> PathBuf {
        self.output_dir.join(&self.name)
    }
}

/// A CLIP architecture for training from random weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Architecture {
    /// `vit-b-32`, `vit-b-16`, `vit-l-14` or `tiny`; `vision` / `text` replace a tower.
    pub preset: String,
    pub vision: Option<VisionConfig>,
    pub text: Option<TextConfig>,
    pub projection_dim: Option<i64>,
}

impl Default for Architecture {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            vision: None,
            text: None,
            projection_dim: None,
        }
    }
}

impl Architecture {
    pub fn config(&self) -> Result<ClipConfig> {
        let mut c = ClipConfig::preset(&self.preset).map_err(|_| {
            TrainError::config(
                "model.architecture.preset",
                format!(
                    "{:?} is unknown; expected vit-b-32, vit-b-16, vit-l-14 or tiny",
                    self.preset
                ),
            )
        })?;
        if let Some(v) = &self.vision {
            c.vision_config = v.clone();
        }
        if let Some(t) = &self.text {
            c.text_config = t.clone();
        }
        if let Some(p) = self.projection_dim {
            c.projection_dim = p;
        }
        // Named by the config's key, not transformers' file.
        c.validate().map_err(|e| match e {
            clip_model::ModelError::Config { reason, .. } => {
                TrainError::config("model.architecture", reason)
            }
            other => other.into(),
        })?;
        Ok(c)
    }
}

/// `[model]`: where the weights come from, the head and regularisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A hub id (`openai/clip-vit-base-patch32`) or a Hugging Face-layout folder.
    pub pretrained: Option<String>,
    /// Train from random weights with this architecture instead.
    pub architecture: Option<Architecture>,
    pub head: HeadConfig,
    pub regularization: Regularization,
    /// Train LoRA adapters (and the head) instead of the weights.
    pub lora: Option<LoraConfig>,
    /// A `tokenizer.json` for the text tower of a randomly initialised model
    /// (zero-shot heads need one; pretrained models bring their own).
    pub tokenizer: Option<PathBuf>,
}

/// `[data]`: sources, transforms and the loader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    pub train: Option<SourceConfig>,
    /// Validation source; without one, `val_fraction` of `train` is split off.
    pub val: Option<SourceConfig>,
    /// A held-out test source, evaluated once when the run ends with the
    /// checkpoint the validation selected; never used for selection. The result
    /// goes to `<run>/test.json`.
    pub test: Option<SourceConfig>,
    /// Image-caption pairs (a source with captions; labels not needed) on which
    /// every evaluation also measures image <-> text retrieval, as open_clip's
    /// `--val-data` beside a labelled zero-shot set. Without it, `val` is used
    /// when it has captions.
    pub retrieval: Option<SourceConfig>,
    /// Named evaluation sets (distribution shifts: sketches, a v2 test set...),
    /// each evaluated at every evaluation beside `val` (its classes matched to
    /// the training classes by name, a subset is fine); never used for
    /// selection.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_sets: std::collections::BTreeMap<String, SourceConfig>,
    pub val_fraction: f64,
    /// Use only the first N training / validation images (quick runs).
    pub train_limit: Option<usize>,
    pub val_limit: Option<usize>,
    /// Training augmentation; default: the tutorial's.
    pub train_transforms: Option<Vec<TransformConfig>>,
    /// Evaluation preprocessing; default: CLIP's image processor.
    pub eval_transforms: Option<Vec<TransformConfig>>,
    pub loader: LoaderConfig,
    /// Evaluation batch size (default: twice the training batch).
    pub eval_batch_size: Option<usize>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: None,
            val: None,
            test: None,
            retrieval: None,
            eval_sets: Default::default(),
            val_fraction: 0.1,
            train_limit: None,
            val_limit: None,
            train_transforms: None,
            eval_transforms: None,
            loader: LoaderConfig::default(),
            eval_batch_size: None,
        }
    }
}

impl DataSection {
    /// Images per evaluation batch: `eval_batch_size`, or twice the training batch.
    pub fn eval_batch(&self) -> usize {
        self.eval_batch_size.unwrap_or(self.loader.batch_size * 2)
    }
}

/// Which parameters train when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Unfreeze {
    /// Every parameter of the optimised towers trains from the start.
    #[default]
    All,
    /// Only the head (a linear probe on frozen features).
    HeadOnly,
    /// LP-FT (Kumar et al. 2022): the head alone for `probe_epochs`, then every
    /// parameter of the optimised towers.
    LpFt {
        #[serde(default = "one")]
        probe_epochs: u64,
    },
    /// The tutorial's progressive unfreezing: at epoch `e` of `E`, the top
    /// `floor(e / E * L)` vision blocks train, plus `min_blocks`; the head always
    /// trains. The vision tower's post-layernorm and projection stay frozen, as in
    /// the tutorial, unless `open_post_layers` (then they train once any block
    /// does).
    Progressive {
        #[serde(default)]
        min_blocks: u32,
        #[serde(default)]
        open_post_layers: bool,
    },
}

fn one() -> u64 {
    1
}

/// A metric to select checkpoints or stop early on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    #[default]
    Accuracy,
    Top5,
    Loss,
    /// The mean of image -> text and text -> image recall at 1, 5 and 10
    /// (validation data with captions).
    MeanRecall,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Top5 => "top5",
            Metric::Loss => "loss",
            Metric::MeanRecall => "mean_recall",
        }
    }

    /// Whether larger is better.
    pub fn maximize(self) -> bool {
        self != Metric::Loss
    }
}

/// What selects checkpoints or stops early: a [`Metric`] on `data.val`
/// (`"accuracy"`) or on one of `data.eval_sets` (`"eval_sets.NAME.accuracy"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricChoice {
    /// The evaluation set; `None` for `data.val`.
    pub set: Option<String>,
    pub kind: Metric,
}

impl MetricChoice {
    /// The metric on `data.val`.
    pub fn val(kind: Metric) -> Self {
        Self { set: None, kind }
    }

    /// As configs write it: `accuracy`, `eval_sets.sketch.accuracy`.
    pub fn name(&self) -> String {
        match &self.set {
            Some(set) => format!("eval_sets.{set}.{}", self.kind.name()),
            None => self.kind.name().into(),
        }
    }

    /// Whether larger is better.
    pub fn maximize(&self) -> bool {
        self.kind.maximize()
    }
}

impl std::str::FromStr for MetricChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let kinds = [
            Metric::Accuracy,
            Metric::Top5,
            Metric::Loss,
            Metric::MeanRecall,
        ];
        let kind = |name: &str| kinds.into_iter().find(|k| k.name() == name);
        let set = text
            .strip_prefix("eval_sets.")
            .and_then(|rest| rest.rsplit_once('.'));
        match set {
            Some((set, k)) if !set.is_empty() => kind(k).map(|kind| Self {
                set: Some(set.into()),
                kind,
            }),
            Some(_) => None,
            None => kind(text).map(Self::val),
        }
        .ok_or_else(|| {
            format!(
                "unknown metric {text:?}: expected \"accuracy\", \"top5\", \"loss\", \
                 \"mean_recall\" (on data.val), or \"eval_sets.NAME.accuracy\" (\"top5\", \
                 \"loss\") for one of data.eval_sets"
            )
        })
    }
}

impl Serialize for MetricChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for MetricChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Early stopping: stop when `metric` has not improved by `min_delta` for
/// `patience` evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    pub metric: MetricChoice,
    pub patience: u32,
    pub min_delta: f64,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        Self {
            metric: MetricChoice::val(Metric::Accuracy),
            patience: 3,
            min_delta: 0.0,
        }
    }
}

/// Which checkpoints are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The most recent N checkpoints (at least 1: resuming needs it).
    pub keep_last: usize,
    /// The best K by `metric`.
    pub keep_best: usize,
    pub metric: MetricChoice,
    /// Also write a checkpoint every N optimizer steps (besides each epoch's end).
    pub every_steps: Option<u64>,
    /// Write a checkpoint at every evaluation, mid-epoch ones
    /// (`train.eval_every_steps`) included, so that the best evaluation is a
    /// checkpoint that can be selected.
    pub at_every_evaluation: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            keep_last: 2,
            keep_best: 1,
            metric: MetricChoice::val(Metric::Accuracy),
            every_steps: None,
            at_every_evaluation: true,
        }
    }
}

/// An exponential moving average of the trained weights, evaluated beside them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    pub decay: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self { decay: 0.999 }
    }
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    pub epochs: u64,
    /// Stop after this many optimizer steps (the schedule spans them).
    pub max_steps: Option<u64>,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub precision: Precision,
    /// The precision used instead when the run lands on the CPU (e.g. `"fp32"`
    /// for the tutorial's `torch.cuda.amp`, which turns itself off there).
    pub precision_on_cpu: Option<Precision>,
    /// CUDA: let fp32 matmuls use TF32 tensor cores
    /// (`torch.backends.cuda.matmul.allow_tf32`). Off by default, as in PyTorch;
    /// bf16 / fp16 autocast matmuls are unaffected.
    pub tf32: bool,
    pub gradient_checkpointing: bool,
    pub label_smoothing: f64,
    pub unfreeze: Unfreeze,
    pub ema: Option<EmaConfig>,
    /// Evaluate every N optimizer steps besides each epoch's end.
    pub eval_every_steps: Option<u64>,
    /// Write a metrics line every N optimizer steps.
    pub log_every_steps: u64,
    pub early_stopping: Option<EarlyStoppingConfig>,
    pub checkpoints: CheckpointConfig,
    /// Trackers that get the step and eval figures besides `metrics.jsonl`.
    pub report_to: Vec<ReportTo>,
    /// What the training minimises.
    pub objective: Objective,
}

/// The training loss (`train.objective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Cross-entropy of the classification head (the tutorial's).
    #[default]
    CrossEntropy,
    /// FLYP (Goyal et al. 2023): CLIP's symmetric contrastive loss between the
    /// images and captions made of their class names in `model.head.templates`
    /// (one drawn per sample), both towers training; the classifier is the
    /// zero-shot head of the fine-tuned text tower.
    Contrastive,
}

/// A tracker (`train.report_to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportTo {
    /// Event files under `<run>/tensorboard/`.
    Tensorboard,
    /// An MLflow run in the file store `MLFLOW_TRACKING_URI` names (default
    /// `./mlruns`).
    Mlflow,
}

impl TrainSection {
    /// The precision a run uses on `device`: `precision_on_cpu` on the CPU when
    /// set, else `precision`.
    pub fn precision_on(&self, device: tch::Device) -> Precision {
        match self.precision_on_cpu {
            Some(p) if device == tch::Device::Cpu => p,
            _ => self.precision,
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 10,
            max_steps: None,
            grad_accum: 1,
            precision: Precision::Fp32,
            precision_on_cpu: None,
            tf32: false,
            gradient_checkpointing: false,
            label_smoothing: 0.1,
            unfreeze: Unfreeze::All,
            ema: None,
            eval_every_steps: None,
            log_every_steps: 10,
            early_stopping: None,
            checkpoints: CheckpointConfig::default(),
            report_to: Vec::new(),
            objective: Objective::CrossEntropy,
        }
    }
}
