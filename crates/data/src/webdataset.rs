//! WebDataset tar shards (`000000.tar` ... holding `key.jpg` + `key.cls` /
//! `key.txt` / `key.json`), read by random access: loading scans each shard's tar
//! headers once (seeking over the file data) and keeps, per sample, where its
//! image lies in which shard; an image is then one positioned read. The samples
//! are therefore a dataset like the others: shuffled as a whole every epoch,
//! split over ranks and threads the same way, resumed exactly from
//! `(seed, epoch, position)`, with no image held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::DataError;

/// Where a sample's image lies.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub shard: u32,
    pub offset: u64,
    pub len: u64,
}

/// The indexed shards.
#[derive(Debug)]
pub(crate) struct Shards {
    pub paths: Vec<PathBuf>,
    pub members: Vec<Member>,
    /// `key.ext` of each sample's image, for messages.
    pub names: Vec<String>,
}

impl Shards {
    /// `shard.tar:key.jpg`, as errors and reports name a sample.
    pub fn name(&self, k: usize) -> String {
        let m = &self.members[k];
        format!(
            "{}:{}",
            self.paths[m.shard as usize].display(),
            self.names[k]
        )
    }

    /// The image bytes of sample `k`.
    pub fn read(&self, k: usize) -> Result<Vec<u8>, DataError> {
        let m = &self.members[k];
        let path = &self.paths[m.shard as usize];
        let io = |source| DataError::Io {
            path: path.clone(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        f.seek(SeekFrom::Start(m.offset)).map_err(io)?;
        let mut bytes = vec![0u8; m.len as usize];
        f.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }
}

/// The shard files a `path` names: brace ranges (`train-{000000..000127}.tar`,
/// zero-padded as written) and lists (`{a,b}`), then glob patterns (`*`, `?`,
/// `[...]`, sorted), or a folder (its `*.tar`, sorted). Every named file must exist.
pub fn expand_shards(pattern: &str, key: &str) -> Result<Vec<PathBuf>, DataError> {
    expand_files(pattern, key, "tar")
}

/// [`expand_shards`] for files with extension `ext` in folders.
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
                return Err(bad(format!(
                    "the folder {} holds no .{ext} files",
                    path.display()
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
            return Err(bad(format!("{} does not exist", path.display())));
        }
    }
    Ok(out)
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
struct RawLabel {
    index: Option<usize>,
    name: Option<String>,
}

/// What one key of a shard holds.
#[derive(Default)]
struct Sample {
    image: Option<(String, u64, u64)>,
    label: RawLabel,
}

/// The label in a `.cls` (an index), `.txt` (a class name) or `.json` (an
/// index, a name, or an object with a `label`) member.
fn parse_label(ext: &str, bytes: &[u8]) -> Result<RawLabel, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "is not UTF-8".to_string())?
        .trim();
    let index = |i| RawLabel {
        index: Some(i),
        name: None,
    };
    let name = |n: &str| RawLabel {
        index: None,
        name: Some(n.trim().to_string()),
    };
    let from_json = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_u64().map(|i| index(i as usize)),
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(name(s)),
        _ => None,
    };
    match ext {
        "cls" => text
            .parse::<usize>()
            .map(index)
            .map_err(|_| format!("holds {text:?}, not a class index")),
        "txt" if text.is_empty() => Err("is empty".into()),
        "txt" => Ok(name(text)),
        _ => {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
            from_json(&v)
                .or_else(|| v.get("label").and_then(from_json))
                .ok_or_else(|| {
                    "holds no label (a number, a string, or an object with `label`)".into()
                })
        }
    }
}

/// Image extensions a sample's image may have, and the label members.
const IMAGE_EXTS: [&str; 6] = crate::sources::IMAGE_EXTENSIONS;
const LABEL_EXTS: [&str; 3] = ["cls", "txt", "json"];

