//! Sources (ImageFolder, CSV, IDX), the stratified split, the transform config and
//! the loader's determinism, resume and error behaviour.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Write;
use std::path::Path;

use clip_data::{
    Dataset, Loader, LoaderConfig, Normalize, Output, Pipeline, Pixels, RgbImage, SampleRng, Size,
    SourceConfig, TransformConfig,
};

fn png(path: &Path, w: u32, h: u32, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([shade, (x * 7) as u8, (y * 5) as u8])
    });
    img.save(path).unwrap();
}

/// root/{cat,dog,bird}/..., 4 + 3 + 5 images (one nested), plus a text file.
fn folder(root: &Path) {
    for (class, n) in [("cat", 4), ("dog", 3), ("bird", 5)] {
        for i in 0..n {
            let sub = if i == 0 {
                format!("{class}/nested/{i}.png")
            } else {
                format!("{class}/{i}.png")
            };
            png(&root.join(sub), 40 + i, 30, i as u8 * 40);
        }
    }
    std::fs::write(root.join("cat/notes.txt"), "not an image").unwrap();
}

fn train_pipeline() -> Pipeline {
    Pipeline::tutorial_train(24, clip_data::Normalize::clip())
}

fn folder_dataset(root: &Path) -> Dataset {
    folder(root);
    Dataset::load(
        &SourceConfig::ImageFolder { path: root.into() },
        "data.train",
    )
    .unwrap()
}

#[test]
fn image_folder_sorts_classes_recurses_and_reports_skipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    assert_eq!(ds.classes(), ["bird", "cat", "dog"]);
    let s = ds.summary();
    assert_eq!((s.images, s.classes), (12, 3));
    assert_eq!(s.per_class["bird"], 5);
    assert_eq!(s.per_class["cat"], 4);
    assert_eq!(s.skipped.len(), 1);
    assert!(s.skipped[0].0.ends_with("cat/notes.txt"));
    // torchvision's order: a folder's own files (sorted) before its subfolders'.
    assert!(ds.name(0).ends_with("bird/1.png") && ds.name(4).ends_with("bird/nested/0.png"));
    assert_eq!(ds.image(0).unwrap().width, 41);
    let err = Dataset::load(
        &SourceConfig::ImageFolder {
            path: dir.path().join("cat/nested"),
        },
        "data.train",
    )
    .unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("no class folders") && err.contains("data.train.path"),
        "{err}"
    );
}

#[test]
fn links_are_followed_without_loops_double_counts_or_wrong_labels() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path()); // bird 5, cat 4, dog 3 images
    let root = dir.path();
    // A loop (cat/nested/loop -> cat), a link from cat into dog's folder, a second
    // link to a cat image, a broken link, and a linked folder from outside the root.
    symlink(root.join("cat"), root.join("cat/nested/loop")).unwrap();
    symlink(root.join("dog"), root.join("cat/dogs")).unwrap();
    symlink(root.join("cat/1.png"), root.join("cat/again.png")).unwrap();
    symlink(root.join("nowhere.png"), root.join("cat/broken.png")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    png(&outside.path().join("extra.png"), 20, 20, 9);
    symlink(outside.path(), root.join("bird/linked")).unwrap();
    let ds = Dataset::load(
        &SourceConfig::ImageFolder { path: root.into() },
        "data.train",
    )
    .unwrap();
    let s = ds.summary();
    // Each image once, under the class whose folder holds it; the outside folder
    // belongs to the class that links it.
    assert_eq!(s.per_class["bird"], 6);
    assert_eq!(s.per_class["cat"], 4);
    assert_eq!(s.per_class["dog"], 3);
    let reasons: Vec<String> = s
        .skipped
        .iter()
        .map(|(p, r)| format!("{}: {r}", p.display()))
        .collect();
    let has = |what: &str| reasons.iter().any(|r| r.contains(what));
    assert!(has("link loop"), "{reasons:?}");
    assert!(has("class \"dog\"'s folder"), "{reasons:?}");
    assert!(has("already counted"), "{reasons:?}");
    assert!(has("broken link"), "{reasons:?}");
}

#[test]
fn csv_manifest_resolves_paths_relative_to_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    let csv = dir.path().join("train.csv");
    std::fs::write(
        &csv,
        "path,label\ncat/1.png,cat\ndog/1.png,dog\n\"dog/2.png\",dog\n",
    )
    .unwrap();
    let ds = Dataset::load(&SourceConfig::csv(&csv), "data.train").unwrap();
    assert_eq!(ds.classes(), ["cat", "dog"]);
    assert_eq!((0..3).map(|i| ds.label(i)).collect::<Vec<_>>(), [0, 1, 1]);
    assert_eq!(ds.image(2).unwrap().width, 42);
    // An extra column and an empty label: errors naming the line, not a missing
    // file "cat/1.png,a" or a class "".
    for (text, line, what) in [
        (
            "path,label\ncat/1.png,cat\ncat/2.png,a,cat\n",
            3,
            "3 columns",
        ),
        ("path,label\ncat/1.png,cat\ncat/2.png,\n", 3, "empty label"),
    ] {
        std::fs::write(&csv, text).unwrap();
        let err = Dataset::load(&SourceConfig::csv(&csv), "data.train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("train.csv: line {line}")) && err.contains(what),
            "{err}"
        );
    }
    std::fs::write(&csv, "file,class\ncat/1.png,cat\n").unwrap();
    let err = Dataset::load(&SourceConfig::csv(&csv), "data.train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.csv: line 1") && err.contains("path,label"),
        "{err}"
    );
}

fn source(toml_text: &str) -> SourceConfig {
    toml::from_str(toml_text).unwrap()
}

fn load_err(cfg: &SourceConfig) -> String {
    Dataset::load(cfg, "data.train").unwrap_err().to_string()
}

