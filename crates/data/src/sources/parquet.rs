//! Parquet files as Hugging Face `datasets` writes them and the Hub serves them:
//! an image column (a struct of `bytes` and `path`, or plain binary) and a label
//! column (integers with the class names in the `ClassLabel` feature of the
//! `huggingface` schema metadata, or strings).
//!
//! Loading reads the footers and the label column only. Images are read a row
//! group at a time (a Parquet page cannot be read from the middle) into a small
//! cache, so the loader visits the data with locality: every epoch shuffles the
//! row groups, then the samples within windows of row groups holding at least
//! [`WINDOW_ROWS`] samples (shard shuffling plus a shuffle buffer, but a pure
//! function of `(seed, epoch)`, so a resume is exact). Memory holds the cached row
//! groups' encoded images, at most [`CACHE_ROWS`] rows (plus one group).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use super::packed::{RawLabel, resolve_labels};
use super::{Place, Source, Storage, file_place};
use crate::DataError;
use crate::rng::SampleRng;

/// Samples shuffled together: row groups are added to a window until it holds
/// at least this many.
pub const WINDOW_ROWS: usize = 1024;
/// Rows of decoded row groups kept (two windows and the batches around them).
pub const CACHE_ROWS: usize = 4 * WINDOW_ROWS;

/// A row's image as stored.
#[derive(Debug, Clone)]
enum Cell {
    Bytes(Vec<u8>),
    /// A file (relative to the Parquet file's folder when not absolute).
    Path(PathBuf),
    Missing,
}

type Group = Result<Arc<Vec<Cell>>, String>;

/// Recently read row groups (oldest evicted first); concurrent readers of one
/// group wait for the first one's read.
#[derive(Debug, Default)]
struct GroupCache {
    slots: Mutex<Slots>,
}

/// The cached groups by `(file, group)`, and their keys with their row counts,
/// oldest first.
#[derive(Debug, Default)]
struct Slots {
    map: HashMap<(u32, u32), Arc<OnceLock<Group>>>,
    order: VecDeque<(u32, u32, usize)>,
}

impl GroupCache {
    fn get(&self, key: (u32, u32), rows: usize, load: impl FnOnce() -> Group) -> Group {
        let slot = {
            let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let Slots { map, order } = &mut *guard;
            match map.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(OnceLock::new());
                    map.insert(key, s.clone());
                    order.push_back((key.0, key.1, rows));
                    let mut held: usize = order.iter().map(|o| o.2).sum();
                    while held > CACHE_ROWS && order.len() > 1 {
                        if let Some((f, g, n)) = order.pop_front() {
                            map.remove(&(f, g));
                            held -= n;
                        }
                    }
                    s
                }
            }
        };
        slot.get_or_init(load).clone()
    }
}

/// The indexed Parquet files.
#[derive(Debug)]
pub(crate) struct ParquetFiles {
    paths: Vec<PathBuf>,
    /// `(file, row group, row in the group)` of each sample.
    items: Vec<(u32, u32, u32)>,
    /// Rows of each file's row groups.
    group_rows: Vec<Vec<usize>>,
    /// Index of each file's first row group among all files' row groups.
    group_base: Vec<usize>,
    image_column: String,
    cache: GroupCache,
    /// Each file's reader, opened (its footer parsed) once.
    readers: Readers,
}

/// Readers of the files, opened on first use.
struct Readers(Vec<OnceLock<Result<Arc<SerializedFileReader<PositionedFile>>, String>>>);

impl Readers {
    fn new(files: usize) -> Self {
        Self((0..files).map(|_| OnceLock::new()).collect())
    }
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Readers({} files)", self.0.len())
    }
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Config {
        key: path.display().to_string(),
        reason: format!("not a readable Parquet file: {e}"),
    }
}

/// A file read at explicit offsets (`pread`), so that readers of one file on
/// several threads never share a file offset. (The parquet crate's reader of a
/// `File` clones the descriptor, and clones share one offset: two row groups of
/// one file read at once by two loader workers read each other's bytes.)
#[derive(Debug)]
struct PositionedFile {
    file: Arc<File>,
    len: u64,
}

impl Length for PositionedFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for PositionedFile {
    type T = BufReader<ReadAt>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(BufReader::new(ReadAt {
            file: self.file.clone(),
            pos: start,
        }))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0; length];
        let mut reader = ReadAt {
            file: self.file.clone(),
            pos: start,
        };
        reader.read_exact(&mut buf)?;
        Ok(buf.into())
    }
}

