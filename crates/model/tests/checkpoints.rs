//! Loading, saving and the errors of bad checkpoints.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clip_model::{
    ClipClassifier, ClipConfig, ClipModel, ClipTokenizer, DecayClass, HeadConfig, HeadInit,
    HeadKind, ModelFiles, Module, Tower, read_safetensors, write_safetensors,
};
use tch::{Kind, Tensor, nn::VarStore};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    let vs = VarStore::new(tch::Device::Cpu);
    let files = match ModelFiles::from_dir(dir) {
        Ok(f) => f,
        Err(e) => return e.to_string(),
    };
    ClipModel::from_files(&vs.root(), &files)
        .unwrap_err()
        .to_string()
}

fn same_params(a: &ClipModel, b: &ClipModel) {
    assert_eq!(a.params().len(), b.params().len());
    for (p, q) in a.params().iter().zip(b.params().iter()) {
        assert_eq!(p.name, q.name);
        assert!(p.tensor.equal(&q.tensor), "{} differs", p.name);
    }
}

#[test]
fn save_then_load_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::new(tch::Device::Cpu);
    let a = ClipModel::from_pretrained(&vs.root(), fixture("tiny-b").to_str().unwrap()).unwrap();
    a.save_pretrained(dir.path()).unwrap();
    let vs2 = VarStore::new(tch::Device::Cpu);
    let b = ClipModel::from_pretrained(&vs2.root(), dir.path().to_str().unwrap()).unwrap();
    same_params(&a, &b);
    assert_eq!(a.config(), b.config());
}

#[test]
fn truncated_and_corrupt_checkpoints_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-a"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("unreadable"),
        "{err}"
    );
    std::fs::write(&weights, b"not a safetensors file at all").unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn missing_config_or_weights_say_what_the_folder_needs() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-a"), dir.path());
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(load_err(dir.path()).contains("no config.json"));
    copy_dir(&fixture("tiny-a"), dir.path());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(load_err(dir.path()).contains("no model.safetensors"));
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-a"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let mut tensors = read_safetensors(&weights).unwrap();
    tensors.retain(|(n, _)| n != "logit_scale");
    tensors.push((
        "extra.weight".into(),
        Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)),
    ));
    for (n, t) in tensors.iter_mut() {
        if n == "visual_projection.weight" {
            *t = Tensor::zeros([3, 3], (Kind::Float, tch::Device::Cpu));
        }
    }
    write_safetensors(&weights, &tensors, BTreeMap::new()).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("1 missing: logit_scale"), "{err}");
    assert!(err.contains("1 unexpected: extra.weight"), "{err}");
    assert!(
        err.contains("1 wrong shape: visual_projection.weight"),
        "{err}"
    );
}

#[test]
fn legacy_position_ids_are_ignored_and_half_precision_loads_as_fp32() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-a"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let mut tensors = read_safetensors(&weights).unwrap();
    for (_, t) in tensors.iter_mut() {
        *t = t.to_kind(Kind::BFloat16);
    }
    tensors.push((
        "text_model.embeddings.position_ids".into(),
        Tensor::arange(77, (Kind::Int64, tch::Device::Cpu)).view([1, 77]),
    ));
    write_safetensors(&weights, &tensors, BTreeMap::new()).unwrap();
    let vs = VarStore::new(tch::Device::Cpu);
    let m = ClipModel::from_pretrained(&vs.root(), dir.path().to_str().unwrap()).unwrap();
    let p = m.params().get("visual_projection.weight").unwrap();
    assert_eq!(p.tensor.kind(), Kind::Float);
    let original: std::collections::HashMap<_, _> =
        read_safetensors(&fixture("tiny-a").join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let d = (&p.tensor - &original["visual_projection.weight"])
        .abs()
        .max()
        .double_value(&[]);
    assert!(d > 0.0 && d < 1e-2, "bf16 rounding expected, got {d}");
}