/// Image-caption CSVs (open_clip's `filepath,title` files): quoted captions with
/// commas and quotes, tabs, captions with and without labels, and the errors.
#[test]
fn csv_captions_with_and_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    let csv = dir.path().join("pairs.csv");
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    std::fs::write(
        &csv,
        "filepath,title,label\n\
         cat/1.png,\"a cat, sitting\",cat\n\
         dog/1.png,\"a \"\"dog\"\"\",dog\n\
         cat/2.png,another cat,cat\n",
    )
    .unwrap();
    let both = source(&format!(
        "kind = \"csv\"\npath = {}\nimage_column = \"filepath\"\ncaption_column = \"title\"",
        q(&csv)
    ));
    let ds = Dataset::load(&both, "data.train").unwrap();
    assert_eq!(ds.classes(), ["cat", "dog"]);
    assert_eq!((0..3).map(|i| ds.label(i)).collect::<Vec<_>>(), [0, 1, 0]);
    assert_eq!(
        (0..3).map(|i| ds.caption(i).unwrap()).collect::<Vec<_>>(),
        ["a cat, sitting", "a \"dog\"", "another cat"]
    );
    assert_eq!(ds.image(1).unwrap().width, 41);
    assert_eq!(
        ds.summary().to_string(),
        "3 images with captions in 2 classes"
    );
    // Written as shards (`train-cli convert`): `.cls` labels and `.txt` captions,
    // read back the same.
    let shards = dir.path().join("shards");
    clip_data::write_webdataset(&ds, &shards, "pairs", 2, None).unwrap();
    let back = Dataset::load(
        &source(&format!(
            "kind = \"webdataset\"\npath = {}\ncaption_extension = \"txt\"\nclass_names = [\"cat\", \"dog\"]",
            q(&shards)
        )),
        "data.train",
    )
    .unwrap();
    assert_eq!(back.len(), 3);
    for i in 0..3 {
        assert_eq!(
            (back.label(i), back.caption(i)),
            (ds.label(i), ds.caption(i))
        );
        assert_eq!(back.image(i).unwrap().data, ds.image(i).unwrap().data);
    }
    // A split keeps each image's caption.
    let (train, val) = ds.split_stratified(0.34, 0).unwrap();
    for part in [&train, &val] {
        for i in 0..part.len() {
            let expected = if part.name(i).contains("dog") {
                "a \"dog\""
            } else {
                "cat"
            };
            assert!(
                part.caption(i).unwrap().contains(expected),
                "{:?}",
                part.caption(i)
            );
        }
    }

    // Tab-separated, no label column: image-caption pairs without classes.
    let tsv = dir.path().join("pairs.tsv");
    // (An Excel byte-order mark and a blank line are no rows.)
    std::fs::write(
        &tsv,
        "\u{feff}path\tcaption\ncat/1.png\ta cat, on a mat\n\ndog/2.png\ta dog\n",
    )
    .unwrap();
    let pairs = source(&format!(
        "kind = \"csv\"\npath = {}\ncaption_column = \"caption\"\ndelimiter = \"\\t\"",
        q(&tsv)
    ));
    let ds = Dataset::load(&pairs, "data.train").unwrap();
    assert!(!ds.has_labels() && ds.has_captions());
    assert_eq!(ds.classes().len(), 0);
    assert_eq!(ds.caption(0), Some("a cat, on a mat"));
    assert_eq!(ds.summary().to_string(), "2 images with captions");
    let (train, val) = ds.split_stratified(0.5, 0).unwrap();
    assert_eq!((train.len(), val.len()), (1, 1));
    // Plain path,label CSVs have no captions.
    let plain = dir.path().join("plain.csv");
    std::fs::write(&plain, "path,label\ncat/1.png,cat\n").unwrap();
    let ds = Dataset::load(&SourceConfig::csv(&plain), "data.train").unwrap();
    assert!(ds.has_labels() && !ds.has_captions() && ds.caption(0).is_none());

    // Errors name the file, the line and the column.
    let err = load_err(&source(&format!(
        "kind = \"csv\"\npath = {}\ncaption_column = \"text\"",
        q(&tsv)
    )));
    assert!(
        err.contains("pairs.tsv: line 1") && err.contains("no image column `path`"),
        "{err}"
    );
    let err = load_err(&source(&format!(
        "kind = \"csv\"\npath = {}\ncaption_column = \"text\"\ndelimiter = \"\\t\"",
        q(&tsv)
    )));
    assert!(
        err.contains("no caption column `text`") && err.contains("path,caption"),
        "{err}"
    );
    std::fs::write(&tsv, "path\tcaption\ncat/1.png\ta cat\ndog/2.png\t\n").unwrap();
    let err = load_err(&pairs);
    assert!(
        err.contains("pairs.tsv: line 3") && err.contains("an empty caption"),
        "{err}"
    );
    let err = load_err(&source(&format!(
        "kind = \"csv\"\npath = {}\ndelimiter = \";;\"",
        q(&tsv)
    )));
    assert!(err.contains("data.train.delimiter"), "{err}");
}

