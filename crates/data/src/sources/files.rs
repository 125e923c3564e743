//! Storage of plain image files (an image folder's, a CSV manifest's).

use std::path::PathBuf;

use super::{Place, Storage, file_place, io};
use crate::DataError;
use crate::image::{DecodeOptions, RgbImage};

/// One image file per item.
#[derive(Debug)]
pub(crate) struct Files(pub Vec<PathBuf>);

impl Storage for Files {
    fn name(&self, k: usize) -> String {
        self.0[k].display().to_string()
    }

    fn name_bytes(&self, k: usize) -> Option<Vec<u8>> {
        crate::path_bytes(&self.0[k])
    }

    fn image(&self, k: usize, options: &DecodeOptions) -> Result<RgbImage, DataError> {
        RgbImage::open_with_options(&self.0[k], options)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The file's device and inode, and its size (the files are stat'ed on all
    /// cores).
    fn places(&self) -> Vec<Place> {
        use rayon::prelude::*;
        self.0
            .par_iter()
            .map(|p| {
                let (at, size) = file_place(p);
                Place { at, size }
            })
            .collect()
    }

    fn encoded(&self, k: usize) -> Result<(Vec<u8>, String), DataError> {
        let path = &self.0[k];
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_else(|| "jpg".into());
        Ok((std::fs::read(path).map_err(io(path))?, ext))
    }
}
