//! `train-cli`: the command-line front of the CLIP fine-tuning toolkit. All logic
//! lives in the library crates; this binary parses arguments, composes the config
//! and reports errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Fine-tune CLIP for image classification from one TOML file.
#[derive(Debug, Parser)]
#[command(name = "train-cli", version, about)]
struct Cli {
    /// The run's TOML config (see configs/).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set optim.lr=3e-5` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run stored in this run folder exactly where it stopped.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(config) = cli.config else {
        anyhow::bail!("no config given: pass --config FILE (see configs/), or --help");
    };
    anyhow::bail!(
        "the trainer is not built yet: cannot run {} (clip-train's training loop is still to come)",
        config.display()
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_repeated_overrides() {
        let cli = Cli::try_parse_from([
            "train-cli",
            "--config",
            "c.toml",
            "--set",
            "optim.lr=1e-4",
            "--set",
            "train.epochs=3",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("c.toml")));
        assert_eq!(cli.overrides, ["optim.lr=1e-4", "train.epochs=3"]);
    }

    #[test]
    fn missing_config_is_an_error_that_says_what_to_pass() {
        let err = run(Cli::try_parse_from(["train-cli"]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("--config"), "{err}");
    }
}