/// open_clip's shards: `key.jpg` + `key.txt` captions, with or without `.cls`.
#[test]
fn webdataset_captions_with_and_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut png_bytes = Vec::new();
    image::RgbImage::from_pixel(6, 4, image::Rgb([9, 8, 7]))
        .write_to(
            &mut std::io::Cursor::new(&mut png_bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    let shard = |name: &str, members: &[(&str, &[u8])]| {
        let path = dir.path().join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (member, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, member, *bytes).unwrap();
        }
        b.finish().unwrap();
        path.display().to_string()
    };
    let pairs = shard(
        "pairs.tar",
        &[
            ("a.png", &png_bytes),
            ("a.txt", b"a photo of a red square\n"),
            ("b.png", &png_bytes),
            ("b.txt", b"two squares"),
            ("c.png", &png_bytes),
        ],
    );
    let cfg = |path: &str, ext: &str| {
        source(&format!(
            "kind = \"webdataset\"\npath = {path:?}\ncaption_extension = {ext:?}"
        ))
    };
    let ds = Dataset::load(&cfg(&pairs, "txt"), "data.train").unwrap();
    assert!(!ds.has_labels());
    assert_eq!(
        (0..ds.len())
            .map(|i| ds.caption(i).unwrap())
            .collect::<Vec<_>>(),
        ["a photo of a red square", "two squares"]
    );
    assert_eq!(ds.image(1).unwrap().width, 6);
    assert!(
        ds.summary()
            .skipped
            .iter()
            .any(|(p, why)| p.ends_with("pairs.tar:c") && why.contains("no caption member (.txt)")),
        "{:?}",
        ds.summary().skipped
    );
    // Without caption_extension the same .txt members are class names.
    let names = Dataset::load(
        &source(&format!("kind = \"webdataset\"\npath = {pairs:?}")),
        "data.train",
    )
    .unwrap();
    assert_eq!(names.classes(), ["a photo of a red square", "two squares"]);
    assert!(!names.has_captions());

    // Captions and labels; a sample without a label while others have one is left out.
    let labelled = shard(
        "labelled.tar",
        &[
            ("a.png", &png_bytes),
            ("a.txt", b"first"),
            ("a.cls", b"1"),
            ("b.png", &png_bytes),
            ("b.txt", b"second"),
            ("b.cls", b"0"),
            ("c.png", &png_bytes),
            ("c.txt", b"no label"),
        ],
    );
    let ds = Dataset::load(&cfg(&labelled, ".txt"), "data.train").unwrap();
    assert_eq!(ds.classes(), ["0", "1"]);
    assert_eq!((0..2).map(|i| ds.label(i)).collect::<Vec<_>>(), [1, 0]);
    assert_eq!(ds.caption(1), Some("second"));
    assert!(
        ds.summary()
            .skipped
            .iter()
            .any(|(p, why)| p.ends_with("labelled.tar:c")
                && why.contains("while other samples have one")),
        "{:?}",
        ds.summary().skipped
    );
    let err = load_err(&cfg(&labelled, "caption"));
    assert!(
        err.contains("no sample with an image and a caption (key.jpg + key.caption)"),
        "{err}"
    );
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(data);
    v
}

#[test]
fn idx_files_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    std::fs::write(
        dir.path().join("images.idx"),
        idx_bytes(&[3, 4, 5], &pixels),
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&idx_bytes(&[3], &[2, 0, 1])).unwrap();
    std::fs::write(dir.path().join("labels.idx.gz"), gz.finish().unwrap()).unwrap();
    let cfg = SourceConfig::Idx {
        images: dir.path().join("images.idx"),
        labels: dir.path().join("labels.idx.gz"),
        class_names: None,
    };
    let ds = Dataset::load(&cfg, "data.train").unwrap();
    assert_eq!(ds.classes(), ["0", "1", "2"]);
    assert_eq!(ds.label(0), 2);
    let img = ds.image(1).unwrap();
    assert_eq!((img.width, img.height), (5, 4));
    assert_eq!(img.pixel(0, 0), [20, 20, 20]);
    std::fs::write(dir.path().join("labels.idx.gz"), idx_bytes(&[2], &[0, 1])).unwrap();
    let err = Dataset::load(&cfg, "data.train").unwrap_err().to_string();
    assert!(err.contains("do not match"), "{err}");
    // A header whose dimensions multiply past usize: an error naming the file, no
    // overflow panic.
    let huge = u32::MAX;
    std::fs::write(
        dir.path().join("images.idx"),
        idx_bytes(&[huge, huge, huge], &[]),
    )
    .unwrap();
    let err = Dataset::load(&cfg, "data.train").unwrap_err().to_string();
    assert!(
        err.contains("images.idx") && err.contains("overflow"),
        "{err}"
    );
}

#[test]
fn debian_fashion_mnist_loads() {
    let root = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        root.is_dir(),
        "{} missing: run scripts/setup.sh (installs dataset-fashion-mnist)",
        root.display()
    );
    let ds = Dataset::load(
        &SourceConfig::Idx {
            images: root.join("t10k-images-idx3-ubyte.gz"),
            labels: root.join("t10k-labels-idx1-ubyte.gz"),
            class_names: Some(
                clip_data::FASHION_MNIST_CLASSES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        },
        "data.train",
    )
    .unwrap();
    let s = ds.summary();
    assert_eq!((s.images, s.classes), (10_000, 10));
    assert!(s.per_class.values().all(|&n| n == 1000));
    let (train, val) = ds.split_stratified(0.1, 7).unwrap();
    assert_eq!((train.len(), val.len()), (9000, 1000));
    assert!(val.summary().per_class.values().all(|&n| n == 100));
}

