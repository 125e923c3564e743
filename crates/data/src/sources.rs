//! Where images and labels come from: an ImageFolder tree, a CSV manifest, or the
//! MNIST family's IDX files (gzipped or not), WebDataset tar shards, with a
//! stratified split.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::image::RgbImage;
use crate::packed::Packed;
use crate::rng::SampleRng;

/// The index of the class of `target` that `name` names (see
/// [`Dataset::with_classes`]).
fn match_class(name: &str, target: &[String]) -> Option<usize> {
    if let Some(i) = target.iter().position(|t| t == name) {
        return Some(i);
    }
    let decoded = name
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%25", "%");
    if let Some(i) = target.iter().position(|t| *t == decoded) {
        return Some(i);
    }
    let mut slashed = target
        .iter()
        .enumerate()
        .filter(|(_, t)| t.contains('/') && t.replace('/', "_") == name);
    match (slashed.next(), slashed.next()) {
        (Some((i, _)), None) => Some(i),
        _ => None,
    }
}

/// Extensions an ImageFolder source reads (torchvision's, less the formats the
/// `image` crate is not built with here).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

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

#[derive(Debug)]
enum Storage {
    Files(Vec<PathBuf>),
    /// Grey images, `count x rows x cols`.
    Idx {
        pixels: Vec<u8>,
        rows: usize,
        cols: usize,
    },
    /// Images inside tar shards.
    Tar(crate::webdataset::Shards),
    /// Images inside Parquet row groups.
    Parquet(crate::parquet::ParquetFiles),
}

/// A loaded source: class names, labels and where each image is.
#[derive(Debug, Clone)]
pub struct Dataset {
    classes: Arc<Vec<String>>,
    storage: Arc<Storage>,
    labels: Arc<Vec<usize>>,
    /// Each item's caption (image-caption data), by storage index.
    captions: Option<Arc<Vec<String>>>,
    /// Indices into storage/labels that this view holds (all, or one side of a split).
    view: Arc<Vec<usize>>,
    skipped: Arc<Vec<(PathBuf, String)>>,
}

