//! An ImageFolder tree, as torchvision's `ImageFolder` reads it:
//! `root/class_name/**/*.{jpg,png,...}`, classes sorted by name, following
//! symbolic links without counting a file twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::files::Files;
use super::{IMAGE_EXTENSIONS, Source, decode_class_folder, io};
use crate::DataError;

/// Reads the tree at `root`; errors name `key`'s fields.
pub(crate) fn read(root: &Path, key: &str) -> Result<Source, DataError> {
    let mut skipped = Vec::new();
    let mut folders: Vec<String> = std::fs::read_dir(root)
            .map_err(io(root))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            // Hidden folders (`.git`, `.ipynb_checkpoints`) and macOS archive
            // leftovers (`__MACOSX`) are no classes: left out, and said so.
            .filter(|e| {
                let name = e.file_name();
                let hidden = name.to_string_lossy().starts_with('.') || name == "__MACOSX";
                if hidden {
                    skipped.push((e.path(), "a hidden folder, not a class".to_string()));
                }
                !hidden
            })
            .map(|e| {
                // A class name goes into the model's config.json (UTF-8): a folder
                // name that is not UTF-8 cannot be one.
                e.file_name().into_string().map_err(|name| {
                    DataError::config(
                        format!("{key}.path"),
                        format!(
                            "the class folder {} is not named in UTF-8 (class names go into the model's config.json): rename it",
                            root.join(&name).display()
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    folders.sort();
    // A folder name stands for its class name with `/` written `%2F`.
    let classes: Vec<String> = folders.iter().map(|f| decode_class_folder(f)).collect();
    if let Some((a, b)) = folders
        .iter()
        .zip(&classes)
        .enumerate()
        .find_map(|(i, (f, c))| {
            classes[..i]
                .iter()
                .position(|earlier| earlier == c)
                .map(|j| (&folders[j], f))
        })
    {
        return Err(DataError::config(
            format!("{key}.path"),
            format!(
                "the class folders {a:?} and {b:?} in {} name the same class: rename one",
                root.display()
            ),
        ));
    }
    if classes.is_empty() {
        return Err(DataError::config(
            format!("{key}.path"),
            format!(
                "{} has no class folders (expected root/class_name/image.jpg)",
                root.display()
            ),
        ));
    }
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    // A file belongs to the class folder it really lies in: a link from one class
    // into another's folder does not label it twice (or wrongly), and no file is
    // counted twice however many links reach it.
    let class_dirs: Vec<PathBuf> = folders
        .iter()
        .map(|c| root.join(c).canonicalize().map_err(io(&root.join(c))))
        .collect::<Result<_, _>>()?;
    let mut counted: HashSet<PathBuf> = HashSet::new();
    for (label, folder) in folders.iter().enumerate() {
        let mut found = Vec::new();
        walk(
            &root.join(folder),
            &mut HashSet::new(),
            &mut found,
            &mut skipped,
        )?;
        found.sort();
        for f in found {
            let Ok(canon) = f.canonicalize() else {
                skipped.push((f, "a broken link".to_string()));
                continue;
            };
            if let Some(other) = class_dirs
                .iter()
                .position(|d| canon.starts_with(d))
                .filter(|&j| j != label)
            {
                skipped.push((
                    f,
                    format!(
                        "a link into class {:?}'s folder (counted there)",
                        classes[other]
                    ),
                ));
                continue;
            }
            if !counted.insert(canon.clone()) {
                skipped.push((f, format!("{} is already counted", canon.display())));
                continue;
            }
            let ext = f
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                files.push(f);
                labels.push(label);
            } else {
                skipped.push((f, "not an image extension".to_string()));
            }
        }
    }
    Ok(Source {
        storage: Box::new(Files(files)),
        classes,
        labels,
        captions: None,
        skipped,
    })
}

/// Every file below `dir`, following symbolic links, except into a folder this walk
/// has already entered (a link loop, or a second way to the same folder): those are
/// listed in `skipped`.
fn walk(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<(), DataError> {
    let canon = dir.canonicalize().map_err(io(dir))?;
    if !visited.insert(canon.clone()) {
        skipped.push((
            dir.to_path_buf(),
            format!("a link to {}, already read (a link loop?)", canon.display()),
        ));
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            walk(&path, visited, out, skipped)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The images that command-line arguments name: files as given (one that cannot
/// be read gets its error later, where it is read), folders' images
/// (recursively, following links as [`read`] does, sorted), and glob patterns
/// (`'photos/*.jpg'`, sorted).
pub fn image_paths(args: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let bad = |reason: String| DataError::config("images", reason);
    let mut out = Vec::new();
    for a in args {
        let text = a.to_string_lossy();
        if a.is_dir() {
            let (mut found, mut skipped) = (Vec::new(), Vec::new());
            walk(a, &mut HashSet::new(), &mut found, &mut skipped)?;
            found.retain(|p| {
                p.extension().is_some_and(|x| {
                    IMAGE_EXTENSIONS.contains(&x.to_string_lossy().to_ascii_lowercase().as_str())
                })
            });
            found.sort();
            out.extend(found);
        } else if !a.exists() && text.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(&text)
                .map_err(|e| bad(format!("{text} is not a valid glob: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if found.is_empty() {
                return Err(bad(format!("{text} matches no file")));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(a.clone());
        }
    }
    if out.is_empty() {
        return Err(bad(format!(
            "no images: {} hold(s) no image files",
            args.iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::save_buffer(
            path,
            &[9u8; 4 * 4 * 3],
            4,
            4,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }

    /// Hidden folders are no classes (left out, and said so); `%2F` in a class
    /// folder's name is the `/` of its class name; two folders naming one class
    /// are an error.
    #[test]
    fn hidden_folders_are_left_out_and_folder_names_are_decoded() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["T-shirt%2Ftop", "cat", ".ipynb_checkpoints", "__MACOSX"] {
            png(&tmp.path().join(f).join("a.png"));
        }
        let s = read(tmp.path(), "data.train").unwrap();
        assert_eq!(s.classes, ["T-shirt/top", "cat"]);
        assert_eq!(s.labels, [0, 1]);
        assert_eq!(
            s.skipped
                .iter()
                .filter(|(_, why)| why.contains("hidden folder"))
                .count(),
            2
        );
        png(&tmp.path().join("T-shirt%2ftop").join("b.png"));
        let e = read(tmp.path(), "data.train").unwrap_err().to_string();
        assert!(e.contains("name the same class"), "{e}");
    }
}
