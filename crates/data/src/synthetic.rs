//! Generated images for timing runs whose data is not on the machine (`train-cli
//! bench` on a fresh clone's configs).

use std::path::Path;

use crate::DataError;

/// Writes `classes x per_class` noise JPEGs of 320x240 (quality 90) as an image
/// folder: `dir/classN/I.jpg`.
pub fn write_noise_images(dir: &Path, classes: usize, per_class: usize) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for c in 0..classes {
        let class = dir.join(format!("class{c}"));
        std::fs::create_dir_all(&class).map_err(io(&class))?;
        for i in 0..per_class {
            let pixels: Vec<u8> = (0..320 * 240 * 3)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            let path = class.join(format!("{i}.jpg"));
            let file = std::fs::File::create(&path).map_err(io(&path))?;
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
                .encode(&pixels, 320, 240, image::ExtendedColorType::Rgb8)
                .map_err(|source| DataError::Encode {
                    path: path.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}
