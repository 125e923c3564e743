//! Samples listed twice and validation images that are training images: a
//! sample's place ([`crate::sources::Place`]: a file's device and inode, a
//! shard member's offset, a Parquet row) says when two entries are one image,
//! whatever names they were given; a hash of the bytes says when two files hold
//! the same image.

use std::collections::HashMap;

use crate::{DataError, Dataset};

/// The samples a dataset lists more than once with the same label and caption.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Repeats {
    /// Entries beyond the first of each sample (each is trained on as listed).
    pub extra: usize,
    /// Up to 5 of them: the names of one sample's entries.
    pub examples: Vec<Vec<String>>,
}

/// Validation images that are also training images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlap {
    /// Validation images whose file (or shard member, or row) is a training image's.
    pub same_place: usize,
    /// Validation images whose bytes are a training image's, in another file.
    pub same_bytes: usize,
    /// Up to 5 pairs: `(validation name, training name)`.
    pub examples: Vec<(String, String)>,
    /// When the bytes were not compared: why (too much to read, sizes unknown).
    pub bytes_unchecked: Option<String>,
}

impl Overlap {
    pub fn total(&self) -> usize {
        self.same_place + self.same_bytes
    }
}

/// The most bytes [`Dataset::overlap`] reads to compare contents by default.
pub const OVERLAP_READ_BUDGET: u64 = 512 << 20;

