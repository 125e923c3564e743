//! Where images, labels and captions come from. One reader per file: an
//! ImageFolder tree ([`image_folder`]), a CSV manifest ([`csv`]), the MNIST
//! family's IDX files ([`idx`]), WebDataset tar shards ([`webdataset`]) and
//! Hugging Face Parquet files ([`parquet`]). Each returns a [`Source`]: its
//! items' labels and captions, the class names, what it left out, and a
//! [`Storage`] that reads and decodes an item by index, which
//! [`crate::Dataset`] views.
//!
//! Adding a source kind: a reader file here, a [`SourceConfig`] variant, and its
//! arms in this file's `read`, `describe`, `missing` and `check_exists`.

pub(crate) mod csv;
pub(crate) mod files;
pub(crate) mod idx;
pub(crate) mod image_folder;
pub(crate) mod packed;
pub(crate) mod parquet;
pub(crate) mod webdataset;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::image::{DecodeOptions, RgbImage};
use crate::rng::SampleRng;

pub use idx::{FASHION_MNIST_CLASSES, read_idx};
pub use image_folder::image_paths;
pub use webdataset::expand_shards;

/// Extensions an ImageFolder source reads (torchvision's, less the formats the
/// `image` crate is not built with here).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Where a source's items are and how one is read: what a [`crate::Dataset`]
/// views. `k` is an item's index in the storage.
pub(crate) trait Storage: std::fmt::Debug + Send + Sync {
    /// A printable name of item `k`: its path, `shard.tar:key.jpg`,
    /// `file.parquet:row N`, `idx:N`.
    fn name(&self, k: usize) -> String;
    /// The bytes of item `k`'s file name when [`Storage::name`] could not spell
    /// it (not UTF-8): how a JSON output traces it back; `None` otherwise.
    fn name_bytes(&self, _k: usize) -> Option<Vec<u8>> {
        None
    }
    /// Item `k` as stored: its encoded bytes and lower-case extension.
    fn encoded(&self, k: usize) -> Result<(Vec<u8>, String), DataError>;
    /// Item `k`, decoded as `options` say (an error names the file and the
    /// place in it); by default from its [`Storage::encoded`] bytes.
    fn image(&self, k: usize, options: &DecodeOptions) -> Result<RgbImage, DataError> {
        let (bytes, _) = self.encoded(k)?;
        RgbImage::decode_with(&bytes, options).map_err(|source| DataError::Decode {
            path: self.name(k).into(),
            source,
        })
    }
    /// A shuffle of `view` (storage indices) that keeps the locality this storage
    /// needs, as positions in `view`; `None` where any order is as good.
    fn local_permutation(&self, _view: &[usize], _rng: &mut SampleRng) -> Option<Vec<usize>> {
        None
    }
    /// Where each item's bytes lie, whatever name the source gave them (see
    /// [`Place`]); by default its name, size unknown.
    fn places(&self) -> Vec<Place> {
        (0..self.len())
            .map(|k| Place {
                at: self.name(k),
                size: None,
            })
            .collect()
    }
    /// The number of items.
    fn len(&self) -> usize;
    /// A hash of item `k`'s content (its stored bytes), for finding the same
    /// image under two names.
    fn content_hash(&self, k: usize) -> Result<u64, DataError> {
        Ok(crate::hash::hash_bytes(&self.encoded(k)?.0))
    }
}

/// Where an item's bytes lie: a file's device and inode (so that two paths, a
/// link or a hard link to one file are one place), with the member's offset or
/// the row for packed files; and its size in bytes when known without reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub at: String,
    pub size: Option<u64>,
}

/// The device and inode of `path` as a string (its name when it cannot be read).
pub(crate) fn file_place(path: &Path) -> (String, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => (format!("{}:{}", m.dev(), m.ino()), Some(m.len())),
        Err(_) => (path.display().to_string(), None),
    }
}