/// What a source holds, for the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub images: usize,
    /// Image-caption data (each image has a caption).
    pub captions: bool,
    pub classes: usize,
    pub per_class: BTreeMap<String, usize>,
    /// Files that were not used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.classes, self.captions) {
            (0, _) => write!(f, "{} images with captions", self.images)?,
            (k, true) => write!(f, "{} images with captions in {k} classes", self.images)?,
            (k, false) => write!(f, "{} images in {k} classes", self.images)?,
        }
        if !self.skipped.is_empty() {
            write!(f, " ({} files skipped)", self.skipped.len())?;
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Dataset {
    /// Reads the source that config key `key` (e.g. `data.train`, or a flag such as
    /// `--data`) describes; errors about its settings name `key`'s fields.
    pub fn load(cfg: &SourceConfig, key: &str) -> Result<Self, DataError> {
        match cfg {
            SourceConfig::ImageFolder { path } => Self::image_folder(path, key),
            SourceConfig::Csv {
                path,
                image_column,
                label_column,
                caption_column,
                delimiter,
            } => Self::csv(
                path,
                image_column,
                label_column.as_deref(),
                caption_column.as_deref(),
                delimiter,
                key,
            ),
            SourceConfig::Idx {
                images,
                labels,
                class_names,
            } => Self::idx(images, labels, class_names.clone(), key),
            SourceConfig::Webdataset {
                path,
                class_names,
                caption_extension,
            } => {
                let shards = crate::webdataset::expand_shards(path, key)?;
                let (shards, labels, classes, captions, skipped) = crate::webdataset::index(
                    shards,
                    class_names.as_deref(),
                    caption_extension.as_deref(),
                    key,
                )?;
                Ok(
                    Self::from_parts(classes, Storage::Tar(shards), labels, skipped)
                        .captioned(captions),
                )
            }
            SourceConfig::Parquet {
                path,
                image_column,
                label_column,
                caption_column,
                class_names,
            } => {
                let files = crate::packed::expand_files(path, key, "parquet")?;
                let (files, labels, classes, captions, skipped) = crate::parquet::index(
                    files,
                    image_column,
                    label_column,
                    caption_column.as_deref(),
                    class_names.as_deref(),
                    key,
                )?;
                Ok(
                    Self::from_parts(classes, Storage::Parquet(files), labels, skipped)
                        .captioned(captions),
                )
            }
        }
    }

    fn from_parts(
        classes: Vec<String>,
        storage: Storage,
        labels: Vec<usize>,
        skipped: Vec<(PathBuf, String)>,
    ) -> Self {
        Self {
            view: Arc::new((0..labels.len()).collect()),
            classes: Arc::new(classes),
            storage: Arc::new(storage),
            labels: Arc::new(labels),
            captions: None,
            skipped: Arc::new(skipped),
        }
    }

    /// Image-caption data: `captions` by storage index. Without labels
    /// (`classes` empty) every label is 0 and the data has no classes.
    fn captioned(self, captions: Option<Vec<String>>) -> Self {
        Self {
            captions: captions.map(Arc::new),
            ..self
        }
    }

    fn image_folder(root: &Path, key: &str) -> Result<Self, DataError> {
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(io(root))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
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
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::config(
                format!("{key}.path"),
                format!(
                    "{} has no class folders (expected root/class_name/image.jpg)",
                    root.display()
                ),
            ));
        }
        let (mut files, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        // A file belongs to the class folder it really lies in: a link from one class
        // into another's folder does not label it twice (or wrongly), and no file is
        // counted twice however many links reach it.
        let class_dirs: Vec<PathBuf> = classes
            .iter()
            .map(|c| root.join(c).canonicalize().map_err(io(&root.join(c))))
            .collect::<Result<_, _>>()?;
        let mut counted: HashSet<PathBuf> = HashSet::new();
        for (label, class) in classes.iter().enumerate() {
            let mut found = Vec::new();
            walk(
                &root.join(class),
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
        Ok(Self::from_parts(
            classes,
            Storage::Files(files),
            labels,
            skipped,
        ))
    }

    fn csv(
        path: &Path,
        image_column: &str,
        label_column: Option<&str>,
        caption_column: Option<&str>,
        delimiter: &str,
        key: &str,
    ) -> Result<Self, DataError> {
        let delimiter = match delimiter.as_bytes() {
            [d] => *d,
            b"\\t" => b'\t',
            _ => {
                return Err(DataError::config(
                    format!("{key}.delimiter"),
                    format!(
                        "must be one ASCII character (e.g. \",\" or \"\\t\"), got {delimiter:?}"
                    ),
                ));
            }
        };
        let file = std::fs::File::open(path).map_err(io(path))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .trim(csv::Trim::All)
            .from_reader(std::io::BufReader::new(file));
        let at_line = |line: u64| format!("{}: line {line}", path.display());
        let csv_error = |e: csv::Error| match e.kind() {
            csv::ErrorKind::Io(_) => DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
            csv::ErrorKind::UnequalLengths {
                pos,
                expected_len,
                len,
            } => DataError::config(
                at_line(pos.as_ref().map_or(0, csv::Position::line)),
                format!(
                    "{len} columns where the header has {expected_len} (quote a field that holds the delimiter)"
                ),
            ),
            _ => DataError::config(
                at_line(e.position().map_or(0, csv::Position::line)),
                e.to_string(),
            ),
        };
        let header: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_ascii_lowercase)
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name.to_ascii_lowercase());
        let wanted = |what: &str, name: &str| {
            DataError::config(
                at_line(1),
                format!(
                    "no {what} column `{name}` in the header `{}` (a `path,label` header, or \
                     {key}.image_column / label_column / caption_column naming the columns)",
                    header.join(",")
                ),
            )
        };
        let image = column(image_column).ok_or_else(|| wanted("image", image_column))?;
        let caption = match caption_column {
            Some(c) => Some(column(c).ok_or_else(|| wanted("caption", c))?),
            None => None,
        };
        let label = match (label_column, caption) {
            (Some(l), _) => Some(column(l).ok_or_else(|| wanted("label", l))?),
            // Image-caption pairs need no label column.
            (None, Some(_)) => column("label"),
            (None, None) => Some(column("label").ok_or_else(|| wanted("label", "label"))?),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let (mut files, mut names, mut captions) = (Vec::new(), Vec::new(), Vec::new());
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let line = record.position().map_or(0, csv::Position::line);
            let field = |i: usize, what: &str| match record.get(i) {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(DataError::config(at_line(line), format!("an empty {what}"))),
            };
            files.push(dir.join(field(image, "path")?));
            if let Some(l) = label {
                names.push(field(l, "label")?);
            }
            if let Some(c) = caption {
                captions.push(field(c, "caption")?);
            }
        }
        let mut classes = names.clone();
        classes.sort();
        classes.dedup();
        let labels = match label {
            Some(_) => names
                .iter()
                .map(|l| classes.binary_search(l).unwrap_or_default())
                .collect(),
            None => vec![0; files.len()],
        };
        Ok(
            Self::from_parts(classes, Storage::Files(files), labels, Vec::new())
                .captioned(caption.map(|_| captions)),
        )
    }

    fn idx(
        images: &Path,
        labels: &Path,
        class_names: Option<Vec<String>>,
        key: &str,
    ) -> Result<Self, DataError> {
        let (dims, pixels) = read_idx(images)?;
        let (ldims, label_bytes) = read_idx(labels)?;
        if dims.len() != 3 || ldims.len() != 1 || dims[0] != ldims[0] || dims[1..].contains(&0) {
            return Err(DataError::config(
                key,
                format!(
                    "IDX files do not match: {} has dims {dims:?}, {} has {ldims:?} (expected [n, rows, cols] and [n], rows and cols at least 1)",
                    images.display(),
                    labels.display()
                ),
            ));
        }
        let labels: Vec<usize> = label_bytes.iter().map(|&l| l as usize).collect();
        let n_classes = labels.iter().max().map_or(0, |m| m + 1);
        let classes = match class_names {
            Some(names) if names.len() >= n_classes => names,
            Some(names) => {
                return Err(DataError::config(
                    format!("{key}.class_names"),
                    format!("{} names for labels up to {}", names.len(), n_classes - 1),
                ));
            }
            None => (0..n_classes).map(|i| i.to_string()).collect(),
        };
        Ok(Self::from_parts(
            classes,
            Storage::Idx {
                pixels,
                rows: dims[1],
                cols: dims[2],
            },
            labels,
            Vec::new(),
        ))
    }

    pub fn len(&self) -> usize {
        self.view.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The label of item `i` of this view.
    pub fn label(&self, i: usize) -> usize {
        self.labels[self.view[i]]
    }

    /// Whether the items have labels: image-caption data may have none (then it
    /// has no classes).
    pub fn has_labels(&self) -> bool {
        self.captions.is_none() || !self.classes.is_empty()
    }

    /// Whether the items have captions (image-caption data).
    pub fn has_captions(&self) -> bool {
        self.captions.is_some()
    }

    /// The caption of item `i` of this view, for image-caption data.
    pub fn caption(&self, i: usize) -> Option<&str> {
        self.captions.as_ref().map(|c| c[self.view[i]].as_str())
    }

    /// A printable name for item `i` (its path, or `idx:N`).
    pub fn name(&self, i: usize) -> String {
        match &*self.storage {
            Storage::Files(files) => files[self.view[i]].display().to_string(),
            Storage::Idx { .. } => format!("idx:{}", self.view[i]),
            Storage::Tar(shards) => shards.name(self.view[i]),
            Storage::Parquet(files) => files.name(self.view[i]),
        }
    }

    /// Shards or Parquet files: storage whose images lie inside other files.
    fn packed(&self) -> Option<&dyn Packed> {
        match &*self.storage {
            Storage::Tar(shards) => Some(shards),
            Storage::Parquet(files) => Some(files),
            Storage::Files(_) | Storage::Idx { .. } => None,
        }
    }

    /// Storage item `k`, read from its shard or Parquet file and decoded with
    /// `decode` (errors name the file and the place in it).
    fn decode_packed(
        p: &dyn Packed,
        k: usize,
        decode: impl FnOnce(&[u8]) -> Result<RgbImage, image::ImageError>,
    ) -> Result<RgbImage, DataError> {
        let bytes = p.read(k)?;
        decode(&bytes).map_err(|source| DataError::Decode {
            path: p.name(k).into(),
            source,
        })
    }

    /// Image `i`, a JPEG file decoded at the reduction `reduction(width, height)`
    /// allows ([`RgbImage::decode_draft`]); other images as [`Dataset::image`].
    pub fn image_draft(
        &self,
        i: usize,
        reduction: impl Fn(usize, usize) -> usize,
    ) -> Result<RgbImage, DataError> {
        if let Storage::Files(files) = &*self.storage {
            return RgbImage::open_draft(&files[self.view[i]], reduction);
        }
        match self.packed() {
            Some(p) => {
                Self::decode_packed(p, self.view[i], |b| RgbImage::decode_draft(b, reduction))
            }
            None => self.image(i),
        }
    }

    /// Decodes item `i` (an error names the file).
    pub fn image(&self, i: usize) -> Result<RgbImage, DataError> {
        let k = self.view[i];
        match &*self.storage {
            Storage::Files(files) => RgbImage::open(&files[k]),
            Storage::Idx { pixels, rows, cols } => {
                let n = rows * cols;
                let grey = &pixels[k * n..(k + 1) * n];
                Ok(RgbImage {
                    width: *cols,
                    height: *rows,
                    data: grey.iter().flat_map(|&g| [g; 3]).collect(),
                })
            }
            Storage::Tar(shards) => Self::decode_packed(shards, k, RgbImage::decode),
            Storage::Parquet(files) => Self::decode_packed(files, k, RgbImage::decode),
        }
    }

    /// Item `i` as stored: the image file's bytes and its lower-case extension
    /// (an IDX image encoded as PNG).
    pub fn encoded(&self, i: usize) -> Result<(Vec<u8>, String), DataError> {
        let k = self.view[i];
        match &*self.storage {
            Storage::Files(files) => {
                let path = &files[k];
                let ext = path
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_else(|| "jpg".into());
                Ok((std::fs::read(path).map_err(io(path))?, ext))
            }
            Storage::Tar(shards) => {
                let ext = shards.names[k]
                    .split_once('.')
                    .map_or("jpg", |(_, e)| e)
                    .to_string();
                Ok((shards.read(k)?, ext))
            }
            Storage::Parquet(files) => {
                let bytes = files.read(k)?;
                let ext = image::guess_format(&bytes)
                    .ok()
                    .and_then(|f| f.extensions_str().first().copied())
                    .unwrap_or("jpg");
                Ok((bytes, ext.to_string()))
            }
            Storage::Idx { .. } => {
                let img = self.image(i)?;
                let mut bytes = Vec::new();
                image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
                    .ok_or_else(|| DataError::config("data", "an IDX image of the wrong size"))?
                    .write_to(
                        &mut std::io::Cursor::new(&mut bytes),
                        image::ImageFormat::Png,
                    )
                    .map_err(|source| DataError::Encode {
                        path: self.name(i).into(),
                        source,
                    })?;
                Ok((bytes, "png".into()))
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let mut per_class: BTreeMap<String, usize> =
            self.classes.iter().map(|c| (c.clone(), 0)).collect();
        for i in 0..self.len() {
            if let Some(c) = self
                .classes
                .get(self.label(i))
                .and_then(|c| per_class.get_mut(c))
            {
                *c += 1;
            }
        }
        Summary {
            images: self.len(),
            captions: self.has_captions(),
            classes: self.classes.len(),
            per_class,
            skipped: self.skipped.to_vec(),
        }
    }

    /// This data labelled with `target`'s classes, matched by name: each of its
    /// classes that holds images must be one of `target` (in any order, a subset
    /// is fine). A name matches a target class when it is the same, or when it is
    /// a folder name standing for a name that cannot be one: `%2F` for `/`
    /// (`T-shirt%2Ftop`), or `_` for `/` when that names exactly one target class
    /// (`T-shirt_top`). Classes not among `target` are an error listing them;
    /// `key` names the data in it.
    pub fn with_classes(&self, target: &[String], key: &str) -> Result<Self, DataError> {
        if self.classes.as_slice() == target {
            return Ok(self.clone());
        }
        if !self.has_labels() {
            return Err(DataError::config(
                key,
                "has captions but no labels: classifying needs labelled images (a label \
                 column, or .cls members)",
            ));
        }
        let counts = self.summary().per_class;
        let mut map = Vec::with_capacity(self.classes.len());
        let mut unknown = Vec::new();
        for c in self.classes.iter() {
            let found = match_class(c, target);
            if found.is_none() && counts.get(c).is_some_and(|n| *n > 0) {
                unknown.push(format!("{c:?}"));
            }
            map.push(found.unwrap_or(0));
        }
        if !unknown.is_empty() {
            let indices = self.classes.iter().all(|c| c.parse::<usize>().is_ok());
            return Err(DataError::config(
                key,
                format!(
                    "{} of its classes are not among the model's {}: {} (the model's: {:?}){}",
                    unknown.len(),
                    target.len(),
                    unknown.join(", "),
                    target,
                    if indices {
                        "; its labels look like class indices: give the names, e.g. \
                         `--data '{ kind = \"idx\", images = ..., labels = ..., class_names = [...] }'`"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(Self {
            classes: Arc::new(target.to_vec()),
            labels: Arc::new(self.labels.iter().map(|&l| map[l]).collect()),
            ..self.clone()
        })
    }

    /// A shuffle of this view that keeps locality where the storage needs it
    /// (Parquet: see [`crate::parquet`]); `None` where any order is as good.
    pub fn local_permutation(&self, rng: &mut SampleRng) -> Option<Vec<usize>> {
        match &*self.storage {
            Storage::Parquet(files) => Some(files.local_permutation(&self.view, rng)),
            _ => None,
        }
    }

    /// A view of the first `n` items (for quick runs).
    pub fn take(&self, n: usize) -> Self {
        Self {
            view: Arc::new(self.view.iter().copied().take(n).collect()),
            ..self.clone()
        }
    }

    /// Splits into `(train, validation)`, taking `fraction` of each class for
    /// validation, chosen by `seed`.
    pub fn split_stratified(&self, fraction: f64, seed: u64) -> Result<(Self, Self), DataError> {
        if !(0.0..1.0).contains(&fraction) || fraction == 0.0 {
            return Err(DataError::config(
                "data.val_fraction",
                format!("must be in (0, 1), got {fraction}"),
            ));
        }
        // Data without labels (image-caption pairs) is one group.
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes.len().max(1)];
        for (i, &k) in self.view.iter().enumerate() {
            by_class[self.labels[k]].push(i);
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (c, members) in by_class.iter().enumerate() {
            let order = SampleRng::new(seed, u64::MAX, c as u64).permutation(members.len());
            let n_val = (members.len() as f64 * fraction).round() as usize;
            for (j, &o) in order.iter().enumerate() {
                let k = self.view[members[o]];
                if j < n_val {
                    val.push(k)
                } else {
                    train.push(k)
                }
            }
        }
        train.sort_unstable();
        val.sort_unstable();
        let with = |v: Vec<usize>| Self {
            view: Arc::new(v),
            ..self.clone()
        };
        Ok((with(train), with(val)))
    }
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

/// Reads an IDX file of unsigned bytes (gzipped when it starts with gzip's magic).
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let raw = std::fs::read(path).map_err(io(path))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io(path))?;
        out
    } else {
        raw
    };
    let bad = |reason: String| DataError::config(path.display().to_string(), reason);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("its header's dimensions {dims:?} overflow")))?;
    if bytes.len() - header != n {
        return Err(bad(format!(
            "holds {} data bytes, its header says {n}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..].to_vec()))
}