/// A reader of a file from an offset of its own.
struct ReadAt {
    file: Arc<File>,
    pos: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.pos)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&*self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn open(path: &Path) -> Result<SerializedFileReader<PositionedFile>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    SerializedFileReader::new(PositionedFile {
        file: Arc::new(file),
        len,
    })
    .map_err(|e| parquet_error(path, e))
}

/// A projection of the file's schema on top-level `columns` (in the file's order).
fn projection(reader: &SerializedFileReader<PositionedFile>, columns: &[&str]) -> Option<Type> {
    let schema = reader.metadata().file_metadata().schema();
    let fields: Vec<_> = schema
        .get_fields()
        .iter()
        .filter(|f| columns.contains(&f.name()))
        .cloned()
        .collect();
    Type::group_type_builder(schema.name())
        .with_fields(fields)
        .build()
        .ok()
}

fn columns(reader: &SerializedFileReader<PositionedFile>) -> Vec<String> {
    reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// A label cell as an index or a name.
/// The label of a label cell: `Ok(None)` for a null or negative one (the Hub's
/// "no label"), an error naming the type of a cell that cannot be a label.
fn label_of(field: &Field) -> Result<Option<RawLabel>, String> {
    match field {
        Field::Float16(_) | Field::Float(_) | Field::Double(_) | Field::Decimal(_) => {
            Err(format!("floating-point values ({field})"))
        }
        Field::Bool(_) => Err(format!("booleans ({field})")),
        Field::Bytes(_) => Err("binary values".into()),
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => {
            Err("nested values (a struct, list or map)".into())
        }
        Field::Date(_)
        | Field::TimeMillis(_)
        | Field::TimeMicros(_)
        | Field::TimestampMillis(_)
        | Field::TimestampMicros(_) => Err(format!("dates or times ({field})")),
        _ => Ok(plain_label(field)),
    }
}

/// An integer cell as a class index, a string as a class name.
fn plain_label(field: &Field) -> Option<RawLabel> {
    let index = |v: i64| {
        usize::try_from(v).ok().map(|i| RawLabel {
            index: Some(i),
            name: None,
        })
    };
    match field {
        Field::Byte(v) => index(i64::from(*v)),
        Field::Short(v) => index(i64::from(*v)),
        Field::Int(v) => index(i64::from(*v)),
        Field::Long(v) => index(*v),
        Field::UByte(v) => index(i64::from(*v)),
        Field::UShort(v) => index(i64::from(*v)),
        Field::UInt(v) => index(i64::from(*v)),
        Field::ULong(v) => usize::try_from(*v).ok().map(|i| RawLabel {
            index: Some(i),
            name: None,
        }),
        Field::Str(s) => Some(RawLabel {
            index: None,
            name: Some(s.clone()),
        }),
        _ => None,
    }
}

fn cell_of(field: &Field) -> Cell {
    match field {
        Field::Bytes(b) => Cell::Bytes(b.data().to_vec()),
        Field::Group(row) => {
            let mut path = None;
            for (name, f) in row.get_column_iter() {
                match (name.as_str(), f) {
                    ("bytes", Field::Bytes(b)) => return Cell::Bytes(b.data().to_vec()),
                    ("path", Field::Str(s)) => path = Some(PathBuf::from(s)),
                    _ => {}
                }
            }
            path.map_or(Cell::Missing, Cell::Path)
        }
        Field::Str(s) => Cell::Path(PathBuf::from(s)),
        _ => Cell::Missing,
    }
}

/// The `ClassLabel` names of `column` in the `huggingface` metadata, if any.
fn hf_class_names(
    reader: &SerializedFileReader<PositionedFile>,
    column: &str,
) -> Option<Vec<String>> {
    let kv = reader.metadata().file_metadata().key_value_metadata()?;
    let text = kv.iter().find(|k| k.key == "huggingface")?.value.as_ref()?;
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let feature = v.get("info")?.get("features")?.get(column)?;
    let names = feature.get("names")?.as_array()?;
    names
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// The columns of a Parquet source, as its config names them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns<'a> {
    pub image: &'a str,
    pub label: &'a str,
    pub caption: Option<&'a str>,
}

/// Indexes `paths`: per row with a label, where it lies; the class names (given,
/// else the `ClassLabel` names of the metadata, else the sorted string labels,
/// else `"0"`..`"max"`). With `caption_column`, each row's caption too (a list
/// of captions gives a sample per caption, all naming the row; rows without one
/// are left out), and the label column is optional: without it the data has no
/// classes (labels all 0).
pub(crate) fn read(
    paths: Vec<PathBuf>,
    spec: &Columns,
    class_names: Option<&[String]>,
    key: &str,
) -> Result<Source, DataError> {
    let Columns {
        image: image_column,
        label: label_column,
        caption: caption_column,
    } = *spec;
    let mut items = Vec::new();
    let mut raw = Vec::new();
    let mut captions = Vec::new();
    // Image-caption files may have no label column (decided by the first file).
    let mut labelled = true;
    let mut skipped = Vec::new();
    let mut group_rows = Vec::new();
    let mut group_base = Vec::new();
    let mut hf_names: Option<Vec<String>> = None;
    let mut groups = 0;
    for (f, path) in paths.iter().enumerate() {
        let reader = open(path)?;
        let cols = columns(&reader);
        if f == 0 && caption_column.is_some() {
            labelled = cols.iter().any(|n| n == label_column);
        }
        let mut needed = vec![("image_column", image_column)];
        if labelled {
            needed.push(("label_column", label_column));
        }
        if let Some(c) = caption_column {
            needed.push(("caption_column", c));
        }
        for (what, c) in needed {
            if !cols.iter().any(|n| n == c) {
                return Err(DataError::config(
                    format!("{key}.{what}"),
                    format!(
                        "{} has no column {c:?}; its columns: {}",
                        path.display(),
                        cols.join(", ")
                    ),
                ));
            }
        }
        if hf_names.is_none() {
            hf_names = hf_class_names(&reader, label_column);
        }
        let meta = reader.metadata();
        let rows: Vec<usize> = meta
            .row_groups()
            .iter()
            .map(|g| usize::try_from(g.num_rows()).unwrap_or(0))
            .collect();
        group_base.push(groups);
        groups += rows.len();
        let wanted: Vec<&str> = [labelled.then_some(label_column), caption_column]
            .into_iter()
            .flatten()
            .collect();
        let proj = projection(&reader, &wanted);
        let mut iter = reader
            .get_row_iter(proj)
            .map_err(|e| parquet_error(path, e))?;
        for (g, &n) in rows.iter().enumerate() {
            for r in 0..n {
                let row = iter
                    .next()
                    .ok_or_else(|| parquet_error(path, "fewer rows than its metadata says"))?
                    .map_err(|e| parquet_error(path, e))?;
                let cell = |column: &str| {
                    row.get_column_iter()
                        .find(|(name, _)| name.as_str() == column)
                        .map(|(_, f)| f)
                };
                let label = match labelled {
                    true => match cell(label_column).map(label_of).transpose() {
                        Ok(l) => l.flatten(),
                        Err(kind) => {
                            return Err(DataError::config(
                                format!("{key}.label_column"),
                                format!(
                                    "{}: column {label_column:?} holds {kind}: labels are class indices (integers) or class names (strings); cast the column, e.g. `df[{label_column:?}] = df[{label_column:?}].astype(\"int64\")`",
                                    row_name(path, &rows, g as u32, r as u32)
                                ),
                            ));
                        }
                    },
                    false => Some(RawLabel::default()),
                };
                // A list of captions (the Hub's COCO / Flickr30k: five per image)
                // is one pair per caption.
                let caption = caption_column.map(|c| captions_of(cell(c)));
                let at = || PathBuf::from(row_name(path, &rows, g as u32, r as u32));
                match (label, caption) {
                    (None, _) => skipped.push((at(), format!("no label in {label_column:?}"))),
                    (_, Some(c)) if c.is_empty() => skipped.push((
                        at(),
                        format!("no caption in {:?}", caption_column.unwrap_or_default()),
                    )),
                    (Some(l), None) => {
                        items.push((f as u32, g as u32, r as u32));
                        raw.push(l);
                    }
                    (Some(l), Some(cs)) => {
                        for c in cs {
                            items.push((f as u32, g as u32, r as u32));
                            raw.push(l.clone());
                            captions.push(c);
                        }
                    }
                }
            }
        }
        group_rows.push(rows);
    }
    if items.is_empty() {
        return Err(DataError::config(
            format!("{key}.path"),
            match caption_column {
                None => "the Parquet file(s) hold no labelled row",
                Some(_) => "the Parquet file(s) hold no row with an image and a caption",
            },
        ));
    }
    // The ClassLabel names of the metadata stand for `class_names` when not given
    // (for integer labels).
    let names = class_names
        .map(<[String]>::to_vec)
        .or_else(|| hf_names.filter(|_| raw.iter().all(|l| l.name.is_none())));
    let (classes, labels) = match labelled {
        true => resolve_labels(&raw, names.as_deref(), key, |i| {
            let (f, g, r) = items[i];
            row_name(&paths[f as usize], &group_rows[f as usize], g, r)
        })?,
        false => (Vec::new(), vec![0; items.len()]),
    };
    let files = paths.len();
    Ok(Source {
        storage: Box::new(ParquetFiles {
            paths,
            items,
            group_rows,
            group_base,
            image_column: image_column.to_string(),
            cache: GroupCache::default(),
            readers: Readers::new(files),
        }),
        classes,
        labels,
        captions: caption_column.map(|_| captions),
        skipped,
    })
}

/// The non-blank captions of a caption cell: a string, or a list of strings.
fn captions_of(cell: Option<&Field>) -> Vec<String> {
    let text = |f: &Field| match f {
        Field::Str(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    match cell {
        Some(Field::ListInternal(list)) => list.elements().iter().filter_map(text).collect(),
        Some(f) => text(f).into_iter().collect(),
        None => Vec::new(),
    }
}

/// `file.parquet:row N` of row `r` of row group `g` (N counts rows over the file).
fn row_name(path: &Path, group_rows: &[usize], g: u32, r: u32) -> String {
    let before: usize = group_rows[..g as usize].iter().sum();
    format!("{}:row {}", path.display(), before + r as usize)
}

impl ParquetFiles {
    /// The global row-group index of sample `k`.
    pub fn group_of(&self, k: usize) -> usize {
        let (f, g, _) = self.items[k];
        self.group_base[f as usize] + g as usize
    }

    fn read_group(&self, f: u32, g: u32) -> Group {
        let path = &self.paths[f as usize];
        let reader = self.readers.0[f as usize]
            .get_or_init(|| open(path).map(Arc::new).map_err(|e| e.to_string()))
            .clone()?;
        let proj = projection(&reader, &[self.image_column.as_str()]);
        let group = reader
            .get_row_group(g as usize)
            .map_err(|e| format!("{}: row group {g}: {e}", path.display()))?;
        let rows = group
            .get_row_iter(proj)
            .map_err(|e| format!("{}: row group {g}: {e}", path.display()))?;
        let mut cells = Vec::new();
        for row in rows {
            let row = row.map_err(|e| format!("{}: row group {g}: {e}", path.display()))?;
            cells.push(
                row.get_column_iter()
                    .next()
                    .map_or(Cell::Missing, |(_, f)| cell_of(f)),
            );
        }
        Ok(Arc::new(cells))
    }

    /// A shuffle of `view` (storage indices) with locality: its row groups in a
    /// random order, the samples shuffled within windows of row groups holding at
    /// least [`WINDOW_ROWS`] samples. Data that fits one window is shuffled as a
    /// whole, as any other source (the same order from the same seed). Returns
    /// positions in `view`.
    fn shuffle_locally(&self, view: &[usize], rng: &mut SampleRng) -> Vec<usize> {
        if view.len() <= WINDOW_ROWS {
            return rng.permutation(view.len());
        }
        let mut by_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (pos, &k) in view.iter().enumerate() {
            by_group.entry(self.group_of(k)).or_default().push(pos);
        }
        let groups: Vec<Vec<usize>> = by_group.into_values().collect();
        let mut out = Vec::with_capacity(view.len());
        let mut window: Vec<usize> = Vec::new();
        let flush = |window: &mut Vec<usize>, out: &mut Vec<usize>, rng: &mut SampleRng| {
            for i in rng.permutation(window.len()) {
                out.push(window[i]);
            }
            window.clear();
        };
        for g in rng.permutation(groups.len()) {
            window.extend_from_slice(&groups[g]);
            if window.len() >= WINDOW_ROWS {
                flush(&mut window, &mut out, rng);
            }
        }
        flush(&mut window, &mut out, rng);
        out
    }
}

impl Storage for ParquetFiles {
    /// `file.parquet:row N` (N counts rows over the file).
    fn name(&self, k: usize) -> String {
        let (f, g, r) = self.items[k];
        row_name(&self.paths[f as usize], &self.group_rows[f as usize], g, r)
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// The file's device and inode with the row (sizes are known only once read).
    fn places(&self) -> Vec<Place> {
        let files: Vec<String> = self.paths.iter().map(|p| file_place(p).0).collect();
        self.items
            .iter()
            .map(|&(f, g, r)| Place {
                at: format!("{}#{g}.{r}", files[f as usize]),
                size: None,
            })
            .collect()
    }

    /// The cell's bytes, with the extension of the format they hold.
    fn encoded(&self, k: usize) -> Result<(Vec<u8>, String), DataError> {
        let bytes = self.read(k)?;
        let ext = image::guess_format(&bytes)
            .ok()
            .and_then(|f| f.extensions_str().first().copied())
            .unwrap_or("jpg");
        Ok((bytes, ext.to_string()))
    }

    fn local_permutation(&self, view: &[usize], rng: &mut SampleRng) -> Option<Vec<usize>> {
        Some(self.shuffle_locally(view, rng))
    }
}

impl ParquetFiles {
    /// The encoded image of sample `k` (its row group read once into the cache).
    fn read(&self, k: usize) -> Result<Vec<u8>, DataError> {
        let (f, g, r) = self.items[k];
        let rows = self.group_rows[f as usize][g as usize];
        let group = self
            .cache
            .get((f, g), rows, || self.read_group(f, g))
            .map_err(|reason| DataError::Config {
                key: self.name(k),
                reason,
            })?;
        match group.get(r as usize) {
            Some(Cell::Bytes(b)) => Ok(b.clone()),
            Some(Cell::Path(p)) => {
                let p = match self.paths[f as usize].parent() {
                    Some(dir) if p.is_relative() => dir.join(p),
                    _ => p.clone(),
                };
                std::fs::read(&p).map_err(|source| DataError::Io { path: p, source })
            }
            _ => Err(DataError::Io {
                path: self.name(k).into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("no image in column {:?}", self.image_column),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// 30 row groups of 100 rows in 2 files.
    fn files() -> ParquetFiles {
        let mut items = Vec::new();
        for f in 0..2u32 {
            for g in 0..15u32 {
                for r in 0..100u32 {
                    items.push((f, g, r));
                }
            }
        }
        ParquetFiles {
            paths: vec!["a.parquet".into(), "b.parquet".into()],
            items,
            group_rows: vec![vec![100; 15]; 2],
            group_base: vec![0, 15],
            image_column: "image".into(),
            cache: GroupCache::default(),
            readers: Readers::new(2),
        }
    }

    #[test]
    fn the_local_shuffle_is_a_permutation_that_keeps_row_groups_together() {
        let p = files();
        let view: Vec<usize> = (0..3000).collect();
        let order = p.shuffle_locally(&view, &mut SampleRng::new(3, 1, u64::MAX));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, view);
        assert_eq!(
            order,
            p.shuffle_locally(&view, &mut SampleRng::new(3, 1, u64::MAX))
        );
        assert_ne!(
            order,
            p.shuffle_locally(&view, &mut SampleRng::new(3, 2, u64::MAX))
        );
        // Windows of 11 row groups (1,100 rows >= 1,024): any 1,100 consecutive
        // samples from a window's start touch 11 groups, and samples are mixed
        // within a window (not in group order).
        for w in order.chunks(1100).take(2) {
            let mut groups: Vec<usize> = w.iter().map(|&k| p.group_of(k)).collect();
            assert_ne!(groups.windows(2).filter(|g| g[0] != g[1]).count(), 10);
            groups.sort_unstable();
            groups.dedup();
            assert_eq!(groups.len(), 11);
        }
    }

    #[test]
    fn the_cache_keeps_at_most_its_rows_and_reads_a_group_once() {
        let cache = GroupCache::default();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let load = || {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Arc::new(vec![Cell::Missing; 100]))
        };
        for g in 0..50u32 {
            cache.get((0, g), 100, load).unwrap();
            cache.get((0, g), 100, load).unwrap();
        }
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 50);
        let held = cache.slots.lock().unwrap().map.len();
        assert_eq!(held, CACHE_ROWS / 100);
    }
}
