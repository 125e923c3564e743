//! Output folders that commands write whole (`export`, `convert`, `wise-ft
//! --output`): never one of the command's inputs, inside one, around one, or
//! inside a run's checkpoint; never a non-empty folder, unless it is an earlier
//! output of the same command and `--overwrite` is given — then it is replaced
//! whole: the new output is written beside it and renamed over it at the end,
//! so a failure leaves the old one as it was and no files of the old output
//! linger beside the new.

use std::path::{Component, Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::run::checkpoint::{CHECKPOINTS_DIR, STATE_FILE};

/// The file that marks a folder as a command's output (its content: the command).
const MARKER: &str = ".clip-finetune-output";

/// `path` made absolute and free of `.`, `..` and links as far as it exists (the
/// rest of it appended as written).
pub(crate) fn resolved(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    // Nothing exists (not even the root): normalise lexically.
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A folder a command is about to write, checked (see the module docs).
#[derive(Debug)]
pub struct OutputDir {
    target: PathBuf,
    staging: PathBuf,
    kind: &'static str,
}

impl OutputDir {
    /// Checks `output` for the command `kind` (`"export"`, ...) against its
    /// `inputs` and prepares an empty staging folder beside it; `overwrite`
    /// allows replacing an earlier output of the same command.
    pub fn prepare(
        output: &Path,
        kind: &'static str,
        inputs: &[&Path],
        overwrite: bool,
    ) -> Result<Self> {
        let target = resolved(output);
        let refuse = |why: String| {
            Err(TrainError::Usage(format!(
                "{kind}: refusing to write {}: {why}",
                output.display()
            )))
        };
        for input in inputs {
            let input_path = resolved(input);
            if target == input_path {
                return refuse(format!("it is the input {}", input.display()));
            }
            if target.starts_with(&input_path) {
                return refuse(format!("it lies inside the input {}", input.display()));
            }
            if input_path.starts_with(&target) {
                return refuse(format!(
                    "it holds the input {}, which writing there would overwrite",
                    input.display()
                ));
            }
        }
        if let Some(ckpt) = target.ancestors().find(|a| {
            a.join(STATE_FILE).is_file()
                || a.file_name().is_some_and(|n| n == CHECKPOINTS_DIR)
                    && a.parent()
                        .is_some_and(|r| r.join("config.resolved.toml").is_file())
        }) {
            return refuse(format!(
                "it lies inside the run's checkpoints {} (a checkpoint's files would be replaced)",
                ckpt.display()
            ));
        }
        if target.exists() && !target.is_dir() {
            return refuse("it is a file, not a folder".into());
        }
        let entries: Vec<String> = std::fs::read_dir(&target)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !entries.is_empty() {
            let earlier =
                std::fs::read_to_string(target.join(MARKER)).is_ok_and(|m| m.trim() == kind);
            match (earlier, overwrite) {
                (true, true) => {}
                (true, false) => {
                    return refuse(format!(
                        "it holds an earlier {kind} output: add --overwrite to replace it whole"
                    ));
                }
                (false, _) => {
                    return refuse(format!(
                        "it is not empty and not an earlier {kind} output ({} entries, e.g. {}): pick a new or empty folder",
                        entries.len(),
                        entries[0]
                    ));
                }
            }
        }
        let name = target
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
        let staging = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(TrainError::io("cannot clear", &staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(TrainError::io("cannot create", &staging))?;
        Ok(Self {
            target,
            staging,
            kind,
        })
    }

    /// Where the command writes (the staging folder).
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Marks the output as the command's and moves it into place (an earlier
    /// output there is removed only once the new one is complete).
    pub fn commit(self) -> Result<PathBuf> {
        let marker = self.staging.join(MARKER);
        std::fs::write(&marker, self.kind).map_err(TrainError::io("cannot write", &marker))?;
        if self.target.exists() {
            let old = self.target.with_file_name(format!(
                ".{}.old-{}",
                self.target
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                std::process::id()
            ));
            std::fs::rename(&self.target, &old)
                .map_err(TrainError::io("cannot move aside", &self.target))?;
            std::fs::rename(&self.staging, &self.target)
                .map_err(TrainError::io("cannot finish", &self.target))?;
            std::fs::remove_dir_all(&old).map_err(TrainError::io("cannot remove", &old))?;
        } else {
            std::fs::rename(&self.staging, &self.target)
                .map_err(TrainError::io("cannot finish", &self.target))?;
        }
        Ok(self.target.clone())
    }

    /// Drops the staging folder (the command failed).
    pub fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outputs_that_overlap_inputs_or_hold_other_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("cat")).unwrap();
        let err = |out: &Path, overwrite: bool| {
            OutputDir::prepare(out, "convert", &[&data], overwrite)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&data, true).contains("it is the input"));
        assert!(err(&data.join("shards"), true).contains("inside the input"));
        assert!(err(tmp.path(), true).contains("holds the input"));
        // Through `..`: the same folder.
        assert!(err(&data.join("cat/.."), true).contains("it is the input"));
        // A folder of other files: refused even with --overwrite.
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("tokenizer.json"), "{}").unwrap();
        let e = err(&other, true);
        assert!(
            e.contains("not empty") && e.contains("tokenizer.json"),
            "{e}"
        );
        // An earlier output of the command: refused without --overwrite, replaced
        // whole with it (nothing of the old one left).
        let out = tmp.path().join("out");
        let first = OutputDir::prepare(&out, "convert", &[&data], false).unwrap();
        std::fs::write(first.path().join("old.tar"), "x").unwrap();
        first.commit().unwrap();
        assert!(err(&out, false).contains("--overwrite"));
        let second = OutputDir::prepare(&out, "convert", &[&data], true).unwrap();
        std::fs::write(second.path().join("new.tar"), "y").unwrap();
        // Until the commit, the old output is untouched.
        assert!(out.join("old.tar").is_file());
        second.commit().unwrap();
        assert!(out.join("new.tar").is_file() && !out.join("old.tar").exists());
        // Another command's output is not this one's to replace.
        let e = OutputDir::prepare(&out, "export", &[], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an earlier export output"), "{e}");
        // Inside a checkpoint.
        let ckpt = tmp.path().join("run/checkpoints/step-00000001");
        std::fs::create_dir_all(ckpt.join("model")).unwrap();
        std::fs::write(ckpt.join(STATE_FILE), "{}").unwrap();
        let e = OutputDir::prepare(&ckpt.join("model"), "export", &[], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the run's checkpoints"), "{e}");
    }
}