#[test]
fn sharded_checkpoints_load() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("tiny-a"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let tensors = read_safetensors(&weights).unwrap();
    std::fs::remove_file(&weights).unwrap();
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let part: Vec<_> = part
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        write_safetensors(&dir.path().join(file), &part, BTreeMap::new()).unwrap();
        for (n, _) in &part {
            map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let vs = VarStore::new(tch::Device::Cpu);
    let m = ClipModel::from_pretrained(&vs.root(), dir.path().to_str().unwrap()).unwrap();
    let vs2 = VarStore::new(tch::Device::Cpu);
    same_params(
        &m,
        &ClipModel::from_pretrained(&vs2.root(), fixture("tiny-a").to_str().unwrap()).unwrap(),
    );
}

#[test]
fn hub_ids_resolve_through_the_cache_and_fail_offline_with_instructions() {
    let home = tempfile::tempdir().unwrap();
    let cache = hf_cache(home.path());
    let err = ModelFiles::from_hub("openai/clip-vit-base-patch32", &cache, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HF_HUB_OFFLINE")
            && err.contains("huggingface-cli download openai/clip-vit-base-patch32"),
        "{err}"
    );
    // A cached snapshot, as huggingface_hub lays it out.
    let repo = home
        .path()
        .join("hub/models--openai--clip-vit-base-patch32");
    let snap = repo.join("snapshots/abc123");
    copy_dir(&fixture("tiny-a"), &snap);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    let files = ModelFiles::from_hub("openai/clip-vit-base-patch32", &cache, true).unwrap();
    assert_eq!(files.config, snap.join("config.json"));
    assert_eq!(files.weights, vec![snap.join("model.safetensors")]);
    assert_eq!(files.tokenizer, Some(snap.join("tokenizer.json")));
    let err = ModelFiles::resolve("definitely not a model")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a hub id"), "{err}");
}

fn hf_cache(home: &Path) -> hf_hub::Cache {
    hf_hub::Cache::new(home.join("hub"))
}

#[test]
fn every_parameter_is_tagged_and_one_dimensional_ones_are_not_decayed() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = ClipModel::new(&vs.root(), &ClipConfig::tiny()).unwrap();
    let vars = vs.variables();
    assert_eq!(
        vars.len(),
        m.params().len(),
        "a VarStore variable has no tag"
    );
    for p in m.params().iter() {
        assert!(
            vars.contains_key(&p.name),
            "{} is not in the VarStore",
            p.name
        );
        if p.tensor.dim() <= 1 {
            assert!(p.tag.decay.is_no_decay(), "{} is 1-D but decayed", p.name);
        }
    }
    let blocks = m
        .params()
        .select(|t| t.module == Module::Block && t.tower == Tower::Vision);
    assert!(blocks.map(|p| p.tag.depth).all(|d| (1..=2).contains(&d)));
    assert_eq!(
        m.params()
            .get("vision_model.post_layernorm.weight")
            .unwrap()
            .tag
            .depth,
        3
    );
    assert_eq!(
        m.params()
            .get("text_model.embeddings.token_embedding.weight")
            .unwrap()
            .tag
            .decay,
        DecayClass::Embedding
    );
}

#[test]
fn vit_b_32_has_the_published_parameter_counts() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = tch::no_grad(|| ClipModel::new(&vs.root(), &ClipConfig::vit_b_32())).unwrap();
    assert_eq!(m.params().count(|_| true), 151_277_313);
    assert_eq!(m.tower_size(Tower::Vision), 87_456_000);
    assert_eq!(m.tower_size(Tower::Text), 63_165_952);
    let report = m.report();
    assert_eq!(report.total, 151_277_313);
    assert_eq!(
        report.rows.iter().map(|r| r.parameters).sum::<i64>(),
        151_277_313
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["total"], 151_277_313);
}