/// What a reader found in a source.
#[derive(Debug)]
pub(crate) struct Source {
    pub storage: Box<dyn Storage>,
    /// The class names; empty for image-caption data without labels.
    pub classes: Vec<String>,
    /// Each item's class index (all 0 without labels).
    pub labels: Vec<usize>,
    /// Each item's caption, for image-caption data.
    pub captions: Option<Vec<String>>,
    /// Files (or entries of packed files) left out, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The class name a folder name stands for: `%2F` is `/` (which a folder name
/// cannot hold), `%25` is `%`.
pub(crate) fn decode_class_folder(name: &str) -> String {
    name.replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%25", "%")
}

/// "`path` does not exist", saying for a relative path which folder it was read
/// from: relative paths in a config (and in `--set`) are read from the current
/// folder, not the config file's.
pub fn missing(path: &Path) -> String {
    let mut s = format!("{} does not exist", path.display());
    if path.is_relative()
        && let Ok(cwd) = std::env::current_dir()
    {
        s.push_str(&format!(
            " (relative paths are read from the current folder, {})",
            cwd.display()
        ));
    }
    s
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a source lies and what kind it is, for reports and model cards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDescription {
    /// Its path (or shard / file pattern).
    pub location: String,
    /// Its kind as the Hugging Face model card metadata names data: `imagefolder`,
    /// `csv`, `idx`, `webdataset`, `parquet`.
    pub kind: &'static str,
}

/// A data source as written in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// `root/class_name/**/*.{jpg,png,...}`; classes sorted by name.
    ImageFolder { path: PathBuf },
    /// A CSV (or TSV) with a header: an image path column (relative to the
    /// CSV's folder), a label column (class names, sorted) and/or a caption
    /// column (image-caption pairs: open_clip's `filepath,title` files). Without
    /// a caption column the label column is required.
    Csv {
        path: PathBuf,
        #[serde(
            default = "default_path_column",
            skip_serializing_if = "is_default_path_column"
        )]
        image_column: String,
        /// Default `label` (optional when `caption_column` is set: without it
        /// the data are image-caption pairs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label_column: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption_column: Option<String>,
        /// The field separator, `","` or e.g. `"\t"`.
        #[serde(
            default = "default_delimiter",
            skip_serializing_if = "is_default_delimiter"
        )]
        delimiter: String,
    },
    /// IDX image and label files (e.g. Debian's Fashion-MNIST); class names
    /// default to `"0"`, `"1"`, ...
    Idx {
        images: PathBuf,
        labels: PathBuf,
        #[serde(default)]
        class_names: Option<Vec<String>>,
    },
    /// WebDataset tar shards: `path` is a file, a folder of `*.tar`, a brace
    /// range (`data/train-{000000..000127}.tar`) or a glob. A sample is the
    /// members sharing a key: an image (`key.jpg`, `.png`, ...) and a label
    /// (`key.cls`: an index; `key.txt`: a class name; `key.json`: either, or an
    /// object with `label`). Class names: `class_names` (index order), else the
    /// sorted names the shards use, else `"0"`, `"1"`, ... for indices. With
    /// `caption_extension` (e.g. `"txt"`, as open_clip's shards), that member is
    /// the sample's caption instead, and labels are optional (all or none).
    Webdataset {
        path: String,
        #[serde(default)]
        class_names: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption_extension: Option<String>,
    },
    /// Parquet files as Hugging Face `datasets` writes them (`path`: a file, a
    /// folder of `*.parquet`, a brace range or a glob): `image_column` holds a
    /// struct of `bytes` / `path` or binary, `label_column` integers (names from
    /// `class_names`, else the `ClassLabel` names in the files' `huggingface`
    /// metadata, else `"0"`, ...) or strings (sorted).
    Parquet {
        path: String,
        #[serde(default = "default_image_column")]
        image_column: String,
        #[serde(default = "default_label_column")]
        label_column: String,
        /// Image-caption data: the captions' column (string); the label column is
        /// then optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption_column: Option<String>,
        #[serde(default)]
        class_names: Option<Vec<String>>,
    },
}

fn default_path_column() -> String {
    "path".into()
}

fn is_default_path_column(c: &str) -> bool {
    c == "path"
}

fn default_delimiter() -> String {
    ",".into()
}

fn is_default_delimiter(d: &str) -> bool {
    d == ","
}

impl SourceConfig {
    /// A `path,label` CSV.
    pub fn csv(path: impl Into<PathBuf>) -> Self {
        Self::Csv {
            path: path.into(),
            image_column: default_path_column(),
            label_column: None,
            caption_column: None,
            delimiter: default_delimiter(),
        }
    }
}

