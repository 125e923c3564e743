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

use super::packed::{RawLabel, expand_files, resolve_labels};
use super::{Place, Source, Storage, file_place};
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

impl Storage for Shards {
    /// `shard.tar:key.jpg`, as errors and reports name a sample.
    fn name(&self, k: usize) -> String {
        let m = &self.members[k];
        format!(
            "{}:{}",
            self.paths[m.shard as usize].display(),
            self.names[k]
        )
    }

    fn len(&self) -> usize {
        self.members.len()
    }

    /// The shard's device and inode with the member's offset, and its size.
    fn places(&self) -> Vec<Place> {
        let shards: Vec<String> = self.paths.iter().map(|p| file_place(p).0).collect();
        self.members
            .iter()
            .map(|m| Place {
                at: format!("{}@{}", shards[m.shard as usize], m.offset),
                size: Some(m.len),
            })
            .collect()
    }

    /// The image member's bytes and its extension.
    fn encoded(&self, k: usize) -> Result<(Vec<u8>, String), DataError> {
        let ext = self.names[k]
            .split_once('.')
            .map_or("jpg", |(_, e)| e)
            .to_string();
        Ok((self.read(k)?, ext))
    }
}

impl Shards {
    /// The image bytes of sample `k`.
    fn read(&self, k: usize) -> Result<Vec<u8>, DataError> {
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

/// What one key of a shard holds.
#[derive(Default)]
struct Sample {
    image: Option<(String, u64, u64)>,
    label: RawLabel,
    caption: Option<String>,
    /// The extensions of the members seen, and each label member's label.
    members: std::collections::HashSet<String>,
    raw: HashMap<String, RawLabel>,
}

/// A sample with an image, before the labels are resolved.
struct Found {
    member: Member,
    name: String,
    label: RawLabel,
    caption: Option<String>,
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

/// A label or caption member's bytes (at most 1 MiB of it).
fn read_text_member(entry: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    entry.take(1 << 20).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Image extensions a sample's image may have, and the label members.
const IMAGE_EXTS: [&str; 6] = super::IMAGE_EXTENSIONS;
const LABEL_EXTS: [&str; 3] = ["cls", "txt", "json"];

/// Indexes `shards`: per sample with an image and a label, where the image lies
/// and the label; the class names (given, or the sorted names the shards use, or
/// `"0"`.. for indices); and the keys left out with the reason. With
/// `caption_ext`, that member is the sample's caption (required) and labels are
/// optional: when no sample has one the data has no classes (labels all 0).
pub(crate) fn read(
    shards: Vec<PathBuf>,
    class_names: Option<&[String]>,
    caption_ext: Option<&str>,
    key: &str,
) -> Result<Source, DataError> {
    let caption_ext = caption_ext.map(|e| e.trim_start_matches('.').to_ascii_lowercase());
    let mut found: Vec<Found> = Vec::new();
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
            // A member repeated in one shard (the key written twice): the same
            // label is a duplicate left out; another label is an error, as
            // neither can be trusted.
            if !sample.members.insert(ext.clone()) {
                let at = format!("{}:{member}", path.display());
                if LABEL_EXTS.contains(&ext.as_str()) {
                    let bytes = read_text_member(&mut entry).map_err(damaged)?;
                    let again = parse_label(&ext, &bytes).ok();
                    let before = sample.raw.get(&ext);
                    if again.as_ref() != before {
                        return Err(DataError::config(
                            format!("{key}.path"),
                            format!(
                                "{at} appears twice in the shard with different labels ({} and {}): the sample's key is used twice",
                                before.map_or("?".into(), RawLabel::describe),
                                again.as_ref().map_or("?".into(), RawLabel::describe),
                            ),
                        ));
                    }
                }
                skipped.push((
                    PathBuf::from(at),
                    "repeats a member of its shard (the first is used)".into(),
                ));
                continue;
            }
            if caption_ext.as_deref() == Some(ext.as_str()) {
                let bytes = read_text_member(&mut entry).map_err(damaged)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    DataError::config(
                        format!("{key}.path"),
                        format!("{}:{member}: the caption is not UTF-8", path.display()),
                    )
                })?;
                sample.caption = Some(text.trim().to_string());
            } else if LABEL_EXTS.contains(&ext.as_str()) {
                let bytes = read_text_member(&mut entry).map_err(damaged)?;
                let label = parse_label(&ext, &bytes).map_err(|why| {
                    DataError::config(
                        format!("{key}.path"),
                        format!("{}:{member} {why}", path.display()),
                    )
                })?;
                sample.raw.insert(ext.clone(), label.clone());
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
                Sample { image: None, .. } => skipped.push((at(), "no image member".into())),
                Sample { caption: None, .. } if caption_ext.is_some() => skipped.push((
                    at(),
                    format!(
                        "no caption member (.{})",
                        caption_ext.as_deref().unwrap_or("")
                    ),
                )),
                Sample {
                    image: Some((ext, offset, len)),
                    label,
                    caption,
                    ..
                } => found.push(Found {
                    member: Member {
                        shard: s as u32,
                        offset,
                        len,
                    },
                    name: format!("{k}.{ext}"),
                    label,
                    caption,
                }),
            }
        }
    }
    // Labels: required without captions; with captions, all samples or none.
    let labelled = caption_ext.is_none() || found.iter().any(|f| f.label != RawLabel::default());
    if labelled {
        let what = match &caption_ext {
            None => "no label member (.cls, .txt or .json)".to_string(),
            Some(_) => "no label member, while other samples have one".to_string(),
        };
        found.retain(|f| {
            let keep = f.label != RawLabel::default();
            if !keep {
                let path = &shards[f.member.shard as usize];
                let key = f.name.split_once('.').map_or(f.name.as_str(), |(k, _)| k);
                skipped.push((
                    PathBuf::from(format!("{}:{key}", path.display())),
                    what.clone(),
                ));
            }
            keep
        });
    }
    if found.is_empty() {
        return Err(DataError::config(
            format!("{key}.path"),
            match &caption_ext {
                None => format!(
                    "the {} shard(s) hold no sample with an image and a label (key.jpg + key.cls / key.txt / key.json)",
                    shards.len()
                ),
                Some(e) => format!(
                    "the {} shard(s) hold no sample with an image and a caption (key.jpg + key.{e})",
                    shards.len()
                ),
            },
        ));
    }
    let names: Vec<String> = found.iter().map(|f| f.name.clone()).collect();
    let (classes, labels) = if labelled {
        let raw: Vec<RawLabel> = found.iter().map(|f| f.label.clone()).collect();
        resolve_labels(&raw, class_names, key, |i| {
            let m = &found[i].member;
            format!("{}:{}", shards[m.shard as usize].display(), names[i])
        })?
    } else {
        (Vec::new(), vec![0; found.len()])
    };
    let captions = caption_ext.as_ref().map(|_| {
        found
            .iter()
            .map(|f| f.caption.clone().unwrap_or_default())
            .collect()
    });
    Ok(Source {
        storage: Box::new(Shards {
            paths: shards,
            members: found.into_iter().map(|f| f.member).collect(),
            names,
        }),
        classes,
        labels,
        captions,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
}
