//! JPEG pixels equal PIL's (`Image.open(p).convert("RGB")`, which decodes with
//! libjpeg-turbo), for every flavour of scripts/gen_jpeg_fixtures.py: baseline
//! and progressive, 4:4:4 / 4:2:2 / 4:2:0, restart markers, grey, Adobe CMYK,
//! YCCK, arithmetic coding, odd sizes; draft decoding equals PIL's `draft`; EXIF
//! orientation is applied as `ImageOps.exif_transpose` when asked for; a 12-bit
//! file is a clear error.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clip_data::RgbImage;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data/jpeg")
}

/// PIL's arrays by name, as `RgbImage`s.
fn reference() -> HashMap<String, RgbImage> {
    let bytes = std::fs::read(dir().join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let shape = t.shape();
            assert_eq!(shape[2], 3, "{name}");
            let img = RgbImage::new(shape[1], shape[0], t.data().to_vec()).unwrap();
            (name, img)
        })
        .collect()
}

/// The largest difference of two images of one size.
fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

const FLAVOURS: [&str; 12] = [
    "baseline_444",
    "baseline_422",
    "baseline_420",
    "progressive_420",
    "progressive_444",
    "restart_420",
    "grey",
    "cmyk",
    "ycck",
    "arith",
    "exif6",
    "photo",
];

#[test]
fn every_flavour_decodes_to_pils_pixels_exactly() {
    let r = reference();
    for name in FLAVOURS {
        let ours = RgbImage::open(&dir().join(format!("{name}.jpg"))).unwrap();
        assert_eq!(
            max_diff(&ours, &r[name]),
            0,
            "{name}: pixels differ from PIL's"
        );
    }
}

#[test]
fn draft_decoding_equals_pils_draft() {
    let r = reference();
    let bytes = std::fs::read(dir().join("photo.jpg")).unwrap();
    for s in [2usize, 4, 8] {
        // The reduction allowed is s (and up to just below the next scale).
        for allowed in [s, 2 * s - 1] {
            let ours = RgbImage::decode_draft(&bytes, |_, _| allowed).unwrap();
            let want = &r[&format!("photo.draft{s}")];
            assert_eq!(max_diff(&ours, want), 0, "1/{s} (allowed {allowed})");
        }
    }
    // Less than 2: the full image, as `decode`.
    assert_eq!(
        RgbImage::decode_draft(&bytes, |_, _| 1).unwrap(),
        RgbImage::decode(&bytes).unwrap()
    );
}

#[test]
fn exif_orientation_is_read_and_applied_as_pils_exif_transpose() {
    let r = reference();
    let bytes = std::fs::read(dir().join("exif6.jpg")).unwrap();
    assert_eq!(clip_data::exif_orientation(&bytes), Some(6));
    let stored = RgbImage::decode(&bytes).unwrap();
    assert_eq!(max_diff(&stored, &r["exif6"]), 0, "as stored by default");
    let turned = stored.apply_orientation(6);
    assert_eq!(max_diff(&turned, &r["exif6.transposed"]), 0);
    let photo = std::fs::read(dir().join("photo.jpg")).unwrap();
    assert_eq!(clip_data::exif_orientation(&photo), None);
}

#[test]
fn a_12_bit_or_broken_jpeg_is_an_error_naming_the_file() {
    let path = dir().join("bits12.jpg");
    let e = RgbImage::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("bits12.jpg") && e.contains("precision 12"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dir().join("photo.jpg")).unwrap();
    for (name, cut) in [("cut.jpg", bytes.len() / 2), ("header.jpg", 40)] {
        let p = tmp.path().join(name);
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = RgbImage::open(&p).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
    }
}

