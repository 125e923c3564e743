//! What the sources whose images are packed inside other files (WebDataset
//! shards, Parquet files) share: the file patterns that name them, and turning
//! their raw labels into classes.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::DataError;

/// The files a `path` names: brace ranges (`train-{000000..000127}.tar`,
/// zero-padded as written) and lists (`{a,b}`), then glob patterns (`*`, `?`,
/// `[...]`, sorted), or a folder (its `*.<ext>` files, sorted). Every named file
/// must exist.
pub(crate) fn expand_files(pattern: &str, key: &str, ext: &str) -> Result<Vec<PathBuf>, DataError> {
    let bad = |reason: String| DataError::config(format!("{key}.path"), reason);
    let mut out = Vec::new();
    for p in expand_braces(pattern).map_err(|e| bad(format!("{pattern:?}: {e}")))? {
        let path = PathBuf::from(&p);
        if path.is_dir() {
            let mut tars: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect();
            tars.sort();
            if tars.is_empty() {
                let compressed = std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| compressed_suffix(&e.file_name().to_string_lossy(), ext).is_some());
                return Err(bad(format!(
                    "the folder {} holds no .{ext} files{}",
                    path.display(),
                    if compressed {
                        format!(" (it holds compressed ones: {COMPRESSED})")
                    } else {
                        String::new()
                    }
                )));
            }
            out.extend(tars);
        } else if p.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(&p)
                .map_err(|e| bad(format!("{p:?} is not a valid glob: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(bad(format!("{p:?} matches no file")));
            }
            out.extend(found);
        } else if path.is_file() {
            out.push(path);
        } else {
            return Err(bad(super::missing(&path)));
        }
    }
    if let Some((p, suffix)) = out
        .iter()
        .find_map(|p| compressed_suffix(&p.file_name()?.to_string_lossy(), ext).map(|s| (p, s)))
    {
        return Err(bad(format!(
            "{} is a compressed {suffix} file: {COMPRESSED}",
            p.display()
        )));
    }
    Ok(out)
}

/// Why compressed shards are refused, and what to do.
const COMPRESSED: &str = "compressed shards are not supported, as samples are read by \
     seeking into the file: decompress them (e.g. `gunzip *.tar.gz`) and name the .tar files";

/// The compression suffix of a file name that is a compressed `.ext` (`.tar.gz`,
/// `.tgz`, `.tar.zst`, ...).
fn compressed_suffix(name: &str, ext: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let suffixes: &[&'static str] = match ext {
        "tar" => &[
            ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tar.lz4",
        ],
        _ => &[".parquet.gz", ".parquet.zst"],
    };
    suffixes.iter().copied().find(|s| name.ends_with(s))
}

/// `a{1..3}b{x,y}` -> `a1bx a1by a2bx ...` (ranges keep the start's zero padding).
fn expand_braces(s: &str) -> Result<Vec<String>, String> {
    let Some(open) = s.find('{') else {
        return Ok(vec![s.to_string()]);
    };
    let close = s[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or("an unclosed `{`")?;
    let (head, body, tail) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
    let items: Vec<String> = match body.split_once("..") {
        Some((a, b)) => {
            let (lo, hi) = (
                a.parse::<u64>()
                    .map_err(|_| format!("`{{{body}}}`: not a number range"))?,
                b.parse::<u64>()
                    .map_err(|_| format!("`{{{body}}}`: not a number range"))?,
            );
            if lo > hi {
                return Err(format!("`{{{body}}}` runs backwards"));
            }
            if hi - lo >= 10_000_000 {
                return Err(format!("`{{{body}}}` names over 10 million shards"));
            }
            let width = a.len();
            (lo..=hi).map(|i| format!("{i:0width$}")).collect()
        }
        None => body.split(',').map(str::to_string).collect(),
    };
    let rest = expand_braces(tail)?;
    Ok(items
        .iter()
        .flat_map(|i| rest.iter().map(move |r| format!("{head}{i}{r}")))
        .collect())
}

/// A sample's label as its members give it: a class index (`.cls`, a JSON
/// number) and / or a class name (`.txt`, a JSON string).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RawLabel {
    pub index: Option<usize>,
    pub name: Option<String>,
}

impl RawLabel {
    /// `3`, `"dog"` or `3 "dog"`, for messages.
    pub fn describe(&self) -> String {
        match (self.index, &self.name) {
            (Some(i), Some(n)) => format!("{i} {n:?}"),
            (Some(i), None) => i.to_string(),
            (None, Some(n)) => format!("{n:?}"),
            (None, None) => "none".into(),
        }
    }
}

