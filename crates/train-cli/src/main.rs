//! `train-cli`: the command-line front of the CLIP fine-tuning toolkit. All logic
//! lives in the library crates; this binary parses arguments, composes the config
//! and reports errors.

mod args;
mod commands;
mod console;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use args::{
    BenchArgs, CompareArgs, ConfigArgs, ConvertArgs, EvalArgs, ExportArgs, InspectArgs,
    PredictArgs, PreviewAugmentArgs, SoupArgs, SweepArgs, TrainArgs, WiseFtArgs, ZeroShotArgs,
};
use console::LogFormat;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Train (the default when no subcommand is given).
    Train(TrainArgs),
    /// Evaluate a fine-tuned model: metrics as JSON on stdout.
    Eval(EvalArgs),
    /// Zero-shot accuracy of a CLIP model with the class names of the data.
    ZeroShot(ZeroShotArgs),
    /// Classify images.
    Predict(PredictArgs),
    /// Write a checkpoint as a Hugging Face-layout folder.
    Export(ExportArgs),
    /// Write a dataset as WebDataset tar shards (key.jpg + key.cls + key.txt),
    /// the format streaming loaders read at scale; prints the `data.train` entry.
    Convert(ConvertArgs),
    /// The parameter-group report of a config or a model.
    Inspect(InspectArgs),
    /// A PNG grid of augmented training views.
    PreviewAugment(PreviewAugmentArgs),
    /// WiSE-FT: interpolate a zero-shot and a fine-tuned model, evaluate each mix.
    WiseFt(WiseFtArgs),
    /// Model soups: the uniform and the greedy average of several fine-tuned models.
    Soup(SoupArgs),
    /// A grid of config values, one run per point, resumable, with a table and a plot.
    Sweep(SweepArgs),
    /// Zero-shot, linear probe, LoRA r=8/16, full fine-tuning and WiSE-FT side by side.
    Compare(CompareArgs),
    /// Steady-state training throughput, loader throughput and memory as JSON.
    Bench(BenchArgs),
    /// Every config key with its default, type and meaning (`--explain KEY` for one).
    Config(ConfigArgs),
}

/// Whether any training option was given before a subcommand.
fn has_train_args(a: &TrainArgs) -> bool {
    a.config.is_some()
        || a.resume.is_some()
        || a.output_dir.is_some()
        || !a.overrides.is_empty()
        || a.dry_run
        || a.allow_data_change
}

/// A command line clap refuses: its message as clap prints it, or as one JSON
/// error object under `--log-format json` (help and version print as usual).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit()
    }
    let text = format!(
        "{}{}",
        e.render().to_string().trim_end(),
        config_key_hint(&e, &args)
    );
    if json {
        console::init(false, LogFormat::Json);
        console::error(&anyhow::anyhow!("{}", text.trim()));
    } else {
        eprintln!("{text}");
    }
    ExitCode::from(2)
}

/// For an unknown flag that names a config key (`--epochs 3`), how to set it:
/// config values are set with `--set section.key=value`, not flags of their own.
fn config_key_hint(e: &clap::Error, args: &[String]) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return String::new();
    }
    let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) else {
        return String::new();
    };
    let keys = clip_train::config_keys::keys_for_flag(flag);
    if keys.is_empty() {
        return String::new();
    }
    // The value: `--epochs=3`, or the argument after `--epochs`.
    let value = args
        .iter()
        .enumerate()
        .find_map(
            |(i, a)| match a.strip_prefix(flag.as_str())?.strip_prefix('=') {
                Some(v) => Some(v.to_string()),
                None if a == flag => args.get(i + 1).filter(|v| !v.starts_with("--")).cloned(),
                None => None,
            },
        )
        .unwrap_or_else(|| "VALUE".into());
    let sets: Vec<String> = keys.iter().map(|k| format!("--set {k}={value}")).collect();
    format!(
        "\n\nnote: `{flag}` is not a flag, but {} a config key: give it as {} (`train-cli config --explain {}` says what it does)",
        if keys.len() == 1 { "names" } else { "may name" },
        sets.join(" or "),
        keys[0]
    )
}

fn main() -> ExitCode {
    // Writing to a closed pipe (`train-cli inspect --json | head`) ends the process
    // quietly, as other command-line tools do, instead of a "Broken pipe" panic.
    // SAFETY: resets one signal's disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    console::init(cli.quiet, cli.log_format);
    // --quiet / --log-format go before or after a subcommand; the training options
    // before one only with `train` or none.
    if let Some(c) = &cli.command
        && has_train_args(&cli.train)
        && !matches!(c, Command::Train(a) if !has_train_args(a))
    {
        console::error(&anyhow::anyhow!(
            "--config / --set / --resume / --output-dir / --dry-run belong to training: give them after `train`, or with no subcommand"
        ));
        return ExitCode::from(2);
    }
    let result = match cli.command {
        None => commands::train(cli.train),
        Some(Command::Train(args)) if !has_train_args(&args) => commands::train(cli.train),
        Some(Command::Train(args)) => commands::train(args),
        Some(Command::Eval(a)) => commands::eval(a),
        Some(Command::ZeroShot(a)) => commands::zero_shot(a),
        Some(Command::Predict(a)) => commands::predict(a),
        Some(Command::Export(a)) => commands::export(a),
        Some(Command::Convert(a)) => commands::convert(a),
        Some(Command::Inspect(a)) => commands::inspect(a),
        Some(Command::PreviewAugment(a)) => commands::preview(a),
        Some(Command::WiseFt(a)) => commands::wise(a),
        Some(Command::Soup(a)) => commands::soup(a),
        Some(Command::Sweep(a)) => commands::sweep(a),
        Some(Command::Compare(a)) => commands::compare(a),
        Some(Command::Bench(a)) => commands::bench(a),
        Some(Command::Config(a)) => commands::config(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            console::error(&e);
            ExitCode::FAILURE
        }
    }
}
