//! Which file `--config NAME` means: the path as given when it exists; a bare
//! file name that is not in the current folder is looked up in `configs/` of the
//! current folder, then of this repository (where the project's own example
//! command, `cargo run -p train-cli -- --config full.toml`, finds it), with
//! `.toml` added when missing. Anything else is an error listing the configs
//! that exist.

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// The repository's `configs/` folder (as built; absent for an installed binary
/// whose source is gone).
fn repository_configs() -> PathBuf {
    let raw = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    raw.canonicalize().unwrap_or(raw)
}

/// The folders a bare config name is looked up in, in order.
fn config_folders() -> Vec<PathBuf> {
    let mut folders = vec![PathBuf::from("configs")];
    let repo = repository_configs();
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if !same(&repo, &folders[0]) {
        folders.push(repo);
    }
    folders
}

/// The config file `--config path` stands for (see the module docs); a file
/// found elsewhere than `path` is logged with where it was found.
pub fn find_config(path: &Path) -> Result<PathBuf> {
    // Something there (a file, or a folder whose reading then says so).
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let bare = path.components().count() == 1;
    let mut names = vec![path.to_path_buf()];
    if path.extension().is_none() {
        names.push(path.with_extension("toml"));
    }
    let mut looked = Vec::new();
    let folders = if bare { config_folders() } else { Vec::new() };
    for candidate in names.iter().filter(|n| n.as_path() != path).cloned().chain(
        folders
            .iter()
            .flat_map(|f| names.iter().map(move |n| f.join(n))),
    ) {
        if candidate.is_file() {
            tracing::info!(
                "--config {}: using {} ({} is not in the current folder)",
                path.display(),
                candidate.display(),
                path.display()
            );
            return Ok(candidate);
        }
        looked.push(candidate);
    }
    let existing: Vec<String> = folders
        .iter()
        .filter_map(|f| std::fs::read_dir(f).ok().map(|d| (f, d)))
        .flat_map(|(f, d)| {
            let mut names: Vec<String> = d
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .map(|p| {
                    p.file_name()
                        .map_or_else(String::new, |n| f.join(n).display().to_string())
                })
                .collect();
            names.sort();
            names
        })
        .collect();
    let mut reason = format!("{} does not exist", path.display());
    if !looked.is_empty() {
        reason.push_str(&format!(
            " (nor {})",
            looked
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !existing.is_empty() {
        reason.push_str(&format!("; configs that exist: {}", existing.join(", ")));
    }
    Err(TrainError::config("--config", reason))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bare_names_are_found_in_the_repositorys_configs() {
        let found = find_config(Path::new("smoke.toml")).unwrap();
        assert!(found.ends_with("configs/smoke.toml"), "{}", found.display());
        assert!(found.is_file());
        // `.toml` may be left out.
        let found = find_config(Path::new("smoke")).unwrap();
        assert!(found.ends_with("configs/smoke.toml"), "{}", found.display());
    }

    #[test]
    fn a_missing_config_lists_the_configs_that_exist() {
        let e = find_config(Path::new("nope.toml")).unwrap_err().to_string();
        assert!(
            e.contains("nope.toml does not exist") && e.contains("configs/full.toml"),
            "{e}"
        );
        // A path with a folder is taken as given: no lookup.
        let e = find_config(Path::new("elsewhere/full.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("elsewhere/full.toml does not exist") && !e.contains("nor"),
            "{e}"
        );
    }
}