#[test]
fn freezing_by_tower_and_depth() {
    let vs = VarStore::new(tch::Device::Cpu);
    let m = ClipModel::new(&vs.root(), &ClipConfig::tiny()).unwrap();
    let total = m.params().count(|_| true);
    m.params().set_trainable(false, |_| true);
    assert_eq!(m.params().trainable_count(), 0);
    // Open the top vision block and everything after it.
    m.params()
        .set_tower_trainable(Tower::Vision, 2..=u32::MAX, true);
    let open = m
        .params()
        .count(|t| t.tower == Tower::Vision && t.depth >= 2);
    assert_eq!(m.params().trainable_count(), open);
    assert!(open > 0 && open < total);
    let table = m.report().to_string();
    assert!(
        table.contains("trainable") && table.contains("vision"),
        "{table}"
    );
}

#[test]
fn classifier_round_trips_with_head_and_class_names() {
    let vs = VarStore::new(tch::Device::Cpu);
    let files = ModelFiles::from_dir(&fixture("tiny-b")).unwrap();
    let names: Vec<String> = ["cat", "dog", "t-shirt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = ClipClassifier::from_clip(
        &vs.root(),
        &files,
        names.clone(),
        &HeadConfig::default(),
        None,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.save_pretrained(dir.path()).unwrap();
    let vs2 = VarStore::new(tch::Device::Cpu);
    let d = ClipClassifier::load(&vs2.root(), dir.path()).unwrap();
    assert_eq!(d.class_names(), names.as_slice());
    assert_eq!(d.scale(), c.scale());
    same_params(&c.clip, &d.clip);
    let x = Tensor::randn([2, 3, 20, 20], (Kind::Float, tch::Device::Cpu));
    let (a, b) = tch::no_grad(|| {
        (
            c.forward(&x, clip_model::Pass::eval()).unwrap(),
            d.forward(&x, clip_model::Pass::eval()).unwrap(),
        )
    });
    assert_eq!(a.size(), [2, 3]);
    assert!(a.equal(&b));
    // A plain CLIP folder is not a classifier.
    let vs3 = VarStore::new(tch::Device::Cpu);
    let err = ClipClassifier::load(&vs3.root(), &fixture("tiny-b"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("clip_classifier"), "{err}");
}

#[test]
fn zero_shot_head_equals_clip_zero_shot_logits() {
    let files = ModelFiles::from_dir(&fixture("tiny-a")).unwrap();
    let tok = ClipTokenizer::from_file(files.tokenizer.as_ref().unwrap(), 77).unwrap();
    let names: Vec<String> = ["cat", "dog"].iter().map(|s| s.to_string()).collect();
    let head = HeadConfig {
        init: HeadInit::ZeroShot,
        templates: vec!["a photo of a {}.".into()],
        ..HeadConfig::default()
    };
    let vs = VarStore::new(tch::Device::Cpu);
    let c = ClipClassifier::from_clip(&vs.root(), &files, names, &head, Some(&tok)).unwrap();
    let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let ids = tok
        .encode(&["a photo of a cat.", "a photo of a dog."])
        .unwrap();
    let (head_logits, clip_logits) = tch::no_grad(|| {
        (
            c.forward(&x, clip_model::Pass::eval()).unwrap(),
            c.clip
                .forward(&x, &ids, clip_model::Pass::eval())
                .unwrap()
                .logits_per_image,
        )
    });
    let d = (head_logits - clip_logits).abs().max().double_value(&[]);
    assert!(d < 1e-4, "zero-shot head differs from CLIP's logits by {d}");
}

/// The hf head (transformers' CLIPForImageClassification) on a pretrained CLIP:
/// the vision tower's weights from the file, no text tower or projections in the
/// parameters or the saved file, a round trip to the same logits, and the head
/// settings it cannot have named.
#[test]
fn hf_head_holds_the_vision_tower_only_and_round_trips() {
    let files = ModelFiles::from_dir(&fixture("tiny-b")).unwrap();
    let names: Vec<String> = ["cat", "dog"].iter().map(|s| s.to_string()).collect();
    let head = HeadConfig {
        kind: HeadKind::Hf,
        ..HeadConfig::default()
    };
    let vs = VarStore::new(tch::Device::Cpu);
    let c = ClipClassifier::from_clip(&vs.root(), &files, names.clone(), &head, None).unwrap();
    assert_eq!(c.scale(), 1.0);
    let pretrained: std::collections::HashMap<String, Tensor> = read_safetensors(&files.weights[0])
        .unwrap()
        .into_iter()
        .collect();
    let hidden = ClipConfig::from_json_file(&files.config)
        .unwrap()
        .vision_config
        .hidden_size;
    for p in c.params().iter() {
        match pretrained.get(&p.name) {
            Some(t) => assert!(
                p.name.starts_with("vision_model.") && t.equal(&p.tensor),
                "{}",
                p.name
            ),
            None => assert!(p.name.starts_with("classifier."), "{}", p.name),
        }
    }
    assert_eq!(c.head.weight.size(), [2, hidden]);
    let dir = tempfile::tempdir().unwrap();
    c.save_pretrained(dir.path()).unwrap();
    let saved = read_safetensors(&dir.path().join("model.safetensors")).unwrap();
    let mut keys: Vec<&String> = saved.iter().map(|(k, _)| k).collect();
    keys.retain(|k| !k.starts_with("vision_model."));
    keys.sort();
    assert_eq!(keys, ["classifier.bias", "classifier.weight"]);
    let vs2 = VarStore::new(tch::Device::Cpu);
    let d = ClipClassifier::load(&vs2.root(), dir.path()).unwrap();
    assert_eq!(d.kind(), HeadKind::Hf);
    let x = Tensor::randn([2, 3, 20, 20], (Kind::Float, tch::Device::Cpu));
    let (a, b) = tch::no_grad(|| {
        (
            c.forward(&x, clip_model::Pass::eval()).unwrap(),
            d.forward(&x, clip_model::Pass::eval()).unwrap(),
        )
    });
    assert_eq!(a.size(), [2, 2]);
    assert!(a.equal(&b));
    let bad = HeadConfig {
        kind: HeadKind::Hf,
        init: HeadInit::ZeroShot,
        scale: Some(10.0),
        bias: false,
        ..HeadConfig::default()
    };
    let problems = bad.problems("model.head").join("\n");
    for key in ["model.head.init", "model.head.scale", "model.head.bias"] {
        assert!(problems.contains(key), "{problems}");
    }
}

/// A zero-shot head with a tokenizer whose end-of-text id is not the text tower's
/// `eos_token_id` is an error (the tower would read every prompt at its first
/// token); the legacy id 2 ("the largest id") accepts any tokenizer.
#[test]
fn zero_shot_heads_refuse_a_tokenizer_of_another_text_tower() {
    let files = ModelFiles::from_dir(&fixture("tiny-b")).unwrap();
    let tok = ClipTokenizer::from_file(files.tokenizer.as_ref().unwrap(), 77).unwrap();
    let names: Vec<String> = ["cat", "dog"].iter().map(|s| s.to_string()).collect();
    let templates = vec!["a photo of a {}.".to_string()];
    for (eos, ok) in [(1513, true), (2, true), (49407, false)] {
        let mut config = ClipConfig::from_json_file(&files.config).unwrap();
        config.text_config.eos_token_id = eos;
        let vs = VarStore::new(tch::Device::Cpu);
        let mut c = ClipClassifier::new(&vs.root(), &config, names.clone(), &HeadConfig::default())
            .unwrap();
        match c.init_zero_shot(&tok, &templates) {
            Ok(()) => assert!(ok, "eos {eos} accepted"),
            Err(e) => {
                assert!(!ok, "eos {eos}: {e}");
                let e = e.to_string();
                assert!(
                    e.contains("end-of-text token is id 1513") && e.contains("is 49407"),
                    "{e}"
                );
            }
        }
    }
}
