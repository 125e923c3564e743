//! A CSV (or TSV) manifest with a header: an image path column (relative to the
//! CSV's folder), a label column (class names, sorted) and / or a caption column
//! (image-caption pairs: open_clip's `filepath,title` files).

use std::path::Path;

use super::files::Files;
use super::{Source, io};
use crate::DataError;

/// The columns of a CSV source and its field separator, as its config names
/// them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns<'a> {
    pub image: &'a str,
    /// `None`: `label`, optional when a caption column is given.
    pub label: Option<&'a str>,
    pub caption: Option<&'a str>,
    /// `","`, `"\t"` or another one-character separator.
    pub delimiter: &'a str,
}

/// Reads the manifest at `path`; errors name `key`'s fields and the file's lines.
pub(crate) fn read(columns: &Columns, path: &Path, key: &str) -> Result<Source, DataError> {
    let Columns {
        image: image_column,
        label: label_column,
        caption: caption_column,
        delimiter,
    } = *columns;
    let delimiter = match delimiter.as_bytes() {
        [d] => *d,
        b"\\t" => b'\t',
        _ => {
            return Err(DataError::config(
                format!("{key}.delimiter"),
                format!("must be one ASCII character (e.g. \",\" or \"\\t\"), got {delimiter:?}"),
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
    Ok(Source {
        storage: Box::new(Files(files)),
        classes,
        labels,
        captions: caption.map(|_| captions),
        skipped: Vec::new(),
    })
}
