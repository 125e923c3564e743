//! `train-cli`: the command-line front of the CLIP fine-tuning toolkit. All logic
//! lives in the library crates; this binary parses arguments, composes the config
//! and reports errors.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Fine-tune CLIP for image classification from one TOML file.
#[derive(Debug, Parser)]
#[command(name = "train-cli", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
    /// Only warnings and errors (no progress bars).
    #[arg(long, global = true)]
    quiet: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Train (the default when no subcommand is given).
    Train(TrainArgs),
    /// Evaluate a fine-tuned model: metrics as JSON on stdout.
    Eval {
        /// An exported folder, a checkpoint, or a run folder (its best checkpoint).
        #[arg(long)]
        model: String,
        /// An image folder, a CSV manifest, an IDX images file, WebDataset shards
        /// (`.tar`, a brace range or a glob), or a source table as in a config
        /// (`{ kind = "idx", ..., class_names = [...] }`). Its classes are matched
        /// to the model's by name (any order, a subset).
        #[arg(long)]
        data: PathBuf,
        /// Per-image predictions with logits (JSONL).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Images per forward pass.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        placement: PlacementArgs,
        /// Evaluate the checkpoint's EMA weights (`train.ema`) instead of its trained ones.
        #[arg(long)]
        ema: bool,
    },
    /// Zero-shot accuracy of a CLIP model with the class names of the data.
    ZeroShot {
        /// A hub id or a Hugging Face-layout CLIP folder (with tokenizer.json).
        #[arg(long)]
        model: String,
        /// Labelled data (as for `eval --data`; its class names make the prompts).
        #[arg(long)]
        data: PathBuf,
        /// A prompt template; `{}` stands for the class name.
        #[arg(long, conflicts_with = "templates")]
        template: Option<String>,
        /// A file with one template per line.
        #[arg(long)]
        templates: Option<PathBuf>,
        /// Per-image predictions with logits (JSONL).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Images per forward pass.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Classify images.
    Predict {
        /// An exported folder, a checkpoint, or a run folder (its best checkpoint).
        #[arg(long)]
        model: String,
        /// Image files, folders (their images, recursively) or glob patterns
        /// (quoted) to classify. An image that cannot be read gets an error row;
        /// the others are classified, and the exit code is then 1.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Classes listed per image, most probable first.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// One JSON object per image instead of text.
        #[arg(long)]
        json: bool,
        /// Images per forward pass.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Write a checkpoint as a Hugging Face-layout folder.
    Export {
        /// A checkpoint folder (run/checkpoints/step-N) or a run folder (its best).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The folder to write (created if missing).
        #[arg(long)]
        output: PathBuf,
        /// Export the checkpoint's EMA weights (`train.ema`) instead of its trained ones.
        #[arg(long)]
        ema: bool,
    },
    /// Write a dataset as WebDataset tar shards (key.jpg + key.cls + key.txt),
    /// the format streaming loaders read at scale; prints the `data.train` entry.
    Convert {
        /// An image folder, a CSV manifest, an IDX images file, or shards.
        #[arg(long)]
        data: PathBuf,
        /// The folder to write the shards to (created if missing).
        #[arg(long)]
        output: PathBuf,
        /// Samples per shard.
        #[arg(long, default_value_t = 1000)]
        shard_size: usize,
        /// Shard names: PREFIX-000000.tar, PREFIX-000001.tar, ...
        #[arg(long, default_value = "data")]
        prefix: String,
        /// Shuffle the samples with this seed (for readers that stream shards in
        /// order) [default: the source's order].
        #[arg(long)]
        shuffle: Option<u64>,
    },
    /// The parameter-group report of a config or a model.
    Inspect {
        /// A run config: its model, parameter groups, LRs and weight decay before training.
        #[arg(long, conflicts_with = "model")]
        config: Option<PathBuf>,
        /// An export, a checkpoint, a run folder (what that run trained), or a plain CLIP.
        #[arg(long)]
        model: Option<String>,
        /// Override a config value (with --config), e.g. `--set optim.lr=3e-5` (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
        /// JSON, with every tensor, its group, LR and weight decay (with --config).
        #[arg(long)]
        json: bool,
    },
    /// A PNG grid of augmented training views.
    PreviewAugment {
        /// The run config whose `data.train` and `data.train_transforms` to preview.
        #[arg(long)]
        config: PathBuf,
        /// The PNG to write.
        #[arg(long)]
        output: PathBuf,
        /// Training images in the grid (one per row, the original on the left).
        #[arg(long, default_value_t = 6)]
        images: usize,
        /// Augmented views per image.
        #[arg(long, default_value_t = 7)]
        views: usize,
        /// Override a config value, e.g. `--set data.train_transforms=[...]` (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// WiSE-FT: interpolate a zero-shot and a fine-tuned model, evaluate each mix.
    WiseFt {
        /// The zero-shot CLIP: a hub id or a folder with tokenizer.json.
        #[arg(long)]
        zero_shot: String,
        /// The fine-tuned model: an export, a checkpoint or a run folder.
        #[arg(long)]
        fine_tuned: String,
        /// Comma-separated mixing coefficients.
        #[arg(long, default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1")]
        alphas: String,
        /// Labelled data (as for `eval --data`); its classes are matched to the
        /// fine-tuned model's by name.
        #[arg(long)]
        data: PathBuf,
        /// Where to save the best mix and the curve (wise_ft.json).
        #[arg(long)]
        output: Option<PathBuf>,
        /// The prompt template of the zero-shot head; `{}` stands for the class name.
        #[arg(long, default_value = "a photo of a {}.")]
        template: String,
        /// A tokenizer.json to use instead of the zero-shot model's.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Images per forward pass.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Zero-shot, linear probe, LoRA r=8/16, full fine-tuning and WiSE-FT side by side.
    Compare {
        /// The run config every method starts from (same data, split, seed and budget).
        #[arg(long)]
        config: PathBuf,
        /// Where the runs and report.md / report.json / accuracy.png go.
        #[arg(long, default_value = "runs/compare")]
        output: PathBuf,
        /// Override a config value for every method (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Steady-state training throughput, loader throughput and memory as JSON.
    Bench {
        /// The run config to time (its data, or generated images when that is not there).
        #[arg(long)]
        config: PathBuf,
        /// Timed optimizer steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first (allocator and kernel warm-up).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Override a config value, e.g. `--set data.loader.batch_size=64` (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn init_logging(quiet: bool, format: LogFormat) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file (nohup, Slurm, CI) stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether any training option was given before a subcommand.
fn has_train_args(a: &TrainArgs) -> bool {
    a.config.is_some() || a.resume.is_some() || a.output_dir.is_some() || !a.overrides.is_empty()
}

fn main() -> ExitCode {
    // Writing to a closed pipe (`train-cli inspect --json | head`) ends the process
    // quietly, as other command-line tools do, instead of a "Broken pipe" panic.
    // SAFETY: resets one signal's disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.log_format);
    // --quiet / --log-format go before or after a subcommand; the training options
    // before one only with `train` or none.
    if let Some(c) = &cli.command
        && has_train_args(&cli.train)
        && !matches!(c, Command::Train(a) if !has_train_args(a))
    {
        eprintln!(
            "error: --config / --set / --resume / --output-dir belong to training: give them after `train`, or with no subcommand"
        );
        return ExitCode::from(2);
    }
    let result = match cli.command {
        None => commands::train(cli.train, cli.quiet),
        Some(Command::Train(args)) if !has_train_args(&args) => {
            commands::train(cli.train, cli.quiet)
        }
        Some(Command::Train(args)) => commands::train(args, cli.quiet),
        Some(Command::Eval {
            model,
            data,
            output,
            batch_size,
            placement,
            ema,
        }) => commands::eval(&model, &data, output.as_deref(), batch_size, placement, ema),
        Some(Command::ZeroShot {
            model,
            data,
            template,
            templates,
            output,
            batch_size,
            placement,
        }) => commands::zero_shot(
            &model,
            &data,
            template,
            templates.as_deref(),
            output.as_deref(),
            batch_size,
            placement,
        ),
        Some(Command::Predict {
            model,
            images,
            top_k,
            json,
            batch_size,
            placement,
        }) => commands::predict(&model, &images, top_k, json, batch_size, placement),
        Some(Command::Export {
            checkpoint,
            output,
            ema,
        }) => commands::export(&checkpoint, &output, ema),
        Some(Command::Convert {
            data,
            output,
            shard_size,
            prefix,
            shuffle,
        }) => commands::convert(&data, &output, shard_size, &prefix, shuffle),
        Some(Command::Inspect {
            config,
            model,
            overrides,
            json,
        }) => commands::inspect(config.as_deref(), model.as_deref(), &overrides, json),
        Some(Command::PreviewAugment {
            config,
            output,
            images,
            views,
            overrides,
        }) => commands::preview(&config, &output, images, views, &overrides),
        Some(Command::WiseFt {
            zero_shot,
            fine_tuned,
            alphas,
            data,
            output,
            template,
            tokenizer,
            batch_size,
            placement,
        }) => commands::wise(
            &zero_shot,
            &fine_tuned,
            &alphas,
            &data,
            output.as_deref(),
            &template,
            tokenizer.as_deref(),
            batch_size,
            placement,
        ),
        Some(Command::Compare {
            config,
            output,
            overrides,
        }) => commands::compare(&config, &output, &overrides, cli.quiet),
        Some(Command::Bench {
            config,
            steps,
            warmup,
            overrides,
        }) => commands::bench(&config, steps, warmup, &overrides),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            // A cause that the line above already quotes is not repeated.
            let mut shown = e.to_string();
            for cause in e.chain().skip(1).map(|c| c.to_string()) {
                if !shown.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
                shown = cause;
            }
            ExitCode::FAILURE
        }
    }
}
