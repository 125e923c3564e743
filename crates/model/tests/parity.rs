//! Parity with transformers' CLIPModel on the committed fixtures made by
//! scripts/gen_model_fixtures.py (tiny random checkpoints and reference outputs).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::PathBuf;

use clip_model::{ClipModel, ClipTokenizer, GradTape, ModelFiles, read_safetensors};
use tch::{Kind, Tensor, nn::VarStore};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/model")
        .join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    read_safetensors(&fixture(name).join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn load(name: &str) -> (VarStore, ClipModel) {
    let vs = VarStore::new(tch::Device::Cpu);
    let model =
        ClipModel::from_files(&vs.root(), &ModelFiles::from_dir(&fixture(name)).unwrap()).unwrap();
    (vs, model)
}

#[test]
fn fp32_forward_matches_transformers() {
    for name in ["tiny-a", "tiny-b"] {
        let (_vs, model) = load(name);
        let r = reference(name);
        let out = tch::no_grad(|| {
            model.forward(
                &r["pixel_values"],
                &r["input_ids"],
                clip_model::Pass::eval(),
            )
        })
        .unwrap();
        for (key, got) in [
            ("image_embeds", &out.image_embeds),
            ("text_embeds", &out.text_embeds),
            ("logits_per_image", &out.logits_per_image),
            // transformers 5 replaces the towers' pooler_output by the projected one.
            (
                "vision_pooled",
                &model.visual_projection.forward(&out.vision.pooled),
            ),
            (
                "text_pooled",
                &model.text_projection.forward(&out.text.pooled),
            ),
        ] {
            let d = max_abs_diff(got, &r[key]);
            assert!(d < 1e-5, "{name}: {key} differs from transformers by {d}");
        }
    }
}

fn check_gradients(name: &str, checkpointing: bool) {
    let (_vs, mut model) = load(name);
    model.set_gradient_checkpointing(checkpointing);
    let r = reference(name);
    let mut tape = GradTape::new();
    let out = model
        .forward(
            &r["pixel_values"],
            &r["input_ids"],
            clip_model::Pass::train().tape(&mut tape),
        )
        .unwrap();
    let layers = model.config().vision_config.num_hidden_layers
        + model.config().text_config.num_hidden_layers;
    assert_eq!(tape.len() as i64, if checkpointing { layers } else { 0 });
    let loss = (&out.logits_per_image * &r["loss_weights"]).sum(Kind::Float);
    let dl = max_abs_diff(&loss.view([1]), &r["loss"]);
    assert!(dl < 1e-4, "{name}: loss differs by {dl}");
    tape.backward(&loss).unwrap();
    let global = model
        .params()
        .iter()
        .map(|p| r[&format!("grad.{}", p.name)].abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    let mut checked = 0;
    for p in model.params().iter() {
        let want = &r[&format!("grad.{}", p.name)];
        let got = p.tensor.grad();
        assert!(got.defined(), "{name}: no gradient for {}", p.name);
        let scale = want.abs().max().double_value(&[]);
        let d = max_abs_diff(&got, want);
        // 1e-4 relative to the tensor's largest gradient; the floor of 1e-6 of the
        // model's largest gradient covers tensors whose gradient is zero in exact
        // arithmetic (k_proj.bias: softmax ignores it), where both sides hold noise.
        assert!(
            d <= 1e-4 * scale + 1e-6 * global,
            "{name} (checkpointing {checkpointing}): grad of {} off by {d} (max |g| {scale})",
            p.name
        );
        checked += 1;
    }
    assert_eq!(checked, model.params().len());
}

#[test]
fn gradients_match_pytorch() {
    check_gradients("tiny-a", false);
    check_gradients("tiny-b", false);
}

#[test]
fn gradient_checkpointing_changes_memory_not_numbers() {
    check_gradients("tiny-a", true);
    check_gradients("tiny-b", true);
}

#[test]
fn tokenizer_matches_transformers() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokens.json")).unwrap()).unwrap();
    let texts: Vec<&str> = json["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want: Vec<Vec<i64>> = serde_json::from_value(json["input_ids"].clone()).unwrap();
    let tok = ClipTokenizer::from_file(&fixture("tokenizer/tokenizer.json"), 77).unwrap();
    let got = tok.encode_ids(&texts).unwrap();
    for ((text, g), w) in texts.iter().zip(&got).zip(&want) {
        assert_eq!(g, w, "token ids of {text:?}");
    }
    assert!(texts.iter().any(|t| t.is_empty()) && texts.iter().any(|t| t.len() > 300));
    assert_eq!(tok.encode(&texts).unwrap().size(), [texts.len() as i64, 77]);
}

#[test]
fn hidden_states_are_returned_per_block() {
    let (_vs, model) = load("tiny-b");
    let r = reference("tiny-b");
    let v =
        tch::no_grad(|| model.vision(&r["pixel_values"], clip_model::Pass::eval().hidden_states()))
            .unwrap();
    let hs = v.hidden_states.unwrap();
    assert_eq!(hs.len(), 4, "embeddings + 3 blocks");
    assert_eq!(max_abs_diff(&hs[3], &v.last_hidden_state), 0.0);
}

#[test]
fn bf16_autocast_runs_low_precision_matmuls_and_keeps_fp32_gradients() {
    let (_vs, mut model) = load("tiny-a");
    let r = reference("tiny-a");
    let cpu = tch::Device::Cpu;
    assert!(!clip_model::autocast_enabled(cpu));
    let (pooled, features) = tch::no_grad(|| {
        clip_model::with_autocast(cpu, Kind::BFloat16, || {
            assert!(clip_model::autocast_enabled(cpu));
            let v = model
                .vision(&r["pixel_values"], clip_model::Pass::eval())
                .unwrap();
            (v.pooled.kind(), model.visual_projection.forward(&v.pooled))
        })
        .unwrap()
    });
    assert!(
        !clip_model::autocast_enabled(cpu),
        "state restored after the closure"
    );
    assert_eq!(pooled, Kind::Float, "layer norm stays fp32 under autocast");
    assert_eq!(
        features.kind(),
        Kind::BFloat16,
        "linear runs in bf16 under autocast"
    );
    // Training step in bf16 with checkpointing: close to fp32, gradients fp32.
    model.set_gradient_checkpointing(true);
    let mut tape = GradTape::new();
    clip_model::with_autocast(cpu, Kind::BFloat16, || {
        let out = model
            .forward(
                &r["pixel_values"],
                &r["input_ids"],
                clip_model::Pass::train().tape(&mut tape),
            )
            .unwrap();
        let d = max_abs_diff(
            &out.logits_per_image.to_kind(Kind::Float),
            &r["logits_per_image"],
        );
        let scale = r["logits_per_image"].abs().max().double_value(&[]);
        assert!(d < 0.05 * scale, "bf16 logits off by {d} (scale {scale})");
        let loss = (&out.logits_per_image * &r["loss_weights"]).sum(Kind::Float);
        tape.backward(&loss).unwrap();
    })
    .unwrap();
    for p in model.params().iter() {
        assert_eq!(p.tensor.grad().kind(), Kind::Float, "{}", p.name);
    }
}
