//! A loaded source as the loader sees it: class names, labels, captions and a
//! view of its items over the source's [`Storage`], with name-matched classes,
//! limits and a stratified split (views share the storage).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::DataError;
use crate::image::{DecodeOptions, RgbImage};
use crate::rng::SampleRng;
use crate::sources::{Place, Source, SourceConfig, Storage, decode_class_folder};

/// The index of the class of `target` that `name` names (see
/// [`Dataset::with_classes`]).
fn match_class(name: &str, target: &[String]) -> Option<usize> {
    if let Some(i) = target.iter().position(|t| t == name) {
        return Some(i);
    }
    let decoded = decode_class_folder(name);
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

/// A loaded source: class names, labels and where each image is.
#[derive(Debug, Clone)]
pub struct Dataset {
    classes: Arc<Vec<String>>,
    pub(crate) storage: Arc<dyn Storage>,
    /// Where each storage item lies, found once (stat'ing files) on first use.
    places: Arc<OnceLock<Vec<Place>>>,
    labels: Arc<Vec<usize>>,
    /// Each item's caption (image-caption data), by storage index.
    captions: Option<Arc<Vec<String>>>,
    /// Indices into storage/labels that this view holds (all, or one side of a split).
    pub(crate) view: Arc<Vec<usize>>,
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

impl Dataset {
    /// Reads the source that config key `key` (e.g. `data.train`, or a flag such as
    /// `--data`) describes; errors about its settings name `key`'s fields.
    pub fn load(cfg: &SourceConfig, key: &str) -> Result<Self, DataError> {
        Ok(Self::from(cfg.read(key)?))
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

    /// A printable name for item `i` (its path, `shard.tar:key.jpg`,
    /// `file.parquet:row N`, or `idx:N`).
    pub fn name(&self, i: usize) -> String {
        self.storage.name(self.view[i])
    }

    /// The raw bytes of item `i`'s path when its name is not UTF-8 (so
    /// [`Dataset::name`] had to replace characters); `None` otherwise.
    pub fn name_bytes(&self, i: usize) -> Option<Vec<u8>> {
        self.storage.name_bytes(self.view[i])
    }

    /// Image `i`, a JPEG decoded at the reduction `reduction(width, height)`
    /// allows ([`RgbImage::decode_draft`]); other images as [`Dataset::image`].
    pub fn image_draft(
        &self,
        i: usize,
        reduction: impl Fn(usize, usize) -> usize,
    ) -> Result<RgbImage, DataError> {
        let options = DecodeOptions {
            reduction: Some(&reduction),
            ..DecodeOptions::default()
        };
        self.image_with(i, &options)
    }

    /// Decodes item `i` as PIL's `Image.open(p).convert("RGB")` (an error names
    /// the file).
    pub fn image(&self, i: usize) -> Result<RgbImage, DataError> {
        self.image_with(i, &DecodeOptions::default())
    }

    /// Decodes item `i` as `options` say (draft scale, EXIF orientation).
    pub fn image_with(&self, i: usize, options: &DecodeOptions) -> Result<RgbImage, DataError> {
        self.storage.image(self.view[i], options)
    }

    /// Item `i` as stored: the image file's bytes and its lower-case extension
    /// (an IDX image encoded as PNG).
    pub fn encoded(&self, i: usize) -> Result<(Vec<u8>, String), DataError> {
        self.storage.encoded(self.view[i])
    }

    /// A hash of what this view lists, to notice data that changed under a run:
    /// its class names, and each item's name (with `root`, the source's
    /// location, taken off its front) and label, in order.
    pub fn listing_hash(&self, root: &str) -> String {
        use std::hash::Hasher;
        let mut h = crate::hash::Fnv::new();
        for c in self.classes.iter() {
            h.write(c.as_bytes());
            h.write(&[0]);
        }
        for i in 0..self.len() {
            let name = self.name(i);
            h.write(name.strip_prefix(root).unwrap_or(&name).as_bytes());
            h.write(&(self.label(i) as u64).to_le_bytes());
        }
        format!("{:016x}", h.finish())
    }

    /// Where each storage item lies (by storage index).
    pub(crate) fn places(&self) -> &[Place] {
        self.places.get_or_init(|| self.storage.places())
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
    /// (Parquet: see `sources::parquet`); `None` where any order is as good.
    pub fn local_permutation(&self, rng: &mut SampleRng) -> Option<Vec<usize>> {
        self.storage.local_permutation(&self.view, rng)
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

impl From<Source> for Dataset {
    fn from(s: Source) -> Self {
        Self {
            view: Arc::new((0..s.labels.len()).collect()),
            classes: Arc::new(s.classes),
            storage: Arc::from(s.storage),
            places: Arc::new(OnceLock::new()),
            labels: Arc::new(s.labels),
            captions: s.captions.map(Arc::new),
            skipped: Arc::new(s.skipped),
        }
    }
}
