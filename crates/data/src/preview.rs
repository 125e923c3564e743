//! A PNG grid of augmented views, so users can see what their augmentation does:
//! one row per image, the original (resized to the cell) first, then `views`
//! augmented draws with the same `(seed, epoch, index)` addressing as training.

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::image::RgbImage;
use crate::mix::{MixConfig, mix_batch};
use crate::resample::{Interpolation, resize};
use crate::rng::SampleRng;
use crate::transforms::Pipeline;

const GAP: usize = 4;

/// One row of a preview: an image's class, and its cells (the original first).
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewRow {
    pub label: String,
    pub cells: Vec<RgbImage>,
}

/// What the training pipeline makes of a few images, as pictures: one row per
/// image (taken round-robin across the classes), the original resized to the
/// output first, then `views` draws of the whole pipeline (`random_erasing`
/// included, shown de-normalised), then, with MixUp / CutMix on, the first view
/// mixed as the loader mixes a batch of the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// A title per column.
    pub columns: Vec<String>,
    pub rows: Vec<PreviewRow>,
}

/// The indices of up to `n` images of `dataset`, one class after another (the
/// first image of each class, then the second, ...).
fn across_classes(dataset: &Dataset, n: usize) -> Vec<usize> {
    let classes = dataset.classes().len().max(1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for i in 0..dataset.len() {
        if let Some(c) = by_class.get_mut(dataset.label(i)) {
            c.push(i);
        }
    }
    let mut out = Vec::with_capacity(n);
    let deepest = by_class.iter().map(Vec::len).max().unwrap_or(0);
    'fill: for k in 0..deepest {
        for c in &by_class {
            if out.len() == n {
                break 'fill;
            }
            if let Some(&i) = c.get(k) {
                out.push(i);
            }
        }
    }
    out
}