/// Indexes `shards`: per sample with an image and a label, where the image lies
/// and the label; the class names (given, or the sorted names the shards use, or
/// `"0"`.. for indices); and the keys left out with the reason.
#[allow(clippy::type_complexity)]
pub(crate) fn index(
    shards: Vec<PathBuf>,
    class_names: Option<&[String]>,
    key: &str,
) -> Result<(Shards, Vec<usize>, Vec<String>, Vec<(PathBuf, String)>), DataError> {
    let mut members = Vec::new();
    let mut names = Vec::new();
    let mut raw = Vec::new();
    let mut skipped = Vec::new();
    for (s, path) in shards.iter().enumerate() {
        let damaged = |e: std::io::Error| DataError::Config {
            key: format!("{key}.path"),
            reason: format!("{} is not a readable tar file: {e}", path.display()),
        };
        let f = File::open(path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let mut archive = tar::Archive::new(BufReader::new(f));
        let mut order: Vec<String> = Vec::new();
        let mut samples: HashMap<String, Sample> = HashMap::new();
        for entry in archive.entries_with_seek().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = entry.path().map_err(damaged)?.to_string_lossy().to_string();
            // WebDataset's convention: the key runs to the first dot of the file name.
            let base_at = member.rfind('/').map_or(0, |i| i + 1);
            let Some(dot) = member[base_at..].find('.').map(|d| base_at + d) else {
                skipped.push((
                    PathBuf::from(format!("{}:{member}", path.display())),
                    "no extension".into(),
                ));
                continue;
            };
            let (k, ext) = (&member[..dot], member[dot + 1..].to_ascii_lowercase());
            let sample = samples.entry(k.to_string()).or_insert_with(|| {
                order.push(k.to_string());
                Sample::default()
            });
            if LABEL_EXTS.contains(&ext.as_str()) {
                let mut bytes = Vec::new();
                entry
                    .by_ref()
                    .take(1 << 20)
                    .read_to_end(&mut bytes)
                    .map_err(damaged)?;
                let label = parse_label(&ext, &bytes).map_err(|why| {
                    DataError::config(
                        format!("{key}.path"),
                        format!("{}:{member} {why}", path.display()),
                    )
                })?;
                // .cls and .txt first, a .json fills what they leave.
                let l = &mut sample.label;
                if ext != "json" || l.index.is_none() {
                    l.index = label.index.or(l.index.take());
                }
                if ext != "json" || l.name.is_none() {
                    l.name = label.name.or(l.name.take());
                }
            } else if IMAGE_EXTS.contains(&ext.as_str()) && sample.image.is_none() {
                sample.image = Some((ext, entry.raw_file_position(), entry.size()));
            }
        }
        for k in order {
            let Some(sample) = samples.remove(&k) else {
                continue;
            };
            let at = || PathBuf::from(format!("{}:{k}", path.display()));
            match sample {
                Sample {
                    image: Some((ext, offset, len)),
                    label,
                } if label != RawLabel::default() => {
                    members.push(Member {
                        shard: s as u32,
                        offset,
                        len,
                    });
                    names.push(format!("{k}.{ext}"));
                    raw.push(label);
                }
                Sample { image: None, .. } => skipped.push((at(), "no image member".into())),
                Sample { .. } => {
                    skipped.push((at(), "no label member (.cls, .txt or .json)".into()))
                }
            }
        }
    }
    if members.is_empty() {
        return Err(DataError::config(
            format!("{key}.path"),
            format!(
                "the {} shard(s) hold no sample with an image and a label (key.jpg + key.cls / key.txt / key.json)",
                shards.len()
            ),
        ));
    }
    let (classes, labels) = resolve_labels(&raw, class_names, key, |i| {
        let m = &members[i];
        format!("{}:{}", shards[m.shard as usize].display(), names[i])
    })?;
    Ok((
        Shards {
            paths: shards,
            members,
            names,
        },
        labels,
        classes,
        skipped,
    ))
}

/// Class indices from raw labels. With `class_names`: a sample's index, else its
/// name, must be among them (and an index and a name must agree). Without: when
/// every sample has an index, the classes are `"0"`..`"max"`, or the names in
/// index order when every sample also names its class (consistently); when every
/// sample has a name, the sorted distinct names; a mix is an error.
fn resolve_labels(
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
                "the shards label some samples by index only (.cls) and some by name only: give the class names in index order".into(),
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

/// Writes `data` as WebDataset shards `dir/{prefix}-000000.tar`, ... of
/// `shard_size` samples: `NNNNNNNN.<ext>` (the image as stored), `NNNNNNNN.cls`
/// (its class index) and `NNNNNNNN.txt` (its class name). Samples keep the
/// source's order, or are shuffled with `shuffle`'s seed (for readers that stream
/// shards in order). Each shard is written to a temporary name and renamed.
/// Returns the shards written.
pub fn write_webdataset(
    data: &crate::Dataset,
    dir: &std::path::Path,
    prefix: &str,
    shard_size: usize,
    shuffle: Option<u64>,
) -> Result<Vec<PathBuf>, DataError> {
    if shard_size == 0 {
        return Err(DataError::config("--shard-size", "must be at least 1"));
    }
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let order: Vec<usize> = match shuffle {
        Some(seed) => crate::SampleRng::new(seed, 0, u64::MAX).permutation(data.len()),
        None => (0..data.len()).collect(),
    };
    let mut written = Vec::new();
    for (s, chunk) in order.chunks(shard_size).enumerate() {
        let path = dir.join(format!("{prefix}-{s:06}.tar"));
        let tmp = dir.join(format!(".{prefix}-{s:06}.tar.tmp"));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        for &i in chunk {
            let (bytes, ext) = data.encoded(i)?;
            let label = data.label(i);
            let members = [
                (ext, bytes),
                ("cls".to_string(), label.to_string().into_bytes()),
                (
                    "txt".to_string(),
                    data.classes()[label].clone().into_bytes(),
                ),
            ];
            for (ext, bytes) in members {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_cksum();
                builder
                    .append_data(&mut header, format!("{i:08}.{ext}"), bytes.as_slice())
                    .map_err(io(&tmp))?;
            }
        }
        builder
            .into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
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

    #[test]
    fn labels_parse_from_each_kind_of_member() {
        let l = |index: Option<usize>, name: Option<&str>| RawLabel {
            index,
            name: name.map(str::to_string),
        };
        assert_eq!(parse_label("cls", b" 3\n"), Ok(l(Some(3), None)));
        assert_eq!(parse_label("txt", b"dog\n"), Ok(l(None, Some("dog"))));
        assert_eq!(
            parse_label("json", br#"{"label": "cat"}"#),
            Ok(l(None, Some("cat")))
        );
        assert_eq!(parse_label("json", b"2"), Ok(l(Some(2), None)));
        assert!(parse_label("cls", b"dog").is_err());
        assert!(parse_label("json", br#"{"x": 1}"#).is_err());
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