/// `data.loader.exif_orientation = "apply"` turns images upright in the batches
/// (the same pixels as turning PIL's decode); the default leaves them as stored.
#[test]
fn the_loader_applies_the_exif_orientation_only_when_asked() {
    use clip_data::{
        Dataset, ExifOrientation, Loader, LoaderConfig, Pipeline, SampleRng, SourceConfig,
    };
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir_all(tmp.path().join(class)).unwrap();
        std::fs::copy(
            dir().join("exif6.jpg"),
            tmp.path().join(class).join("x.jpg"),
        )
        .unwrap();
    }
    let src = SourceConfig::ImageFolder {
        path: tmp.path().to_path_buf(),
    };
    let ds = Dataset::load(&src, "data.train").unwrap();
    // 40x24 as stored, 24x40 turned: a centre crop of 24 fits either, and differs.
    let pipeline = Pipeline::clip_eval(24);
    let pixels = |exif_orientation| {
        let cfg = LoaderConfig {
            batch_size: 1,
            shuffle: false,
            exif_orientation,
            ..LoaderConfig::default()
        };
        let l = Loader::new(ds.clone(), pipeline.clone(), cfg, 0).unwrap();
        let b = l.epoch(0, 0).next().unwrap().unwrap();
        (b.height, b.width, b.images_f32().unwrap().to_vec())
    };
    let through = |img: &RgbImage| -> Vec<f32> {
        let mut out = vec![0f32; 3 * 24 * 24];
        pipeline
            .apply_into(img.clone(), &mut SampleRng::new(0, 0, 0), &mut out)
            .unwrap();
        out
    };
    let (stored, turned) = (through(&r["exif6"]), through(&r["exif6.transposed"]));
    assert_ne!(stored, turned);
    for (setting, want) in [
        (ExifOrientation::Ignore, &stored),
        (ExifOrientation::Apply, &turned),
    ] {
        let (h, w, got) = pixels(setting);
        assert_eq!((h, w), (24, 24), "{setting:?}");
        assert!(
            &got == want,
            "{setting:?}: the batch is not the image turned as PIL's exif_transpose / as stored"
        );
    }
}

/// `convert --max-side N`: images larger than N are stored scaled to PIL's
/// thumbnail size (bicubic with antialiasing, re-encoded as JPEG), smaller ones
/// byte for byte as they were.
#[test]
fn shards_with_a_max_side_hold_thumbnails_of_the_large_images_only() {
    use clip_data::{Dataset, Interpolation, ShardImages, SourceConfig};
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
    }
    std::fs::copy(dir().join("photo.jpg"), folder.join("a/photo.jpg")).unwrap();
    std::fs::copy(dir().join("grey.jpg"), folder.join("b/grey.jpg")).unwrap();
    let ds = Dataset::load(&SourceConfig::ImageFolder { path: folder }, "data.train").unwrap();
    let images = ShardImages {
        max_side: Some(64),
        quality: 95,
    };
    let out = tmp.path().join("shards");
    let shards = clip_data::write_webdataset_with(&ds, &out, "s", 10, None, &images).unwrap();
    let back = Dataset::load(
        &SourceConfig::Webdataset {
            path: shards[0].display().to_string(),
            class_names: None,
            caption_extension: None,
        },
        "data.train",
    )
    .unwrap();
    // The 256x200 photo: PIL's thumbnail size, close to our resize of it.
    let small = back.image(0).unwrap();
    assert_eq!((small.width, small.height), (64, 50));
    let want = clip_data::resize(&ds.image(0).unwrap(), 64, 50, Interpolation::Bicubic);
    let mean = small
        .data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / want.data.len() as f64;
    assert!(
        mean < 2.0,
        "mean difference {mean} levels after re-encoding"
    );
    // The 33x27 grey JPEG fits: stored as it was.
    assert_eq!(back.encoded(1).unwrap(), ds.encoded(1).unwrap());
    let e = clip_data::write_webdataset_with(
        &ds,
        &out,
        "t",
        10,
        None,
        &ShardImages {
            max_side: Some(0),
            quality: 90,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--max-side"), "{e}");
}
