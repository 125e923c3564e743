//! What the commands print on stderr, by `--quiet` and `--log-format`: human
//! lines as they are (text), one `tracing` JSON object each (json), nothing but
//! warnings and errors (quiet).

use std::sync::OnceLock;

use clap::ValueEnum;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

static MODE: OnceLock<clip_train::Console> = OnceLock::new();

/// Sets up `tracing` on stderr and the mode of [`say_line`], once at start-up.
pub fn init(quiet: bool, format: LogFormat) {
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
    let mode = match (quiet, format) {
        (true, _) => clip_train::Console::Quiet,
        (false, LogFormat::Json) => clip_train::Console::Json,
        (false, LogFormat::Text) => clip_train::Console::Human,
    };
    let _ = MODE.set(mode);
}

/// The console mode [`init`] set.
pub fn mode() -> clip_train::Console {
    MODE.get().copied().unwrap_or_default()
}

/// A line for the user: printed as is, or as a JSON log object; not with --quiet.
pub fn say_line(line: &str) {
    match mode() {
        clip_train::Console::Human => eprintln!("{line}"),
        clip_train::Console::Json => tracing::info!("{line}"),
        clip_train::Console::Quiet => {}
    }
}

/// A line --quiet keeps in text mode (the run folder at the end of a run).
pub fn keep(line: &str) {
    match mode() {
        clip_train::Console::Json => tracing::info!("{line}"),
        _ => eprintln!("{line}"),
    }
}

/// A warning: shown in every mode.
pub fn warn(line: &str) {
    match mode() {
        clip_train::Console::Json => tracing::warn!("{line}"),
        _ => eprintln!("{line}"),
    }
}

/// The error that ends the command, with its causes (each once): `error: ...`
/// lines, or one JSON object (`level` ERROR, `causes` listed).
pub fn error(e: &anyhow::Error) {
    let mut causes = Vec::new();
    let mut shown = e.to_string();
    for cause in e.chain().skip(1).map(|c| c.to_string()) {
        // A cause that the line above already quotes is not repeated.
        if !shown.contains(&cause) {
            causes.push(cause.clone());
        }
        shown = cause;
    }
    match mode() {
        clip_train::Console::Json => {
            tracing::error!(causes = ?causes, "{e}");
        }
        _ => {
            eprintln!("error: {e}");
            for c in causes {
                eprintln!("  caused by: {c}");
            }
        }
    }
}

/// `say!("...", args)`: [`say_line`] with `format!`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say_line(&format!($($arg)*))
    };
}
pub(crate) use say;