#[test]
fn batches_do_not_depend_on_threads_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let cfg = |threads| LoaderConfig {
        batch_size: 5,
        threads,
        ..LoaderConfig::default()
    };
    let one = Loader::new(ds.clone(), train_pipeline(), cfg(1), 42).unwrap();
    let two = Loader::new(ds.clone(), train_pipeline(), cfg(2), 42).unwrap();
    assert_eq!(one.batches_per_epoch(), 3);
    let a: Vec<_> = one.epoch(3, 0).map(Result::unwrap).collect();
    let b: Vec<_> = two.epoch(3, 0).map(Result::unwrap).collect();
    assert_eq!(a, b, "batches must not depend on the number of threads");
    assert_eq!(a.iter().map(|b| b.len()).collect::<Vec<_>>(), [5, 5, 2]);
    assert_eq!(a[0].images_f32().unwrap().len(), 5 * 3 * 24 * 24);
    let resumed: Vec<_> = one.epoch(3, 1).map(Result::unwrap).collect();
    assert_eq!(
        resumed,
        a[1..],
        "a resumed epoch continues with the same samples"
    );
    let other_epoch: Vec<_> = one.epoch(4, 0).map(Result::unwrap).collect();
    assert_ne!(other_epoch[0].images, a[0].images);
    // Every sample appears once per epoch.
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    // Dropping mid-epoch stops the prefetch thread.
    let mut it = one.epoch(5, 0);
    assert!(it.next().unwrap().is_ok());
    drop(it);
}

#[test]
fn sharded_batches_are_the_single_process_batches_split_over_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path()); // 12 images
    let cfg = |batch_size| LoaderConfig {
        batch_size,
        threads: 1,
        ..LoaderConfig::default()
    };
    // 3 ranks x batch 3 = global batch 9, against one process with batch 9.
    let single = Loader::new(ds.clone(), train_pipeline(), cfg(9), 7).unwrap();
    let whole: Vec<_> = single.epoch(2, 0).map(Result::unwrap).collect();
    assert_eq!(whole.iter().map(|b| b.len()).collect::<Vec<_>>(), [9, 3]);
    let per = 3 * 24 * 24;
    let ranks: Vec<Vec<_>> = (0..3)
        .map(|r| {
            let l = Loader::new(ds.clone(), train_pipeline(), cfg(3), 7)
                .unwrap()
                .sharded(r, 3)
                .unwrap();
            assert_eq!(l.batches_per_epoch(), 2);
            l.epoch(2, 0).map(Result::unwrap).collect()
        })
        .collect();
    for (k, global) in whole.iter().enumerate() {
        let mut indices = Vec::new();
        let mut pixels = Vec::new();
        for rank in &ranks {
            let b = &rank[k];
            assert_eq!(b.global_len, global.len());
            assert!(!b.placeholder);
            indices.extend(b.indices.clone());
            pixels.extend_from_slice(b.images_f32().unwrap());
        }
        // The union, in rank order, is the single-process batch, pixel for pixel
        // (draws come from (seed, epoch, index), not from the rank).
        assert_eq!(indices, global.indices, "global batch {k}");
        assert_eq!(pixels.len(), global.len() * per);
        assert!(
            pixels == global.images_f32().unwrap(),
            "pixels of batch {k}"
        );
    }
    // The last global batch (3 samples) gives each of the 3 ranks one.
    assert_eq!(
        ranks.iter().map(|r| r[1].len()).collect::<Vec<_>>(),
        [1, 1, 1]
    );

    // 5 ranks x batch 2 = 10: the last global batch has 2 samples for 5 ranks;
    // ranks without a share get a placeholder that counts for nothing.
    let last: Vec<_> = (0..5)
        .map(|r| {
            let l = Loader::new(ds.clone(), train_pipeline(), cfg(2), 7)
                .unwrap()
                .sharded(r, 5)
                .unwrap();
            l.epoch(0, 1).map(Result::unwrap).next().unwrap()
        })
        .collect();
    assert_eq!(
        last.iter().map(|b| b.counted()).collect::<Vec<_>>(),
        [0, 0, 1, 0, 1]
    );
    assert!(last.iter().all(|b| b.global_len == 2 && b.len() == 1));
    assert!(last[0].placeholder && !last[2].placeholder);
    assert!(
        Loader::new(ds, train_pipeline(), cfg(2), 7)
            .unwrap()
            .sharded(2, 2)
            .is_err()
    );
}

#[test]
fn balanced_sampling_and_drop_last() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let cfg = LoaderConfig {
        batch_size: 5,
        balanced: true,
        drop_last: true,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds.clone(), Pipeline::clip_eval(16), cfg, 1).unwrap();
    assert_eq!(loader.batches_per_epoch(), 2);
    let mut counts = [0usize; 3];
    for e in 0..200 {
        for i in loader.epoch_order(e) {
            counts[ds.label(i)] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    for c in counts {
        let share = c as f64 / total as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.03, "class share {share}");
    }
}

#[test]
fn a_corrupt_image_is_an_error_naming_the_file_or_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    std::fs::write(dir.path().join("dog/broken.png"), b"\x89PNG garbage").unwrap();
    let ds = Dataset::load(
        &SourceConfig::ImageFolder {
            path: dir.path().into(),
        },
        "data.train",
    )
    .unwrap();
    let cfg = |on_corrupt| LoaderConfig {
        shuffle: false,
        batch_size: 13,
        on_corrupt,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(
        ds.clone(),
        Pipeline::clip_eval(16),
        cfg(clip_data::OnCorrupt::Error),
        0,
    )
    .unwrap();
    let err = loader.epoch(0, 0).next().unwrap().unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
    let loader = Loader::new(
        ds,
        Pipeline::clip_eval(16),
        cfg(clip_data::OnCorrupt::Skip),
        0,
    )
    .unwrap();
    let batch = loader.epoch(0, 0).next().unwrap().unwrap();
    assert_eq!(batch.len(), 13);
    assert_eq!(batch.replaced.len(), 1);
    assert!(batch.replaced[0].name.ends_with("broken.png"));
    // Its class: dog (bird, cat, dog).
    assert_eq!(batch.replaced[0].label, 2);
}

