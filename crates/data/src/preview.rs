//! A PNG grid of augmented views, so users can see what their augmentation does:
//! one row per image, the original (resized to the cell) first, then `views`
//! augmented draws with the same `(seed, epoch, index)` addressing as training.

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::image::RgbImage;
use crate::resample::{Interpolation, resize};
use crate::rng::SampleRng;
use crate::transforms::Pipeline;

const GAP: usize = 4;

/// Builds the grid for the first `images` items of `dataset` (`views` epochs each).
pub fn preview_grid(
    dataset: &Dataset,
    pipeline: &Pipeline,
    images: usize,
    views: usize,
    seed: u64,
) -> Result<RgbImage, DataError> {
    let (h, w) = pipeline.output_size().ok_or_else(|| {
        DataError::config(
            "data.train_transforms",
            "must end in a fixed size to preview",
        )
    })?;
    let rows = images.min(dataset.len());
    let cols = views + 1;
    let (gw, gh) = (cols * w + (cols + 1) * GAP, rows * h + (rows + 1) * GAP);
    let mut grid = RgbImage::filled(gw, gh, [255, 255, 255]);
    for r in 0..rows {
        let img = dataset.image(r)?;
        let original = resize(&img, w, h, Interpolation::Bilinear);
        for c in 0..cols {
            let cell = if c == 0 {
                original.clone()
            } else {
                let mut rng = SampleRng::new(seed, c as u64 - 1, r as u64);
                pipeline.apply_u8(img.clone(), &mut rng)
            };
            let (x0, y0) = (GAP + c * (w + GAP), GAP + r * (h + GAP));
            for y in 0..cell.height.min(h) {
                let src = &cell.data[y * cell.width * 3..(y * cell.width + cell.width.min(w)) * 3];
                let dst = ((y0 + y) * gw + x0) * 3;
                grid.data[dst..dst + src.len()].copy_from_slice(src);
            }
        }
    }
    Ok(grid)
}

/// Writes [`preview_grid`] as a PNG.
pub fn write_preview(
    path: &Path,
    dataset: &Dataset,
    pipeline: &Pipeline,
    images: usize,
    views: usize,
    seed: u64,
) -> Result<(), DataError> {
    let grid = preview_grid(dataset, pipeline, images, views, seed)?;
    image::save_buffer(
        path,
        &grid.data,
        grid.width as u32,
        grid.height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|source| DataError::Encode {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourceConfig;
    use crate::transforms::TransformConfig;

    #[test]
    fn grid_holds_the_original_and_distinct_views() {
        let dir = tempfile::tempdir().unwrap();
        for (class, shade) in [("a", 40u8), ("b", 200u8)] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            let mut data = vec![shade; 20 * 16 * 3];
            for (i, v) in data.iter_mut().enumerate() {
                *v = v.wrapping_add((i % 97) as u8);
            }
            image::save_buffer(
                dir.path().join(class).join("x.png"),
                &data,
                20,
                16,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        }
        let ds = Dataset::load(
            &SourceConfig::ImageFolder {
                path: dir.path().into(),
            },
            "data.train",
        )
        .unwrap();
        let ops: Vec<TransformConfig> = toml::from_str::<toml::Table>(
            "ops = [{ op = \"random_resized_crop\", size = 12, scale = [0.3, 1.0] }, { op = \"random_horizontal_flip\" }]",
        )
        .unwrap()["ops"]
            .clone()
            .try_into()
            .unwrap();
        let p = Pipeline::new(ops, "t").unwrap();
        let g = preview_grid(&ds, &p, 2, 3, 7).unwrap();
        assert_eq!((g.width, g.height), (4 * 12 + 5 * GAP, 2 * 12 + 3 * GAP));
        let cell = |r: usize, c: usize| -> Vec<u8> {
            let (x0, y0) = (GAP + c * (12 + GAP), GAP + r * (12 + GAP));
            (0..12)
                .flat_map(|y| {
                    g.data[((y0 + y) * g.width + x0) * 3..((y0 + y) * g.width + x0 + 12) * 3]
                        .to_vec()
                })
                .collect()
        };
        assert_ne!(
            cell(0, 1),
            cell(0, 2),
            "two views of one image should differ"
        );
        assert_ne!(cell(0, 0), cell(1, 0));
        let out = dir.path().join("grid.png");
        write_preview(&out, &ds, &p, 2, 3, 7).unwrap();
        assert_eq!(RgbImage::open(&out).unwrap(), g);
        let err =
            write_preview(&dir.path().join("no/such/dir/g.png"), &ds, &p, 1, 1, 7).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }
}
