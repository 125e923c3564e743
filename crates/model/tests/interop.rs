//! Interop with transformers: checkpoints saved here load in
//! `transformers.CLIPModel.from_pretrained` with no missing keys and give the same
//! logits. Writes the exports, then runs scripts/check_model_interop.py with the
//! setup venv's Python (scripts/setup.sh creates it; libtorch comes from it too).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use clip_model::{ClipClassifier, ClipConfig, ClipModel, HeadConfig, write_safetensors};
use tch::{Kind, Tensor, nn::VarStore};

#[test]
fn rust_exports_load_in_transformers_with_identical_outputs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();

    tch::manual_seed(7);
    let mut cfg = ClipConfig::tiny();
    cfg.text_config.vocab_size = 1000;
    cfg.text_config.bos_token_id = 998;
    cfg.text_config.eos_token_id = 999;
    cfg.text_config.pad_token_id = 999;
    let vs = VarStore::new(tch::Device::Cpu);
    let model = ClipModel::new(&vs.root(), &cfg).unwrap();
    let pixels = Tensor::randn([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let ids = Tensor::from_slice(&[998i64, 5, 17, 999, 999, 998, 40, 41, 42, 999]).view([2, 5]);
    let logits = tch::no_grad(|| model.forward(&pixels, &ids, clip_model::Pass::eval()))
        .unwrap()
        .logits_per_image;
    model.save_pretrained(&dir.join("clip")).unwrap();

    let vs2 = VarStore::new(tch::Device::Cpu);
    let names = vec!["cat".to_string(), "dog".to_string(), "bird".to_string()];
    let classifier = ClipClassifier::new(&vs2.root(), &cfg, names, &HeadConfig::default()).unwrap();
    let features = tch::no_grad(|| classifier.clip.image_features(&pixels)).unwrap();
    classifier.save_pretrained(&dir.join("classifier")).unwrap();

    let tensors = [
        ("pixel_values", pixels),
        ("input_ids", ids),
        ("logits_per_image", logits),
        ("classifier_image_features", features),
    ]
    .map(|(n, t)| (n.to_string(), t));
    write_safetensors(
        &dir.join("rust_outputs.safetensors"),
        &tensors,
        BTreeMap::new(),
    )
    .unwrap();

    let output = Command::new(&python)
        .arg(root.join("scripts/check_model_interop.py"))
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "transformers interop check failed:\n{text}"
    );
    assert!(text.contains("interop with transformers: ok"), "{text}");
}