#[test]
fn bad_transform_configs_name_their_position() {
    let err = Pipeline::new(
        vec![
            TransformConfig::RandomHorizontalFlip { p: 1.5 },
            TransformConfig::Normalize {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            TransformConfig::CenterCrop {
                size: clip_data::Size::One(8),
                convention: Default::default(),
            },
        ],
        "data.train_transforms",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("data.train_transforms[0].p"), "{err}");
    assert!(err.contains("data.train_transforms[2].op"), "{err}");
    let parsed =
        toml::from_str::<toml::Table>("t = [{ op = \"center_crop\", size = 8, sise = 3 }]")
            .unwrap()["t"]
            .clone()
            .try_into::<Vec<TransformConfig>>();
    assert!(parsed.unwrap_err().to_string().contains("sise"));
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let flip_only =
        Pipeline::new(vec![TransformConfig::RandomHorizontalFlip { p: 0.5 }], "t").unwrap();
    let no_size = Loader::new(ds, flip_only, LoaderConfig::default(), 0);
    assert!(no_size.unwrap_err().to_string().contains("fixed size"));
}

#[cfg(feature = "tch")]
#[test]
fn batches_become_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let loader = Loader::new(
        ds,
        Pipeline::clip_eval(16),
        LoaderConfig {
            batch_size: 4,
            ..LoaderConfig::default()
        },
        0,
    )
    .unwrap();
    let batch = loader.epoch(0, 0).next().unwrap().unwrap();
    let (x, y) = batch.to_tensors(tch::Device::Cpu);
    assert_eq!(x.size(), [4, 3, 16, 16]);
    // The same batch as bytes, normalised by to_tensors: identical floats.
    let bytes = Loader::new(
        loader.dataset().clone(),
        Pipeline::clip_eval(16),
        LoaderConfig {
            batch_size: 4,
            output: Output::U8,
            ..LoaderConfig::default()
        },
        0,
    )
    .unwrap();
    let (xu, _) = bytes
        .epoch(0, 0)
        .next()
        .unwrap()
        .unwrap()
        .to_tensors(tch::Device::Cpu);
    assert_eq!(xu.kind(), tch::Kind::Float);
    assert!(xu.equal(&x), "u8 batch normalised on the device differs");
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), batch.labels);
    assert_eq!(
        x.double_value(&[1, 2, 3, 4]) as f32,
        batch.images_f32().unwrap()[3 * 256 + 2 * 256 + 3 * 16 + 4]
    );
}

/// Batches uploaded ahead (`DeviceBatches::prefetch`, called at any point) are the
/// epoch's batches in its order, as tensors.
#[cfg(feature = "tch")]
#[test]
fn prefetched_device_batches_are_the_epoch_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let cfg = LoaderConfig {
        batch_size: 3,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds, train_pipeline(), cfg, 5).unwrap();
    let plain: Vec<(Vec<i64>, tch::Tensor)> = loader
        .epoch(1, 1)
        .map(|b| {
            let b = b.unwrap();
            let (x, _) = b.to_tensors(tch::Device::Cpu);
            (b.labels.clone(), x)
        })
        .collect();
    assert!(plain.len() >= 3);
    let mut it = clip_data::DeviceBatches::new(loader.epoch(1, 1), tch::Device::Cpu);
    assert_eq!(it.waited(), std::time::Duration::ZERO);
    it.prefetch();
    // The first batch had to be waited for (the loader thread had just started).
    let first_wait = it.waited();
    assert!(first_wait > std::time::Duration::ZERO);
    it.prefetch();
    assert_eq!(
        it.waited(),
        first_wait,
        "a waiting batch is not fetched again"
    );
    let mut got = Vec::new();
    while let Some(b) = it.next() {
        let b = b.unwrap();
        if got.len() % 2 == 0 {
            it.prefetch();
        }
        assert_eq!(Vec::<i64>::try_from(&b.labels).unwrap(), b.batch.labels);
        got.push((b.batch.labels.clone(), b.images));
    }
    it.prefetch();
    assert!(it.next().is_none());
    assert_eq!(got.len(), plain.len());
    for ((la, xa), (lb, xb)) in plain.iter().zip(&got) {
        assert_eq!(la, lb);
        assert!(xa.equal(xb));
    }
}

/// `output = "u8"` batches hold the same samples as byte planes that the batch's
/// `normalize` maps exactly onto the f32 batch; erasing and mixing need f32.
#[test]
fn u8_batches_normalise_to_the_f32_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let cfg = |output| LoaderConfig {
        batch_size: 5,
        output,
        ..LoaderConfig::default()
    };
    let f = Loader::new(ds.clone(), train_pipeline(), cfg(Output::F32), 3).unwrap();
    let u = Loader::new(ds.clone(), train_pipeline(), cfg(Output::U8), 3).unwrap();
    let (bf, bu) = (
        f.make_batch(2, 0, &[0, 4, 7]).unwrap(),
        u.make_batch(2, 0, &[0, 4, 7]).unwrap(),
    );
    let Pixels::U8(bytes) = &bu.images else {
        panic!("u8 loader gave {:?}", bu.images);
    };
    let (scale, bias) = bu.normalize;
    let plane = bu.height * bu.width;
    let mapped: Vec<f32> = bytes
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / plane % 3;
            v as f32 * scale[c] + bias[c]
        })
        .collect();
    assert_eq!(mapped, bf.images_f32().unwrap());
    assert_eq!(bu.labels, bf.labels);
    let erasing = Pipeline::new(
        vec![
            TransformConfig::CenterCrop {
                size: clip_data::Size::One(8),
                convention: Default::default(),
            },
            TransformConfig::RandomErasing {
                p: 0.5,
                scale: [0.02, 0.3],
                ratio: [0.3, 3.3],
                value: 0.0,
            },
        ],
        "t",
    )
    .unwrap();
    let err = Loader::new(ds, erasing, cfg(Output::U8), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.loader.output"), "{err}");
}

