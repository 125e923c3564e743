//! Storage of plain image files (an image folder's, a CSV manifest's).

use std::path::PathBuf;

use super::{Storage, io};
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

    fn encoded(&self, k: usize) -> Result<(Vec<u8>, String), DataError> {
        let path = &self.0[k];
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_else(|| "jpg".into());
        Ok((std::fs::read(path).map_err(io(path))?, ext))
    }
}