fn default_image_column() -> String {
    "image".into()
}

fn default_label_column() -> String {
    "label".into()
}

impl SourceConfig {
    /// A data source from a path, or from a source table as a config writes it
    /// (`{ kind = "idx", ... }`): `*.parquet` Parquet files, `*.tar` (or a brace
    /// range or glob of them) WebDataset shards, a folder an image folder, `*.csv`
    /// a manifest, an IDX images file (`*-images-idx3-ubyte[.gz]`) takes its
    /// labels file beside it (`*-labels-idx1-ubyte[.gz]`); Fashion-MNIST's files
    /// get its class names. Errors name `key` (the flag the path came from).
    pub fn from_path(path: &Path, key: &str) -> Result<Self, DataError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = path.to_string_lossy();
        // A source written as in a config: `{ kind = "idx", images = ..., class_names = [...] }`.
        if text.trim_start().starts_with('{') {
            #[derive(Deserialize)]
            struct Wrapper {
                data: SourceConfig,
            }
            return toml::from_str::<Wrapper>(&format!("data = {text}"))
                .map(|w| w.data)
                .map_err(|e| {
                    DataError::config(
                        key,
                        format!("{text} is not a data source table: {}", e.message()),
                    )
                });
        }
        // Parquet files: one, or a brace range / glob of them.
        if name.ends_with(".parquet") {
            return Ok(SourceConfig::Parquet {
                path: text.to_string(),
                image_column: default_image_column(),
                label_column: default_label_column(),
                caption_column: None,
                class_names: None,
            });
        }
        // WebDataset shards: one `.tar`, or a brace range / glob of them.
        if name.ends_with(".tar") || (!path.exists() && text.contains(['{', '*', '?'])) {
            return Ok(SourceConfig::Webdataset {
                path: text.to_string(),
                class_names: None,
                caption_extension: None,
            });
        }
        if path.is_dir() {
            return Ok(SourceConfig::ImageFolder { path: path.into() });
        }
        if !path.exists() {
            return Err(DataError::config(key, missing(path)));
        }
        if name.ends_with(".csv") {
            return Ok(SourceConfig::csv(path));
        }
        if name.contains("images-idx3-ubyte") {
            let labels =
                path.with_file_name(name.replace("images-idx3-ubyte", "labels-idx1-ubyte"));
            let fashion = path.to_string_lossy().contains("fashion");
            return Ok(SourceConfig::Idx {
                images: path.into(),
                labels,
                class_names: fashion.then(|| {
                    FASHION_MNIST_CLASSES
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }),
            });
        }
        Err(DataError::config(
            key,
            format!(
                "{}: expected an image folder, a .csv manifest or an IDX images file (*-images-idx3-ubyte[.gz])",
                path.display()
            ),
        ))
    }

    /// Reads the source; errors about its settings name `key`'s fields.
    pub(crate) fn read(&self, key: &str) -> Result<Source, DataError> {
        match self {
            SourceConfig::ImageFolder { path } => image_folder::read(path, key),
            SourceConfig::Csv {
                path,
                image_column,
                label_column,
                caption_column,
                delimiter,
            } => csv::read(
                &csv::Columns {
                    image: image_column,
                    label: label_column.as_deref(),
                    caption: caption_column.as_deref(),
                    delimiter,
                },
                path,
                key,
            ),
            SourceConfig::Idx {
                images,
                labels,
                class_names,
            } => idx::read(images, labels, class_names.clone(), key),
            SourceConfig::Webdataset {
                path,
                class_names,
                caption_extension,
            } => webdataset::read(
                expand_shards(path, key)?,
                class_names.as_deref(),
                caption_extension.as_deref(),
                key,
            ),
            SourceConfig::Parquet {
                path,
                image_column,
                label_column,
                caption_column,
                class_names,
            } => parquet::read(
                packed::expand_files(path, key, "parquet")?,
                &parquet::Columns {
                    image: image_column,
                    label: label_column,
                    caption: caption_column.as_deref(),
                },
                class_names.as_deref(),
                key,
            ),
        }
    }

    /// Where the source lies and its kind.
    pub fn describe(&self) -> SourceDescription {
        let (location, kind) = match self {
            SourceConfig::ImageFolder { path } => (path.display().to_string(), "imagefolder"),
            SourceConfig::Csv { path, .. } => (path.display().to_string(), "csv"),
            SourceConfig::Idx { images, .. } => (images.display().to_string(), "idx"),
            SourceConfig::Webdataset { path, .. } => (path.clone(), "webdataset"),
            SourceConfig::Parquet { path, .. } => (path.clone(), "parquet"),
        };
        SourceDescription { location, kind }
    }

    /// The path that is not there when the source's files are missing (a fresh
    /// clone's configs name data it does not hold), else `None`.
    pub fn missing(&self) -> Option<PathBuf> {
        match self {
            SourceConfig::ImageFolder { path } | SourceConfig::Csv { path, .. } => {
                (!path.exists()).then(|| path.clone())
            }
            SourceConfig::Idx { images, .. } => (!images.exists()).then(|| images.clone()),
            SourceConfig::Webdataset { path, .. } => {
                expand_shards(path, "data").is_err().then(|| path.into())
            }
            SourceConfig::Parquet { path, .. } => glob::glob(path)
                .map_or(true, |mut g| g.next().is_none())
                .then(|| path.into()),
        }
    }

    /// The files and folders the source reads from, for commands that must not
    /// write over them: an image folder; a CSV and the folder its image paths are
    /// relative to; the IDX files; the folder of a shard or Parquet pattern (the
    /// part before its first wildcard), or the file it names.
    pub fn read_paths(&self) -> Vec<PathBuf> {
        let pattern_folder = |p: &str| match p.find(['{', '*', '?', '[']) {
            Some(i) => PathBuf::from(match p[..i].rsplit_once('/') {
                Some(("", _)) => "/",
                Some((folder, _)) => folder,
                None => ".",
            }),
            None => PathBuf::from(p),
        };
        match self {
            SourceConfig::ImageFolder { path } => vec![path.clone()],
            SourceConfig::Csv { path, .. } => {
                let folder = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                vec![path.clone(), folder]
            }
            SourceConfig::Idx { images, labels, .. } => vec![images.clone(), labels.clone()],
            SourceConfig::Webdataset { path, .. } | SourceConfig::Parquet { path, .. } => {
                vec![pattern_folder(path)]
            }
        }
    }

    /// An error naming `key` when a path the source names does not exist, saying
    /// what it should hold (shard and Parquet patterns are checked when read).
    pub fn check_exists(&self, key: &str) -> Result<(), DataError> {
        let (paths, what): (Vec<&Path>, &str) = match self {
            SourceConfig::Webdataset { .. } | SourceConfig::Parquet { .. } => return Ok(()),
            SourceConfig::ImageFolder { path } => (
                vec![path],
                "an image folder with one sub-folder of images per class (root/<class>/*.jpg)",
            ),
            SourceConfig::Csv { path, .. } => (vec![path], "a CSV manifest with a header"),
            SourceConfig::Idx { images, labels, .. } => (
                vec![images, labels],
                "IDX files (Fashion-MNIST: `sudo apt-get install dataset-fashion-mnist`, or bash scripts/setup.sh)",
            ),
        };
        for p in paths {
            if !p.exists() {
                return Err(DataError::config(
                    key,
                    format!("{}; it should be {what}", missing(p)),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a command writing files must keep away from: a CSV's folder too, and
    /// a shard pattern's folder rather than the pattern.
    #[test]
    fn read_paths_name_the_files_and_folders_a_source_reads() {
        let p = |s: &str| PathBuf::from(s);
        let csv = SourceConfig::csv("data/train.csv");
        assert_eq!(csv.read_paths(), [p("data/train.csv"), p("data")]);
        assert_eq!(SourceConfig::csv("train.csv").read_paths()[1], p("."));
        let shards = |path: &str| SourceConfig::Webdataset {
            path: path.into(),
            class_names: None,
            caption_extension: None,
        };
        assert_eq!(shards("/s/train-{000..009}.tar").read_paths(), [p("/s")]);
        assert_eq!(shards("/s/one.tar").read_paths(), [p("/s/one.tar")]);
        assert_eq!(shards("*.tar").read_paths(), [p(".")]);
        assert_eq!(shards("/*.tar").read_paths(), [p("/")]);
    }
}