#[test]
fn mixing_and_erasing_are_deterministic_and_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let ds = folder_dataset(dir.path());
    let mut ops = Pipeline::clip_eval(16).ops().to_vec();
    ops.push(TransformConfig::RandomErasing {
        p: 1.0,
        scale: [0.1, 0.3],
        ratio: [0.5, 2.0],
        value: 7.0,
    });
    let pipeline = Pipeline::new(ops, "data.train_transforms").unwrap();
    let cfg = |threads| LoaderConfig {
        batch_size: 6,
        threads,
        mix: clip_data::MixConfig {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            ..clip_data::MixConfig::default()
        },
        ..LoaderConfig::default()
    };
    let a: Vec<_> = Loader::new(ds.clone(), pipeline.clone(), cfg(1), 9)
        .unwrap()
        .epoch(0, 0)
        .map(Result::unwrap)
        .collect();
    let b: Vec<_> = Loader::new(ds.clone(), pipeline.clone(), cfg(2), 9)
        .unwrap()
        .epoch(0, 0)
        .map(Result::unwrap)
        .collect();
    assert_eq!(a, b);
    for batch in &a {
        let t = batch.targets.as_ref().unwrap();
        assert_eq!(t.len(), batch.len() * 3);
        for row in t.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
    // Erasing without mixing: each image holds a rectangle of exactly 7.0.
    let plain = LoaderConfig {
        batch_size: 12,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(ds, pipeline, plain, 0).unwrap();
    let batch = loader.epoch(0, 0).next().unwrap().unwrap();
    for img in batch.images_f32().unwrap().chunks(3 * 256) {
        let erased = img.iter().filter(|v| **v == 7.0).count();
        assert!(
            (3 * 256 / 20..=3 * 256 / 2).contains(&erased),
            "{erased} erased values"
        );
    }
}

fn ops_from_toml(src: &str) -> Vec<TransformConfig> {
    toml::from_str::<toml::Table>(src).unwrap()["t"]
        .clone()
        .try_into()
        .unwrap()
}

/// TrivialAugmentWide and RandAugment parse with torchvision's defaults, reject
/// bad settings naming the key, and draw from the sample's address: the same
/// (seed, epoch, index) gives the same image, other addresses other operations.
#[test]
fn automatic_augmentation_policies_are_configured_and_deterministic() {
    let ops = ops_from_toml(
        "t = [{ op = \"trivial_augment_wide\" }, { op = \"rand_augment\", num_ops = 3 }]",
    );
    assert_eq!(
        ops[0],
        TransformConfig::TrivialAugmentWide {
            num_magnitude_bins: 31,
            interpolation: clip_data::Interpolation::Nearest,
            fill: [0; 3],
        }
    );
    assert!(matches!(
        ops[1],
        TransformConfig::RandAugment {
            num_ops: 3,
            magnitude: 9,
            num_magnitude_bins: 31,
            ..
        }
    ));
    let err = Pipeline::new(
        ops_from_toml(
            "t = [{ op = \"rand_augment\", magnitude = 31 }, \
             { op = \"trivial_augment_wide\", interpolation = \"bicubic\", num_magnitude_bins = 1 }]",
        ),
        "data.train_transforms",
    )
    .unwrap_err()
    .to_string();
    for key in [
        "data.train_transforms[0].magnitude",
        "data.train_transforms[1].interpolation",
        "data.train_transforms[1].num_magnitude_bins",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }

    let img = RgbImage {
        width: 40,
        height: 30,
        data: (0..40 * 30 * 3).map(|i| (i * 37 % 251) as u8).collect(),
    };
    for policy in ops {
        let p = Pipeline::new(vec![policy.clone()], "t").unwrap();
        let run = |index| p.apply_u8(img.clone(), &mut SampleRng::new(7, 1, index));
        assert_eq!(run(3), run(3), "{policy:?} is not deterministic");
        let distinct: std::collections::HashSet<Vec<u8>> = (0..40).map(|i| run(i).data).collect();
        assert!(
            distinct.len() > 10,
            "{policy:?}: only {} distinct",
            distinct.len()
        );
    }
}

/// `data.loader.decode = "draft"`: how far each pipeline lets an image shrink, and
/// a large JPEG decoded at 1/4 scale close to the full decode averaged over 4x4
/// blocks; anything the pipeline does not let shrink 4x, and other formats,
/// decode exactly.
#[test]
fn draft_decoding_shrinks_large_jpegs_only_as_far_as_the_pipeline_allows() {
    let eval = Pipeline::clip_eval(224);
    assert_eq!(eval.draft_reduction(3840, 2560), 11); // 2560 / 224
    assert_eq!(eval.draft_reduction(500, 375), 1);
    // RandomResizedCrop(224, scale 0.8, ratio 3/4..4/3): the smallest crop's
    // shorter side is sqrt(0.8 x w x h x 3/4).
    let train = Pipeline::tutorial_train(224, Normalize::imagenet());
    assert_eq!(train.draft_reduction(1024, 768), 3); // 687 / 224 = 3.07
    assert_eq!(train.draft_reduction(3840, 2560), 10); // 2429 / 224
    let crop_first = Pipeline::new(
        vec![TransformConfig::CenterCrop {
            size: Size::One(224),
            convention: Default::default(),
        }],
        "t",
    )
    .unwrap();
    assert_eq!(crop_first.draft_reduction(3840, 2560), 1);

    // A smooth 1024x768 photo-like JPEG.
    let (w, h) = (1024usize, 768usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let f = |a: f64| (127.5 + 100.0 * a.sin()) as u8;
            rgb.extend([
                f(x as f64 / 97.0),
                f(y as f64 / 61.0),
                f((x + y) as f64 / 143.0),
            ]);
        }
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92)
        .encode(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .unwrap();
    let full = RgbImage::decode(&jpeg).unwrap();
    let quarter = RgbImage::decode_draft(&jpeg, |_, _| 5).unwrap();
    assert_eq!((quarter.width, quarter.height), (256, 192));
    let mut diff = 0.0;
    for y in 0..192 {
        for x in 0..256 {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..4 {
                    for dx in 0..4 {
                        sum += u32::from(full.data[((4 * y + dy) * w + 4 * x + dx) * 3 + c]);
                    }
                }
                let box_avg = f64::from(sum) / 16.0;
                diff += (box_avg - f64::from(quarter.data[(y * 256 + x) * 3 + c])).abs();
            }
        }
    }
    let mean = diff / (256.0 * 192.0 * 3.0);
    assert!(mean < 1.5, "mean difference {mean} levels");
    let eighth = RgbImage::decode_draft(&jpeg, |_, _| 100).unwrap();
    assert_eq!((eighth.width, eighth.height), (128, 96));
    // 2x or 3x allowed: half of each side (libjpeg's 1/2 scale); less: the exact
    // decode.
    let half = RgbImage::decode_draft(&jpeg, |_, _| 3).unwrap();
    assert_eq!((half.width, half.height), (512, 384));
    assert_eq!(RgbImage::decode_draft(&jpeg, |_, _| 1).unwrap(), full);
    // The loader decodes at the reduced scale when asked (a 64 px model: 1/8).
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        std::fs::write(dir.path().join(class).join("0.jpg"), &jpeg).unwrap();
    }
    let src = SourceConfig::ImageFolder {
        path: dir.path().to_path_buf(),
    };
    let ds = Dataset::load(&src, "data.train").unwrap();
    let batch = |decode| {
        let cfg = LoaderConfig {
            batch_size: 2,
            shuffle: false,
            decode,
            ..LoaderConfig::default()
        };
        let l = Loader::new(ds.clone(), Pipeline::clip_eval(64), cfg, 0).unwrap();
        let b = l.epoch(0, 0).next().unwrap().unwrap();
        b.images_f32().unwrap().to_vec()
    };
    let (exact, draft) = (
        batch(clip_data::Decode::Exact),
        batch(clip_data::Decode::Draft),
    );
    assert_eq!(exact.len(), 2 * 3 * 64 * 64);
    let d: f64 = exact
        .iter()
        .zip(&draft)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum::<f64>()
        / exact.len() as f64;
    // Different pixels (the draft path ran), yet close (normalised units; 0.05 is
    // about 3 levels).
    assert!(d > 1e-4 && d < 0.05, "mean difference {d}");

    // Other formats decode in full.
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    assert_eq!(
        RgbImage::decode_draft(&png, |_, _| 8).unwrap(),
        RgbImage::decode(&png).unwrap()
    );
}