impl Dataset {
    /// Entries of this view that are one sample (one place): an error naming
    /// `key` and the sample when they disagree on its label (a CSV row repeated
    /// with another label), else the repeats with the same label and caption, for
    /// a warning (one image with several captions is several pairs).
    pub fn repeats(&self, key: &str) -> Result<Repeats, DataError> {
        let places = self.places();
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<usize, usize> = HashMap::new();
        for i in 0..self.len() {
            let at = places[self.view[i]].at.as_str();
            match first.get(at) {
                None => {
                    first.insert(at, i);
                }
                Some(&f) => {
                    if self.has_labels() && self.label(f) != self.label(i) {
                        return Err(DataError::config(
                            key,
                            format!(
                                "{} and {} are one image labelled both {:?} and {:?}: remove the wrong entry",
                                self.name(f),
                                self.name(i),
                                self.class_name(f),
                                self.class_name(i)
                            ),
                        ));
                    }
                    // One image with several captions (COCO's five) is several
                    // pairs, not a repeat.
                    if self.caption(f) != self.caption(i) {
                        continue;
                    }
                    let g = *group_of.entry(f).or_insert_with(|| {
                        groups.push((f, Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(i);
                }
            }
        }
        Ok(Repeats {
            extra: groups.iter().map(|(_, more)| more.len()).sum(),
            examples: groups
                .iter()
                .take(5)
                .map(|(f, more)| {
                    std::iter::once(f)
                        .chain(more)
                        .map(|&i| self.name(i))
                        .collect()
                })
                .collect(),
        })
    }

    /// The images of `val` that are images of `self` (training data): the same
    /// place, or the same bytes in another file. Bytes are compared only between
    /// images of equal size, and only when those hold at most `budget` bytes in
    /// all (else [`Overlap::bytes_unchecked`] says so).
    pub fn overlap(&self, val: &Dataset, budget: u64) -> Result<Overlap, DataError> {
        let (tp, vp) = (self.places(), val.places());
        let mut train_at: HashMap<&str, usize> = HashMap::new();
        for i in 0..self.len() {
            train_at.entry(tp[self.view[i]].at.as_str()).or_insert(i);
        }
        let mut out = Overlap::default();
        let mut rest = Vec::new();
        for j in 0..val.len() {
            match train_at.get(vp[val.view[j]].at.as_str()) {
                Some(&i) => {
                    out.same_place += 1;
                    if out.examples.len() < 5 {
                        out.examples.push((val.name(j), self.name(i)));
                    }
                }
                None => rest.push(j),
            }
        }
        // Bytes: only images of a size both sides have can be equal.
        let size = |p: &[crate::sources::Place], ds: &Dataset, i: usize| p[ds.view[i]].size;
        let unknown = (0..self.len()).any(|i| size(tp, self, i).is_none())
            || rest.iter().any(|&j| size(vp, val, j).is_none());
        if unknown {
            out.bytes_unchecked = Some("their sizes are not known without reading them".into());
            return Ok(out);
        }
        let mut val_sizes: HashMap<u64, Vec<usize>> = HashMap::new();
        for &j in &rest {
            if let Some(s) = size(vp, val, j) {
                val_sizes.entry(s).or_default().push(j);
            }
        }
        let train_candidates: Vec<usize> = (0..self.len())
            .filter(|&i| size(tp, self, i).is_some_and(|s| val_sizes.contains_key(&s)))
            .collect();
        let train_sizes: std::collections::HashSet<u64> = train_candidates
            .iter()
            .filter_map(|&i| size(tp, self, i))
            .collect();
        let val_candidates: Vec<usize> = rest
            .iter()
            .copied()
            .filter(|&j| size(vp, val, j).is_some_and(|s| train_sizes.contains(&s)))
            .collect();
        let bytes: u64 = train_candidates
            .iter()
            .filter_map(|&i| size(tp, self, i))
            .chain(val_candidates.iter().filter_map(|&j| size(vp, val, j)))
            .sum();
        if bytes > budget {
            out.bytes_unchecked = Some(format!(
                "that would read {:.1} GB (more than {:.1} GB)",
                bytes as f64 / 1e9,
                budget as f64 / 1e9
            ));
            return Ok(out);
        }
        let hash_all = |ds: &Dataset, items: &[usize]| -> Result<Vec<(u64, usize)>, DataError> {
            use rayon::prelude::*;
            items
                .par_iter()
                .map(|&i| Ok((ds.storage.content_hash(ds.view[i])?, i)))
                .collect()
        };
        let mut by_hash: HashMap<u64, usize> = HashMap::new();
        for (h, i) in hash_all(self, &train_candidates)? {
            by_hash.entry(h).or_insert(i);
        }
        for (h, j) in hash_all(val, &val_candidates)? {
            if let Some(&i) = by_hash.get(&h) {
                out.same_bytes += 1;
                if out.examples.len() < 5 {
                    out.examples.push((val.name(j), self.name(i)));
                }
            }
        }
        Ok(out)
    }

    /// The class name of item `i` (its index when the data has no names).
    fn class_name(&self, i: usize) -> String {
        let l = self.label(i);
        self.classes()
            .get(l)
            .cloned()
            .unwrap_or_else(|| l.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use crate::{Dataset, OVERLAP_READ_BUDGET, SourceConfig};

    fn csv(dir: &Path, name: &str, rows: &[(&str, &str)]) -> Dataset {
        let body: String = rows.iter().map(|(p, l)| format!("{p},{l}\n")).collect();
        let path = dir.join(name);
        std::fs::write(&path, format!("path,label\n{body}")).unwrap();
        Dataset::load(&SourceConfig::csv(path), "data.train").unwrap()
    }

    /// A row repeated with its label is counted (for a warning); with another
    /// label it is an error naming both entries and labels.
    #[test]
    fn repeated_entries_are_counted_and_conflicting_labels_refused() {
        let tmp = tempfile::tempdir().unwrap();
        crate::write_noise_images(tmp.path(), 2, 2).unwrap();
        let rows = [
            ("class0/0.jpg", "cat"),
            ("class0/1.jpg", "cat"),
            ("./class0/0.jpg", "cat"),
            ("class1/0.jpg", "dog"),
            ("class0/0.jpg", "cat"),
        ];
        let r = csv(tmp.path(), "a.csv", &rows)
            .repeats("data.train")
            .unwrap();
        assert_eq!(r.extra, 2);
        assert_eq!(r.examples.len(), 1);
        assert_eq!(r.examples[0].len(), 3, "{:?}", r.examples);
        let clean = csv(tmp.path(), "b.csv", &rows[..2]);
        assert_eq!(clean.repeats("data.train").unwrap().extra, 0);
        let err = csv(
            tmp.path(),
            "c.csv",
            &[rows[0], rows[1], ("class0/0.jpg", "dog")],
        )
        .repeats("data.train")
        .unwrap_err()
        .to_string();
        assert!(err.contains("data.train"), "{err}");
        assert!(err.contains("labelled both \"cat\" and \"dog\""), "{err}");
    }

    /// A validation image that is a training file (however spelled) or a copy
    /// of one is found; bytes are compared only within the budget.
    #[test]
    fn validation_images_that_are_training_images_are_found_by_file_and_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        crate::write_noise_images(tmp.path(), 2, 2).unwrap();
        std::fs::copy(tmp.path().join("class1/0.jpg"), tmp.path().join("copy.jpg")).unwrap();
        let train = csv(
            tmp.path(),
            "train.csv",
            &[
                ("class0/0.jpg", "cat"),
                ("class0/1.jpg", "cat"),
                ("class1/0.jpg", "dog"),
            ],
        );
        let val = csv(
            tmp.path(),
            "val.csv",
            &[
                ("./class0/0.jpg", "cat"),
                ("copy.jpg", "dog"),
                ("class1/1.jpg", "dog"),
            ],
        );
        let o = train.overlap(&val, OVERLAP_READ_BUDGET).unwrap();
        assert_eq!((o.same_place, o.same_bytes), (1, 1), "{o:?}");
        assert_eq!(o.bytes_unchecked, None);
        assert!(o.examples[1].0.ends_with("copy.jpg"), "{o:?}");
        let o = train.overlap(&val, 0).unwrap();
        assert_eq!((o.same_place, o.same_bytes), (1, 0), "{o:?}");
        assert!(o.bytes_unchecked.unwrap().contains("GB"));
        let apart = csv(tmp.path(), "apart.csv", &[("class1/1.jpg", "dog")]);
        assert_eq!(
            train.overlap(&apart, OVERLAP_READ_BUDGET).unwrap().total(),
            0
        );
    }
}
