//! Each subcommand's options, written once: clap parses them into these structs
//! and the subcommand's function takes its struct.

use std::path::PathBuf;

use clap::Args;

/// `train-cli [train] --config F ...`
#[derive(Debug, Args, Default)]
pub struct TrainArgs {
    /// The run's TOML config (see configs/).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set optim.lr=3e-5` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run stored in this run folder exactly where it stopped.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Put the run folder under this directory (same as `--set run.output_dir=D`).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Print the data sizes, steps, global batch, warmup and group LRs, then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// With --resume: continue although the data changed since the checkpoint
    /// (images added, removed or relabelled), which is refused otherwise.
    #[arg(long, requires = "resume")]
    pub allow_data_change: bool,
}

/// Where and in which precision a command runs the model.
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct PlacementArgs {
    /// `auto`, `cpu`, `cuda` or `cuda:N` [default: the run's `run.device` for a run
    /// folder or checkpoint, else auto]. A device that is not there is an error.
    #[arg(long)]
    pub device: Option<clip_train::DeviceChoice>,
    /// `fp32`, `bf16` or `fp16` (autocast) [default: the run's `train.precision`
    /// for a run folder or checkpoint, else fp32].
    #[arg(long)]
    pub precision: Option<clip_train::Precision>,
}

/// How `eval`, `zero-shot` and `predict` feed images to the model.
#[derive(Debug, Args, Clone, Copy)]
pub struct InferenceArgs {
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// `apply` (turn JPEGs upright by their EXIF orientation, as transformers'
    /// `load_image`) or `ignore` (as stored, as PIL and torchvision) [default: the
    /// run's `data.loader.exif_orientation`, else ignore].
    #[arg(long, value_name = "MODE")]
    pub exif_orientation: Option<clip_data::ExifOrientation>,
    #[command(flatten)]
    pub placement: PlacementArgs,
}

/// `train-cli eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// An exported folder, a checkpoint, or a run folder (its best checkpoint).
    #[arg(long)]
    pub model: String,
    /// An image folder, a CSV manifest, an IDX images file, WebDataset shards
    /// (`.tar`, a brace range or a glob), or a source table as in a config
    /// (`{ kind = "idx", ..., class_names = [...] }`). Its classes are matched
    /// to the model's by name (any order, a subset). Repeat it as `NAME=SOURCE`
    /// to evaluate several sets (e.g. in-distribution and shifted copies) in one
    /// run: the report is then one object keyed by NAME.
    #[arg(long, required = true, value_name = "[NAME=]SOURCE")]
    pub data: Vec<String>,
    /// Per-image predictions with logits (JSONL; with several `--data`, each row
    /// names its set in `set`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Evaluate the checkpoint's EMA weights (`train.ema`) instead of its trained ones.
    #[arg(long)]
    pub ema: bool,
}

/// `train-cli zero-shot`.
#[derive(Debug, Args)]
pub struct ZeroShotArgs {
    /// A hub id or a Hugging Face-layout CLIP folder (with tokenizer.json).
    #[arg(long)]
    pub model: String,
    /// Labelled data (as for `eval --data`; its class names make the prompts).
    #[arg(long)]
    pub data: PathBuf,
    /// A prompt template; `{}` stands for the class name.
    #[arg(long, conflicts_with = "templates")]
    pub template: Option<String>,
    /// A file with one template per line.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Per-image predictions with logits (JSONL).
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// `train-cli predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// An exported folder, a checkpoint, or a run folder (its best checkpoint).
    #[arg(long)]
    pub model: String,
    /// Image files, folders (their images, recursively) or glob patterns
    /// (quoted) to classify. An image that cannot be read gets an error row;
    /// the others are classified, and the exit code is then 1.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Classes listed per image, most probable first.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// One JSON object per image instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// `train-cli export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint folder (run/checkpoints/step-N) or a run folder (its best).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The folder to write (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// Export the checkpoint's EMA weights (`train.ema`) instead of its trained ones.
    #[arg(long)]
    pub ema: bool,
    /// Replace an earlier output of this command in the output folder (whole).
    #[arg(long)]
    pub overwrite: bool,
}

/// `train-cli convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// An image folder, a CSV manifest, an IDX images file, or shards.
    #[arg(long)]
    pub data: PathBuf,
    /// The folder to write the shards to (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// Samples per shard.
    #[arg(long, default_value_t = 1000)]
    pub shard_size: usize,
    /// Shard names: PREFIX-000000.tar, PREFIX-000001.tar, ...
    #[arg(long, default_value = "data")]
    pub prefix: String,
    /// Shuffle the samples with this seed (for readers that stream shards in
    /// order) [default: the source's order].
    #[arg(long)]
    pub shuffle: Option<u64>,
    /// Scale images whose longer side exceeds N down to N (aspect kept, bicubic
    /// with antialiasing, as PIL's `thumbnail`) and store them as JPEG: far less
    /// decoding per epoch, at the cost of the pixels above N [default: every
    /// image as stored].
    #[arg(long, value_name = "N")]
    pub max_side: Option<usize>,
    /// JPEG quality of the images --max-side scales down.
    #[arg(long, default_value_t = 90)]
    pub quality: u8,
    /// Replace an earlier output of this command in the output folder (whole).
    #[arg(long)]
    pub overwrite: bool,
}

