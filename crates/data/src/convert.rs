//! `train-cli convert`: a dataset written as WebDataset shards, and the
//! `data.train` entry that reads them back.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::dataset::Dataset;

/// Writes `data` as WebDataset shards `dir/{prefix}-000000.tar`, ... of
/// `shard_size` samples: `NNNNNNNN.<ext>` (the image as stored), `NNNNNNNN.cls`
/// (its class index, when labelled) and `NNNNNNNN.txt` (its caption for
/// image-caption data, else its class name). Samples keep the
/// source's order, or are shuffled with `shuffle`'s seed (for readers that stream
/// shards in order). Each shard is written to a temporary name and renamed.
/// Returns the shards written.
pub fn write_webdataset(
    data: &Dataset,
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
            let mut members = vec![(ext, bytes)];
            if data.has_labels() {
                members.push(("cls".to_string(), label.to_string().into_bytes()));
            }
            // `.txt`: the caption (open_clip's shards), else the class name.
            let text = match data.caption(i) {
                Some(c) => Some(c.to_string()),
                None => data.classes().get(label).cloned(),
            };
            if let Some(t) = text {
                members.push(("txt".to_string(), t.into_bytes()));
            }
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

/// The `data.train = ...` entry (a TOML inline table) that reads the shards
/// [`write_webdataset`] wrote for `data` into `dir` as `prefix-NNNNNN.tar`: a
/// brace range over them (one shard: its name), `data`'s class names when it has
/// labels, `caption_extension = "txt"` when it has captions.
pub fn webdataset_entry(data: &Dataset, dir: &Path, prefix: &str, shards: usize) -> String {
    let last = shards.saturating_sub(1);
    let pattern = if last == 0 {
        dir.join(format!("{prefix}-000000.tar"))
    } else {
        dir.join(format!("{prefix}-{{000000..{last:06}}}.tar"))
    };
    // JSON strings (and arrays of them) are TOML basic strings.
    let mut entry = format!(
        "{{ kind = \"webdataset\", path = {}",
        serde_json::Value::from(pattern.display().to_string())
    );
    if data.has_labels() {
        entry.push_str(&format!(
            ", class_names = {}",
            serde_json::Value::from(data.classes().to_vec())
        ));
    }
    if data.has_captions() {
        entry.push_str(", caption_extension = \"txt\"");
    }
    entry.push_str(" }");
    entry
}