/// A normalised `3 x h x w` buffer back to 8-bit pixels (`(scale, bias)` from
/// [`Pipeline::normalization`]).
fn denormalize(buf: &[f32], h: usize, w: usize, (scale, bias): ([f32; 3], [f32; 3])) -> RgbImage {
    let mut img = RgbImage::filled(w, h, [0, 0, 0]);
    for c in 0..3 {
        for p in 0..h * w {
            let v = (buf[c * h * w + p] - bias[c]) / scale[c];
            img.data[p * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// Builds the [`Preview`] of `pipeline` (and `mix`, when on) on `images` images
/// of `dataset`, `views` draws each, with the training's `(seed, epoch, index)`
/// addressing.
pub fn preview(
    dataset: &Dataset,
    pipeline: &Pipeline,
    mix: Option<&MixConfig>,
    images: usize,
    views: usize,
    seed: u64,
) -> Result<Preview, DataError> {
    let (h, w) = pipeline.output_size().ok_or_else(|| {
        DataError::config(
            "data.train_transforms",
            "must end in a fixed size to preview",
        )
    })?;
    let indices = across_classes(dataset, images);
    let norm = pipeline.normalization();
    let per = 3 * h * w;
    let mut rows = Vec::with_capacity(indices.len());
    let mut first_views = Vec::with_capacity(indices.len() * per);
    for &i in &indices {
        let img = dataset.image(i)?;
        let mut cells = vec![resize(&img, w, h, Interpolation::Bilinear)];
        for v in 0..views {
            let mut rng = SampleRng::new(seed, v as u64, i as u64);
            let mut buf = vec![0f32; per];
            pipeline.apply_into(img.clone(), &mut rng, &mut buf)?;
            if v == 0 {
                first_views.extend_from_slice(&buf);
            }
            cells.push(denormalize(&buf, h, w, norm));
        }
        rows.push(PreviewRow {
            label: dataset.classes()[dataset.label(i)].clone(),
            cells,
        });
    }
    let mut columns = vec!["original".to_string()];
    columns.extend((1..=views).map(|v| format!("view {v}")));
    if let Some(mix) = mix.filter(|m| m.enabled() && views > 0 && rows.len() > 1) {
        let labels: Vec<i64> = indices.iter().map(|&i| dataset.label(i) as i64).collect();
        let mut rng = SampleRng::new(seed, 0, u64::MAX);
        let (_, lam) = mix_batch(
            &mut first_views,
            &labels,
            h,
            w,
            dataset.classes().len(),
            mix,
            &mut rng,
        );
        let n = rows.len();
        for (r, row) in rows.iter_mut().enumerate() {
            row.cells.push(denormalize(
                &first_views[r * per..(r + 1) * per],
                h,
                w,
                norm,
            ));
            // The loader mixes image i with image b - 1 - i of its batch: here
            // row r with row n - 1 - r (1-based: n - r).
            row.label = format!("{} (mixed with row {})", row.label, n - r);
        }
        columns.push(format!("mixed, λ={lam:.2}"));
    }
    Ok(Preview { columns, rows })
}

impl Preview {
    /// The cells on a white grid, each scaled up by a whole factor to at least
    /// `min_cell` pixels a side (nearest neighbour: the pixels stay visible),
    /// with `left` and `top` pixels of margin for labels. Returns the image and
    /// where each cell's top-left corner is (`[row][column]`), and the cell side.
    pub fn compose(&self, min_cell: usize, left: usize, top: usize) -> (RgbImage, usize, usize) {
        let (h, w) = self
            .rows
            .first()
            .and_then(|r| r.cells.first())
            .map_or((1, 1), |c| (c.height, c.width));
        let factor = min_cell.div_ceil(h.max(w)).max(1);
        let (ch, cw) = (h * factor, w * factor);
        let cols = self.columns.len();
        let (gw, gh) = (
            left + cols * cw + (cols + 1) * GAP,
            top + self.rows.len() * ch + (self.rows.len() + 1) * GAP,
        );
        let mut grid = RgbImage::filled(gw, gh, [255, 255, 255]);
        for (r, row) in self.rows.iter().enumerate() {
            for (c, cell) in row.cells.iter().enumerate() {
                let (x0, y0) = (left + GAP + c * (cw + GAP), top + GAP + r * (ch + GAP));
                for y in 0..ch.min(cell.height * factor) {
                    for x in 0..cw.min(cell.width * factor) {
                        let src = ((y / factor) * cell.width + x / factor) * 3;
                        let dst = ((y0 + y) * gw + x0 + x) * 3;
                        grid.data[dst..dst + 3].copy_from_slice(&cell.data[src..src + 3]);
                    }
                }
            }
        }
        (grid, cw, ch)
    }

    /// Where cell `(row, column)` starts in [`Preview::compose`]'s image.
    pub fn cell_origin(
        row: usize,
        column: usize,
        cell: (usize, usize),
        margin: (usize, usize),
    ) -> (usize, usize) {
        (
            margin.0 + GAP + column * (cell.0 + GAP),
            margin.1 + GAP + row * (cell.1 + GAP),
        )
    }
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
        let pv = preview(&ds, &p, None, 2, 3, 7).unwrap();
        assert_eq!(pv.columns, ["original", "view 1", "view 2", "view 3"]);
        // One image of each class, in class order.
        let labels: Vec<&str> = pv.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["a", "b"]);
        let cells = &pv.rows[0].cells;
        assert_eq!((cells[1].width, cells[1].height), (12, 12));
        assert_ne!(cells[1], cells[2], "two views of one image should differ");
        assert_ne!(pv.rows[0].cells[0], pv.rows[1].cells[0]);
        // Composed at 48 px a cell: each pixel a 4 x 4 block.
        let (g, cw, ch) = pv.compose(48, 10, 20);
        assert_eq!((cw, ch), (48, 48));
        assert_eq!(
            (g.width, g.height),
            (10 + 4 * 48 + 5 * GAP, 20 + 2 * 48 + 3 * GAP)
        );
        let (x0, y0) = Preview::cell_origin(0, 1, (cw, ch), (10, 20));
        let px =
            |x: usize, y: usize| g.data[(y * g.width + x) * 3..(y * g.width + x) * 3 + 3].to_vec();
        assert_eq!(px(x0, y0), cells[1].data[0..3].to_vec());
        assert_eq!(px(x0 + 3, y0 + 3), cells[1].data[0..3].to_vec());

        // random_erasing is in the picture (it works on normalised values).
        let erase: Vec<TransformConfig> = toml::from_str::<toml::Table>(
            "ops = [{ op = \"center_crop\", size = 12 }, { op = \"normalize\" }, { op = \"random_erasing\", p = 1.0, value = 0.0 }]",
        )
        .unwrap()["ops"]
            .clone()
            .try_into()
            .unwrap();
        let keep: Vec<TransformConfig> = erase[..2].to_vec();
        let erased = preview(&ds, &Pipeline::new(erase, "t").unwrap(), None, 1, 1, 7).unwrap();
        let plain = preview(&ds, &Pipeline::new(keep, "t").unwrap(), None, 1, 1, 7).unwrap();
        assert_ne!(erased.rows[0].cells[1], plain.rows[0].cells[1]);

        // MixUp adds a column: the first views mixed as the loader mixes a batch.
        let mix = MixConfig {
            mixup_alpha: 1.0,
            ..MixConfig::default()
        };
        let mixed = preview(&ds, &p, Some(&mix), 2, 1, 7).unwrap();
        assert_eq!(mixed.columns.len(), 3);
        assert!(mixed.columns[2].starts_with("mixed, λ="));
        assert_ne!(mixed.rows[0].cells[2], mixed.rows[0].cells[1]);
    }
}
