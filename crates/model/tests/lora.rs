//! LoRA adapters: counts, identity at initialisation, merge / unmerge, save / load,
//! and the PEFT round trip (scripts/check_peft_interop.py).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use clip_model::{
    ClipClassifier, ClipConfig, ClipModel, HeadConfig, LoraConfig, LoraTarget, Module, Tower,
    save_peft_adapter, write_safetensors,
};
use tch::{Device, Kind, Tensor, nn};

fn tiny_classifier(vs: &nn::VarStore) -> ClipClassifier {
    ClipClassifier::new(
        &vs.root(),
        &ClipConfig::tiny(),
        vec!["a".into(), "b".into(), "c".into()],
        &HeadConfig::default(),
    )
    .unwrap()
}

fn randomize_b(model: &ClipClassifier) {
    tch::no_grad(|| {
        for p in model.params().select(|t| t.module == Module::Adapter) {
            if p.name.contains("lora_B") {
                p.tensor
                    .shallow_clone()
                    .copy_(&(Tensor::randn_like(&p.tensor) * 0.1));
            }
        }
    });
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn adapter_counts_match_peft_for_vit_b_32() {
    for (r, expected) in [(8, 294_912), (16, 589_824)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut clip = ClipModel::new(&vs.root(), &ClipConfig::vit_b_32()).unwrap();
        let cfg = LoraConfig {
            r,
            alpha: 2.0 * r as f64,
            ..LoraConfig::default()
        };
        assert_eq!(clip.add_lora(&vs.root(), &cfg).unwrap(), expected);
        assert_eq!(
            clip.params().count(|t| t.module == Module::Adapter),
            expected
        );
        // Every adapter sits in a vision block, named as PEFT names it.
        let names: Vec<String> = clip.adapter_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 12 * 2 * 2);
        assert!(
            names.contains(
                &"vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight".to_string()
            )
        );
        assert!(names.contains(
            &"vision_model.encoder.layers.11.self_attn.v_proj.lora_B.weight".to_string()
        ));
        assert!(
            clip.params()
                .select(|t| t.module == Module::Adapter)
                .all(|p| p.tag.tower == Tower::Vision)
        );
    }
}

#[test]
fn fresh_adapters_leave_the_outputs_unchanged_and_merge_unmerge_is_exact() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = tiny_classifier(&vs);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let before = model.forward(&x, clip_model::Pass::eval()).unwrap();
    let cfg = LoraConfig {
        target_modules: vec![
            LoraTarget::QProj,
            LoraTarget::VProj,
            LoraTarget::Fc1,
            LoraTarget::OutProj,
        ],
        ..LoraConfig::default()
    };
    model.clip.add_lora(&vs.root(), &cfg).unwrap();
    let after = model.forward(&x, clip_model::Pass::eval()).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(before.flatten(0, -1)).unwrap(),
        Vec::<f32>::try_from(after.flatten(0, -1)).unwrap()
    );

    randomize_b(&model);
    let with = model.forward(&x, clip_model::Pass::eval()).unwrap();
    assert!(
        max_diff(&with, &before) > 1e-3,
        "the adapters now change the output"
    );
    let weights: Vec<Vec<f32>> = model
        .params()
        .iter()
        .map(|p| Vec::<f32>::try_from(p.tensor.detach().flatten(0, -1)).unwrap())
        .collect();
    model.clip.merge_lora();
    let merged = model.forward(&x, clip_model::Pass::eval()).unwrap();
    assert!(
        max_diff(&merged, &with) < 1e-5,
        "merged forward equals adapter forward"
    );
    model.clip.unmerge_lora();
    for (p, w) in model.params().iter().zip(&weights) {
        assert_eq!(
            &Vec::<f32>::try_from(p.tensor.detach().flatten(0, -1)).unwrap(),
            w,
            "{} after unmerge",
            p.name
        );
    }
    let again = model.forward(&x, clip_model::Pass::eval()).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(again.flatten(0, -1)).unwrap(),
        Vec::<f32>::try_from(with.flatten(0, -1)).unwrap()
    );
}

#[test]
fn adapters_survive_save_and_load_and_merged_saves_are_plain() {
    tch::manual_seed(4);
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = tiny_classifier(&vs);
    model
        .clip
        .add_lora(&vs.root(), &LoraConfig::default())
        .unwrap();
    randomize_b(&model);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = model.forward(&x, clip_model::Pass::eval()).unwrap();
    model.save_pretrained(&dir.path().join("adapters")).unwrap();
    model.save_merged(&dir.path().join("merged")).unwrap();

    let vs2 = nn::VarStore::new(Device::Cpu);
    let loaded = ClipClassifier::load(&vs2.root(), &dir.path().join("adapters")).unwrap();
    assert_eq!(loaded.clip.lora(), Some(&LoraConfig::default()));
    assert_eq!(
        max_diff(&loaded.forward(&x, clip_model::Pass::eval()).unwrap(), &y),
        0.0
    );

    let vs3 = nn::VarStore::new(Device::Cpu);
    let merged = ClipClassifier::load(&vs3.root(), &dir.path().join("merged")).unwrap();
    assert!(merged.clip.lora().is_none());
    assert_eq!(merged.params().count(|t| t.module == Module::Adapter), 0);
    assert!(max_diff(&merged.forward(&x, clip_model::Pass::eval()).unwrap(), &y) < 1e-4);
}

fn python() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    p.exists().then_some(p)
}

#[test]
fn peft_loads_our_adapters_and_transformers_loads_the_merged_model() {
    let Some(py) = python() else {
        panic!("the setup venv is missing: run scripts/setup.sh");
    };
    tch::manual_seed(5);
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut clip = ClipModel::new(&vs.root(), &ClipConfig::tiny()).unwrap();
    clip.save_pretrained(&dir.path().join("base")).unwrap();
    let cfg = LoraConfig {
        r: 4,
        alpha: 8.0,
        target_modules: vec![LoraTarget::QProj, LoraTarget::VProj, LoraTarget::Fc2],
        ..LoraConfig::default()
    };
    clip.add_lora(&vs.root(), &cfg).unwrap();
    tch::no_grad(|| {
        for (n, t) in clip.adapter_tensors() {
            if n.contains("lora_B") {
                t.shallow_clone().copy_(&(Tensor::randn_like(&t) * 0.1));
            }
        }
    });
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let feats = tch::no_grad(|| clip.image_features(&x)).unwrap();
    save_peft_adapter(
        &dir.path().join("adapter"),
        &cfg,
        &clip.adapter_tensors(),
        None,
    )
    .unwrap();
    clip.merge_lora();
    // The merged model, saved without adapters, is a plain CLIP.
    let merged_vs = nn::VarStore::new(Device::Cpu);
    let merged = ClipModel::new(&merged_vs.root(), &ClipConfig::tiny()).unwrap();
    tch::no_grad(|| {
        for p in clip.params().select(|t| t.module != Module::Adapter) {
            merged
                .params()
                .get(&p.name)
                .unwrap()
                .tensor
                .shallow_clone()
                .copy_(&p.tensor);
        }
    });
    merged.save_pretrained(&dir.path().join("merged")).unwrap();
    write_safetensors(
        &dir.path().join("io.safetensors"),
        &[("pixel_values".into(), x), ("image_embeds".into(), feats)],
        Default::default(),
    )
    .unwrap();
    let out = std::process::Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_peft_interop.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("peft max abs diff") && text.contains("merged max abs diff"),
        "{text}"
    );
}