/// `train-cli inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A run config: its model, parameter groups, LRs and weight decay before training.
    #[arg(long, conflicts_with = "model")]
    pub config: Option<PathBuf>,
    /// An export, a checkpoint, a run folder (what that run trained), or a plain CLIP.
    #[arg(long)]
    pub model: Option<String>,
    /// Override a config value (with --config), e.g. `--set optim.lr=3e-5` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// JSON, with every tensor, its group, LR and weight decay (with --config).
    #[arg(long)]
    pub json: bool,
}

/// `train-cli preview-augment`.
#[derive(Debug, Args)]
pub struct PreviewAugmentArgs {
    /// The run config whose `data.train` and `data.train_transforms` to preview.
    #[arg(long)]
    pub config: PathBuf,
    /// The PNG to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Training images in the grid (one per row, the original on the left; 1 to 256).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub images: u64,
    /// Augmented views per image (0 to 64).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub views: u64,
    /// Override a config value, e.g. `--set data.train_transforms=[...]` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// `train-cli wise-ft`.
#[derive(Debug, Args)]
pub struct WiseFtArgs {
    /// The zero-shot CLIP: a hub id or a folder with tokenizer.json.
    #[arg(long)]
    pub zero_shot: String,
    /// The fine-tuned model: an export, a checkpoint or a run folder.
    #[arg(long)]
    pub fine_tuned: String,
    /// Comma-separated mixing coefficients.
    #[arg(long, default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1")]
    pub alphas: String,
    /// Labelled data (as for `eval --data`); its classes are matched to the
    /// fine-tuned model's by name.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to export the best mix (as `export` does) with its curve (wise_ft.json, wise_ft.png).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// An evaluation set (a distribution shift) as `NAME=DATA`, measured at every
    /// alpha beside `--data` (repeatable); with `--output`, the paper's picture of
    /// accuracy on the data against the mean over the sets (wise_ft_robustness.png).
    #[arg(long = "eval-set", value_name = "NAME=DATA")]
    pub eval_sets: Vec<String>,
    /// The prompt template of the zero-shot head; `{}` stands for the class name.
    #[arg(long, default_value = "a photo of a {}.")]
    pub template: String,
    /// A tokenizer.json to use instead of the zero-shot model's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Replace an earlier output of this command in the output folder (whole).
    #[arg(long)]
    pub overwrite: bool,
}

/// `train-cli soup`.
#[derive(Debug, Args)]
pub struct SoupArgs {
    /// The ingredients: exports, checkpoints or run folders of one architecture,
    /// one class list and one head kind (two or more).
    #[arg(long, num_args = 2.., required = true)]
    pub models: Vec<String>,
    /// Held-out labelled data (as for `eval --data`) that measures each
    /// ingredient and soup and chooses the greedy soup's ingredients.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the uniform and the greedy soup (full exports in
    /// `uniform/` and `greedy/`) and `soup.json`.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Replace an earlier output of this command in the output folder (whole).
    #[arg(long)]
    pub overwrite: bool,
}

/// `train-cli sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The run config every point starts from.
    #[arg(long)]
    pub config: PathBuf,
    /// A key and its values, `KEY=V1,V2,...` (repeatable: the points are the
    /// Cartesian product), e.g. `--grid optim.lr=1e-5,3e-5 --grid train.epochs=3,5`.
    #[arg(long = "grid", value_name = "KEY=V1,V2", required = true)]
    pub grid: Vec<String>,
    /// The sweep folder: one run folder per point, sweep.md, sweep.json, sweep.png.
    #[arg(long)]
    pub output: PathBuf,
    /// Override a config value for every point (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Train again the points whose run folder holds a run of another config
    /// (refused otherwise).
    #[arg(long)]
    pub rerun: bool,
    /// Points trained at a time, each as its own process with its console in
    /// `logs/<point>.log` of the sweep folder (they share the configured device:
    /// fit N runs in its memory).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Held-out data: soup the sweep's runs at the end (`soup/` in the sweep folder).
    #[arg(long, value_name = "DATA")]
    pub soup: Option<PathBuf>,
}

/// `train-cli compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The run config every method starts from (same data, split, seed and budget).
    #[arg(long)]
    pub config: PathBuf,
    /// Where the runs and report.md / report.json / accuracy.png go.
    #[arg(long, default_value = "runs/compare")]
    pub output: PathBuf,
    /// Override a config value for every method (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Retrain rows whose earlier run in --output had another config.
    #[arg(long)]
    pub rerun: bool,
}

/// `train-cli bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The run config to time (its data, or generated images when that is not there).
    #[arg(long)]
    pub config: PathBuf,
    /// Timed optimizer steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first (allocator and kernel warm-up).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Override a config value, e.g. `--set data.loader.batch_size=64` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// `train-cli config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Every key with its default, type and meaning, as TOML to start from (the default).
    #[arg(long, conflicts_with_all = ["explain", "markdown"])]
    pub defaults: bool,
    /// One key (or the keys under a table, e.g. `data.loader`): type, default, meaning.
    #[arg(long, value_name = "KEY")]
    pub explain: Option<String>,
    /// The key table as Markdown (the README's).
    #[arg(long, conflicts_with = "explain")]
    pub markdown: bool,
}
