//! The run of the training-step fixtures (scripts/gen_train_fixtures.py), shared
//! by the trainer's parity tests and the data-parallel ones (included with
//! `#[path = "../../../tests/support/train_step.rs"] mod train_step;`).

use std::path::{Path, PathBuf};

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The fixtures' run config: tiny-a with its zero-shot head, the ten images of
/// `train_step/images` in folder order (also the validation data), `batch_size`
/// per rank, `grad_accum = 3`, label smoothing 0.1, on the CPU, its folder
/// `out/<name>`; `run`, `train` and `more` are TOML lines added to `[run]`, to
/// `[train]` and after it.
pub fn config(out: &Path, name: &str, batch_size: usize, [run, train, more]: [&str; 3]) -> String {
    let images = fixtures().join("train_step/images").display().to_string();
    format!(
        r#"
        [run]
        name = {name:?}
        output_dir = {out:?}
        device = "cpu"
        {run}
        [model]
        pretrained = {model:?}
        [model.head]
        init = "zero_shot"
        templates = ["a photo of a {{}}."]
        [data]
        train = {{ kind = "image_folder", path = {images:?} }}
        val = {{ kind = "image_folder", path = {images:?} }}
        train_transforms = [{{ op = "center_crop", size = 32 }}, {{ op = "normalize" }}]
        [data.loader]
        batch_size = {batch_size}
        shuffle = false
        threads = 1
        [train]
        grad_accum = 3
        label_smoothing = 0.1
        {train}
        {more}
        "#,
        out = out.display().to_string(),
        model = fixtures().join("model/tiny-a").display().to_string(),
    )
}