/// Class indices from raw labels. With `class_names`: a sample's index, else its
/// name, must be among them (and an index and a name must agree). Without: when
/// every sample has an index, the classes are `"0"`..`"max"`, or the names in
/// index order when every sample also names its class (consistently); when every
/// sample has a name, the sorted distinct names; a mix is an error.
pub(crate) fn resolve_labels(
    raw: &[RawLabel],
    class_names: Option<&[String]>,
    key: &str,
    name_of: impl Fn(usize) -> String,
) -> Result<(Vec<String>, Vec<usize>), DataError> {
    let names_key = format!("{key}.class_names");
    let bad = |reason: String| Err(DataError::config(names_key.clone(), reason));
    let all_indexed = raw.iter().all(|r| r.index.is_some());
    let all_named = raw.iter().all(|r| r.name.is_some());
    let classes: Vec<String> = match class_names {
        Some(c) => c.to_vec(),
        None if all_indexed => {
            let top = raw.iter().filter_map(|r| r.index).max().unwrap_or(0);
            let mut names: Vec<Option<&str>> = vec![None; top + 1];
            if all_named {
                for (i, r) in raw.iter().enumerate() {
                    let (Some(k), Some(n)) = (r.index, r.name.as_deref()) else {
                        continue;
                    };
                    match names[k] {
                        Some(m) if m != n => {
                            return bad(format!(
                                "class {k} is named both {m:?} and {n:?} ({}): give the class names in index order",
                                name_of(i)
                            ));
                        }
                        _ => names[k] = Some(n),
                    }
                }
            }
            names
                .iter()
                .enumerate()
                .map(|(k, n)| n.map_or_else(|| k.to_string(), str::to_string))
                .collect()
        }
        None if all_named => {
            let mut names: Vec<String> = raw.iter().filter_map(|r| r.name.clone()).collect();
            names.sort();
            names.dedup();
            names
        }
        None => {
            return bad(
                "some samples are labelled by index only and some by name only: give the class names in index order".into(),
            );
        }
    };
    let by_name: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut unknown = Vec::new();
    let mut labels = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let by_index = r.index.filter(|_| all_indexed || class_names.is_some());
        let label = match (by_index, r.name.as_deref()) {
            (Some(k), Some(n))
                if classes.get(k).is_some_and(|c| c != n) && class_names.is_some() =>
            {
                unknown.push(format!(
                    "{} (class {k} is {:?}, the sample says {n:?})",
                    name_of(i),
                    classes[k]
                ));
                None
            }
            (Some(k), _) if k < classes.len() => Some(k),
            (Some(k), _) => {
                unknown.push(format!("{} (class {k})", name_of(i)));
                None
            }
            (None, Some(n)) => {
                let found = by_name.get(n).copied();
                if found.is_none() {
                    unknown.push(format!("{} ({n:?})", name_of(i)));
                }
                found
            }
            (None, None) => None,
        };
        labels.push(label.unwrap_or(0));
    }
    if !unknown.is_empty() {
        let n = unknown.len();
        unknown.truncate(5);
        return bad(format!(
            "{n} sample(s) have a label outside the {} class names, e.g. {}",
            classes.len(),
            unknown.join(", ")
        ));
    }
    Ok((classes, labels))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn braces_expand_ranges_with_padding_and_lists() {
        assert_eq!(
            expand_braces("d/train-{000008..000010}.tar").unwrap(),
            [
                "d/train-000008.tar",
                "d/train-000009.tar",
                "d/train-000010.tar"
            ]
        );
        assert_eq!(
            expand_braces("{a,b}-{1..2}").unwrap(),
            ["a-1", "a-2", "b-1", "b-2"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        assert!(expand_braces("x{3..1}").is_err());
        assert!(expand_braces("x{1..2").is_err());
    }

    fn l(index: Option<usize>, name: Option<&str>) -> RawLabel {
        RawLabel {
            index,
            name: name.map(str::to_string),
        }
    }

    fn resolve(
        raw: &[RawLabel],
        names: Option<&[String]>,
    ) -> Result<(Vec<String>, Vec<usize>), String> {
        resolve_labels(raw, names, "data.train", |i| format!("s{i}")).map_err(|e| e.to_string())
    }

    #[test]
    fn classes_come_from_indices_names_or_both() {
        // Index and name: the names in index order (not sorted).
        let both = [
            l(Some(1), Some("b")),
            l(Some(0), Some("z")),
            l(Some(1), Some("b")),
        ];
        assert_eq!(
            resolve(&both, None).unwrap(),
            (vec!["z".into(), "b".into()], vec![1, 0, 1])
        );
        // Names only: sorted.
        let named = [l(None, Some("dog")), l(None, Some("cat"))];
        assert_eq!(
            resolve(&named, None).unwrap(),
            (vec!["cat".into(), "dog".into()], vec![1, 0])
        );
        // Indices only: "0".."max".
        let indexed = [l(Some(2), None), l(Some(0), None)];
        assert_eq!(resolve(&indexed, None).unwrap().0, ["0", "1", "2"]);
        // Conflicts and unknowns are errors naming the sample.
        let conflict = [l(Some(0), Some("a")), l(Some(0), Some("b"))];
        assert!(resolve(&conflict, None).unwrap_err().contains("s1"));
        let mixed = [l(Some(0), None), l(None, Some("a"))];
        assert!(resolve(&mixed, None).unwrap_err().contains("class_names"));
        let given: Vec<String> = vec!["cat".into(), "dog".into()];
        assert_eq!(resolve(&mixed[..1], Some(&given)).unwrap().1, [0]);
        let err = resolve(&[l(None, Some("fox")), l(Some(5), None)], Some(&given)).unwrap_err();
        assert!(
            err.contains("2 sample(s)") && err.contains("\"fox\"") && err.contains("class 5"),
            "{err}"
        );
    }
}
