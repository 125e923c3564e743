//! Unreadable images under `data.loader.on_corrupt = "skip"`: each is named once,
//! counted, and the run stops when a class has lost every image or more than
//! `data.loader.max_corrupt_share` of the data is unreadable (a silent substitute
//! for a whole class would train and report nonsense).

use std::collections::BTreeSet;

use clip_data::{Dataset, Replaced};

use crate::error::{Result, TrainError};

/// The unreadable images one data source turned up so far.
#[derive(Debug, Clone)]
pub(crate) struct CorruptImages {
    /// `data.train` or `data.val`.
    key: &'static str,
    classes: Vec<String>,
    class_sizes: Vec<usize>,
    total: usize,
    max_share: f64,
    seen: BTreeSet<String>,
    per_class: Vec<usize>,
}

impl CorruptImages {
    pub(crate) fn new(key: &'static str, ds: &Dataset, max_share: f64) -> Self {
        let classes = ds.classes().to_vec();
        let mut class_sizes = vec![0; classes.len()];
        for i in 0..ds.len() {
            // Image-caption data without labels has no classes.
            if let Some(n) = class_sizes.get_mut(ds.label(i)) {
                *n += 1;
            }
        }
        Self {
            key,
            per_class: vec![0; classes.len()],
            classes,
            class_sizes,
            total: ds.len(),
            max_share,
            seen: BTreeSet::new(),
        }
    }

    /// Distinct unreadable images seen.
    pub(crate) fn count(&self) -> usize {
        self.seen.len()
    }

    /// Records a batch's replaced images (a warning names each the first time);
    /// an error once a class has none left or the share is exceeded.
    pub(crate) fn record(&mut self, replaced: &[Replaced]) -> Result<()> {
        for r in replaced {
            if !self.seen.insert(r.name.clone()) {
                continue;
            }
            let class = self.classes.get(r.label).map_or("?", String::as_str);
            tracing::warn!(
                "{}: skipping unreadable image {} (class {class:?}); replaced by the next readable one",
                self.key,
                r.name
            );
            if let Some(n) = self.per_class.get_mut(r.label) {
                *n += 1;
                if *n >= self.class_sizes[r.label] {
                    return Err(TrainError::config(
                        "data.loader.on_corrupt",
                        format!(
                            "every image of class {class:?} in {} is unreadable ({} of {}): the class would train on other classes' images",
                            self.key, n, self.class_sizes[r.label]
                        ),
                    ));
                }
            }
        }
        let share = self.seen.len() as f64 / self.total.max(1) as f64;
        if share > self.max_share {
            return Err(TrainError::config(
                "data.loader.max_corrupt_share",
                format!(
                    "{} of the {} images in {} are unreadable ({:.1} %, more than {:.1} %); the first: {}",
                    self.seen.len(),
                    self.total,
                    self.key,
                    share * 100.0,
                    self.max_share * 100.0,
                    self.seen.iter().next().map_or("", String::as_str)
                ),
            ));
        }
        Ok(())
    }
}
