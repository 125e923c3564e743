//! The trainer's accumulated gradient and its loss against PyTorch, from the
//! fixtures of scripts/gen_train_fixtures.py: `loss / k` accumulation over full
//! and short groups, and `nn.CrossEntropyLoss(label_smoothing=0.1)` on class
//! indices and on soft (MixUp / CutMix) targets; the same step of the
//! contrastive objective (FLYP) against open_clip's `ClipLoss`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use clip_train::{RunConfig, Targets, Trainer, cross_entropy};
use tch::{Kind, Tensor};

#[path = "../../../tests/support/train_step.rs"]
mod train_step;
use train_step::fixtures;

fn reference() -> HashMap<String, Tensor> {
    clip_model::read_safetensors(&fixtures().join("train_step/reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

fn trainer(out: &Path, checkpointing: bool) -> Trainer {
    trainer_with(out, checkpointing, "")
}

/// The fixtures' run (batches of 2), with `more` TOML lines after `[train]`'s.
fn trainer_with(out: &Path, checkpointing: bool, more: &str) -> Trainer {
    let checkpointing = format!("gradient_checkpointing = {checkpointing}");
    let toml = train_step::config(out, "step-parity", 2, ["", &checkpointing, more]);
    Trainer::new(RunConfig::from_toml(&toml, "step-parity.toml", &[]).unwrap()).unwrap()
}

/// Every gradient of `grads` equals the fixture's `{group}.<name>` within `tol`
/// of its largest value (`k_proj.bias`, zero in exact arithmetic as softmax is
/// shift-invariant, is rounding noise on both sides); as many tensors as the
/// fixture's group has.
fn assert_gradients(
    grads: &[(String, Tensor)],
    refs: &HashMap<String, Tensor>,
    group: &str,
    tol: f64,
    what: &str,
) {
    let expected = refs
        .keys()
        .filter(|k| k.starts_with(&format!("{group}.")))
        .filter(|k| !k.ends_with(".loss") && !k.ends_with(".grad_norm"))
        .count();
    assert_eq!(
        grads.len(),
        expected,
        "group {group}: tensors with a gradient"
    );
    for (name, g) in grads {
        let want = &refs[&format!("{group}.{name}")];
        if name.ends_with("k_proj.bias") {
            for x in [g, want] {
                assert!(x.abs().max().double_value(&[]) < 1e-6, "{name}: {x}");
            }
            continue;
        }
        let d = max_rel_diff(g, want);
        assert!(
            d < tol,
            "group {group}, {name} ({what}): max diff {d:.2e} of the largest |grad|"
        );
    }
}

/// With k micro-batches, the gradient the optimizer sees is PyTorch's
/// `(loss_i / k).backward()` summed, for a full group (k = 3) and the epoch's short
/// last group (2 micro-batches, each weighted 1/2), with and without gradient
/// checkpointing.
#[test]
fn accumulated_gradient_equals_pytorchs_loss_over_k() {
    let refs = reference();
    for checkpointing in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = trainer(tmp.path(), checkpointing);
        for (group, first_batch) in [("a", 0), ("b", 3)] {
            let grads = t.step_gradients(0, first_batch).unwrap();
            let what = format!("checkpointing {checkpointing}");
            assert_gradients(&grads, &refs, group, 1e-4, &what);
        }
    }
}

#[test]
fn loss_equals_cross_entropy_with_label_smoothing_on_classes_and_soft_targets() {
    let r = reference();
    let logits = r["loss.logits"].detach().set_requires_grad(true);
    for (kind, targets) in [
        ("hard", Targets::Classes(&r["loss.classes"])),
        ("soft", Targets::Soft(&r["loss.soft"])),
    ] {
        let _ = logits.grad().defined().then(|| logits.grad().zero_());
        let loss = cross_entropy(&logits, targets, 0.1).unwrap();
        loss.backward();
        let want = r[&format!("loss.{kind}_value")].double_value(&[0]);
        let got = loss.double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{kind}: loss {got} vs {want}");
        let d = max_rel_diff(&logits.grad(), &r[&format!("loss.{kind}_grad")]);
        assert!(d < 1e-5, "{kind}: gradient differs by {d:.2e}");
    }
    // Smoothing matters here: without it the value moves well past the tolerance.
    let plain = cross_entropy(&logits, Targets::Classes(&r["loss.classes"]), 0.0)
        .unwrap()
        .double_value(&[]);
    assert!((plain - r["loss.hard_value"].double_value(&[0])).abs() > 1e-3);
    assert_eq!(r["loss.classes"].kind(), Kind::Int64);
}

/// Image <-> text retrieval figures equal open_clip's `get_clip_metrics` on 1,200
/// pairs (more than one 1,024-query chunk), both directions; with several captions
/// per image (2,200 captions of 1,100 images), clip_benchmark's recall (any of an
/// image's captions in its top k) and the rank of the first-ranked match.
#[test]
fn retrieval_metrics_equal_open_clip_and_clip_benchmark() {
    for (file, images, captions) in [
        ("retrieval.safetensors", 1200, 1200),
        ("retrieval_grouped.safetensors", 1100, 2200),
    ] {
        let t = clip_model::read_safetensors(&fixtures().join("train_step").join(file)).unwrap();
        let get = |k: &str| {
            t.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.shallow_clone())
        };
        let (image, text) = (get("image").unwrap(), get("text").unwrap());
        // One caption per image: caption i is image i's.
        let image_of: Vec<usize> = match get("image_of") {
            Some(ix) => Vec::<i64>::try_from(ix)
                .unwrap()
                .into_iter()
                .map(|i| i as usize)
                .collect(),
            None => (0..text.size()[0] as usize).collect(),
        };
        let r = clip_train::Retrieval::of(&image, &text, &image_of).unwrap();
        assert_eq!((r.images, r.captions), (images, captions), "{file}");
        for (dir, m) in [
            ("image_to_text", r.image_to_text),
            ("text_to_image", r.text_to_image),
        ] {
            let want = |k: &str| get(&format!("{dir}.{k}")).unwrap().double_value(&[]);
            for (k, got) in [
                ("R@1", m.r1),
                ("R@5", m.r5),
                ("R@10", m.r10),
                ("mean_rank", m.mean_rank),
                ("median_rank", m.median_rank),
            ] {
                assert!(
                    (got - want(k)).abs() < 1e-12,
                    "{file}: {dir} {k}: {got} vs {}",
                    want(k)
                );
            }
        }
        assert!(r.image_to_text.r1 > 0.03 && r.image_to_text.median_rank > 1.0);
    }
}

/// FLYP's loss equals open_clip's `ClipLoss` (written out with torch in
/// scripts/gen_loss_fixtures.py), value and gradients with respect to both
/// embeddings and the logit scale, with and without label smoothing, a duplicate
/// caption included.
#[test]
fn contrastive_loss_equals_open_clips_clip_loss() {
    let r: HashMap<String, Tensor> =
        clip_model::read_safetensors(&fixtures().join("train_step/contrastive_loss.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for ls in ["0", "0.1"] {
        let image = r["image"].detach().set_requires_grad(true);
        let text = r["text"].detach().set_requires_grad(true);
        let scale = r["logit_scale"].detach().set_requires_grad(true);
        let loss =
            clip_train::contrastive_loss(&image, &text, &scale, ls.parse().unwrap()).unwrap();
        loss.backward();
        let key = format!("ls{}", if ls == "0" { "0.0" } else { ls });
        let (got, want) = (
            loss.double_value(&[]),
            r[&format!("{key}.loss")].double_value(&[]),
        );
        assert!((got - want).abs() < 1e-6, "ls {ls}: loss {got} vs {want}");
        for (name, grad) in [
            ("grad_image", image.grad()),
            ("grad_text", text.grad()),
            ("grad_logit_scale", scale.grad()),
        ] {
            let d = max_rel_diff(&grad, &r[&format!("{key}.{name}")]);
            assert!(d < 1e-5, "ls {ls}: {name} differs by {d:.2e}");
        }
    }
}

/// One step of the contrastive objective (FLYP) equals open_clip's `ClipLoss`
/// trained in PyTorch (scripts/gen_train_fixtures.py): each image's caption its
/// class name in the template (two cats in the first micro-batch: a duplicate
/// caption), label smoothing 0.1, each micro-batch's loss weighted `1 / k` over a
/// full group (k = 3) and the short last one (k = 2); the accumulated gradient of
/// every parameter of both towers, both projections and the logit scale, and the
/// loss the step reports, with and without gradient checkpointing.
#[test]
fn contrastive_step_equals_open_clips_clip_loss_accumulated_in_pytorch() {
    let r: HashMap<String, Tensor> =
        clip_model::read_safetensors(&fixtures().join("train_step/contrastive_step.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let flyp = "objective = \"contrastive\"\n[optim]\nfrozen_towers = []";
    for checkpointing in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = trainer_with(tmp.path(), checkpointing, flyp);
        for (group, first_batch) in [("a", 0), ("b", 3)] {
            let (loss, grads) = t.step_loss_and_gradients(0, first_batch).unwrap();
            let want = r[&format!("{group}.loss")].double_value(&[0]);
            assert!(
                (loss - want).abs() < 1e-5 * want,
                "group {group} (checkpointing {checkpointing}): loss {loss} vs {want}"
            );
            let what = format!("checkpointing {checkpointing}");
            assert_gradients(&grads, &r, group, 1e-5, &what);
        }
    }
}
