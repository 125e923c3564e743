//! Writes a randomly initialised tiny CLIP and a classifier in Hugging Face layout,
//! with the logits Rust computes for fixed inputs, for scripts/check_model_interop.py
//! to load with transformers and compare.
//!
//! `cargo run -p clip-model --example export_random -- OUT_DIR`

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clip_model::{ClipClassifier, ClipConfig, ClipModel, HeadConfig, write_safetensors};
use tch::{Kind, Tensor, nn::VarStore};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: export_random OUT_DIR")?,
    );
    tch::manual_seed(7);
    let mut cfg = ClipConfig::tiny();
    cfg.text_config.vocab_size = 1000;
    cfg.text_config.eos_token_id = 999;
    cfg.text_config.bos_token_id = 998;
    cfg.text_config.pad_token_id = 999;
    let vs = VarStore::new(tch::Device::Cpu);
    let model = ClipModel::new(&vs.root(), &cfg)?;
    let pixels = Tensor::randn([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let ids = Tensor::from_slice(&[998i64, 5, 17, 999, 999, 998, 40, 41, 42, 999]).view([2, 5]);
    let logits =
        tch::no_grad(|| model.forward(&pixels, &ids, false, None, false))?.logits_per_image;
    model.save_pretrained(&out.join("clip"))?;

    let vs2 = VarStore::new(tch::Device::Cpu);
    let names = vec!["cat".to_string(), "dog".to_string(), "bird".to_string()];
    let classifier = ClipClassifier::new(&vs2.root(), &cfg, names, &HeadConfig::default())?;
    let class_logits = tch::no_grad(|| classifier.forward(&pixels, false, None))?;
    let image_embeds = tch::no_grad(|| classifier.clip.image_features(&pixels))?;
    classifier.save_pretrained(&out.join("classifier"))?;

    let tensors = [
        ("pixel_values", pixels),
        ("input_ids", ids),
        ("logits_per_image", logits),
        ("classifier_logits", class_logits),
        ("classifier_image_features", image_embeds),
    ]
    .map(|(n, t)| (n.to_string(), t));
    write_safetensors(
        &out.join("rust_outputs.safetensors"),
        &tensors,
        BTreeMap::new(),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
