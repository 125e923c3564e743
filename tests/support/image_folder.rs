//! Test support shared by the crates' integration tests (included with
//! `#[path = "../../../tests/support/image_folder.rs"] mod image_folder;`).

use std::path::Path;

/// `root/<class>/<i>.png`: 16x16 images, each class its own colour and stripe
/// direction (so a tiny model can learn them), with per-image noise.
pub fn make_folder(root: &Path, classes: &[&str], per_class: usize) {
    const COLOURS: [[u8; 3]; 3] = [[200, 40, 40], [40, 200, 40], [40, 40, 200]];
    for (k, name) in classes.iter().enumerate() {
        let rgb = COLOURS[k % COLOURS.len()];
        let horizontal = k % 2 == 0;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create the class folder");
        for i in 0..per_class {
            let mut data = Vec::with_capacity(16 * 16 * 3);
            for y in 0..16usize {
                for x in 0..16usize {
                    let stripe = if horizontal { y } else { x } % 4 < 2;
                    for (c, &v) in rgb.iter().enumerate() {
                        let noise = ((i * 31 + x * 7 + y * 13 + c * 5 + k) % 23) as i32 - 11;
                        let base = if stripe {
                            i32::from(v)
                        } else {
                            i32::from(v) / 2
                        };
                        data.push((base + noise).clamp(0, 255) as u8);
                    }
                }
            }
            image::save_buffer(
                dir.join(format!("{i}.png")),
                &data,
                16,
                16,
                image::ExtendedColorType::Rgb8,
            )
            .expect("write a test image");
        }
    }
}