/// Classes matched by name to a model's: another order and a subset relabel;
/// folder names stand for names with `/` as `%2F` or (when unambiguous) `_`; a
/// class the model lacks is an error naming it.
#[test]
fn with_classes_matches_by_name_and_maps_slashes() {
    let tmp = tempfile::tempdir().unwrap();
    for (class, n) in [("T-shirt_top", 2), ("Bag", 1), ("Ankle boot%2FX", 3)] {
        for i in 0..n {
            png(&tmp.path().join(class).join(format!("{i}.png")), 8, 8, 0);
        }
    }
    let ds = Dataset::load(
        &SourceConfig::ImageFolder {
            path: tmp.path().into(),
        },
        "--data",
    )
    .unwrap();
    let target: Vec<String> = ["T-shirt/top", "Trouser", "Ankle boot/X", "Bag"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let m = ds.with_classes(&target, "--data").unwrap();
    assert_eq!(m.classes(), target.as_slice());
    let labels: Vec<(String, usize)> = (0..m.len())
        .map(|i| {
            let name = m.name(i);
            let class = Path::new(&name).parent().unwrap().file_name().unwrap();
            (class.to_string_lossy().to_string(), m.label(i))
        })
        .collect();
    for (class, label) in labels {
        let want = match class.as_str() {
            "T-shirt_top" => 0,
            "Ankle boot%2FX" => 2,
            "Bag" => 3,
            c => panic!("{c}"),
        };
        assert_eq!(label, want, "{class}");
    }
    // `_` for `/` only when one class fits it: `a_b_c` could be `a/b_c` or `a_b/c`.
    let tmp = tempfile::tempdir().unwrap();
    png(&tmp.path().join("a_b_c/0.png"), 8, 8, 0);
    let ds = Dataset::load(
        &SourceConfig::ImageFolder {
            path: tmp.path().into(),
        },
        "--data",
    )
    .unwrap();
    let ambiguous: Vec<String> = vec!["a/b_c".into(), "a_b/c".into()];
    let err = ds
        .with_classes(&ambiguous, "--data")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`--data`") && err.contains("1 of its classes") && err.contains("\"a_b_c\""),
        "{err}"
    );
    assert_eq!(
        ds.with_classes(&ambiguous[..1], "--data")
            .unwrap()
            .classes(),
        &ambiguous[..1]
    );
}

/// Runs `script` with the setup venv's Python, `dir` its one argument.
fn venv_python(script: &str, dir: &Path) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(python.is_file(), "run scripts/setup.sh");
    let o = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Hugging Face image-caption datasets as Parquet (pyarrow, as `datasets` writes
/// them): a caption column, with or without a label column; a row without a
/// caption is left out and named.
#[test]
fn parquet_captions_with_and_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import io, sys
import pyarrow as pa, pyarrow.parquet as pq
from PIL import Image
def png(shade):
    b = io.BytesIO()
    Image.new("RGB", (5, 3), (shade, 0, 0)).save(b, format="PNG")
    return {"bytes": b.getvalue(), "path": None}
images = [png(s) for s in (10, 20, 30)]
pq.write_table(pa.table({"image": images, "text": ["a red thing", None, "darker, red"]}),
               sys.argv[1] + "/pairs.parquet", row_group_size=2)
pq.write_table(pa.table({"image": images, "label": [1, 0, 1], "caption": ["x", "y", "z"]}),
               sys.argv[1] + "/labelled.parquet")
# Several captions per image, as the Hub's Flickr30k: a list column.
pq.write_table(pa.table({"image": images, "label": [1, 0, 1],
                         "captions": [["a red thing", " ", "crimson"], [], ["dark red"]]}),
               sys.argv[1] + "/lists.parquet", row_group_size=2)
"#;
    venv_python(script, dir.path());
    // A Parquet source entry: `file` in the test folder, then `rest`.
    let parquet = |file: &str, rest: &str| {
        let path = dir.path().join(file).display().to_string();
        source(&format!("kind = \"parquet\"\npath = {path:?}\n{rest}"))
    };
    let ds = Dataset::load(
        &parquet("pairs.parquet", "caption_column = \"text\""),
        "data.train",
    )
    .unwrap();
    assert!(!ds.has_labels());
    assert_eq!(
        (0..ds.len())
            .map(|i| ds.caption(i).unwrap())
            .collect::<Vec<_>>(),
        ["a red thing", "darker, red"]
    );
    assert_eq!(ds.image(1).unwrap().data[0], 30);
    let skipped = ds.summary().skipped;
    assert!(
        skipped.len() == 1
            && skipped[0]
                .0
                .to_string_lossy()
                .ends_with("pairs.parquet:row 1")
            && skipped[0].1.contains("no caption in \"text\""),
        "{skipped:?}"
    );
    let ds = Dataset::load(
        &parquet(
            "labelled.parquet",
            "caption_column = \"caption\"\nclass_names = [\"a\", \"b\"]",
        ),
        "data.train",
    )
    .unwrap();
    assert_eq!(ds.classes(), ["a", "b"]);
    assert_eq!((0..3).map(|i| ds.label(i)).collect::<Vec<_>>(), [1, 0, 1]);
    assert_eq!(ds.caption(2), Some("z"));
    // A list of captions: a sample per (non-blank) caption, all naming their row
    // (retrieval's one image); a row with none is left out and named.
    let ds = Dataset::load(
        &parquet(
            "lists.parquet",
            "caption_column = \"captions\"\nclass_names = [\"a\", \"b\"]",
        ),
        "data.train",
    )
    .unwrap();
    assert_eq!(
        (0..ds.len())
            .map(|i| (
                ds.caption(i).unwrap(),
                ds.label(i),
                ds.image(i).unwrap().data[0]
            ))
            .collect::<Vec<_>>(),
        [
            ("a red thing", 1, 10),
            ("crimson", 1, 10),
            ("dark red", 1, 30)
        ]
    );
    assert_eq!(ds.name(0), ds.name(1));
    assert!(ds.name(1) != ds.name(2) && ds.name(2).ends_with("lists.parquet:row 2"));
    let skipped = ds.summary().skipped;
    assert!(
        skipped.len() == 1
            && skipped[0]
                .0
                .to_string_lossy()
                .ends_with("lists.parquet:row 1"),
        "{skipped:?}"
    );
    let err = load_err(&parquet("labelled.parquet", "caption_column = \"title\""));
    assert!(
        err.contains("data.train.caption_column") && err.contains("image, label, caption"),
        "{err}"
    );
}

/// Row groups of one Parquet file read from many threads at once (as the
/// loader's workers do) give each row its own image: the file's readers must not
/// share a file offset.
#[test]
fn parquet_row_groups_read_concurrently_are_each_rows_own() {
    let dir = tempfile::tempdir().unwrap();
    // Noisy PNGs (tens of KB, so reads are not one syscall), one row per group.
    let script = r#"
import io, sys
import numpy as np
import pyarrow as pa, pyarrow.parquet as pq
from PIL import Image
rng = np.random.default_rng(0)
def png(i):
    a = rng.integers(0, 256, (48, 64 + i % 7, 3), dtype=np.uint8)
    a[0, 0] = (i % 256, i // 256, 7)
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    return {"bytes": b.getvalue(), "path": None}
n = 160
pq.write_table(pa.table({"image": [png(i) for i in range(n)], "label": [i % 3 for i in range(n)]}),
               sys.argv[1] + "/noisy.parquet", row_group_size=1)
"#;
    venv_python(script, dir.path());
    let config = source(&format!(
        "kind = \"parquet\"\npath = {:?}\nclass_names = [\"a\", \"b\", \"c\"]",
        dir.path().join("noisy.parquet").display().to_string()
    ));
    let ds = Dataset::load(&config, "data.train").unwrap();
    let n = ds.len();
    assert_eq!(n, 160);
    let stamp = |img: &RgbImage| {
        (
            img.data[0] as usize + 256 * img.data[1] as usize,
            img.data[2],
        )
    };
    for round in 0..4 {
        // A fresh dataset each round: nothing cached, every group read once,
        // eight threads reading different groups at the same time.
        let ds = Dataset::load(&config, "data.train").unwrap();
        let threads = 8;
        std::thread::scope(|s| {
            for t in 0..threads {
                let ds = &ds;
                s.spawn(move || {
                    for k in 0..n {
                        let i = (k * threads + t + round) % n;
                        let img = ds
                            .image(i)
                            .unwrap_or_else(|e| panic!("row {i}, thread {t}: {e}"));
                        assert_eq!(stamp(&img), (i, 7), "row {i}, thread {t}");
                    }
                });
            }
        });
    }
}
